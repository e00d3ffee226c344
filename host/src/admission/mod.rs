//! Admission control (pipeline step 8, SPEC section 7). It runs before any plugin or Cedar
//! work, and a refusal has no side effect: every limit is checked first and tokens are
//! taken only when all of them pass.
//!
//! Limits, for the app's rate class:
//! - a token bucket per key and client address (the reference keys its limiter so),
//! - a token bucket per app (integration), across its keys and addresses,
//! - a token bucket per key and tool,
//! - a token bucket per tenant,
//! - a quota per app and fixed window (a day by default),
//! - a cap on calls in flight per app,
//! - and a global cap on calls in flight, which sheds with `agent.overloaded`.
//!
//! Before any of that, before authentication: a token bucket per client address that only
//! requests refused before authentication spend (a bad token, an unknown route, a body
//! that does not parse). An address that spent it is refused at once, without looking at
//! its request, until the bucket refills; well-behaved clients never touch it.
//!
//! Buckets refill continuously, so `Retry-After` is exact: a client that waits it out is
//! admitted. Limits can be replaced at run time ([`Admission::set_limits`]); bucket state
//! carries over.
//!
//! Nodes sharing a store split every per-key, per-app, per-tool and per-tenant limit, the
//! quota and the per-app concurrency cap between them ([`Admission::set_nodes`]): with N
//! nodes alive each admits 1/N of a bucket's rate and burst (at least one request), and
//! `ceil(1/N)` of a quota or cap. The cluster never admits more than a limit (a quota or
//! cap: at most N - 1 over, from rounding up); it admits less when the balancer sends one
//! node more than its share. docs/operations.md states the tolerance.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// A token bucket's shape: `requests` per `window_seconds`, bursts up to `requests`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub requests: u32,
    pub window_seconds: u32,
}

impl Rate {
    /// The reference's limit: 240 requests per 60 s.
    pub const DEFAULT: Rate = Rate {
        requests: 240,
        window_seconds: 60,
    };

    /// One node's share of this rate, of `nodes`: a bucket's burst and refill, divided.
    fn share(self, nodes: usize) -> Share {
        let nodes = nodes.max(1) as f64;
        Share {
            capacity: (f64::from(self.requests) / nodes).max(1.0),
            per_ms: f64::from(self.requests) / (f64::from(self.window_seconds) * 1000.0) / nodes,
        }
    }
}

/// A bucket's shape on one node: its burst and its refill per millisecond.
#[derive(Debug, Clone, Copy)]
struct Share {
    capacity: f64,
    per_ms: f64,
}

/// One node's share of a count (a quota, a cap), rounded up so each node admits some.
fn count_share(count: u32, nodes: usize) -> u32 {
    let nodes = u32::try_from(nodes.max(1)).unwrap_or(u32::MAX);
    count.div_ceil(nodes)
}

/// The limits of one rate class. `None` switches a limit off.
#[derive(Debug, Clone, PartialEq)]
pub struct RateClass {
    pub per_key: Rate,
    pub per_app: Option<Rate>,
    pub per_tool: Option<Rate>,
    pub per_tenant: Option<Rate>,
    pub quota: Option<Rate>,
    pub concurrency: Option<u32>,
}

impl Default for RateClass {
    fn default() -> Self {
        RateClass {
            per_key: Rate::DEFAULT,
            per_app: None,
            per_tool: None,
            per_tenant: None,
            quota: None,
            concurrency: Some(64),
        }
    }
}

/// Every limit, as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// The class of apps that name none (or an unknown one).
    pub default: RateClass,
    /// Named classes an app can be put in (`policy.rate_class`).
    pub classes: BTreeMap<String, RateClass>,
    /// Requests in flight across the gateway before it sheds load.
    pub max_in_flight: usize,
    /// Refusals before authentication a client address may cause; `None`: unlimited.
    pub unauthenticated: Option<Rate>,
}

impl Limits {
    /// 200 refusals before authentication per address, refilled over 10 s (20 a second).
    pub const DEFAULT_UNAUTHENTICATED: Rate = Rate {
        requests: 200,
        window_seconds: 10,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            default: RateClass::default(),
            classes: BTreeMap::new(),
            max_in_flight: 1024,
            unauthenticated: Some(Limits::DEFAULT_UNAUTHENTICATED),
        }
    }
}

impl Limits {
    pub fn class(&self, name: Option<&str>) -> &RateClass {
        name.and_then(|n| self.classes.get(n)).unwrap_or(&self.default)
    }
}

/// Which limit refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    PerKey,
    PerApp,
    PerTool,
    PerTenant,
    Quota,
    Concurrency,
    Overloaded,
    /// The client address's budget of refusals before authentication.
    Unauthenticated,
}

impl Limit {
    pub const ALL: [Limit; 8] = [
        Limit::PerKey,
        Limit::PerApp,
        Limit::PerTool,
        Limit::PerTenant,
        Limit::Quota,
        Limit::Concurrency,
        Limit::Overloaded,
        Limit::Unauthenticated,
    ];

    /// The `RateLimit-Policy` name.
    pub fn name(self) -> &'static str {
        match self {
            Limit::PerKey => "per-key",
            Limit::PerApp => "per-app",
            Limit::PerTool => "per-tool",
            Limit::PerTenant => "per-tenant",
            Limit::Quota => "quota",
            Limit::Concurrency => "concurrency",
            Limit::Overloaded => "global",
            Limit::Unauthenticated => "per-address-unauthenticated",
        }
    }
}

/// An admission refusal, with what the client needs to retry well.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub limit: Limit,
    pub retry_after_ms: u64,
    /// The limit's shape, for the `RateLimit-Policy` header.
    pub rate: Option<Rate>,
}

impl Refusal {
    /// `Retry-After` in whole seconds, rounded up (at least 1).
    pub fn retry_after_seconds(&self) -> u64 {
        self.retry_after_ms.div_ceil(1000).max(1)
    }

    /// `RateLimit-Policy` and `RateLimit` header values (IETF httpapi ratelimit-headers).
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let name = self.limit.name();
        let mut out = Vec::new();
        if let Some(rate) = self.rate {
            out.push((
                "RateLimit-Policy",
                format!("\"{name}\";q={};w={}", rate.requests, rate.window_seconds),
            ));
        }
        out.push(("RateLimit", format!("\"{name}\";r=0;t={}", self.retry_after_seconds())));
        out
    }
}

/// Who is asking, for admission.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub app_id: &'a str,
    pub key_id: &'a str,
    pub tenant: &'a str,
    pub client: &'a str,
    /// The route or action named in the request, if any (resolved at step 9, but named
    /// here so per-tool limits need no plugin work).
    pub tool: Option<&'a str>,
    pub class: Option<&'a str>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated_ms: i64,
}

impl Bucket {
    /// Tokens now, after refilling.
    fn level(&self, rate: Share, now_ms: i64) -> f64 {
        let elapsed = (now_ms - self.updated_ms).max(0) as f64;
        (self.tokens + elapsed * rate.per_ms).min(rate.capacity)
    }

    /// Takes one token, after refilling.
    fn spend(&mut self, rate: Share, now_ms: i64) {
        self.tokens = self.level(rate, now_ms) - 1.0;
        self.updated_ms = now_ms.max(self.updated_ms);
    }
}

#[derive(Debug, Default)]
struct Buckets {
    map: HashMap<String, Bucket>,
}

/// `owner|part`, a bucket's key (joined without `format!`, which costs several times as
/// much on every admitted request).
fn bucket_key(owner: &str, part: &str) -> String {
    [owner, "|", part].concat()
}

/// Buckets kept before idle full ones are swept.
const SWEEP_AT: usize = 100_000;

impl Buckets {
    /// Milliseconds until a token is available; 0 when one is.
    fn wait_ms(&self, key: &str, rate: Share, now_ms: i64) -> u64 {
        let level = self.map.get(key).map_or(rate.capacity, |b| b.level(rate, now_ms));
        if level >= 1.0 {
            0
        } else {
            ((1.0 - level) / rate.per_ms).ceil() as u64
        }
    }

    fn take(&mut self, key: &str, rate: Share, now_ms: i64) {
        if self.map.len() >= SWEEP_AT {
            self.map.retain(|_, b| b.level(rate, now_ms) < rate.capacity);
        }
        // The key is copied only for a new bucket: most calls find theirs.
        if let Some(bucket) = self.map.get_mut(key) {
            bucket.spend(rate, now_ms);
        } else {
            let mut bucket = Bucket {
                tokens: rate.capacity,
                updated_ms: now_ms,
            };
            bucket.spend(rate, now_ms);
            self.map.insert(key.to_string(), bucket);
        }
    }
}

#[derive(Debug, Default)]
struct State {
    per_key: Buckets,
    per_app: Buckets,
    per_tool: Buckets,
    per_tenant: Buckets,
    /// app → (window index, calls in it)
    quota: HashMap<String, (i64, u32)>,
    /// app → calls in flight
    in_flight: HashMap<String, u32>,
    /// client address → its budget of refusals before authentication
    unauthenticated: Buckets,
}

/// Admission control for the agent plane.
#[derive(Debug)]
pub struct Admission {
    limits: RwLock<Arc<Limits>>,
    state: Arc<Mutex<State>>,
    global: Arc<AtomicUsize>,
    /// Nodes alive that share the limits (1 on the embedded store).
    nodes: AtomicUsize,
}

/// Held while a request runs; releases its in-flight slots when dropped.
#[derive(Debug)]
pub struct Permit {
    state: Arc<Mutex<State>>,
    global: Arc<AtomicUsize>,
    app_id: String,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.global.fetch_sub(1, Ordering::AcqRel);
        if let Ok(mut state) = self.state.lock()
            && let Some(n) = state.in_flight.get_mut(&self.app_id)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                state.in_flight.remove(&self.app_id);
            }
        }
    }
}

impl Admission {
    pub fn new(limits: Limits) -> Self {
        Admission {
            limits: RwLock::new(Arc::new(limits)),
            state: Arc::new(Mutex::new(State::default())),
            global: Arc::new(AtomicUsize::new(0)),
            nodes: AtomicUsize::new(1),
        }
    }

    /// How many nodes share the limits now; each admits its share.
    pub fn set_nodes(&self, nodes: usize) {
        self.nodes.store(nodes.max(1), Ordering::Release);
    }

    pub fn limits(&self) -> Arc<Limits> {
        self.limits
            .read()
            .map_or_else(|p| p.into_inner().clone(), |g| g.clone())
    }

    /// Replaces the limits; bucket state carries over.
    pub fn set_limits(&self, limits: Limits) {
        let mut guard = self.limits.write().unwrap_or_else(|p| p.into_inner());
        *guard = Arc::new(limits);
    }

    /// Calls in flight across the gateway.
    pub fn in_flight(&self) -> usize {
        self.global.load(Ordering::Acquire)
    }

    /// The count behind [`Admission::in_flight`], for the audit writer's batching.
    pub fn in_flight_counter(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.global)
    }

    /// Before authentication: refuses an address that spent its budget of refusals.
    pub fn admit_address(&self, client: &str, now_ms: i64) -> Result<(), Refusal> {
        let Some(rate) = self.limits().unauthenticated else {
            return Ok(());
        };
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        // Per node: it protects this node's work, whatever the others see.
        match state.unauthenticated.wait_ms(client, rate.share(1), now_ms) {
            0 => Ok(()),
            wait => Err(Refusal {
                limit: Limit::Unauthenticated,
                retry_after_ms: wait,
                rate: Some(rate),
            }),
        }
    }

    /// Spends one of the address's refusals before authentication.
    pub fn charge_address(&self, client: &str, now_ms: i64) {
        if let Some(rate) = self.limits().unauthenticated {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.unauthenticated.take(client, rate.share(1), now_ms);
        }
    }

    /// Admits a call at `now_ms`, or says which limit refused and when to come back.
    pub fn admit(&self, caller: &Caller<'_>, now_ms: i64) -> Result<Permit, Refusal> {
        let limits = self.limits();
        // Shedding first: it is the cheapest answer when the gateway is saturated.
        if self.global.fetch_add(1, Ordering::AcqRel) >= limits.max_in_flight {
            self.global.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal {
                limit: Limit::Overloaded,
                retry_after_ms: 1000,
                rate: None,
            });
        }
        let refuse = |refusal: Refusal| {
            self.global.fetch_sub(1, Ordering::AcqRel);
            Err(refusal)
        };
        let class = limits.class(caller.class);
        let nodes = self.nodes.load(Ordering::Acquire);
        let Ok(mut state) = self.state.lock() else {
            // A poisoned lock means a panic elsewhere: refuse rather than admit blindly.
            return refuse(Refusal {
                limit: Limit::Overloaded,
                retry_after_ms: 1000,
                rate: None,
            });
        };
        if let Some(cap) = class.concurrency
            && state.in_flight.get(caller.app_id).copied().unwrap_or(0) >= count_share(cap, nodes)
        {
            return refuse(Refusal {
                limit: Limit::Concurrency,
                retry_after_ms: 1000,
                rate: None,
            });
        }
        let key_bucket = bucket_key(caller.key_id, caller.client);
        let tool_bucket = caller.tool.map(|t| bucket_key(caller.key_id, t));
        // Check every limit before taking anything, so a refusal changes no state.
        let mut worst: Option<Refusal> = None;
        let mut consider = |limit: Limit, rate: Rate, wait: u64| {
            if wait > 0 && worst.as_ref().is_none_or(|w| wait > w.retry_after_ms) {
                worst = Some(Refusal {
                    limit,
                    retry_after_ms: wait,
                    rate: Some(rate),
                });
            }
        };
        consider(
            Limit::PerKey,
            class.per_key,
            state.per_key.wait_ms(&key_bucket, class.per_key.share(nodes), now_ms),
        );
        if let Some(rate) = class.per_app {
            consider(
                Limit::PerApp,
                rate,
                state.per_app.wait_ms(caller.app_id, rate.share(nodes), now_ms),
            );
        }
        if let (Some(rate), Some(key)) = (class.per_tool, &tool_bucket) {
            consider(
                Limit::PerTool,
                rate,
                state.per_tool.wait_ms(key, rate.share(nodes), now_ms),
            );
        }
        if let Some(rate) = class.per_tenant {
            consider(
                Limit::PerTenant,
                rate,
                state.per_tenant.wait_ms(caller.tenant, rate.share(nodes), now_ms),
            );
        }
        let quota_window = class.quota.map(|q| {
            let window_ms = i64::from(q.window_seconds) * 1000;
            (q, now_ms.div_euclid(window_ms), window_ms)
        });
        if let Some((quota, index, window_ms)) = quota_window {
            let used = match state.quota.get(caller.app_id) {
                Some((i, n)) if *i == index => *n,
                _ => 0,
            };
            if used >= count_share(quota.requests, nodes) {
                let until_end = (index + 1) * window_ms - now_ms;
                let wait = u64::try_from(until_end).unwrap_or(1).max(1);
                // A quota refusal wins over bucket waits: it is the longer story.
                worst = Some(Refusal {
                    limit: Limit::Quota,
                    retry_after_ms: wait,
                    rate: Some(quota),
                });
            }
        }
        if let Some(refusal) = worst {
            drop(state);
            return refuse(refusal);
        }
        state.per_key.take(&key_bucket, class.per_key.share(nodes), now_ms);
        if let Some(rate) = class.per_app {
            state.per_app.take(caller.app_id, rate.share(nodes), now_ms);
        }
        if let (Some(rate), Some(key)) = (class.per_tool, &tool_bucket) {
            state.per_tool.take(key, rate.share(nodes), now_ms);
        }
        if let Some(rate) = class.per_tenant {
            state.per_tenant.take(caller.tenant, rate.share(nodes), now_ms);
        }
        if let Some((_, index, _)) = quota_window {
            let entry = state.quota.entry(caller.app_id.to_string()).or_insert((index, 0));
            if entry.0 != index {
                *entry = (index, 0);
            }
            entry.1 += 1;
        }
        *state.in_flight.entry(caller.app_id.to_string()).or_insert(0) += 1;
        Ok(Permit {
            state: self.state.clone(),
            global: self.global.clone(),
            app_id: caller.app_id.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(tool: Option<&'static str>) -> Caller<'static> {
        Caller {
            app_id: "app",
            key_id: "key",
            tenant: "org",
            client: "127.0.0.1",
            tool,
            class: None,
        }
    }

    fn limits(class: RateClass) -> Limits {
        Limits {
            default: class,
            classes: BTreeMap::new(),
            max_in_flight: 100,
            unauthenticated: Some(Limits::DEFAULT_UNAUTHENTICATED),
        }
    }

    #[test]
    fn an_address_that_spent_its_refusals_is_refused_before_authentication() {
        let admission = Admission::new(limits(RateClass::default()));
        for _ in 0..200 {
            admission.admit_address("192.0.2.1", 0).expect("within budget");
            admission.charge_address("192.0.2.1", 0);
        }
        let refusal = admission.admit_address("192.0.2.1", 0).expect_err("budget spent");
        assert_eq!(refusal.limit, Limit::Unauthenticated);
        assert_eq!(refusal.retry_after_ms, 50, "one refusal back every 50 ms (20 a second)");
        admission
            .admit_address("192.0.2.2", 0)
            .expect("another address has its own budget");
        admission.admit_address("192.0.2.1", 50).expect("refilled");
    }

    #[test]
    fn a_burst_meets_a_refusal_and_waiting_retry_after_is_enough() {
        let admission = Admission::new(limits(RateClass {
            per_key: Rate {
                requests: 3,
                window_seconds: 60,
            },
            ..RateClass::default()
        }));
        for _ in 0..3 {
            drop(admission.admit(&caller(None), 0).expect("admitted"));
        }
        let refusal = admission.admit(&caller(None), 0).expect_err("fourth call refused");
        assert_eq!((refusal.limit, refusal.retry_after_ms), (Limit::PerKey, 20_000));
        assert_eq!(refusal.retry_after_seconds(), 20);
        assert!(admission.admit(&caller(None), 19_999).is_err());
        assert!(admission.admit(&caller(None), 20_000).is_ok());
        let other = Caller {
            key_id: "other",
            ..caller(None)
        };
        assert!(admission.admit(&other, 0).is_ok(), "buckets are per key");
    }

    #[test]
    fn a_refusal_takes_no_token_from_the_limits_that_passed() {
        let admission = Admission::new(limits(RateClass {
            per_key: Rate {
                requests: 10,
                window_seconds: 10,
            },
            per_tool: Some(Rate {
                requests: 1,
                window_seconds: 10,
            }),
            ..RateClass::default()
        }));
        drop(admission.admit(&caller(Some("ledgers")), 0).expect("first"));
        for _ in 0..5 {
            let refusal = admission.admit(&caller(Some("ledgers")), 0).expect_err("per tool");
            assert_eq!(refusal.limit, Limit::PerTool);
        }
        // Nine key tokens remain: the five refusals took none.
        let tools: Vec<String> = (0..9).map(|i| format!("tool{i}")).collect();
        for tool in &tools {
            let c = Caller {
                tool: Some(tool),
                ..caller(None)
            };
            drop(admission.admit(&c, 0).expect("per key still has tokens"));
        }
        let c = Caller {
            tool: Some("tool-x"),
            ..caller(None)
        };
        assert_eq!(
            admission.admit(&c, 0).expect_err("key bucket empty").limit,
            Limit::PerKey
        );
    }

    #[test]
    fn quotas_refuse_until_the_window_ends() {
        let admission = Admission::new(limits(RateClass {
            quota: Some(Rate {
                requests: 2,
                window_seconds: 100,
            }),
            ..RateClass::default()
        }));
        drop(admission.admit(&caller(None), 10_000).expect("1"));
        drop(admission.admit(&caller(None), 10_000).expect("2"));
        let refusal = admission.admit(&caller(None), 10_000).expect_err("quota");
        assert_eq!((refusal.limit, refusal.retry_after_ms), (Limit::Quota, 90_000));
        assert!(admission.admit(&caller(None), 100_000).is_ok(), "a new window");
    }

    #[test]
    fn concurrency_and_global_caps_count_calls_in_flight() {
        let admission = Admission::new(Limits {
            default: RateClass {
                concurrency: Some(2),
                ..RateClass::default()
            },
            classes: BTreeMap::new(),
            max_in_flight: 3,
            unauthenticated: None,
        });
        let a = admission.admit(&caller(None), 0).expect("1");
        let _b = admission.admit(&caller(None), 0).expect("2");
        assert_eq!(
            admission.admit(&caller(None), 0).expect_err("cap").limit,
            Limit::Concurrency
        );
        let _c = admission
            .admit(
                &Caller {
                    app_id: "other",
                    ..caller(None)
                },
                0,
            )
            .expect("3");
        assert_eq!(
            admission
                .admit(
                    &Caller {
                        app_id: "third",
                        ..caller(None)
                    },
                    0
                )
                .expect_err("shed")
                .limit,
            Limit::Overloaded
        );
        drop(a);
        assert_eq!(admission.in_flight(), 2);
        assert!(admission.admit(&caller(None), 0).is_ok());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let r = Refusal {
            limit: Limit::PerKey,
            retry_after_ms: 1001,
            rate: Some(Rate::DEFAULT),
        };
        assert_eq!(r.retry_after_seconds(), 2);
        assert_eq!(
            r.headers()[0],
            ("RateLimit-Policy", "\"per-key\";q=240;w=60".to_string())
        );
    }

    #[test]
    fn nodes_sharing_a_store_each_admit_their_share_and_never_more_together() {
        let admission = Admission::new(limits(RateClass {
            per_key: Rate {
                requests: 30,
                window_seconds: 60,
            },
            quota: Some(Rate {
                requests: 20,
                window_seconds: 86_400,
            }),
            ..RateClass::default()
        }));
        admission.set_nodes(3);
        let admitted = (0..30).filter(|_| admission.admit(&caller(None), 0).is_ok()).count();
        assert_eq!(
            admitted, 7,
            "a third of the quota (20), rounded up, before the key's 10"
        );
        let other = Admission::new(limits(RateClass {
            per_key: Rate {
                requests: 30,
                window_seconds: 60,
            },
            ..RateClass::default()
        }));
        other.set_nodes(3);
        let admitted = (0..30).filter(|_| other.admit(&caller(None), 0).is_ok()).count();
        assert_eq!(admitted, 10, "a third of the key's burst");
        // The refill is a third too: 30 a minute over 3 nodes is one every 6 s here.
        let refusal = other.admit(&caller(None), 0).expect_err("empty");
        assert_eq!(refusal.retry_after_ms, 6000);
        other.set_nodes(1);
        assert!(other.admit(&caller(None), 6000).is_ok());
    }
}
