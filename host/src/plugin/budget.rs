//! Process-wide bounds on plugins (issue: security, finding 5): one memory budget shared
//! by every call, and a cap on each plugin's calls in flight.
//!
//! - **Memory.** A call's linear memory is reserved from the process-wide budget as it is
//!   created and as it grows (the store's async resource limiter), and given back when
//!   the call's store is dropped. A call whose growth cannot be reserved waits up to
//!   [`Budgets::wait`] for other calls to finish, then fails with
//!   [`CallError::Busy`]`(`[`Budget::Memory`]`)` (`503 agent.overloaded`). The per-call
//!   limit of the plugin's manifest still applies first.
//! - **Concurrency.** Each plugin has [`Limits::concurrency`] call slots; a call waits
//!   for one, then fails with `Busy(Concurrency)`. A hostile plugin
//!   hammered by many callers holds only its own slots, so the CPU and memory it can take
//!   from other tenants are bounded. Calls queue for a slot up to the plugin's own time
//!   budget (`timeout_ms`), so honest bursts wait their turn instead of failing.
//!
//! [`Limits::concurrency`]: super::Limits::concurrency

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::{ResourceLimiter, ResourceLimiterAsync, StoreLimits};

use super::CallError;
use crate::metrics::PluginBudgetMetrics;

/// Which budget refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    Memory,
    Concurrency,
}

impl Budget {
    pub fn name(self) -> &'static str {
        match self {
            Budget::Memory => "memory",
            Budget::Concurrency => "concurrency",
        }
    }
}

/// The memory budget's unit: a WebAssembly page.
const PAGE: usize = 64 * 1024;

/// The budgets every plugin call shares.
#[derive(Debug)]
pub struct Budgets {
    /// Free pages of the process-wide memory budget.
    pages: Arc<Semaphore>,
    total_pages: usize,
    /// How long a call waits for memory before it is refused.
    pub wait: Duration,
    metrics: PluginBudgetMetrics,
}

impl Default for Budgets {
    /// The config's defaults: 1 GiB, and half a second's wait.
    fn default() -> Self {
        Budgets::new(1 << 30, Duration::from_millis(500), PluginBudgetMetrics::default())
    }
}

impl Budgets {
    pub fn new(memory_bytes: usize, wait: Duration, metrics: PluginBudgetMetrics) -> Budgets {
        let total_pages = (memory_bytes / PAGE).min(Semaphore::MAX_PERMITS);
        Budgets {
            pages: Arc::new(Semaphore::new(total_pages)),
            total_pages,
            wait,
            metrics,
        }
    }

    /// Bytes reserved by calls in flight.
    pub fn reserved_bytes(&self) -> usize {
        (self.total_pages - self.pages.available_permits()) * PAGE
    }

    /// Counts a refusal and says which budget it was.
    pub fn refused(&self, plugin: &str, budget: Budget) -> CallError {
        self.metrics.refused(plugin, budget.name());
        CallError::Busy(budget)
    }

    fn publish(&self) {
        self.metrics.reserved(self.reserved_bytes());
    }
}

/// A plugin's call slots.
#[derive(Debug)]
pub struct Slots(Arc<Semaphore>);

impl Slots {
    pub fn new(concurrency: u32) -> Slots {
        Slots(Arc::new(Semaphore::new(concurrency.max(1) as usize)))
    }

    /// A slot, waiting up to `wait` for one.
    pub async fn take(&self, wait: Duration) -> Option<OwnedSemaphorePermit> {
        if let Ok(slot) = self.0.clone().try_acquire_owned() {
            return Some(slot);
        }
        tokio::time::timeout(wait, self.0.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
    }
}

/// One call's limiter: the plugin's own limits, then the shared memory budget.
pub struct CallLimiter {
    own: StoreLimits,
    budgets: Arc<Budgets>,
    /// Pages this call holds; returned when the store (and this) is dropped.
    held: Option<OwnedSemaphorePermit>,
    /// The shared budget refused a growth: the call fails as `Busy(Memory)`.
    pub starved: bool,
}

impl CallLimiter {
    pub fn new(own: StoreLimits, budgets: Arc<Budgets>) -> CallLimiter {
        CallLimiter {
            own,
            budgets,
            held: None,
            starved: false,
        }
    }

    /// Bytes of the shared budget this call's instance holds.
    pub fn held_bytes(&self) -> usize {
        self.held.as_ref().map_or(0, |p| p.num_permits() * PAGE)
    }

    async fn reserve(&mut self, pages: u32) -> bool {
        let semaphore = self.budgets.pages.clone();
        let permit = match semaphore.clone().try_acquire_many_owned(pages) {
            Ok(permit) => Some(permit),
            Err(_) => tokio::time::timeout(self.budgets.wait, semaphore.acquire_many_owned(pages))
                .await
                .ok()
                .and_then(Result::ok),
        };
        let Some(permit) = permit else {
            return false;
        };
        match &mut self.held {
            Some(held) => held.merge(permit),
            None => self.held = Some(permit),
        }
        self.budgets.publish();
        true
    }
}

impl Drop for CallLimiter {
    fn drop(&mut self) {
        drop(self.held.take());
        self.budgets.publish();
    }
}

#[async_trait::async_trait]
impl ResourceLimiterAsync for CallLimiter {
    async fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // The plugin's own limit first (it traps past it: `OutOfMemory`).
        if !self.own.memory_growing(current, desired, maximum)? {
            return Ok(false);
        }
        let pages = desired.saturating_sub(current).div_ceil(PAGE);
        let Ok(pages) = u32::try_from(pages) else {
            return Ok(false);
        };
        if pages == 0 || self.reserve(pages).await {
            return Ok(true);
        }
        self.starved = true;
        Err(wasmtime::Error::msg(
            "the process-wide plugin memory budget stayed exhausted",
        ))
    }

    async fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.own.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.own.instances()
    }

    fn tables(&self) -> usize {
        self.own.tables()
    }

    fn memories(&self) -> usize {
        self.own.memories()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::StoreLimitsBuilder;

    fn budgets(mib: usize) -> Arc<Budgets> {
        Arc::new(Budgets::new(
            mib << 20,
            Duration::from_millis(50),
            PluginBudgetMetrics::default(),
        ))
    }

    fn limiter(budgets: &Arc<Budgets>) -> CallLimiter {
        CallLimiter::new(StoreLimitsBuilder::new().memory_size(64 << 20).build(), budgets.clone())
    }

    #[tokio::test]
    async fn memory_is_reserved_as_it_grows_and_returned_when_the_call_ends() {
        let b = budgets(8);
        let mut call = limiter(&b);
        assert!(call.memory_growing(0, 2 << 20, None).await.expect("grow"));
        assert!(call.memory_growing(2 << 20, 5 << 20, None).await.expect("grow"));
        assert_eq!(b.reserved_bytes(), 5 << 20);
        drop(call);
        assert_eq!(b.reserved_bytes(), 0);
    }

    #[tokio::test]
    async fn a_call_that_cannot_get_memory_waits_then_fails_starved() {
        let b = budgets(8);
        let mut first = limiter(&b);
        assert!(first.memory_growing(0, 6 << 20, None).await.expect("grow"));
        let mut second = limiter(&b);
        assert!(second.memory_growing(0, 4 << 20, None).await.is_err());
        assert!(second.starved);
        assert_eq!(b.reserved_bytes(), 6 << 20, "a refused growth holds nothing");
    }

    #[tokio::test]
    async fn a_waiting_call_gets_memory_another_call_gave_back() {
        let b = Arc::new(Budgets::new(
            8 << 20,
            Duration::from_secs(5),
            PluginBudgetMetrics::default(),
        ));
        let mut first = limiter(&b);
        assert!(first.memory_growing(0, 6 << 20, None).await.expect("grow"));
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move {
                let mut second = limiter(&b);
                second
                    .memory_growing(0, 4 << 20, None)
                    .await
                    .expect("grow after waiting")
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(first);
        assert!(waiter.await.expect("join"));
    }

    #[tokio::test]
    async fn the_plugin_limit_still_applies_first() {
        let b = budgets(1024);
        let mut call = CallLimiter::new(
            StoreLimitsBuilder::new()
                .memory_size(1 << 20)
                .trap_on_grow_failure(true)
                .build(),
            b.clone(),
        );
        assert!(call.memory_growing(0, 2 << 20, None).await.is_err());
        assert!(!call.starved, "the plugin's own limit is not the shared budget");
        assert_eq!(b.reserved_bytes(), 0);
    }

    #[tokio::test]
    async fn slots_cap_a_plugins_calls_in_flight() {
        let slots = Slots::new(2);
        let a = slots.take(Duration::from_millis(10)).await.expect("slot");
        let _b = slots.take(Duration::from_millis(10)).await.expect("slot");
        assert!(slots.take(Duration::from_millis(10)).await.is_none());
        drop(a);
        assert!(slots.take(Duration::from_millis(10)).await.is_some());
    }
}
