//! Admission control (pipeline step 8, SPEC section 7): runs before any plugin or Cedar
//! work, and a refusal has no side effect.
//!
//! Token buckets keyed by (key, client address), as the reference keys its limiter. The
//! bucket refills continuously, so `Retry-After` is exact: a client that waits it out is
//! admitted.

use std::collections::HashMap;
use std::sync::Mutex;

/// A rate class: `requests` per `window_seconds`, with bursts up to `requests`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateClass {
    pub requests: u32,
    pub window_seconds: u32,
}

impl RateClass {
    /// The reference's limit: 240 requests per 60 s.
    pub const DEFAULT: RateClass = RateClass {
        requests: 240,
        window_seconds: 60,
    };

    fn per_ms(self) -> f64 {
        f64::from(self.requests) / (f64::from(self.window_seconds) * 1000.0)
    }
}

/// An admission refusal, with what the client needs to retry well.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub retry_after_ms: u64,
    pub class: RateClass,
    /// Requests left in the bucket (always 0 on refusal, kept for the header).
    pub remaining: u32,
}

impl Refusal {
    /// `Retry-After` in whole seconds, rounded up.
    pub fn retry_after_seconds(&self) -> u64 {
        self.retry_after_ms.div_ceil(1000).max(1)
    }

    /// `RateLimit-Policy` and `RateLimit` header values (IETF httpapi draft).
    pub fn headers(&self) -> [(&'static str, String); 2] {
        [
            (
                "RateLimit-Policy",
                format!("\"per-key\";q={};w={}", self.class.requests, self.class.window_seconds),
            ),
            (
                "RateLimit",
                format!("\"per-key\";r={};t={}", self.remaining, self.retry_after_seconds()),
            ),
        ]
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated_ms: i64,
}

/// Buckets per (key id, client address).
#[derive(Debug)]
pub struct Admission {
    class: RateClass,
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// Buckets kept before idle full ones are swept.
const SWEEP_AT: usize = 100_000;

impl Admission {
    pub fn new(class: RateClass) -> Self {
        Admission {
            class,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn class(&self) -> RateClass {
        self.class
    }

    /// Takes one token for `key` at `now_ms`, or says when to come back.
    pub fn admit(&self, key: &str, now_ms: i64) -> Result<(), Refusal> {
        let class = self.class;
        let capacity = f64::from(class.requests);
        let Ok(mut buckets) = self.buckets.lock() else {
            // A poisoned lock means a panic elsewhere: refuse rather than admit blindly.
            return Err(Refusal {
                retry_after_ms: 1000,
                class,
                remaining: 0,
            });
        };
        if buckets.len() >= SWEEP_AT {
            let per_ms = class.per_ms();
            buckets.retain(|_, b| b.tokens + (now_ms - b.updated_ms) as f64 * per_ms < capacity);
        }
        let bucket = buckets.entry(key.to_string()).or_insert(Bucket {
            tokens: capacity,
            updated_ms: now_ms,
        });
        let elapsed = (now_ms - bucket.updated_ms).max(0) as f64;
        bucket.tokens = (bucket.tokens + elapsed * class.per_ms()).min(capacity);
        bucket.updated_ms = now_ms.max(bucket.updated_ms);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let missing = 1.0 - bucket.tokens;
            let retry_after_ms = (missing / class.per_ms()).ceil() as u64;
            Err(Refusal {
                retry_after_ms,
                class,
                remaining: 0,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_meets_a_refusal_and_waiting_retry_after_is_enough() {
        let admission = Admission::new(RateClass {
            requests: 3,
            window_seconds: 60,
        });
        for _ in 0..3 {
            assert_eq!(admission.admit("k", 0), Ok(()));
        }
        let refusal = admission.admit("k", 0).expect_err("fourth call refused");
        assert_eq!(refusal.retry_after_ms, 20_000);
        assert_eq!(refusal.retry_after_seconds(), 20);
        assert!(admission.admit("k", 19_999).is_err());
        assert_eq!(admission.admit("k", 20_000), Ok(()));
        assert_eq!(admission.admit("other", 0), Ok(()), "buckets are per key");
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let r = Refusal {
            retry_after_ms: 1001,
            class: RateClass::DEFAULT,
            remaining: 0,
        };
        assert_eq!(r.retry_after_seconds(), 2);
        let r = Refusal {
            retry_after_ms: 1,
            class: RateClass::DEFAULT,
            remaining: 0,
        };
        assert_eq!(r.retry_after_seconds(), 1);
    }
}
