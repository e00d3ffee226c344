//! `requestState` (MCP 2026-07-28 input requests): what a read asked between rounds,
//! sealed so that a client can carry it but neither forge, alter nor move it.
//!
//! A state is `base64url(claims) "." base64url(HMAC-SHA256(key, claims))`. The claims bind
//! it to the credential that was asked, the tool, the arguments' hash and an expiry; the
//! plugin's own state rides inside, readable by the client (plugins are told never to put
//! a secret there). The key is drawn once per store and kept in it, so a restart keeps
//! outstanding states valid and every node sharing the store verifies them. Someone who
//! can read the store can forge a state, but a state grants nothing by itself: it carries
//! a read's plugin state or an impact to acknowledge, and the call is governed afresh.
//! A state is not single-use: replaying one within its expiry re-asks the same read, and
//! an acknowledged write replays under its idempotency key.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::store::{Store, StoreError};

/// The store's `meta` entry holding the key.
const KEY_NAME: &str = "mcp_request_state_key";

/// How long a client has to answer one round.
pub const LIFETIME_MS: i64 = 10 * 60 * 1000;

/// What a state is bound to: who was asked, about which tool and which arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// sha256 of the credential (see `session::credential_of`).
    pub credential: String,
    pub tool: String,
    /// JCS sha256 of the call's arguments.
    pub arguments: String,
}

#[derive(Serialize, Deserialize)]
struct Claims {
    #[serde(rename = "c")]
    credential: String,
    #[serde(rename = "t")]
    tool: String,
    #[serde(rename = "a")]
    arguments: String,
    #[serde(rename = "e")]
    expires_ms: i64,
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    state: Option<String>,
    #[serde(rename = "g", default, skip_serializing_if = "Option::is_none")]
    gateway: Option<serde_json::Value>,
}

/// What a verified state carries: the plugin's own, or the gateway's (an impact awaiting
/// acknowledgement).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Opened {
    pub plugin: Option<String>,
    pub gateway: Option<serde_json::Value>,
}

/// Why a presented state is refused; the client sees one answer for all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("requestState is malformed or its seal does not verify")]
    Seal,
    #[error("requestState has expired")]
    Expired,
    #[error("requestState was issued for another credential, tool or arguments")]
    Binding,
}

impl Invalid {
    /// The audit reason.
    pub fn reason(self) -> &'static str {
        match self {
            Invalid::Seal => "request_state_seal",
            Invalid::Expired => "request_state_expired",
            Invalid::Binding => "request_state_binding",
        }
    }
}

/// Seals and opens states with this process's key.
pub struct Sealer {
    key: [u8; 32],
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer { key: [redacted] }")
    }
}

impl Sealer {
    /// A sealer with a fresh random key (tests).
    pub fn random() -> Self {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        Sealer { key }
    }

    /// The sealer of the store's key, drawn by the first process that needed it.
    pub fn shared(store: &Store) -> Result<Self, StoreError> {
        let fresh = Sealer::random();
        let stored = store.meta.get_or_insert(KEY_NAME, &hex::encode(fresh.key))?;
        let mut key = [0u8; 32];
        hex::decode_to_slice(stored.trim(), &mut key).map_err(|_| StoreError::UnknownValue {
            column: "meta.mcp_request_state_key",
            value: "(not 32 hex-encoded bytes)".into(),
        })?;
        Ok(Sealer { key })
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes a key of any length; 32 bytes is always accepted.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
    }

    /// A state for the next round, valid until `now_ms + LIFETIME_MS`.
    pub fn seal(&self, binding: &Binding, carried: Opened, now_ms: i64) -> String {
        let claims = Claims {
            credential: binding.credential.clone(),
            tool: binding.tool.clone(),
            arguments: binding.arguments.clone(),
            expires_ms: now_ms + LIFETIME_MS,
            state: carried.plugin,
            gateway: carried.gateway,
        };
        let body = serde_json::to_vec(&claims).unwrap_or_default();
        let mut mac = self.mac();
        mac.update(&body);
        let tag = mac.finalize().into_bytes();
        format!("{}.{}", URL_SAFE_NO_PAD.encode(&body), URL_SAFE_NO_PAD.encode(tag))
    }

    /// What a presented `requestState` carries, once its seal, expiry and binding hold.
    pub fn open(&self, token: &str, binding: &Binding, now_ms: i64) -> Result<Opened, Invalid> {
        let (body, tag) = token.split_once('.').ok_or(Invalid::Seal)?;
        let body = URL_SAFE_NO_PAD.decode(body).map_err(|_| Invalid::Seal)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| Invalid::Seal)?;
        let mut mac = self.mac();
        mac.update(&body);
        // Constant-time, and only a full-length tag verifies.
        mac.verify_slice(&tag).map_err(|_| Invalid::Seal)?;
        let claims: Claims = serde_json::from_slice(&body).map_err(|_| Invalid::Seal)?;
        if now_ms >= claims.expires_ms {
            return Err(Invalid::Expired);
        }
        if claims.credential != binding.credential
            || claims.tool != binding.tool
            || claims.arguments != binding.arguments
        {
            return Err(Invalid::Binding);
        }
        Ok(Opened {
            plugin: claims.state,
            gateway: claims.gateway,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding() -> Binding {
        Binding {
            credential: "cred".into(),
            tool: "t".into(),
            arguments: "args".into(),
        }
    }

    #[test]
    fn a_sealed_state_opens_for_its_binding_only() {
        let sealer = Sealer::random();
        let carried = Opened {
            plugin: Some("step-2".into()),
            gateway: Some(serde_json::json!({"preflightHash": "h"})),
        };
        let token = sealer.seal(&binding(), carried.clone(), 1_000);
        assert_eq!(sealer.open(&token, &binding(), 1_001), Ok(carried));
        for other in [
            Binding {
                credential: "other".into(),
                ..binding()
            },
            Binding {
                tool: "u".into(),
                ..binding()
            },
            Binding {
                arguments: "changed".into(),
                ..binding()
            },
        ] {
            assert_eq!(sealer.open(&token, &other, 1_001), Err(Invalid::Binding));
        }
    }

    #[test]
    fn every_process_on_one_store_shares_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let first = Sealer::shared(&store).unwrap();
        let second = Sealer::shared(&Store::open(&dir.path().join("s.db")).unwrap()).unwrap();
        let token = first.seal(&binding(), Opened::default(), 1_000);
        assert_eq!(second.open(&token, &binding(), 1_001), Ok(Opened::default()));
        let elsewhere = Store::open(&dir.path().join("other.db")).unwrap();
        assert_eq!(
            Sealer::shared(&elsewhere).unwrap().open(&token, &binding(), 1_001),
            Err(Invalid::Seal)
        );
    }

    #[test]
    fn an_altered_expired_or_foreign_state_is_refused() {
        let sealer = Sealer::random();
        let token = sealer.seal(&binding(), Opened::default(), 1_000);
        assert_eq!(
            sealer.open(&format!("{token}-TAMPERED"), &binding(), 1_001),
            Err(Invalid::Seal)
        );
        assert_eq!(sealer.open(&format!("{token}A"), &binding(), 1_001), Err(Invalid::Seal));
        assert_eq!(sealer.open("no-dot", &binding(), 1_001), Err(Invalid::Seal));
        let (body, tag) = token.split_once('.').unwrap();
        let mut forged = URL_SAFE_NO_PAD.decode(body).unwrap();
        forged[2] ^= 1;
        assert_eq!(
            sealer.open(&format!("{}.{tag}", URL_SAFE_NO_PAD.encode(forged)), &binding(), 1_001),
            Err(Invalid::Seal)
        );
        assert_eq!(
            sealer.open(&token, &binding(), 1_000 + LIFETIME_MS),
            Err(Invalid::Expired)
        );
        assert_eq!(Sealer::random().open(&token, &binding(), 1_001), Err(Invalid::Seal));
    }
}
