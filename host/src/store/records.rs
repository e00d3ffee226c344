//! Rows and the SQL that reads and writes them.

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;
use serde_json::Value;

use super::{AuditFilter, StoreError};

/// An app (integration) as stored.
#[derive(Debug, Clone, Serialize)]
pub struct AppRecord {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub scope: String,
    pub org_id: Option<String>,
    pub user_id: Option<String>,
    pub service_user_id: Option<String>,
    pub scopes: Vec<String>,
    pub status: String,
    pub policy: Value,
    pub auto_execute: Value,
    pub created_by: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// A key as stored: the token itself is never kept, only its sha256.
#[derive(Debug, Clone, Serialize)]
pub struct KeyRecord {
    pub id: String,
    pub app_id: String,
    pub name: String,
    pub token_prefix: String,
    #[serde(skip)]
    pub token_hash: String,
    pub last_used_at: Option<String>,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    pub created_by: Option<String>,
    pub created_at: String,
}

#[derive(Debug, Clone)]
pub struct AdminTokenRecord {
    pub id: String,
    pub name: String,
    pub role: String,
    pub org_id: Option<String>,
    pub token_prefix: String,
    pub token_hash: String,
    pub revoked_at: Option<String>,
    pub created_at: String,
}

/// A proposed write.
#[derive(Debug, Clone, Serialize)]
pub struct DraftRecord {
    pub id: String,
    pub app_id: String,
    pub key_id: String,
    pub org_id: String,
    pub actor_user_id: String,
    pub action_type: String,
    pub payload: Value,
    pub status: String,
    pub risk: String,
    pub requires_confirmation: bool,
    pub auto_execute_requested: bool,
    pub justification: Option<String>,
    pub idempotency_key: Option<String>,
    pub request_id: String,
    pub impact: Option<Value>,
    pub impact_hash: Option<String>,
    pub preflight_hash: Option<String>,
    pub preflight_state_witness_hash: Option<String>,
    pub plugin: String,
    pub plugin_digest: String,
    pub created_at: String,
    pub updated_at: String,
    pub expires_at: String,
    pub confirmed_at: Option<String>,
    pub canceled_at: Option<String>,
    pub confirmed_by_user_id: Option<String>,
}

/// One audit event as stored, chain hashes included.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AuditRow {
    #[serde(skip)]
    pub seq: i64,
    pub id: String,
    pub org_id: Option<String>,
    pub app_id: Option<String>,
    pub key_id: Option<String>,
    pub actor_user_id: Option<String>,
    pub performed_by_user_id: Option<String>,
    pub action: String,
    pub status: String,
    pub code: String,
    pub request_id: Option<String>,
    pub draft_id: Option<String>,
    pub execution_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub details: Value,
    pub tool: Option<String>,
    pub risk: Option<String>,
    pub policy_ids: Vec<String>,
    pub plugin: Option<String>,
    pub plugin_digest: Option<String>,
    pub latency_us: Option<i64>,
    pub created_at: String,
    pub prev_event_hash: String,
    pub event_hash: String,
}

fn json_col(row: &Row<'_>, index: usize, column: &'static str) -> rusqlite::Result<Value> {
    let text: String = row.get(index)?;
    serde_json::from_str(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, Box::new(JsonColumn(column, e)))
    })
}

#[derive(Debug, thiserror::Error)]
#[error("column `{0}`: {1}")]
struct JsonColumn(&'static str, serde_json::Error);

const APP_COLUMNS: &str = "id, name, description, scope, org_id, user_id, service_user_id, scopes, status,
     policy, auto_execute, created_by, created_at, updated_at";

fn app_from_row(r: &Row<'_>) -> rusqlite::Result<AppRecord> {
    let scopes = json_col(r, 7, "scopes")?;
    Ok(AppRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        description: r.get(2)?,
        scope: r.get(3)?,
        org_id: r.get(4)?,
        user_id: r.get(5)?,
        service_user_id: r.get(6)?,
        scopes: scopes
            .as_array()
            .map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect())
            .unwrap_or_default(),
        status: r.get(8)?,
        policy: json_col(r, 9, "policy")?,
        auto_execute: json_col(r, 10, "auto_execute")?,
        created_by: r.get(11)?,
        created_at: r.get(12)?,
        updated_at: r.get(13)?,
    })
}

pub(super) fn insert_app(conn: &Connection, app: &AppRecord) -> Result<(), StoreError> {
    conn.execute(
        &format!(
            "INSERT INTO apps ({APP_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
        ),
        params![
            app.id,
            app.name,
            app.description,
            app.scope,
            app.org_id,
            app.user_id,
            app.service_user_id,
            serde_json::to_string(&app.scopes).map_err(|source| StoreError::Json {
                column: "scopes",
                source
            })?,
            app.status,
            app.policy.to_string(),
            app.auto_execute.to_string(),
            app.created_by,
            app.created_at,
            app.updated_at
        ],
    )?;
    Ok(())
}

pub(super) fn app(conn: &Connection, id: &str) -> Result<Option<AppRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {APP_COLUMNS} FROM apps WHERE id = ?1"))?;
    Ok(stmt.query_row([id], app_from_row).optional()?)
}

pub(super) fn apps(conn: &Connection) -> Result<Vec<AppRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {APP_COLUMNS} FROM apps ORDER BY created_at, id"))?;
    let rows = stmt.query_map([], app_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

const KEY_COLUMNS: &str =
    "id, app_id, name, token_prefix, token_hash, last_used_at, expires_at, revoked_at, created_by, created_at";

pub(super) fn insert_key(conn: &Connection, key: &KeyRecord) -> Result<(), StoreError> {
    conn.execute(
        &format!("INSERT INTO keys ({KEY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
        params![
            key.id,
            key.app_id,
            key.name,
            key.token_prefix,
            key.token_hash,
            key.last_used_at,
            key.expires_at,
            key.revoked_at,
            key.created_by,
            key.created_at
        ],
    )?;
    Ok(())
}

pub(super) fn keys_where(
    conn: &Connection,
    condition: &str,
    order: &str,
    value: &str,
) -> Result<Vec<KeyRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM keys WHERE {condition} {order}"))?;
    let rows = stmt.query_map([value], |r| {
        Ok(KeyRecord {
            id: r.get(0)?,
            app_id: r.get(1)?,
            name: r.get(2)?,
            token_prefix: r.get(3)?,
            token_hash: r.get(4)?,
            last_used_at: r.get(5)?,
            expires_at: r.get(6)?,
            revoked_at: r.get(7)?,
            created_by: r.get(8)?,
            created_at: r.get(9)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

const DRAFT_COLUMNS: &str = "id, app_id, key_id, org_id, actor_user_id, action_type, payload, status, risk,
     requires_confirmation, auto_execute_requested, justification, idempotency_key, request_id, impact,
     impact_hash, preflight_hash, preflight_state_witness_hash, plugin, plugin_digest, created_at,
     updated_at, expires_at, confirmed_at, canceled_at, confirmed_by_user_id";

pub(super) fn insert_draft(conn: &Connection, d: &DraftRecord) -> Result<(), StoreError> {
    conn.execute(
        &format!(
            "INSERT INTO drafts ({DRAFT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12,
             ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26)"
        ),
        params![
            d.id,
            d.app_id,
            d.key_id,
            d.org_id,
            d.actor_user_id,
            d.action_type,
            d.payload.to_string(),
            d.status,
            d.risk,
            d.requires_confirmation,
            d.auto_execute_requested,
            d.justification,
            d.idempotency_key,
            d.request_id,
            d.impact.as_ref().map(Value::to_string),
            d.impact_hash,
            d.preflight_hash,
            d.preflight_state_witness_hash,
            d.plugin,
            d.plugin_digest,
            d.created_at,
            d.updated_at,
            d.expires_at,
            d.confirmed_at,
            d.canceled_at,
            d.confirmed_by_user_id
        ],
    )?;
    Ok(())
}

pub(super) fn draft(conn: &Connection, id: &str) -> Result<Option<DraftRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {DRAFT_COLUMNS} FROM drafts WHERE id = ?1"))?;
    Ok(stmt
        .query_row([id], |r| {
            let impact: Option<String> = r.get(14)?;
            Ok(DraftRecord {
                id: r.get(0)?,
                app_id: r.get(1)?,
                key_id: r.get(2)?,
                org_id: r.get(3)?,
                actor_user_id: r.get(4)?,
                action_type: r.get(5)?,
                payload: json_col(r, 6, "payload")?,
                status: r.get(7)?,
                risk: r.get(8)?,
                requires_confirmation: r.get(9)?,
                auto_execute_requested: r.get(10)?,
                justification: r.get(11)?,
                idempotency_key: r.get(12)?,
                request_id: r.get(13)?,
                impact: impact.and_then(|text| serde_json::from_str(&text).ok()),
                impact_hash: r.get(15)?,
                preflight_hash: r.get(16)?,
                preflight_state_witness_hash: r.get(17)?,
                plugin: r.get(18)?,
                plugin_digest: r.get(19)?,
                created_at: r.get(20)?,
                updated_at: r.get(21)?,
                expires_at: r.get(22)?,
                confirmed_at: r.get(23)?,
                canceled_at: r.get(24)?,
                confirmed_by_user_id: r.get(25)?,
            })
        })
        .optional()?)
}

const AUDIT_COLUMNS: &str = "seq, id, org_id, app_id, key_id, actor_user_id, performed_by_user_id, action, status,
     code, request_id, draft_id, execution_id, ip, user_agent, details, tool, risk, policy_ids, plugin,
     plugin_digest, latency_us, created_at, prev_event_hash, event_hash";

/// An audit row with its JSON columns already serialized (by the request's thread).
#[derive(Debug)]
pub struct AuditInsert<'a> {
    pub row: &'a AuditRow,
    pub details: &'a str,
    pub policy_ids: &'a str,
}

pub(super) fn insert_audit_rows(conn: &Connection, rows: &[AuditInsert<'_>]) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "INSERT INTO audit_events ({AUDIT_COLUMNS}) VALUES (NULL, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, \
         ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24)"
    ))?;
    for insert in rows {
        let e = insert.row;
        stmt.execute(params![
            e.id,
            e.org_id,
            e.app_id,
            e.key_id,
            e.actor_user_id,
            e.performed_by_user_id,
            e.action,
            e.status,
            e.code,
            e.request_id,
            e.draft_id,
            e.execution_id,
            e.ip,
            e.user_agent,
            insert.details,
            e.tool,
            e.risk,
            insert.policy_ids,
            e.plugin,
            e.plugin_digest,
            e.latency_us,
            e.created_at,
            e.prev_event_hash,
            e.event_hash,
        ])?;
    }
    Ok(())
}

pub(super) fn audit_events(conn: &Connection, f: &AuditFilter) -> Result<Vec<AuditRow>, StoreError> {
    let mut sql = format!("SELECT {AUDIT_COLUMNS} FROM audit_events WHERE 1 = 1");
    let mut args: Vec<Box<dyn rusqlite::ToSql>> = Vec::new();
    let mut add = |clause: &str, value: Box<dyn rusqlite::ToSql>| {
        args.push(value);
        sql.push_str(&format!(" AND {clause} ?{}", args.len()));
    };
    if let Some(v) = &f.org_id {
        add("org_id =", Box::new(v.clone()));
    }
    if let Some(v) = &f.app_id {
        add("app_id =", Box::new(v.clone()));
    }
    if let Some(v) = &f.tool {
        add("tool =", Box::new(v.clone()));
    }
    if let Some(v) = &f.code {
        add("code =", Box::new(v.clone()));
    }
    if let Some(v) = &f.request_id {
        add("request_id =", Box::new(v.clone()));
    }
    if let Some(v) = &f.since {
        add("created_at >=", Box::new(v.clone()));
    }
    if let Some(v) = &f.until {
        add("created_at <", Box::new(v.clone()));
    }
    if let Some(v) = f.after_seq {
        add("seq >", Box::new(v));
    }
    sql.push_str(if f.ascending {
        " ORDER BY seq ASC"
    } else {
        " ORDER BY seq DESC"
    });
    sql.push_str(&format!(" LIMIT {}", f.limit.max(1)));
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(args.iter().map(|b| b.as_ref())), |r| {
        let policy_ids = json_col(r, 18, "policy_ids")?;
        Ok(AuditRow {
            seq: r.get(0)?,
            id: r.get(1)?,
            org_id: r.get(2)?,
            app_id: r.get(3)?,
            key_id: r.get(4)?,
            actor_user_id: r.get(5)?,
            performed_by_user_id: r.get(6)?,
            action: r.get(7)?,
            status: r.get(8)?,
            code: r.get(9)?,
            request_id: r.get(10)?,
            draft_id: r.get(11)?,
            execution_id: r.get(12)?,
            ip: r.get(13)?,
            user_agent: r.get(14)?,
            details: json_col(r, 15, "details")?,
            tool: r.get(16)?,
            risk: r.get(17)?,
            policy_ids: policy_ids
                .as_array()
                .map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect())
                .unwrap_or_default(),
            plugin: r.get(19)?,
            plugin_digest: r.get(20)?,
            latency_us: r.get(21)?,
            created_at: r.get(22)?,
            prev_event_hash: r.get(23)?,
            event_hash: r.get(24)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A stored step-up grant (its token only as a hash).
#[derive(Debug, Clone)]
pub struct StepUpGrant {
    pub id: String,
    pub token_hash: String,
    pub preflight_id: String,
    pub app_id: String,
    pub issued_by: String,
    pub note: Option<String>,
    pub created_at: String,
    pub expires_at: String,
}

/// A stored preflight.
#[derive(Debug, Clone)]
pub struct PreflightRecord {
    pub id: String,
    pub app_id: String,
    pub key_id: String,
    pub actor_user_id: String,
    pub action: String,
    pub payload: Value,
    pub impact: Value,
    pub impact_hash: String,
    pub state_witness: Option<Value>,
    pub state_witness_hash: Option<String>,
    pub plugin_digest: String,
    pub created_at: String,
    pub expires_at: String,
}

const PREFLIGHT_COLUMNS: &str = "id, app_id, key_id, actor_user_id, action, payload, impact, impact_hash,
     state_witness, state_witness_hash, plugin_digest, created_at, expires_at";

pub(super) fn insert_preflight(conn: &Connection, p: &PreflightRecord) -> Result<(), StoreError> {
    conn.execute(
        &format!("INSERT INTO preflights ({PREFLIGHT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"),
        params![
            p.id,
            p.app_id,
            p.key_id,
            p.actor_user_id,
            p.action,
            p.payload.to_string(),
            p.impact.to_string(),
            p.impact_hash,
            p.state_witness.as_ref().map(Value::to_string),
            p.state_witness_hash,
            p.plugin_digest,
            p.created_at,
            p.expires_at
        ],
    )?;
    Ok(())
}

pub(super) fn preflight(conn: &Connection, id: &str) -> Result<Option<PreflightRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {PREFLIGHT_COLUMNS} FROM preflights WHERE id = ?1"))?;
    Ok(stmt
        .query_row([id], |r| {
            let witness: Option<String> = r.get(8)?;
            Ok(PreflightRecord {
                id: r.get(0)?,
                app_id: r.get(1)?,
                key_id: r.get(2)?,
                actor_user_id: r.get(3)?,
                action: r.get(4)?,
                payload: json_col(r, 5, "payload")?,
                impact: json_col(r, 6, "impact")?,
                impact_hash: r.get(7)?,
                state_witness: witness.and_then(|t| serde_json::from_str(&t).ok()),
                state_witness_hash: r.get(9)?,
                plugin_digest: r.get(10)?,
                created_at: r.get(11)?,
                expires_at: r.get(12)?,
            })
        })
        .optional()?)
}

/// One run of a draft's action.
#[derive(Debug, Clone, Serialize)]
pub struct ExecutionRecord {
    pub id: String,
    pub draft_id: String,
    pub app_id: String,
    pub idempotency_key: Option<String>,
    /// `running`, `success`, `failed` or `indeterminate`.
    pub status: String,
    pub result: Option<Value>,
    pub error: Option<String>,
    #[serde(skip)]
    pub instance_id: String,
    pub created_at: String,
}
