//! Preflight bindings and the step-up grants that name them.

use std::sync::Arc;

use serde_json::Value;

use super::sql::{Db, args};
use super::{StoreError, json_col, optional_json_col};

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

#[derive(Debug)]
pub struct Preflights {
    db: Arc<Db>,
}

const PREFLIGHT_COLUMNS: &str = "id, app_id, key_id, actor_user_id, action, payload, impact, impact_hash,
     state_witness, state_witness_hash, plugin_digest, created_at, expires_at";

impl Preflights {
    pub(super) fn new(db: Arc<Db>) -> Self {
        Preflights { db }
    }

    pub fn insert(&self, p: &PreflightRecord) -> Result<(), StoreError> {
        self.db.write(|conn| conn.execute(
            &format!(
                "INSERT INTO preflights ({PREFLIGHT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
            ),
            args![
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
        ))?;
        Ok(())
    }

    pub fn get(&self, id: &str) -> Result<Option<PreflightRecord>, StoreError> {
        self.db.read(|conn| {
            conn.query_optional(
                &format!("SELECT {PREFLIGHT_COLUMNS} FROM preflights WHERE id = ?1"),
                args![id],
                |r| {
                    Ok(PreflightRecord {
                        id: r.get(0)?,
                        app_id: r.get(1)?,
                        key_id: r.get(2)?,
                        actor_user_id: r.get(3)?,
                        action: r.get(4)?,
                        payload: json_col(r, 5, "payload")?,
                        impact: json_col(r, 6, "impact")?,
                        impact_hash: r.get(7)?,
                        state_witness: optional_json_col(r, 8)?,
                        state_witness_hash: r.get(9)?,
                        plugin_digest: r.get(10)?,
                        created_at: r.get(11)?,
                        expires_at: r.get(12)?,
                    })
                },
            )
        })
    }

    pub fn insert_step_up(&self, grant: &StepUpGrant) -> Result<(), StoreError> {
        self.db.write(|conn| {
            conn.execute(
            "INSERT INTO step_up_grants (id, token_hash, preflight_id, app_id, issued_by, note, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            args![
                grant.id,
                grant.token_hash,
                grant.preflight_id,
                grant.app_id,
                grant.issued_by,
                grant.note,
                grant.created_at,
                grant.expires_at
            ],
        )
        })?;
        Ok(())
    }

    /// Uses a step-up grant: true only if it exists for this app and preflight, has not
    /// been used, and has not expired. One statement, so a grant is used at most once.
    pub fn use_step_up(
        &self,
        token_hash: &str,
        app_id: &str,
        preflight_id: &str,
        now: &str,
    ) -> Result<bool, StoreError> {
        let changed = self.db.write(|conn| {
            conn.execute(
                "UPDATE step_up_grants SET used_at = ?1
                 WHERE token_hash = ?2 AND app_id = ?3 AND preflight_id = ?4 AND used_at IS NULL AND expires_at > ?1",
                args![now, token_hash, app_id, preflight_id],
            )
        })?;
        Ok(changed == 1)
    }
}
