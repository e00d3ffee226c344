//! Apps (integrations) and their keys: creation, revocation, listing. Used by the admin
//! API, the CLI and the demo, so there is one way to mint a credential.

use serde::Deserialize;
use serde_json::Value;

use crate::app_policy::{
    AppPolicy, AutoExecutePolicy, DataPolicy, HighRiskClass, MAX_DAYS_LIMIT, NetworkPolicy, WritesClass,
};
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
    #[error("an agent app named `{0}` already exists in this tenant")]
    NameTaken(String),
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
    let name = app_name(&new.name)?;
    let scopes = scope_list(new.scopes)?;
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
    // Checked like `PATCH /apps/:id/policy`: a policy that cannot be parsed never lands.
    let policy = new
        .policy
        .as_ref()
        .map(validate_policy)
        .transpose()?
        .unwrap_or_default();
    let app = AppRecord {
        id: ids::new_id(Kind::App),
        name,
        description: new.description,
        scope: new.scope,
        org_id: Some(org_id),
        user_id,
        service_user_id,
        scopes,
        status: "active".into(),
        policy,
        auto_execute: AutoExecutePolicy::default(),
        created_by: Some(created_by.to_string()),
        created_at: now.to_string(),
        updated_at: now.to_string(),
        tags: std::collections::BTreeMap::new(),
    };
    if !store.apps.insert(&app)? {
        return Err(AppError::NameTaken(app.name));
    }
    let (key, token) = insert_key(store, &app.id, "Default key", None, created_by, now)?;
    Ok(CreatedApp { app, key, token })
}

/// A trimmed app name, 1 to 200 characters.
fn app_name(name: &str) -> Result<String, AppError> {
    let name = name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(AppError::Invalid("`name` must be 1 to 200 characters".into()));
    }
    Ok(name.to_string())
}

/// Valid scope names, sorted, without repeats.
fn scope_list(mut scopes: Vec<String>) -> Result<Vec<String>, AppError> {
    if let Some(bad) = scopes.iter().find(|s| !is_scope(s)) {
        return Err(AppError::Invalid(format!("scope `{bad}` is not a valid scope name")));
    }
    scopes.sort();
    scopes.dedup();
    Ok(scopes)
}

/// `PATCH /apps/:id` body: each field present replaces the app's.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppUpdate {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// The data policy, replaced as a whole (as `PATCH /apps/:id/policy` does).
    #[serde(default)]
    pub policy: Option<Value>,
    /// The rate class alone, leaving the rest of the data policy as it is.
    #[serde(default)]
    pub rate_class: Option<String>,
    #[serde(default)]
    pub tags: Option<Value>,
}

impl AppUpdate {
    /// The fields it changes, for the audit event.
    pub fn fields(&self) -> Vec<&'static str> {
        [
            ("name", self.name.is_some()),
            ("description", self.description.is_some()),
            ("scopes", self.scopes.is_some()),
            ("policy", self.policy.is_some()),
            ("rate_class", self.rate_class.is_some()),
            ("tags", self.tags.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, present)| present.then_some(name))
        .collect()
    }
}

/// Changes an app: checked as a whole, then stored in one write, so a refused update
/// changes nothing. Credentials are read again on the next request.
pub fn update_app(store: &Store, app_id: &str, update: AppUpdate, now: &str) -> Result<AppRecord, AppError> {
    let mut app = store
        .apps
        .get(app_id)?
        .filter(|a| a.status != "deleted")
        .ok_or_else(|| AppError::NotFound(app_id.into()))?;
    if update.fields().is_empty() {
        return Err(AppError::Invalid(
            "nothing to change: give name, description, scopes, policy, rate_class or tags".into(),
        ));
    }
    if let Some(name) = &update.name {
        app.name = app_name(name)?;
    }
    if let Some(description) = update.description {
        app.description = Some(description);
    }
    if let Some(scopes) = update.scopes {
        app.scopes = scope_list(scopes)?;
    }
    if let Some(policy) = &update.policy {
        app.policy = validate_policy(policy)?;
    }
    if let Some(class) = update.rate_class {
        let mut policy = serde_json::to_value(&app.policy).unwrap_or_default();
        policy["rate_class"] = Value::String(class);
        app.policy = validate_policy(&policy)?;
    }
    if let Some(tags) = update.tags {
        app.tags = validate_tags(&serde_json::json!({ "tags": tags }))?;
    }
    if !store.apps.update(&app, now)? {
        return Err(AppError::NameTaken(app.name));
    }
    store.apps.get(app_id)?.ok_or_else(|| AppError::NotFound(app_id.into()))
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
    store.apps.insert_key(&key)?;
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
        .apps
        .get(app_id)?
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

/// Replaces a key: a new one with the same name and expiry for the same (active) app,
/// then the old one revoked. A revoked key cannot be rotated.
pub fn rotate_key(store: &Store, old: &KeyRecord, by: &str, now: &str) -> Result<(KeyRecord, String), AppError> {
    if old.revoked_at.is_some() {
        return Err(AppError::Invalid("the key is revoked: create a new one instead".into()));
    }
    let (key, token) = create_key(
        store,
        &old.app_id,
        NewKey {
            name: Some(old.name.clone()),
            expires_at: old.expires_at.clone(),
        },
        by,
        now,
    )?;
    store.apps.revoke_key(&old.id, now)?;
    Ok((key, token))
}

/// Revokes an app and every key it has, at once.
pub fn revoke_app(store: &Store, app_id: &str, now: &str) -> Result<AppRecord, AppError> {
    if !store.apps.set_status(app_id, "revoked", now)? {
        return Err(AppError::NotFound(app_id.into()));
    }
    store.apps.revoke_keys_of_app(app_id, now)?;
    store.apps.get(app_id)?.ok_or_else(|| AppError::NotFound(app_id.into()))
}

/// The app in the reference's admin shape, with its keys (no hashes).
pub fn app_json(store: &Store, app: &AppRecord) -> Result<Value, StoreError> {
    let mut value = serde_json::to_value(app).unwrap_or(Value::Null);
    let keys = store.apps.keys_of_app(&app.id)?;
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
    store.apps.insert_admin_token(&AdminTokenRecord {
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
    if !store.apps.set_status(app_id, "active", now)? {
        return Err(AppError::NotFound(app_id.into()));
    }
    store.apps.get(app_id)?.ok_or_else(|| AppError::NotFound(app_id.into()))
}

/// Deletes a revoked app with no pending drafts, and its keys.
pub fn delete_app(store: &Store, app_id: &str) -> Result<(), AppError> {
    let app = store
        .apps
        .get(app_id)?
        .ok_or_else(|| AppError::NotFound(app_id.into()))?;
    if app.status != "revoked" {
        return Err(AppError::Invalid(
            "Only disabled integrations can be permanently deleted".into(),
        ));
    }
    if store.drafts.pending_of_app(app_id)? > 0 {
        return Err(AppError::Invalid(
            "Cannot permanently delete integration with pending drafts".into(),
        ));
    }
    store.apps.delete(app_id)?;
    Ok(())
}

/// Merges a `PATCH /apps/:id/auto-execute` body into the current policy, as the reference
/// does: each section given (`writes`, `high_risk`) is replaced and normalized; `enabled`
/// is true only when exactly `true`; `require_preflight` and `require_idempotency` default
/// to true, `require_step_up` to false; `max_export_rows` is clamped to 100..5000 (default
/// 1000); a missing `allowed_actions` is `null` (any).
pub fn merge_auto_execute(current: &AutoExecutePolicy, patch: &Value) -> Result<AutoExecutePolicy, AppError> {
    let invalid = |m: String| AppError::Invalid(m);
    let Some(patch) = patch.as_object() else {
        return Err(invalid("the auto-execute policy must be an object".into()));
    };
    let mut out = current.clone();
    for (section, value) in patch {
        let high = match section.as_str() {
            "writes" => false,
            "high_risk" => true,
            other => return Err(invalid(format!("unknown section `{other}`"))),
        };
        let Some(v) = value.as_object() else {
            return Err(invalid(format!("`{section}` must be an object")));
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
            return Err(invalid(format!("unknown field `{section}.{key}`")));
        }
        let expires_at = match v.get("expires_at") {
            None | Some(Value::Null) => None,
            Some(Value::String(t)) if crate::clock::parse_iso(t).is_some() => Some(t.clone()),
            Some(_) => return Err(invalid(format!("`{section}.expires_at` must be an RFC 3339 timestamp"))),
        };
        let allowed_actions = match v.get("allowed_actions") {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) if items.len() <= MAX_POLICY_LIST => Some(
                items
                    .iter()
                    .map(|i| i.as_str().map(String::from))
                    .collect::<Option<Vec<String>>>()
                    .ok_or_else(|| invalid(format!("`{section}.allowed_actions` must list tool names")))?,
            ),
            Some(_) => return Err(invalid(format!("`{section}.allowed_actions` must list tool names"))),
        };
        let enabled = v.get("enabled") == Some(&Value::Bool(true));
        if high {
            out.high_risk = Some(HighRiskClass {
                enabled,
                expires_at,
                allowed_actions,
                require_preflight: v.get("require_preflight") != Some(&Value::Bool(false)),
                require_idempotency: v.get("require_idempotency") != Some(&Value::Bool(false)),
                // Off unless asked for: a reviewer's step-up grant per execution (SPEC 6).
                require_step_up: v.get("require_step_up") == Some(&Value::Bool(true)),
                max_export_rows: v
                    .get("max_export_rows")
                    .and_then(Value::as_i64)
                    .unwrap_or(1000)
                    .clamp(100, 5000),
            });
        } else {
            out.writes = Some(WritesClass {
                enabled,
                expires_at,
                allowed_actions,
            });
        }
    }
    Ok(out)
}

/// The most entries a list in a data policy may have.
const MAX_POLICY_LIST: usize = 500;

/// Parses an app policy (`{network, data, rate_class}`), checking every field with a
/// message that names it. The whole policy is replaced, as in the reference.
/// Most tags an app may carry.
const MAX_TAGS: usize = 32;

/// `{"tags": {"department": "finance"}}`: up to 32 tags, each key a lowercase identifier
/// (what a Cedar policy names) and each value a printable string of at most 128 characters.
pub fn validate_tags(body: &Value) -> Result<std::collections::BTreeMap<String, String>, AppError> {
    let invalid = |m: String| AppError::Invalid(m);
    let top = body
        .as_object()
        .ok_or_else(|| invalid("body must be an object".into()))?;
    if let Some(key) = top.keys().find(|k| *k != "tags") {
        return Err(invalid(format!("unknown field `{key}`")));
    }
    let tags = top
        .get("tags")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid("`tags` must be an object of strings".into()))?;
    if tags.len() > MAX_TAGS {
        return Err(invalid(format!("at most {MAX_TAGS} tags")));
    }
    let mut out = std::collections::BTreeMap::new();
    for (key, value) in tags {
        let mut chars = key.chars();
        let identifier = chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && key.len() <= 32;
        if !identifier {
            return Err(invalid(format!(
                "tag `{key}` must be a lowercase identifier of at most 32 characters"
            )));
        }
        let value = value
            .as_str()
            .filter(|v| v.chars().count() <= 128 && !v.chars().any(char::is_control))
            .ok_or_else(|| {
                invalid(format!(
                    "tag `{key}` must be a string of at most 128 printable characters"
                ))
            })?;
        out.insert(key.clone(), value.to_string());
    }
    Ok(out)
}

pub fn validate_policy(policy: &Value) -> Result<AppPolicy, AppError> {
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
    let mut out = AppPolicy::default();
    if let Some(network) = top.get("network") {
        let Some(map) = network.as_object() else {
            return Err(invalid("`network` must be an object".into()));
        };
        if let Some(key) = map
            .keys()
            .find(|k| !matches!(k.as_str(), "allowed_ips" | "client_certificates"))
        {
            return Err(invalid(format!("unknown field `network.{key}`")));
        }
        let ips = strings(map.get("allowed_ips").unwrap_or(&Value::Null), "network.allowed_ips")?;
        if let Some(bad) = ips.iter().find(|ip| crate::auth::network::parse_entry(ip).is_none()) {
            return Err(invalid(format!(
                "`network.allowed_ips` entry `{bad}` is not an IP address or CIDR"
            )));
        }
        let certificates = strings(
            map.get("client_certificates").unwrap_or(&Value::Null),
            "network.client_certificates",
        )?;
        if let Some(bad) = certificates.iter().find(|f| !crate::hashing::is_lower_hex(f, 64)) {
            return Err(invalid(format!(
                "`network.client_certificates` entry `{bad}` is not a SHA-256 fingerprint (64 lowercase hex digits)"
            )));
        }
        out.network = Some(NetworkPolicy {
            allowed_ips: ips,
            client_certificates: certificates,
        });
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
        let list = |name: &str| -> Result<Option<Vec<String>>, AppError> {
            map.get(name).map(|v| strings(v, &format!("data.{name}"))).transpose()
        };
        let max_days = match map.get("max_days") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_i64() {
                Some(days) if (1..=MAX_DAYS_LIMIT).contains(&days) => Some(days),
                _ => return Err(invalid("`data.max_days` must be an integer from 1 to 3650".into())),
            },
        };
        let allow_sensitive_fields = match map.get("allow_sensitive_fields") {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => return Err(invalid("`data.allow_sensitive_fields` must be true or false".into())),
        };
        out.data = Some(DataPolicy {
            allowed_ledger_ids: list("allowed_ledger_ids")?,
            allowed_org_ids: list("allowed_org_ids")?,
            max_days,
            allow_sensitive_fields,
        });
    }
    match top.get("rate_class") {
        None | Some(Value::Null) => {}
        Some(Value::String(class)) if !class.is_empty() && class.len() <= 64 => {
            out.rate_class = Some(class.clone());
        }
        Some(_) => return Err(invalid("`rate_class` must be a class name".into())),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

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
