//! The audit chain's rows: queries on the shared connection, and the two connections of
//! its own that the chain writer and the verifier use.

use std::path::Path;
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde_json::Value;

use super::{Db, StoreError, connect, json_col, to_json};

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

/// An audit row with its JSON columns already serialized (by the request's thread).
#[derive(Debug)]
pub struct AuditInsert<'a> {
    pub row: &'a AuditRow,
    pub details: &'a str,
    pub policy_ids: &'a str,
}

/// A signed checkpoint of the chain's head, as stored (and as a line of the checkpoint
/// log); `audit::checkpoint` signs and verifies it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedCheckpoint {
    /// The position (`seq`) of the head event.
    pub seq: i64,
    /// That event's `event_hash`.
    pub head_hash: String,
    pub created_at: String,
    /// The first 16 hex digits of the sha256 of the public key.
    pub key_id: String,
    /// Ed25519 over the checkpoint's message, hex.
    pub signature: String,
}

/// Which audit events to read.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub org_id: Option<String>,
    pub app_id: Option<String>,
    pub tool: Option<String>,
    pub code: Option<String>,
    /// The events of one request (its `X-Request-Id`).
    pub request_id: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    /// Only events after this sequence number (for `tail --follow`).
    pub after_seq: Option<i64>,
    pub limit: usize,
    /// Oldest first instead of newest first.
    pub ascending: bool,
}

const AUDIT_COLUMNS: &str = "seq, id, org_id, app_id, key_id, actor_user_id, performed_by_user_id, action, status,
     code, request_id, draft_id, execution_id, ip, user_agent, details, tool, risk, policy_ids, plugin,
     plugin_digest, latency_us, created_at, prev_event_hash, event_hash";

/// Audit queries on the request path's connection.
#[derive(Debug)]
pub struct AuditEvents {
    db: Arc<Db>,
}

impl AuditEvents {
    pub(super) fn new(db: Arc<Db>) -> Self {
        AuditEvents { db }
    }

    /// The newest audit events first (or oldest first), after applying the filter.
    pub fn query(&self, filter: &AuditFilter) -> Result<Vec<AuditRow>, StoreError> {
        let conn = self.db.conn()?;
        select(&conn, filter)
    }
}

/// A retention cut: every event up to `upto_seq` (whose hash was `upto_hash`) removed.
#[derive(Debug, Clone, PartialEq)]
pub struct PrunedCut {
    pub upto_seq: i64,
    pub upto_hash: String,
    pub removed: i64,
}

/// The audit writer's own connection: the only one that appends to or cuts the chain.
#[derive(Debug)]
pub struct ChainWriter {
    conn: Connection,
}

impl ChainWriter {
    pub fn open(path: &Path) -> Result<ChainWriter, StoreError> {
        Ok(ChainWriter { conn: connect(path)? })
    }

    /// The newest event's sequence number and hash, where the chain continues.
    pub fn head(&self) -> Result<Option<(i64, String)>, StoreError> {
        head(&self.conn)
    }

    /// Appends rows in one transaction; the caller computed their chain hashes. Returns
    /// the position of the last row.
    pub fn append(&mut self, rows: &[AuditInsert<'_>]) -> Result<i64, StoreError> {
        let tx = self.conn.transaction()?;
        insert(&tx, rows)?;
        let last = tx.last_insert_rowid();
        tx.commit()?;
        Ok(last)
    }

    /// Keeps a signed checkpoint beside the chain.
    pub fn insert_checkpoint(&self, checkpoint: &SignedCheckpoint) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT OR REPLACE INTO audit_signed_checkpoints (seq, head_hash, created_at, key_id, signature)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                checkpoint.seq,
                checkpoint.head_hash,
                checkpoint.created_at,
                checkpoint.key_id,
                checkpoint.signature
            ],
        )?;
        Ok(())
    }

    /// Removes events created before `before`, records the cut, and appends the checkpoint
    /// event `checkpoint(&cut)` builds, all in one transaction. `None` when nothing was old
    /// enough.
    pub fn prune(
        &mut self,
        before: &str,
        now: &str,
        checkpoint: impl FnOnce(&PrunedCut) -> AuditRow,
    ) -> Result<Option<(PrunedCut, AuditRow)>, StoreError> {
        let tx = self.conn.transaction()?;
        let upto: Option<(i64, String)> = tx
            .query_row(
                // Never the newest event: positions go on from the chain's head, never
                // from 1 again.
                "SELECT seq, event_hash FROM audit_events
                 WHERE created_at < ?1 AND seq < (SELECT MAX(seq) FROM audit_events)
                 ORDER BY seq DESC LIMIT 1",
                [before],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((upto_seq, upto_hash)) = upto else {
            return Ok(None);
        };
        let removed = tx.execute("DELETE FROM audit_events WHERE seq <= ?1", [upto_seq])?;
        let removed = i64::try_from(removed).unwrap_or(i64::MAX);
        tx.execute(
            "INSERT OR REPLACE INTO audit_checkpoints (upto_seq, upto_hash, removed, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![upto_seq, upto_hash, removed, now],
        )?;
        let cut = PrunedCut {
            upto_seq,
            upto_hash,
            removed,
        };
        let row = checkpoint(&cut);
        let details = row.details.to_string();
        let policy_ids = to_json(&row.policy_ids, "policy_ids")?;
        insert(
            &tx,
            &[AuditInsert {
                row: &row,
                details: &details,
                policy_ids: &policy_ids,
            }],
        )?;
        tx.commit()?;
        Ok(Some((cut, row)))
    }
}

/// A read-only walk of the chain for verification, on its own connection.
#[derive(Debug)]
pub struct ChainReader {
    conn: Connection,
}

impl ChainReader {
    pub fn open(path: &Path) -> Result<ChainReader, StoreError> {
        Ok(ChainReader { conn: connect(path)? })
    }

    /// The latest retention cut: `(upto_seq, upto_hash)`.
    pub fn anchor(&self) -> Result<Option<(i64, String)>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT upto_seq, upto_hash FROM audit_checkpoints ORDER BY upto_seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// The signed checkpoints kept in the database, oldest first.
    pub fn checkpoints(&self) -> Result<Vec<SignedCheckpoint>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT seq, head_hash, created_at, key_id, signature FROM audit_signed_checkpoints ORDER BY seq",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(SignedCheckpoint {
                seq: r.get(0)?,
                head_hash: r.get(1)?,
                created_at: r.get(2)?,
                key_id: r.get(3)?,
                signature: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Rows after `after_seq` in chain order, at most `limit`: pages bound memory.
    pub fn page(&self, after_seq: i64, limit: usize) -> Result<Vec<AuditRow>, StoreError> {
        select(
            &self.conn,
            &AuditFilter {
                after_seq: Some(after_seq),
                limit,
                ascending: true,
                ..AuditFilter::default()
            },
        )
    }
}

fn head(conn: &Connection) -> Result<Option<(i64, String)>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT seq, event_hash FROM audit_events ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
}

fn insert(conn: &Connection, rows: &[AuditInsert<'_>]) -> Result<(), StoreError> {
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

fn select(conn: &Connection, f: &AuditFilter) -> Result<Vec<AuditRow>, StoreError> {
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
            policy_ids: json_col(r, 18, "policy_ids")?,
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
