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

pub(crate) fn is_scope(s: &str) -> bool {
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

/// Restores a revoked app. Its keys stay revoked: a restored app needs a new key, so a
/// leaked old token never comes back to life.
pub fn restore_app(store: &Store, app_id: &str, now: &str) -> Result<AppRecord, AppError> {
    if !store.set_app_status(app_id, "active", now)? {
        return Err(AppError::NotFound(app_id.into()));
    }
    store.app(app_id)?.ok_or_else(|| AppError::NotFound(app_id.into()))
}

/// Deletes a revoked app with no pending drafts, and its keys.
pub fn delete_app(store: &Store, app_id: &str) -> Result<(), AppError> {
    let app = store.app(app_id)?.ok_or_else(|| AppError::NotFound(app_id.into()))?;
    if app.status != "revoked" {
        return Err(AppError::Invalid(
            "Only disabled integrations can be permanently deleted".into(),
        ));
    }
    if store.pending_drafts_of_app(app_id)? > 0 {
        return Err(AppError::Invalid(
            "Cannot permanently delete integration with pending drafts".into(),
        ));
    }
    store.delete_app(app_id)?;
    Ok(())
}

/// Merges a `PATCH /apps/:id/auto-execute` body into the current policy, as the reference
/// does: each section given (`writes`, `high_risk`) is replaced and normalized; `enabled`
/// is true only when exactly `true`; `require_*` default to true; `max_export_rows` is
/// clamped to 100..5000 (default 1000); a missing `allowed_actions` is `null` (any).
pub fn merge_auto_execute(current: &Value, patch: &Value) -> Result<Value, AppError> {
    let invalid = |m: &str| AppError::Invalid(m.to_string());
    let Some(patch) = patch.as_object() else {
        return Err(invalid("the auto-execute policy must be an object"));
    };
    let mut out = current.as_object().cloned().unwrap_or_default();
    for (section, value) in patch {
        let high = match section.as_str() {
            "writes" => false,
            "high_risk" => true,
            other => return Err(AppError::Invalid(format!("unknown section `{other}`"))),
        };
        let Some(v) = value.as_object() else {
            return Err(AppError::Invalid(format!("`{section}` must be an object")));
        };
        let known: &[&str] = if high {
            &[
                "enabled",
                "expires_at",
                "allowed_actions",
                "require_preflight",
                "require_idempotency",
                "require_step_up",
                "max_export_rows",
            ]
        } else {
            &["enabled", "expires_at", "allowed_actions"]
        };
        if let Some(key) = v.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(AppError::Invalid(format!("unknown field `{section}.{key}`")));
        }
        let expires_at = match v.get("expires_at") {
            None | Some(Value::Null) => Value::Null,
            Some(Value::String(t)) if crate::clock::parse_iso(t).is_some() => Value::String(t.clone()),
            Some(_) => {
                return Err(AppError::Invalid(format!(
                    "`{section}.expires_at` must be an RFC 3339 timestamp"
                )));
            }
        };
        let allowed = match v.get("allowed_actions") {
            None | Some(Value::Null) => Value::Null,
            Some(Value::Array(items)) if items.iter().all(Value::is_string) && items.len() <= MAX_POLICY_LIST => {
                Value::Array(items.clone())
            }
            Some(_) => {
                return Err(AppError::Invalid(format!(
                    "`{section}.allowed_actions` must list tool names"
                )));
            }
        };
        let mut normalized = serde_json::Map::new();
        normalized.insert("enabled".into(), (v.get("enabled") == Some(&Value::Bool(true))).into());
        normalized.insert("expires_at".into(), expires_at);
        normalized.insert("allowed_actions".into(), allowed);
        if high {
            for flag in ["require_preflight", "require_idempotency"] {
                normalized.insert(flag.into(), (v.get(flag) != Some(&Value::Bool(false))).into());
            }
            // Off unless asked for: a reviewer's step-up grant per execution (SPEC 6).
            normalized.insert(
                "require_step_up".into(),
                (v.get("require_step_up") == Some(&Value::Bool(true))).into(),
            );
            let rows = v
                .get("max_export_rows")
                .and_then(Value::as_i64)
                .unwrap_or(1000)
                .clamp(100, 5000);
            normalized.insert("max_export_rows".into(), rows.into());
        }
        out.insert(section.clone(), Value::Object(normalized));
    }
    Ok(Value::Object(out))
}

/// The most entries a list in a data policy may have.
const MAX_POLICY_LIST: usize = 500;

/// Checks an app policy (`{network, data, rate_class}`) and returns it normalized. The
/// whole policy is replaced, as in the reference.
pub fn validate_policy(policy: &Value) -> Result<Value, AppError> {
    let invalid = |m: String| AppError::Invalid(m);
    let Some(top) = policy.as_object() else {
        return Err(invalid("policy must be an object".into()));
    };
    for key in top.keys() {
        if !["network", "data", "rate_class"].contains(&key.as_str()) {
            return Err(invalid(format!("unknown policy field `{key}`")));
        }
    }
    let strings = |value: &Value, name: &str| -> Result<Vec<String>, AppError> {
        match value {
            Value::Null => Ok(Vec::new()),
            Value::Array(items) if items.len() <= MAX_POLICY_LIST => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(String::from)
                        .ok_or_else(|| invalid(format!("`{name}` must list strings")))
                })
                .collect(),
            Value::Array(_) => Err(invalid(format!("`{name}` has more than {MAX_POLICY_LIST} entries"))),
            _ => Err(invalid(format!("`{name}` must be a list"))),
        }
    };
    let mut out = serde_json::Map::new();
    if let Some(network) = top.get("network") {
        let Some(map) = network.as_object() else {
            return Err(invalid("`network` must be an object".into()));
        };
        if let Some(key) = map.keys().find(|k| k.as_str() != "allowed_ips") {
            return Err(invalid(format!("unknown field `network.{key}`")));
        }
        let ips = strings(map.get("allowed_ips").unwrap_or(&Value::Null), "network.allowed_ips")?;
        if let Some(bad) = ips.iter().find(|ip| crate::auth::network::parse_entry(ip).is_none()) {
            return Err(invalid(format!(
                "`network.allowed_ips` entry `{bad}` is not an IP address or CIDR"
            )));
        }
        out.insert("network".into(), json!({"allowed_ips": ips}));
    }
    if let Some(data) = top.get("data") {
        let Some(map) = data.as_object() else {
            return Err(invalid("`data` must be an object".into()));
        };
        let known = [
            "allowed_ledger_ids",
            "allowed_org_ids",
            "max_days",
            "allow_sensitive_fields",
        ];
        if let Some(key) = map.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(invalid(format!("unknown field `data.{key}`")));
        }
        let mut d = serde_json::Map::new();
        for list in ["allowed_ledger_ids", "allowed_org_ids"] {
            if let Some(v) = map.get(list) {
                d.insert(list.into(), json!(strings(v, &format!("data.{list}"))?));
            }
        }
        match map.get("max_days") {
            None | Some(Value::Null) => {}
            Some(v) => match v.as_i64() {
                Some(days) if (1..=3650).contains(&days) => {
                    d.insert("max_days".into(), days.into());
                }
                _ => return Err(invalid("`data.max_days` must be an integer from 1 to 3650".into())),
            },
        }
        match map.get("allow_sensitive_fields") {
            None | Some(Value::Null) => {}
            Some(Value::Bool(b)) => {
                d.insert("allow_sensitive_fields".into(), (*b).into());
            }
            Some(_) => return Err(invalid("`data.allow_sensitive_fields` must be true or false".into())),
        }
        out.insert("data".into(), Value::Object(d));
    }
    match top.get("rate_class") {
        None | Some(Value::Null) => {}
        Some(Value::String(class)) if !class.is_empty() && class.len() <= 64 => {
            out.insert("rate_class".into(), class.clone().into());
        }
        Some(_) => return Err(invalid("`rate_class` must be a class name".into())),
    }
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_are_checked_field_by_field() {
        let ok = validate_policy(
            &json!({"network": {"allowed_ips": ["10.0.0.0/8", "::1"]}, "data": {"max_days": 30, "allow_sensitive_fields": false}}),
        );
        assert!(ok.is_ok(), "{ok:?}");
        for bad in [
            json!({"network": {"allowed_ips": ["nope"]}}),
            json!({"data": {"max_days": 0}}),
            json!({"data": {"max_days": "7"}}),
            json!({"data": {"allow_sensitive_fields": "no"}}),
            json!({"data": {"colour": 1}}),
            json!({"surprise": true}),
            json!([]),
        ] {
            assert!(validate_policy(&bad).is_err(), "{bad} accepted");
        }
    }
}
