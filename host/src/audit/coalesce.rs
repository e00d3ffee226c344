//! Refusal coalescing: under a flood, refusals before authentication or admission become
//! summary events instead of one event each (issue: performance, decision 3).
//!
//! Per source (client address and code), the first `budget` refusals of each second are
//! recorded in full. Beyond that, and for every refusal of a second that follows one over
//! budget (a source still flooding), the refusal only counts towards the source's pending
//! summary: code, source, count, first and last request id and time. [`Coalescer::drain`]
//! takes the pending summaries; the server writes them once a second, so a flooding source
//! costs at most one summary event a second. Every refusal is accounted for: the full
//! events plus the summaries' counts add up to the requests refused.
//!
//! The table is bounded: past [`MAX_SOURCES`] sources, new ones share one overflow source
//! (no address), so a flood from many addresses cannot grow memory without bound.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use serde_json::json;

use super::AuditEvent;
use crate::clock;
use crate::protocol::codes::Code;

/// Distinct sources tracked before new ones share the overflow source.
const MAX_SOURCES: usize = 10_000;

/// Whether a refusal gets its own event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coalesced {
    /// Record it in full.
    Record,
    /// Counted in its source's summary; write no event for it.
    Summarized,
}

/// Refusals of one source, coalesced into one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The client address; `None` for the overflow source.
    pub source: Option<IpAddr>,
    pub code: Code,
    pub count: u64,
    pub first_request_id: String,
    /// Unix milliseconds: formatted once, when the summary is written, not per refusal.
    pub first_at_ms: i64,
    pub last_request_id: String,
    pub last_at_ms: i64,
}

impl Summary {
    /// The summary's audit event: the code and status of the refusals it stands for.
    pub fn into_event(self, created_at: String) -> AuditEvent {
        let mut event = AuditEvent::new("agent.refusals.coalesced", self.code, created_at);
        event.ip = self.source.map(|ip| ip.to_string());
        event.details.extend(
            json!({
                "count": self.count,
                "firstRequestId": self.first_request_id,
                "firstAt": clock::iso_ms(self.first_at_ms),
                "lastRequestId": self.last_request_id,
                "lastAt": clock::iso_ms(self.last_at_ms),
            })
            .as_object()
            .cloned()
            .unwrap_or_default(),
        );
        event
    }
}

#[derive(Debug)]
struct Window {
    /// The second (Unix time) being counted, and refusals seen in it.
    second: i64,
    seen: u32,
    /// The previous counted second went over budget: the source is still flooding.
    flooding: bool,
    pending: Option<Summary>,
}

/// The per-source windows. `budget == 0` turns coalescing off.
#[derive(Debug)]
pub struct Coalescer {
    budget: u32,
    windows: Mutex<HashMap<(Option<IpAddr>, &'static str), Window>>,
}

impl Coalescer {
    pub fn new(budget_per_second: u32) -> Coalescer {
        Coalescer {
            budget: budget_per_second,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one refusal of `source` with `code` at `now_ms` and says whether it gets an
    /// event of its own.
    pub fn note(&self, source: IpAddr, code: Code, request_id: &str, now_ms: i64) -> Coalesced {
        if self.budget == 0 {
            return Coalesced::Record;
        }
        let second = now_ms.div_euclid(1000);
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let mut key = (Some(source), code.name);
        if !windows.contains_key(&key) && windows.len() >= MAX_SOURCES {
            key.0 = None;
        }
        let window = windows.entry(key).or_insert(Window {
            second,
            seen: 0,
            flooding: false,
            pending: None,
        });
        if window.second != second {
            window.flooding = window.second == second - 1 && window.seen > self.budget;
            window.second = second;
            window.seen = 0;
        }
        window.seen = window.seen.saturating_add(1);
        if !window.flooding && window.seen <= self.budget {
            return Coalesced::Record;
        }
        match &mut window.pending {
            Some(summary) => {
                summary.count += 1;
                // Reuses the buffer: a flood's refusals cost no allocation here.
                summary.last_request_id.clear();
                summary.last_request_id.push_str(request_id);
                summary.last_at_ms = now_ms;
            }
            None => {
                window.pending = Some(Summary {
                    source: key.0,
                    code,
                    count: 1,
                    first_request_id: request_id.to_string(),
                    first_at_ms: now_ms,
                    last_request_id: request_id.to_string(),
                    last_at_ms: now_ms,
                });
            }
        }
        Coalesced::Summarized
    }

    /// Takes every pending summary, and forgets sources quiet since before `now_ms`'s
    /// previous second.
    pub fn drain(&self, now_ms: i64) -> Vec<Summary> {
        let second = now_ms.div_euclid(1000);
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let summaries: Vec<Summary> = windows.values_mut().filter_map(|w| w.pending.take()).collect();
        windows.retain(|_, w| w.second >= second - 1);
        summaries
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::codes;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    fn flood(c: &Coalescer, source: IpAddr, code: Code, n: u32, at_ms: i64) -> (u32, u32) {
        let mut recorded = 0;
        let mut summarized = 0;
        for i in 0..n {
            match c.note(source, code, &format!("req_{i}"), at_ms) {
                Coalesced::Record => recorded += 1,
                Coalesced::Summarized => summarized += 1,
            }
        }
        (recorded, summarized)
    }

    #[test]
    fn within_budget_every_refusal_is_recorded() {
        let c = Coalescer::new(20);
        assert_eq!(flood(&c, A, codes::TOKEN_INVALID, 20, 1_000), (20, 0));
        assert!(c.drain(1_500).is_empty());
    }

    #[test]
    fn beyond_budget_refusals_are_counted_in_one_summary_that_adds_up() {
        let c = Coalescer::new(20);
        assert_eq!(flood(&c, A, codes::TOKEN_INVALID, 500, 1_000), (20, 480));
        let summaries = c.drain(1_900);
        assert_eq!(summaries.len(), 1);
        let s = &summaries[0];
        assert_eq!((s.source, s.code.name, s.count), (Some(A), "agent.token_invalid", 480));
        assert_eq!(
            (s.first_request_id.as_str(), s.last_request_id.as_str()),
            ("req_20", "req_499")
        );
        assert!(c.drain(1_950).is_empty(), "a drained summary is not written twice");
    }

    #[test]
    fn a_summary_event_names_its_first_and_last_refusal_with_their_times() {
        let c = Coalescer::new(20);
        flood(&c, A, codes::TOKEN_INVALID, 21, 1_000);
        assert_eq!(
            c.note(A, codes::TOKEN_INVALID, "req_last", 1_250),
            Coalesced::Summarized
        );
        let mut summaries = c.drain(1_900);
        let event = summaries.pop().expect("one summary").into_event("now".into());
        assert_eq!(event.action, "agent.refusals.coalesced");
        assert_eq!(event.ip.as_deref(), Some("192.0.2.1"));
        assert_eq!(
            serde_json::Value::Object(event.details),
            json!({
                "count": 2,
                "firstRequestId": "req_20",
                "firstAt": "1970-01-01T00:00:01.000Z",
                "lastRequestId": "req_last",
                "lastAt": "1970-01-01T00:00:01.250Z",
            })
        );
    }

    #[test]
    fn a_source_still_flooding_next_second_gets_no_full_events() {
        let c = Coalescer::new(20);
        flood(&c, A, codes::TOKEN_INVALID, 100, 1_000);
        c.drain(1_999);
        assert_eq!(flood(&c, A, codes::TOKEN_INVALID, 100, 2_000), (0, 100));
        // A quiet second ends the flood: the budget applies again.
        assert_eq!(flood(&c, A, codes::TOKEN_INVALID, 5, 4_000), (5, 0));
    }

    #[test]
    fn sources_and_codes_have_their_own_budgets() {
        let c = Coalescer::new(20);
        flood(&c, A, codes::TOKEN_INVALID, 100, 1_000);
        assert_eq!(flood(&c, B, codes::TOKEN_INVALID, 20, 1_000), (20, 0));
        assert_eq!(flood(&c, A, codes::NOT_FOUND, 20, 1_000), (20, 0));
    }

    #[test]
    fn a_zero_budget_records_everything() {
        let c = Coalescer::new(0);
        assert_eq!(flood(&c, A, codes::TOKEN_INVALID, 1_000, 1_000), (1_000, 0));
    }

    #[test]
    fn the_table_is_bounded_by_an_overflow_source() {
        let c = Coalescer::new(1);
        for i in 0..(MAX_SOURCES as u32 + 50) {
            let ip = IpAddr::V6(std::net::Ipv6Addr::from(u128::from(i)));
            flood(&c, ip, codes::TOKEN_INVALID, 3, 1_000);
        }
        assert!(c.windows.lock().unwrap().len() <= MAX_SOURCES + 1);
        let overflow: u64 = c
            .drain(1_500)
            .iter()
            .filter(|s| s.source.is_none())
            .map(|s| s.count)
            .sum();
        assert_eq!(overflow, 50 * 3 - 1, "the overflow source shares one budget");
    }
}
