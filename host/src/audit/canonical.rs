//! The canonical form of an audit event, written field by field.
//!
//! `event_hash = hex(sha256(JCS(event without event_hash)))`. Building a generic JSON
//! value and canonicalizing it costs more than the rest of an append, so this writes the
//! RFC 8785 form directly: keys in code-unit order, strings escaped as JCS and
//! `serde_json` both escape them, `details` through [`canonical_json`]. It is split
//! around `prev_event_hash`, so request threads do the serialization and the single chain
//! writer only splices the previous hash in and hashes. A test checks it byte for byte
//! against the generic path.

use sha2::{Digest, Sha256};

use crate::hashing::{canonical_json, jcs_string};
use crate::store::AuditRow;

/// A row's canonical JSON, without `prev_event_hash`, split where that key goes.
#[derive(Debug, Clone)]
pub struct Split {
    /// sha256 already fed with everything before `prev_event_hash` (most of the event), so
    /// the chain writer hashes only the previous hash and the short tail.
    head: Sha256,
    /// The text `head` was fed, for the event's canonical line in the embedded store's
    /// journal.
    head_text: String,
    tail: String,
    /// The canonical `details`, stored as the column's text.
    pub details: String,
    /// `policy_ids` as a JSON array, stored as the column's text.
    pub policy_ids: String,
}

fn optional(out: &mut String, value: Option<&str>) {
    match value {
        Some(v) => jcs_string(out, v),
        None => out.push_str("null"),
    }
}

fn key(out: &mut String, name: &str) {
    out.push('"');
    out.push_str(name);
    out.push_str("\":");
}

/// Splits a row's canonical form around `prev_event_hash`.
pub fn split(row: &AuditRow) -> Split {
    let mut head = String::with_capacity(512);
    head.push('{');
    key(&mut head, "action");
    jcs_string(&mut head, &row.action);
    head.push(',');
    key(&mut head, "actor_user_id");
    optional(&mut head, row.actor_user_id.as_deref());
    head.push(',');
    key(&mut head, "app_id");
    optional(&mut head, row.app_id.as_deref());
    head.push(',');
    key(&mut head, "code");
    jcs_string(&mut head, &row.code);
    head.push(',');
    key(&mut head, "created_at");
    jcs_string(&mut head, &row.created_at);
    head.push(',');
    key(&mut head, "details");
    let details = canonical_json(&row.details);
    head.push_str(&details);
    head.push(',');
    key(&mut head, "draft_id");
    optional(&mut head, row.draft_id.as_deref());
    head.push(',');
    key(&mut head, "execution_id");
    optional(&mut head, row.execution_id.as_deref());
    head.push(',');
    key(&mut head, "id");
    jcs_string(&mut head, &row.id);
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
        jcs_string(&mut head, &row.node);
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
        jcs_string(&mut policy_ids, id);
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
    jcs_string(&mut tail, &row.status);
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
        head_text: head,
        tail,
        details,
        policy_ids,
    }
}

/// `"prev_event_hash":"<prev>"`, the member spliced between a split row's head and tail.
fn prev_member(prev: &str) -> String {
    let mut member = String::with_capacity(prev.len() + 20);
    member.push_str("\"prev_event_hash\":");
    jcs_string(&mut member, prev);
    member
}

fn hash_with(split: &Split, prev_member: &str) -> String {
    let mut hasher = split.head.clone();
    hasher.update(prev_member.as_bytes());
    hasher.update(split.tail.as_bytes());
    crate::hashing::digest_hex(hasher.finalize().into())
}

/// The event hash of a split row chained after `prev`.
pub fn hash(split: &Split, prev: &str) -> String {
    hash_with(split, &prev_member(prev))
}

/// A split row chained after `prev`: its event hash, and its canonical text (the bytes that
/// hash is the sha256 of, the embedded store's journal line).
pub fn chain(split: &Split, prev: &str) -> (String, String) {
    let member = prev_member(prev);
    let mut text = String::with_capacity(split.head_text.len() + member.len() + split.tail.len());
    text.push_str(&split.head_text);
    text.push_str(&member);
    text.push_str(&split.tail);
    (hash_with(split, &member), text)
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
            let split = split(&r);
            assert_eq!(hash(&split, &r.prev_event_hash), reference_hash(&r));
            let (hash, text) = chain(&split, &r.prev_event_hash);
            assert_eq!(hash, reference_hash(&r));
            assert_eq!(crate::hashing::sha256_hex(text.as_bytes()), hash, "{text}");
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
}
