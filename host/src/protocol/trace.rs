//! W3C Trace Context (`traceparent`, `tracestate`): recorded in the audit event of the
//! request that carried it and passed on, as a child, to the outbound calls a plugin makes
//! for it. A malformed value is ignored, as the recommendation says; it never fails a request.

use rand::RngCore as _;

use crate::hashing::is_lower_hex;

/// Longest `tracestate` passed on (the recommendation's 32 members fit well within it).
const MAX_TRACESTATE: usize = 512;

/// A request's trace context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// `00-<trace-id>-<parent-id>-<flags>`.
    pub traceparent: String,
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// A version-00 `traceparent` (and its `tracestate`, kept only when printable and short).
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<TraceContext> {
        let traceparent = traceparent.trim();
        let parts: Vec<&str> = traceparent.split('-').collect();
        let [version, trace_id, parent_id, flags] = parts.as_slice() else {
            return None;
        };
        let valid = *version == "00"
            && is_lower_hex(trace_id, 32)
            && is_lower_hex(parent_id, 16)
            && is_lower_hex(flags, 2)
            && trace_id.bytes().any(|b| b != b'0')
            && parent_id.bytes().any(|b| b != b'0');
        if !valid {
            return None;
        }
        let tracestate = tracestate
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.len() <= MAX_TRACESTATE && s.bytes().all(|b| (0x20..0x7f).contains(&b)))
            .map(String::from);
        Some(TraceContext {
            traceparent: traceparent.to_string(),
            tracestate,
        })
    }

    pub fn trace_id(&self) -> &str {
        &self.traceparent[3..35]
    }

    /// The context for a call made on this request's behalf: the same trace and flags, a
    /// new parent id (the gateway's span).
    pub fn child(&self) -> TraceContext {
        let mut span = [0u8; 8];
        rand::rng().fill_bytes(&mut span);
        span[0] |= 1; // never all zeros
        TraceContext {
            traceparent: format!(
                "00-{}-{}-{}",
                self.trace_id(),
                hex::encode(span),
                &self.traceparent[53..55]
            ),
            tracestate: self.tracestate.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_version_00_traceparent_parses_and_anything_else_is_ignored() {
        let parsed = TraceContext::parse(GOOD, Some("vendor=abc")).expect("valid");
        assert_eq!(parsed.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parsed.tracestate.as_deref(), Some("vendor=abc"));
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        ] {
            assert_eq!(TraceContext::parse(bad, None), None, "{bad}");
        }
        let unprintable = TraceContext::parse(GOOD, Some("a=\u{7}")).expect("valid");
        assert_eq!(unprintable.tracestate, None);
    }

    #[test]
    fn a_child_keeps_the_trace_and_flags_with_a_new_parent() {
        let parent = TraceContext::parse(GOOD, None).expect("valid");
        let child = parent.child();
        assert_eq!(child.trace_id(), parent.trace_id());
        assert!(child.traceparent.ends_with("-01"));
        assert_ne!(child.traceparent, parent.traceparent);
        assert_eq!(TraceContext::parse(&child.traceparent, None), Some(child));
    }
}
