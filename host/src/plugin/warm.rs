//! Instances kept between calls of one isolation domain (issue 18, decision 1).
//!
//! A domain is one plugin version (this pool belongs to one loaded [`super::Plugin`]), one
//! tenant and one app: an instance that served a call of a domain may serve the next call
//! of the *same* domain, never another's, so whatever a guest keeps in its memory stays
//! with the data it came from. An instance serves one call at a time (it is out of the
//! pool while it runs), at most [`Reuse::max_calls`] calls and for at most
//! [`Reuse::max_age`], and goes back only after a clean call: a trap, a deadline, a memory
//! limit, a host call that failed or an error result drops it. Calls of `high` and
//! `critical` tools, witness calls and plugins whose manifest says `isolation =
//! "per-call"` always get a fresh instance.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::Store;

use super::CallState;
use super::bindings::adapter::ToolAdapter;
use crate::clock::monotonic_now;

/// An instance holding more of the shared memory budget than this is not kept idle, so
/// idle instances pin at most `max_idle` times this (128 MiB with the defaults).
pub const MAX_KEPT_BYTES: usize = 4 << 20;

/// How long and how often an instance may serve its domain.
#[derive(Debug, Clone, Copy)]
pub struct Reuse {
    /// Calls one instance serves before it is dropped; 1 turns reuse off.
    pub max_calls: u32,
    pub max_age: Duration,
    /// Idle instances kept across all plugins (each holds its memory and a pool slot).
    pub max_idle: usize,
}

impl Default for Reuse {
    fn default() -> Self {
        Reuse {
            max_calls: 128,
            max_age: Duration::from_secs(60),
            max_idle: 32,
        }
    }
}

/// Whom an instance may serve.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Domain {
    pub tenant: String,
    pub app: String,
}

/// An instance between calls.
pub struct Warm {
    pub store: Store<CallState>,
    pub adapter: ToolAdapter,
    /// Calls it has served.
    pub calls: u32,
    pub born: Instant,
}

/// One plugin's idle instances, by domain.
pub struct WarmPool {
    idle: Mutex<HashMap<Domain, Vec<Warm>>>,
    reuse: Reuse,
    /// Idle instances kept per domain: as many as the plugin runs at once, no more.
    per_domain: usize,
    count: Arc<IdleCount>,
}

impl std::fmt::Debug for WarmPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmPool").finish_non_exhaustive()
    }
}

/// The idle instances of every plugin, counted against [`Reuse::max_idle`].
#[derive(Debug, Default)]
pub struct IdleCount(AtomicUsize);

impl WarmPool {
    pub fn new(reuse: Reuse, per_domain: usize, count: Arc<IdleCount>) -> WarmPool {
        WarmPool {
            idle: Mutex::default(),
            reuse,
            per_domain,
            count,
        }
    }

    fn young(&self, warm: &Warm) -> bool {
        monotonic_now().duration_since(warm.born) < self.reuse.max_age
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, HashMap<Domain, Vec<Warm>>> {
        self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An idle instance of `domain` still young enough, if one is kept.
    pub fn take(&self, domain: &Domain) -> Option<Warm> {
        let mut idle = self.idle();
        let kept = idle.get_mut(domain)?;
        while let Some(warm) = kept.pop() {
            self.count.0.fetch_sub(1, Ordering::Relaxed);
            if self.young(&warm) {
                return Some(warm);
            }
        }
        idle.remove(domain);
        None
    }

    /// Keeps an instance after a clean call, unless it has served its share, holds too
    /// much memory, or its domain or the process already keeps enough idle (then it is
    /// dropped, and its memory goes back).
    pub fn keep(&self, domain: Domain, warm: Warm) {
        if warm.calls >= self.reuse.max_calls
            || !self.young(&warm)
            || warm.store.data().limiter.held_bytes() > MAX_KEPT_BYTES
        {
            return;
        }
        let mut idle = self.idle();
        let kept = idle.entry(domain).or_default();
        if kept.len() >= self.per_domain {
            return;
        }
        if self.count.0.fetch_add(1, Ordering::Relaxed) >= self.reuse.max_idle {
            self.count.0.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        kept.push(warm);
    }

    /// Drops the idle instances past their age (run every few seconds), so that one kept
    /// for a domain that never calls again does not hold its memory for long.
    pub fn reap(&self) {
        let mut idle = self.idle();
        for kept in idle.values_mut() {
            let before = kept.len();
            kept.retain(|warm| self.young(warm));
            self.count.0.fetch_sub(before - kept.len(), Ordering::Relaxed);
        }
        idle.retain(|_, kept| !kept.is_empty());
    }
}

impl Drop for WarmPool {
    /// The plugin is unloaded or replaced: its idle instances no longer count.
    fn drop(&mut self) {
        let n: usize = self.idle().values().map(Vec::len).sum();
        self.count.0.fetch_sub(n, Ordering::Relaxed);
    }
}
