//! Apps (integrations) and their keys: creation, revocation, listing. Used by the admin
//! API, the CLI and the demo, so there is one way to mint a credential.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::{self, Role};
use crate::protocol::ids::{self, Kind};
use crate::store::{AdminTokenRecord, AppRecord, KeyRecord, Store, StoreError};

/// `POST /api/agent-admin/v1/apps` body, as the reference takes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewApp {
    pub scope: String,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub org_id: Option<String>,
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub service_user_id: Option<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Ours: the data policy at creation.
    #[serde(default)]
    pub policy: Option<Value>,
}

/// `POST /apps/:id/keys` body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, rename = "expiresAt", alias = "expires_at")]
    pub expires_at: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Invalid(String),
    #[error("agent app `{0}` not found")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A created app with its first key and the token, shown once.
#[derive(Debug)]
pub struct CreatedApp {
    pub app: AppRecord,
    pub key: KeyRecord,
    pub token: String,
}

fn is_scope(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_')
}

fn is_org_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Creates an app and its first key.
pub fn create_app(store: &Store, new: NewApp, created_by: &str, now: &str) -> Result<CreatedApp, AppError> {
    if new.scope != "workspace" && new.scope != "personal" {
        return Err(AppError::Invalid("`scope` must be `workspace` or `personal`".into()));
    }
    let name = new.name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(AppError::Invalid("`name` must be 1 to 200 characters".into()));
    }
    if let Some(bad) = new.scopes.iter().find(|s| !is_scope(s)) {
        return Err(AppError::Invalid(format!("scope `{bad}` is not a valid scope name")));
    }
    let org_id = new.org_id.clone().unwrap_or_else(|| "org_demo".into());
    if !is_org_id(&org_id) {
        return Err(AppError::Invalid("`org_id` must be letters, digits, `_` or `-`".into()));
    }
    let (user_id, service_user_id) = if new.scope == "workspace" {
        (
            new.user_id,
            Some(new.service_user_id.unwrap_or_else(|| format!("svc_{org_id}"))),
        )
    } else {
        (
            Some(new.user_id.unwrap_or_else(|| created_by.to_string())),
            new.service_user_id,
        )
    };
    let mut scopes = new.scopes;
    scopes.sort();
    scopes.dedup();
    let app = AppRecord {
        id: ids::new_id(Kind::App),
        name: name.to_string(),
        description: new.description,
        scope: new.scope,
        org_id: Some(org_id),
        user_id,
        service_user_id,
        scopes,
        status: "active".into(),
        policy: new.policy.unwrap_or_else(|| json!({})),
        auto_execute: json!({}),
        created_by: Some(created_by.to_string()),
        created_at: now.to_string(),
        updated_at: now.to_string(),
    };
    store.insert_app(&app)?;
    let (key, token) = insert_key(store, &app.id, "Default key", None, created_by, now)?;
    Ok(CreatedApp { app, key, token })
}

fn insert_key(
    store: &Store,
    app_id: &str,
    name: &str,
    expires_at: Option<String>,
    created_by: &str,
    now: &str,
) -> Result<(KeyRecord, String), AppError> {
    let minted = auth::mint("op_");
    let key = KeyRecord {
        id: ids::new_id(Kind::Key),
        app_id: app_id.to_string(),
        name: name.to_string(),
        token_prefix: minted.prefix,
        token_hash: minted.hash,
        last_used_at: None,
        expires_at,
        revoked_at: None,
        created_by: Some(created_by.to_string()),
        created_at: now.to_string(),
    };
    store.insert_key(&key)?;
    Ok((key, minted.token))
}

/// Adds a key to an active app.
pub fn create_key(
    store: &Store,
    app_id: &str,
    new: NewKey,
    created_by: &str,
    now: &str,
) -> Result<(KeyRecord, String), AppError> {
    let app = store
        .app(app_id)?
        .filter(|a| a.status == "active")
        .ok_or_else(|| AppError::NotFound(app_id.into()))?;
    if let Some(expires_at) = &new.expires_at
        && crate::clock::parse_iso(expires_at).is_none()
    {
        return Err(AppError::Invalid("`expiresAt` must be an RFC 3339 timestamp".into()));
    }
    let name = new.name.unwrap_or_else(|| "New key".into());
    insert_key(store, &app.id, &name, new.expires_at, created_by, now)
}

/// Revokes an app and every key it has, at once.
pub fn revoke_app(store: &Store, app_id: &str, now: &str) -> Result<AppRecord, AppError> {
    if !store.set_app_status(app_id, "revoked", now)? {
        return Err(AppError::NotFound(app_id.into()));
    }
    store.revoke_keys_of_app(app_id, now)?;
    store.app(app_id)?.ok_or_else(|| AppError::NotFound(app_id.into()))
}

/// The app in the reference's admin shape, with its keys (no hashes).
pub fn app_json(store: &Store, app: &AppRecord) -> Result<Value, StoreError> {
    let mut value = serde_json::to_value(app).unwrap_or(Value::Null);
    let keys = store.keys_of_app(&app.id)?;
    if let Some(map) = value.as_object_mut() {
        map.insert("keys".into(), serde_json::to_value(keys).unwrap_or(Value::Null));
    }
    Ok(value)
}

/// Mints an admin-plane token for a role. `org_id` `None` covers every tenant.
pub fn create_admin_token(
    store: &Store,
    name: &str,
    role: Role,
    org_id: Option<&str>,
    now: &str,
) -> Result<String, StoreError> {
    let minted = auth::mint("opa_");
    store.insert_admin_token(&AdminTokenRecord {
        id: ids::new_id(Kind::AdminToken),
        name: name.to_string(),
        role: role.as_str().to_string(),
        org_id: org_id.map(String::from),
        token_prefix: minted.prefix,
        token_hash: minted.hash,
        revoked_at: None,
        created_at: now.to_string(),
    })?;
    Ok(minted.token)
}
