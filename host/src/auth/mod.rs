//! Credentials: agent keys (`op_` tokens) and admin-plane tokens.
//!
//! Tokens are `op_` + base64url(32 random bytes) (`opa_` for admin tokens), shown once and
//! stored as sha256 with a 12-character prefix for lookup. The hash comparison is constant
//! time. Every check reads the store (through its credential cache, which every write to
//! apps and keys empties), so a revocation takes effect on the next request.

pub mod network;

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use crate::clock;
use crate::hashing::sha256_hex;
use crate::store::{AdminTokenRecord, AppRecord, KeyRecord, Store, StoreError};

/// Length of the stored lookup prefix.
pub const PREFIX_LEN: usize = 12;

/// A freshly minted secret: the token to show once, and what to store.
#[derive(Debug)]
pub struct Minted {
    pub token: String,
    pub prefix: String,
    pub hash: String,
}

/// 32 random bytes as base64url: the secret part of every token and session id.
pub fn random_secret() -> String {
    let mut bytes = [0_u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Mints a token with the given literal prefix (`op_` or `opa_`).
pub fn mint(literal: &str) -> Minted {
    let token = format!("{literal}{}", random_secret());
    Minted {
        prefix: token.chars().take(PREFIX_LEN).collect(),
        hash: sha256_hex(token.as_bytes()),
        token,
    }
}

/// Why an agent credential was refused. Unknown, revoked and inactive share one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `Authorization: Bearer` header.
    Missing,
    /// A bearer token that is not a well-formed `op_` token, an unknown or revoked key,
    /// or an inactive or missing app.
    Invalid,
    /// The key is past `expires_at`.
    Expired,
    /// The app has no tenant or no actor.
    Misconfigured,
}

/// The authenticated caller of an agent request.
#[derive(Debug, Clone)]
pub struct Principal {
    pub app: Arc<AppRecord>,
    pub key: Arc<KeyRecord>,
    pub org_id: String,
    pub actor_user_id: String,
}

/// Extracts the token from an `Authorization` header value: `Bearer <token>`,
/// case-insensitive scheme, nothing else.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let value = header?.trim();
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty() && !token.contains(char::is_whitespace)).then_some(token)
}

/// Whether a token has the shape of an agent token: `op_` and 43 base64url characters.
fn well_formed(token: &str, literal: &str) -> bool {
    token.strip_prefix(literal).is_some_and(|rest| {
        rest.len() == 43
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

fn hash_matches(token_hash: &str, stored: &str) -> bool {
    token_hash.as_bytes().ct_eq(stored.as_bytes()).into()
}

/// Steps 2 to 6 of the pipeline: token present and well formed, found, not revoked,
/// not expired, app active, actor and tenant bound.
pub fn authenticate(
    store: &Store,
    header: Option<&str>,
    now: OffsetDateTime,
) -> Result<Result<Principal, AuthFailure>, StoreError> {
    // As the reference: a token that was sent but is no key is invalid, not missing.
    let Some(token) = bearer(header) else {
        return Ok(Err(AuthFailure::Missing));
    };
    if !well_formed(token, "op_") {
        return Ok(Err(AuthFailure::Invalid));
    }
    let hash = sha256_hex(token.as_bytes());
    let prefix: String = token.chars().take(PREFIX_LEN).collect();
    // Compare every candidate, so timing does not tell how many share the prefix.
    let mut found = None;
    for key in store.apps.keys_by_prefix(&prefix)? {
        if hash_matches(&hash, &key.token_hash) {
            found = Some(key);
        }
    }
    let Some(key) = found else {
        return Ok(Err(AuthFailure::Invalid));
    };
    if key.revoked_at.is_some() {
        return Ok(Err(AuthFailure::Invalid));
    }
    if let Some(expires_at) = &key.expires_at {
        // An unparseable expiry fails closed.
        if clock::parse_iso(expires_at).is_none_or(|t| t <= now) {
            return Ok(Err(AuthFailure::Expired));
        }
    }
    principal(store, key)
}

/// The key an anonymous loopback request is recorded under: it has no token.
pub const ANONYMOUS_KEY_ID: &str = "anonymous-loopback";

/// The MCP binding's anonymous integration: a request without credentials acts as the
/// configured app, which must exist and be active, with its grants and nothing more.
/// Revoking the app turns anonymous access off.
pub fn anonymous(store: &Store, app_id: &str) -> Result<Result<Principal, AuthFailure>, StoreError> {
    let key = KeyRecord {
        id: ANONYMOUS_KEY_ID.into(),
        app_id: app_id.into(),
        name: "anonymous loopback (mcp.anonymous_app)".into(),
        token_prefix: String::new(),
        token_hash: String::new(),
        last_used_at: None,
        expires_at: None,
        revoked_at: None,
        created_by: None,
        created_at: String::new(),
    };
    principal(store, Arc::new(key))
}

/// Steps 5 and 6: the key's app is active and has a tenant and an actor.
fn principal(store: &Store, key: Arc<KeyRecord>) -> Result<Result<Principal, AuthFailure>, StoreError> {
    let Some(app) = store.apps.shared(&key.app_id)? else {
        return Ok(Err(AuthFailure::Invalid));
    };
    if app.status != "active" {
        return Ok(Err(AuthFailure::Invalid));
    }
    let actor = if app.scope == "workspace" {
        app.service_user_id.clone()
    } else {
        app.user_id.clone()
    };
    let (Some(org_id), Some(actor_user_id)) = (app.org_id.clone(), actor) else {
        return Ok(Err(AuthFailure::Misconfigured));
    };
    Ok(Ok(Principal {
        app,
        key,
        org_id,
        actor_user_id,
    }))
}

/// Roles of the admin plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Manages apps, keys, plugins and policies.
    Operator,
    /// Reviews drafts.
    Reviewer,
    /// Reads the audit trail.
    Auditor,
}

impl Role {
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "operator" => Some(Role::Operator),
            "reviewer" => Some(Role::Reviewer),
            "auditor" => Some(Role::Auditor),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Reviewer => "reviewer",
            Role::Auditor => "auditor",
        }
    }
}

/// An authenticated admin-plane caller.
#[derive(Debug, Clone)]
pub struct AdminPrincipal {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// `None`: every tenant.
    pub org_id: Option<String>,
}

/// Checks an admin bearer token; `None` when missing, unknown or revoked.
pub fn authenticate_admin(store: &Store, header: Option<&str>) -> Result<Option<AdminPrincipal>, StoreError> {
    let Some(token) = bearer(header).filter(|t| well_formed(t, "opa_")) else {
        return Ok(None);
    };
    let hash = sha256_hex(token.as_bytes());
    let prefix: String = token.chars().take(PREFIX_LEN).collect();
    let mut found: Option<AdminTokenRecord> = None;
    for record in store.apps.admin_tokens_by_prefix(&prefix)? {
        if hash_matches(&hash, &record.token_hash) {
            found = Some(record);
        }
    }
    Ok(found.filter(|r| r.revoked_at.is_none()).and_then(admin_principal))
}

fn admin_principal(r: AdminTokenRecord) -> Option<AdminPrincipal> {
    Some(AdminPrincipal {
        role: Role::parse(&r.role)?,
        id: r.id,
        name: r.name,
        org_id: r.org_id,
    })
}

/// The admin credential with this id, if it is not revoked (a reviewer's session names the
/// credential it signed in with).
pub fn admin_by_id(store: &Store, id: &str) -> Result<Option<AdminPrincipal>, StoreError> {
    Ok(store
        .apps
        .admin_token(id)?
        .filter(|r| r.revoked_at.is_none())
        .and_then(admin_principal))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_have_the_reference_shape() {
        let m = mint("op_");
        assert!(well_formed(&m.token, "op_"), "{}", m.token);
        assert_eq!(m.prefix.len(), PREFIX_LEN);
        assert_eq!(m.hash, sha256_hex(m.token.as_bytes()));
        assert_ne!(mint("op_").token, m.token);
    }

    #[test]
    fn bearer_parsing_is_strict() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer")), None);
        assert_eq!(bearer(Some("Bearer a b")), None);
        assert_eq!(bearer(None), None);
    }
}
