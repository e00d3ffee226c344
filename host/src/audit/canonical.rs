//! The canonical form of an audit event, written field by field.
//!
//! `event_hash = hex(sha256(JCS(event without event_hash)))`. Building a generic JSON
//! value and canonicalizing it costs more than the rest of an append, so this writes the
//! RFC 8785 form directly: keys in code-unit order, strings escaped as JCS and
//! `serde_json` both escape them, `details` through the JCS canonicalizer. It is split
//! around `prev_event_hash`, so request threads do the serialization and the single chain
//! writer only splices the previous hash in and hashes. A test checks it byte for byte
//! against the generic path.

use sha2::{Digest, Sha256};

use crate::store::AuditRow;

/// A row's canonical JSON, without `prev_event_hash`, split where that key goes.
#[derive(Debug, Clone)]
pub struct Split {
    /// sha256 already fed with everything before `prev_event_hash` (most of the event), so
    /// the chain writer hashes only the previous hash and the short tail.
    head: Sha256,
    tail: String,
    /// The canonical `details`, stored as the column's text.
    pub details: String,
    /// `policy_ids` as a JSON array, stored as the column's text.
    pub policy_ids: String,
}

fn string(out: &mut String, value: &str) {
    // Most values (ids, codes, timestamps) need no escape: copy them as they are.
    if !value.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        out.push('"');
        out.push_str(value);
        out.push('"');
        return;
    }
    // serde_json escapes exactly as RFC 8785 requires: `"` `\` and controls, `\u00xx` in
    // lowercase, the short forms for \b \f \n \r \t, and nothing else.
    out.push_str(&serde_json::to_string(value).unwrap_or_else(|_| "\"\"".into()));
}

fn optional(out: &mut String, value: Option<&str>) {
    match value {
        Some(v) => string(out, v),
        None => out.push_str("null"),
    }
}

fn key(out: &mut String, name: &str) {
    out.push('"');
    out.push_str(name);
    out.push_str("\":");
}

/// The largest integer JCS prints exactly as written (it formats numbers as doubles).
const MAX_EXACT_INTEGER: u64 = (1 << 53) - 1;

/// JCS of the usual `details`: an object with ASCII keys and string, small integer,
/// boolean, null or list-of-strings values (a read's `redactedFields`), written directly.
/// `None` for anything else, which goes through the canonicalizer. ASCII keys sort the
/// same by bytes as by UTF-16 code units.
fn flat_details(details: &serde_json::Value) -> Option<String> {
    let map = details.as_object()?;
    let mut entries: Vec<(&String, &serde_json::Value)> = map.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut out = String::with_capacity(16 * entries.len() + 2);
    out.push('{');
    for (i, (name, value)) in entries.into_iter().enumerate() {
        if !name.is_ascii() {
            return None;
        }
        if i > 0 {
            out.push(',');
        }
        string(&mut out, name);
        out.push(':');
        match value {
            serde_json::Value::String(text) => string(&mut out, text),
            serde_json::Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            serde_json::Value::Null => out.push_str("null"),
            serde_json::Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    let serde_json::Value::String(text) = item else {
                        return None;
                    };
                    if i > 0 {
                        out.push(',');
                    }
                    string(&mut out, text);
                }
                out.push(']');
            }
            serde_json::Value::Number(n) => match (n.as_u64(), n.as_i64()) {
                (Some(u), _) if u <= MAX_EXACT_INTEGER => out.push_str(&u.to_string()),
                (_, Some(i)) if i.unsigned_abs() <= MAX_EXACT_INTEGER => out.push_str(&i.to_string()),
                _ => return None,
            },
            _ => return None,
        }
    }
    out.push('}');
    Some(out)
}

/// Splits a row's canonical form around `prev_event_hash`.
pub fn split(row: &AuditRow) -> Split {
    let mut head = String::with_capacity(512);
    head.push('{');
    key(&mut head, "action");
    string(&mut head, &row.action);
    head.push(',');
    key(&mut head, "actor_user_id");
    optional(&mut head, row.actor_user_id.as_deref());
    head.push(',');
    key(&mut head, "app_id");
    optional(&mut head, row.app_id.as_deref());
    head.push(',');
    key(&mut head, "code");
    string(&mut head, &row.code);
    head.push(',');
    key(&mut head, "created_at");
    string(&mut head, &row.created_at);
    head.push(',');
    key(&mut head, "details");
    let details = flat_details(&row.details).unwrap_or_else(|| crate::hashing::canonical_json(&row.details));
    head.push_str(&details);
    head.push(',');
    key(&mut head, "draft_id");
    optional(&mut head, row.draft_id.as_deref());
    head.push(',');
    key(&mut head, "execution_id");
    optional(&mut head, row.execution_id.as_deref());
    head.push(',');
    key(&mut head, "id");
    string(&mut head, &row.id);
    head.push(',');
    key(&mut head, "ip");
    optional(&mut head, row.ip.as_deref());
    head.push(',');
    key(&mut head, "key_id");
    optional(&mut head, row.key_id.as_deref());
    head.push(',');
    key(&mut head, "latency_us");
    match row.latency_us {
        Some(n) => head.push_str(&n.to_string()),
        None => head.push_str("null"),
    }
    head.push(',');
    // A shared store's node names its events; the embedded store's events have no node
    // (so chains written before nodes existed hash as they did).
    if !row.node.is_empty() {
        key(&mut head, "node");
        string(&mut head, &row.node);
        head.push(',');
    }
    key(&mut head, "org_id");
    optional(&mut head, row.org_id.as_deref());
    head.push(',');
    key(&mut head, "performed_by_user_id");
    optional(&mut head, row.performed_by_user_id.as_deref());
    head.push(',');
    key(&mut head, "plugin");
    optional(&mut head, row.plugin.as_deref());
    head.push(',');
    key(&mut head, "plugin_digest");
    optional(&mut head, row.plugin_digest.as_deref());
    head.push(',');
    key(&mut head, "policy_ids");
    let mut policy_ids = String::from("[");
    for (i, id) in row.policy_ids.iter().enumerate() {
        if i > 0 {
            policy_ids.push(',');
        }
        string(&mut policy_ids, id);
    }
    policy_ids.push(']');
    head.push_str(&policy_ids);
    head.push(',');

    let mut tail = String::with_capacity(256);
    tail.push(',');
    key(&mut tail, "request_id");
    optional(&mut tail, row.request_id.as_deref());
    tail.push(',');
    key(&mut tail, "risk");
    optional(&mut tail, row.risk.as_deref());
    tail.push(',');
    key(&mut tail, "status");
    string(&mut tail, &row.status);
    tail.push(',');
    key(&mut tail, "tool");
    optional(&mut tail, row.tool.as_deref());
    tail.push(',');
    key(&mut tail, "user_agent");
    optional(&mut tail, row.user_agent.as_deref());
    tail.push('}');
    let mut hasher = Sha256::new();
    hasher.update(head.as_bytes());
    Split {
        head: hasher,
        tail,
        details,
        policy_ids,
    }
}

/// The event hash of a split row chained after `prev`.
pub fn hash(split: &Split, prev: &str) -> String {
    let mut hasher = split.head.clone();
    hasher.update(b"\"prev_event_hash\":");
    let mut prev_json = String::with_capacity(prev.len() + 2);
    string(&mut prev_json, prev);
    hasher.update(prev_json.as_bytes());
    hasher.update(split.tail.as_bytes());
    crate::hashing::digest_hex(hasher.finalize().into())
}

/// The generic definition, for tests: JCS of the row as a JSON value.
#[cfg(test)]
fn reference_hash(row: &AuditRow) -> String {
    use serde_json::Value;
    let mut value = serde_json::to_value(row).unwrap_or(Value::Null);
    if let Some(map) = value.as_object_mut() {
        map.remove("event_hash");
    }
    crate::hashing::jcs_sha256(&value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn row(details: Value, user_agent: Option<&str>, latency: Option<i64>) -> AuditRow {
        AuditRow {
            seq: 7,
            node: String::new(),
            id: "aud_01".into(),
            org_id: Some("org_demo".into()),
            app_id: None,
            key_id: Some("key_\u{e9}".into()),
            actor_user_id: Some("svc \"quoted\" \\ back".into()),
            performed_by_user_id: None,
            action: "agent.transaction.list".into(),
            status: "denied".into(),
            code: "agent.policy_denied".into(),
            request_id: Some("req_1".into()),
            draft_id: None,
            execution_id: None,
            ip: Some("::1".into()),
            user_agent: user_agent.map(String::from),
            details,
            tool: Some("transaction.list".into()),
            risk: Some("low".into()),
            policy_ids: vec!["base.scoped-tools".into(), "b\u{1f}".into()],
            plugin: Some("ledger".into()),
            plugin_digest: Some("ab".repeat(32)),
            latency_us: latency,
            created_at: "2026-02-01T00:00:00.000Z".into(),
            prev_event_hash: "0".repeat(64),
            event_hash: String::new(),
        }
    }

    #[test]
    fn the_fast_form_hashes_exactly_like_jcs_of_the_whole_row() {
        for r in [
            row(json!({}), None, None),
            row(
                json!({"z": 1, "a": [1.5, "x\n\t\u{2028}", null], "ü": {"b": true, "a": -0.0}}),
                Some("curl/8 \u{1f600}"),
                Some(42),
            ),
            row(
                json!({"big": 1e21, "small": 1e-7, "int": 9007199254740991_i64}),
                Some("\u{0}\u{7f}"),
                Some(-1),
            ),
            // The direct path for flat details, and its edges.
            row(
                json!({"path": "/x?q=\"a\"\\\n", "method": "GET", "Z": 0, "count": 3, "neg": -5,
                       "ok": true, "no": false, "none": null, "max": 9007199254740991_i64,
                       "min": -9007199254740991_i64, "é": "x"}),
                None,
                None,
            ),
            row(json!({"past": 9007199254740993_u64, "a": "b"}), None, None),
            row(json!({"neg_past": -9007199254740993_i64}), None, None),
            row(json!({"retry_after_ms": 250, "reason": "rate"}), None, None),
            row(
                json!({"redactedFields": [], "names": ["b\n", "a", "\"q\""], "n": 2}),
                None,
                None,
            ),
            row(json!({"mixed": ["a", 1]}), None, None),
            // A shared store's node names its events, and its name is hashed.
            AuditRow {
                node: "node_01\"x".into(),
                ..row(json!({"a": 1}), None, Some(3))
            },
        ] {
            assert_eq!(hash(&split(&r), &r.prev_event_hash), reference_hash(&r));
        }
    }

    #[test]
    fn the_node_is_part_of_a_shared_stores_hashed_event() {
        let embedded = row(json!({}), None, None);
        let shared = AuditRow {
            node: "node_a".into(),
            ..embedded.clone()
        };
        assert_ne!(hash(&split(&embedded), "0"), hash(&split(&shared), "0"));
    }

    #[test]
    fn flat_details_take_the_direct_path_and_the_rest_do_not() {
        let direct = json!({"b": "x", "a": 1, "c": null, "d": ["y", "x"], "e": []});
        assert_eq!(
            flat_details(&direct).as_deref(),
            Some(r#"{"a":1,"b":"x","c":null,"d":["y","x"],"e":[]}"#)
        );
        for other in [
            json!({"a": {"b": 1}}),
            json!({"a": 1.5}),
            json!({"é": 1}),
            json!([1]),
            json!({"a": ["x", 1]}),
            json!({"a": [["x"]]}),
        ] {
            assert_eq!(flat_details(&other), None, "{other}");
        }
    }
}
