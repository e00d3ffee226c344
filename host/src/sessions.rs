//! Server-side sessions: one table type for every kind (MCP sessions, reviewer sign-ins),
//! on the injected clock. A session carries no authority of its own: each request is
//! authenticated again, so losing the table on restart only makes clients start over.
//!
//! One process keeps its sessions in memory. Nodes sharing a store keep them in it
//! ([`SessionTable::shared`]), under the sha256 of their id, so any node continues them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::clock::SharedClock;
use crate::hashing::sha256_hex;
use crate::store::{RowExpiry, Store};

/// When a session ends by itself.
#[derive(Debug, Clone, Copy)]
pub enum Expiry {
    /// After this many milliseconds without a request (each use extends it).
    IdleMs(i64),
    /// This many milliseconds after it was opened, used or not.
    AbsoluteMs(i64),
}

#[derive(Debug)]
struct Entry<T> {
    value: T,
    opened_ms: i64,
    last_seen_ms: i64,
}

/// Sessions by id, bounded: past `capacity` the least recently used one goes first.
#[derive(Debug)]
pub struct SessionTable<T> {
    entries: Mutex<HashMap<String, Entry<T>>>,
    /// On a shared store: the store, and the kind of session its rows are.
    shared: Option<(Arc<Store>, &'static str)>,
    clock: SharedClock,
    expiry: Expiry,
    capacity: usize,
}

impl<T: Clone + Serialize + DeserializeOwned> SessionTable<T> {
    pub fn new(clock: SharedClock, expiry: Expiry, capacity: usize) -> Self {
        SessionTable {
            entries: Mutex::new(HashMap::new()),
            shared: None,
            clock,
            expiry,
            capacity: capacity.max(1),
        }
    }

    /// The table of `kind` on `store` when several nodes share it, else in memory.
    pub fn shared(self, store: &Arc<Store>, kind: &'static str) -> Self {
        SessionTable {
            shared: store.is_shared().then(|| (store.clone(), kind)),
            ..self
        }
    }

    fn row_expiry(&self) -> RowExpiry {
        match self.expiry {
            Expiry::IdleMs(ms) => RowExpiry::IdleMs(ms),
            Expiry::AbsoluteMs(ms) => RowExpiry::AbsoluteMs(ms),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry<T>>> {
        // A panic cannot leave an entry half-written: a poisoned table is still consistent.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn live(&self, entry: &Entry<T>, now_ms: i64) -> bool {
        match self.expiry {
            Expiry::IdleMs(ms) => now_ms - entry.last_seen_ms < ms,
            Expiry::AbsoluteMs(ms) => now_ms - entry.opened_ms < ms,
        }
    }

    /// Opens a session under `id` (the caller mints it: a cookie needs a secret, an MCP
    /// session id only uniqueness).
    pub fn open(&self, id: String, value: T) {
        let now_ms = self.clock.now_ms();
        if let Some((store, kind)) = &self.shared {
            // A session that cannot be kept is simply not open: the client's next request
            // is refused as without a session, and it starts over.
            let kept = serde_json::to_string(&value)
                .map_err(|e| e.to_string())
                .and_then(|text| {
                    store
                        .sessions
                        .open(
                            kind,
                            &sha256_hex(id.as_bytes()),
                            &text,
                            now_ms,
                            self.row_expiry(),
                            self.capacity,
                        )
                        .map_err(|e| e.to_string())
                });
            if let Err(e) = kept {
                tracing::error!(kind, error = %e, "a session was not kept in the store");
            }
            return;
        }
        let mut entries = self.lock();
        entries.retain(|_, e| self.live(e, now_ms));
        if entries.len() >= self.capacity
            && let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, e)| e.last_seen_ms)
                .map(|(id, _)| id.clone())
        {
            entries.remove(&oldest);
        }
        entries.insert(
            id,
            Entry {
                value,
                opened_ms: now_ms,
                last_seen_ms: now_ms,
            },
        );
    }

    /// The live session `id`, marked as used now; `None` if unknown, ended or expired.
    pub fn touch(&self, id: &str) -> Option<T> {
        let now_ms = self.clock.now_ms();
        if let Some((store, kind)) = &self.shared {
            // Fail closed: a store that cannot answer knows no session.
            let text = match store
                .sessions
                .touch(kind, &sha256_hex(id.as_bytes()), now_ms, self.row_expiry())
            {
                Ok(text) => text?,
                Err(e) => {
                    tracing::error!(kind, error = %e, "a session could not be read from the store");
                    return None;
                }
            };
            return serde_json::from_str(&text).ok();
        }
        let mut entries = self.lock();
        let live = entries.get(id).is_some_and(|e| self.live(e, now_ms));
        if !live {
            entries.remove(id);
            return None;
        }
        let entry = entries.get_mut(id)?;
        entry.last_seen_ms = now_ms;
        Some(entry.value.clone())
    }

    /// Ends the session `id` if `may_end` agrees; `true` when it ended.
    pub fn close_if(&self, id: &str, may_end: impl FnOnce(&T) -> bool) -> bool {
        if let Some((store, kind)) = &self.shared {
            return match self.touch(id) {
                Some(value) if may_end(&value) => {
                    store.sessions.close(kind, &sha256_hex(id.as_bytes())).unwrap_or(false)
                }
                _ => false,
            };
        }
        let mut entries = self.lock();
        if entries.get(id).is_some_and(|e| may_end(&e.value)) {
            entries.remove(id);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::ManualClock;

    fn clock() -> Arc<ManualClock> {
        Arc::new(ManualClock::new(time::OffsetDateTime::UNIX_EPOCH))
    }

    #[test]
    fn an_idle_session_expires_on_the_injected_clock_and_use_extends_it() {
        let clock = clock();
        let table = SessionTable::new(clock.clone(), Expiry::IdleMs(1000), 10);
        table.open("s".into(), 7);
        clock.advance_ms(900);
        assert_eq!(table.touch("s"), Some(7));
        clock.advance_ms(900);
        assert_eq!(table.touch("s"), Some(7), "the last use moved the idle limit");
        clock.advance_ms(1000);
        assert_eq!(table.touch("s"), None);
    }

    #[test]
    fn an_absolute_session_ends_however_often_it_is_used() {
        let clock = clock();
        let table = SessionTable::new(clock.clone(), Expiry::AbsoluteMs(1000), 10);
        table.open("s".into(), "v".to_string());
        clock.advance_ms(600);
        assert_eq!(table.touch("s").as_deref(), Some("v"));
        clock.advance_ms(600);
        assert_eq!(table.touch("s"), None);
    }

    #[test]
    fn the_least_recently_used_session_goes_first_and_close_asks_the_owner() {
        let clock = clock();
        let table = SessionTable::new(clock.clone(), Expiry::IdleMs(60_000), 2);
        table.open("a".into(), 1);
        clock.advance_ms(1);
        table.open("b".into(), 2);
        clock.advance_ms(1);
        table.touch("a");
        table.open("c".into(), 3);
        assert_eq!(table.touch("b"), None, "b was least recently used");
        assert_eq!(table.touch("a"), Some(1));
        assert!(!table.close_if("a", |v| *v == 2), "another owner cannot end it");
        assert!(table.close_if("a", |v| *v == 1));
        assert_eq!(table.touch("a"), None);
    }
}
