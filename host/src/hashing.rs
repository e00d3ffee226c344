//! Canonical JSON (RFC 8785, JCS) and the sha256 hashes the protocol binds to it.

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
pub fn canonical_json(value: &Value) -> String {
    // JCS of a `serde_json::Value` cannot fail: every Value is representable.
    serde_json_canonicalizer::to_string(value).unwrap_or_default()
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
}
