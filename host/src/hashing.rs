//! Canonical JSON (RFC 8785, JCS) and the sha256 hashes the protocol binds to it.

use std::fmt::Write as _;

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Lowercase hex sha256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    digest_hex(Sha256::digest(bytes).into())
}

/// A sha256 digest as lowercase hex (`hex::encode` goes through a char iterator, which
/// showed in the audit writer's profile).
pub fn digest_hex(digest: [u8; 32]) -> String {
    let mut out = [0_u8; 64];
    // Cannot fail: the output is exactly twice the input.
    let _ = hex::encode_to_slice(digest, &mut out);
    String::from_utf8(out.to_vec()).unwrap_or_default()
}

/// Whether `s` is exactly `len` lowercase hex digits, as the digests and ids written
/// above are (trace ids, certificate fingerprints).
pub fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The RFC 8785 canonical form of a JSON value.
///
/// What the gateway hashes (payloads, audit details, impacts) almost always has ASCII keys
/// and integer numbers; such a value is written directly, at well under half the generic
/// canonicalizer's cost (BENCHMARKS.md, session 14). A non-ASCII key (JCS orders keys by
/// UTF-16 code units, which byte order matches only for ASCII), a fraction, or an integer
/// JCS would print as a rounded double sends the whole value through
/// `serde_json_canonicalizer`. A property test holds the two equal.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::with_capacity(128);
    if write_direct(&mut out, value).is_some() {
        return out;
    }
    // JCS of a `serde_json::Value` cannot fail: every Value is representable.
    serde_json_canonicalizer::to_string(value).unwrap_or_default()
}

/// The largest integer an IEEE double holds exactly, so the largest JCS prints as written
/// (it formats numbers as doubles) and the largest a policy can be bound to.
pub const MAX_EXACT_INTEGER: u64 = (1 << 53) - 1;

/// Writes `value`'s JCS form, or `None` (with `out` half written) for a value that needs
/// the generic canonicalizer.
fn write_direct(out: &mut String, value: &Value) -> Option<()> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::String(text) => jcs_string(out, text),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            // Writing to a `String` cannot fail.
            (Some(u), _) if u <= MAX_EXACT_INTEGER => {
                let _ = write!(out, "{u}");
            }
            (_, Some(i)) if i.unsigned_abs() <= MAX_EXACT_INTEGER => {
                let _ = write!(out, "{i}");
            }
            _ => return None,
        },
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_direct(out, item)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            if !map.keys().all(|k| k.is_ascii()) {
                return None;
            }
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (name, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                jcs_string(out, name);
                out.push(':');
                write_direct(out, item)?;
            }
            out.push('}');
        }
    }
    Some(())
}

/// A string as JCS writes it.
pub fn jcs_string(out: &mut String, value: &str) {
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

/// `hex(sha256(JCS(value)))`: impact hashes, witness hashes and audit event hashes.
pub fn jcs_sha256(value: &Value) -> String {
    sha256_hex(canonical_json(value).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_impact_hash_test_vector() {
        let value: Value = serde_json::from_str(
            r#"{"action":"transaction.delete","impact":{"summary":"Delete 1
transaction","transaction":{"amount_home":80,"date":"2026-02-01T00:00:00.000Z","id":"txn_2",
"is_deleted":false,"ledger_id":"ledger_main","title":"Software subscription"}},"payload":
{"transactionId":"txn_2"}}"#
                .replace("1\ntransaction", "1 transaction")
                .as_str(),
        )
        .expect("test vector is JSON");
        assert_eq!(
            jcs_sha256(&value),
            "46747f065387b71085c7c433acbbf45393f6493010d16b03cf65349f4826a8b4"
        );
    }

    #[test]
    fn key_order_and_whitespace_do_not_change_the_hash() {
        let a: Value = serde_json::from_str(r#"{"b": 1, "a": [1.0, "x"]}"#).expect("json");
        let b: Value = serde_json::from_str(r#"{"a":[1,"x"],"b":1}"#).expect("json");
        assert_eq!(jcs_sha256(&a), jcs_sha256(&b));
    }

    #[test]
    fn simple_values_are_written_directly_and_match_the_canonicalizer() {
        let generic = |v: &Value| serde_json_canonicalizer::to_string(v).expect("canonical");
        let direct = serde_json::json!({"b": "x\n\"q\"", "a": -9007199254740991_i64, "c": null,
                                        "d": ["y", {"z": true, "Z": 9007199254740991_u64}], "e": []});
        let mut out = String::new();
        assert!(write_direct(&mut out, &direct).is_some(), "takes the direct path");
        assert_eq!(
            out,
            r#"{"a":-9007199254740991,"b":"x\n\"q\"","c":null,"d":["y",{"Z":9007199254740991,"z":true}],"e":[]}"#
        );
        assert_eq!(canonical_json(&direct), generic(&direct));
        // Each of these needs the canonicalizer, wherever it sits.
        for other in [
            serde_json::json!({"a": {"b": 1.5}}),
            serde_json::json!([{"\u{e9}": 1}]),
            serde_json::json!({"\u{10000}": 1, "\u{e000}": 2}),
            serde_json::json!({"past": 9007199254740993_u64}),
            serde_json::json!([-9007199254740993_i64]),
            serde_json::json!(1e21),
        ] {
            assert!(write_direct(&mut String::new(), &other).is_none(), "{other}");
            assert_eq!(canonical_json(&other), generic(&other), "{other}");
        }
    }
}
