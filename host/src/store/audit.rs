//! The audit chain's rows: queries on the shared connection, and the two connections of
//! its own that the chain writer and the verifier use.

use std::sync::{Arc, LazyLock};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::journal::Journal;
use super::sql::{Conn, Db, args};
use super::{StoreError, json_col, to_json};

/// One audit event as stored, chain hashes included. Its serialized form is the event's
/// canonical one (without `event_hash`), which the store's journal reads back.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditRow {
    #[serde(skip)]
    pub seq: i64,
    /// The gateway node whose chain holds the event: empty for the one process of an
    /// embedded store (and then not part of the hashed event, so chains written before
    /// nodes existed still verify).
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub node: String,
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
    #[serde(default)]
    pub event_hash: String,
}

/// An event the chain writer appends: its row, chain hashes computed, and its JSON columns
/// and canonical text already serialized (by the request's thread and the leader). The
/// JSON columns stored are these texts; the row's own `details` and `policy_ids` may be
/// left empty.
#[derive(Debug)]
pub struct AuditAppend {
    pub row: AuditRow,
    pub details: String,
    pub policy_ids: String,
    /// The bytes `row.event_hash` is the sha256 of: the journal's line (PostgreSQL stores
    /// have no journal and do not read it).
    pub canonical: String,
}

/// An audit row with its JSON columns already serialized.
#[derive(Debug)]
struct AuditInsert<'a> {
    row: &'a AuditRow,
    details: &'a str,
    policy_ids: &'a str,
}

/// The text columns of a row, in `AUDIT_COLUMNS` order without `seq`, `node` and
/// `latency_us`; `None` is NULL.
type Texts<'a> = [Option<&'a str>; 23];

/// How many of a row's [`Texts`] come before `latency_us` (`id` to `plugin_digest`).
const TEXTS_BEFORE_LATENCY: usize = 20;

impl<'a> AuditInsert<'a> {
    fn texts(&self) -> Texts<'a> {
        let e = self.row;
        [
            Some(e.id.as_str()),
            e.org_id.as_deref(),
            e.app_id.as_deref(),
            e.key_id.as_deref(),
            e.actor_user_id.as_deref(),
            e.performed_by_user_id.as_deref(),
            Some(e.action.as_str()),
            Some(e.status.as_str()),
            Some(e.code.as_str()),
            e.request_id.as_deref(),
            e.draft_id.as_deref(),
            e.execution_id.as_deref(),
            e.ip.as_deref(),
            e.user_agent.as_deref(),
            Some(self.details),
            e.tool.as_deref(),
            e.risk.as_deref(),
            Some(self.policy_ids),
            e.plugin.as_deref(),
            e.plugin_digest.as_deref(),
            Some(e.created_at.as_str()),
            Some(e.prev_event_hash.as_str()),
            Some(e.event_hash.as_str()),
        ]
    }
}

/// A journaled row waiting for the index, its text columns packed in one buffer. The
/// indexer thread drops it, and a block freed by another thread than the one that
/// allocated it costs the allocator a cache miss and a collection: one block here, where
/// an [`AuditAppend`] holds twenty or more (BENCHMARKS.md, session 27).
#[derive(Debug)]
pub(super) struct IndexRow {
    pub(super) seq: i64,
    latency_us: Option<i64>,
    text: String,
    /// Where each of [`Texts`] is in `text`; `None` is NULL.
    spans: [Option<(u32, u32)>; 23],
}

impl IndexRow {
    pub(super) fn pack(append: &AuditAppend) -> IndexRow {
        let texts = AuditInsert {
            row: &append.row,
            details: &append.details,
            policy_ids: &append.policy_ids,
        }
        .texts();
        let mut text = String::with_capacity(texts.iter().flatten().map(|t| t.len()).sum());
        let spans = texts.map(|column| {
            column.map(|column| {
                let start = text.len();
                text.push_str(column);
                // An event is bounded far below 4 GiB (its details are capped).
                (start as u32, text.len() as u32)
            })
        });
        IndexRow {
            seq: append.row.seq,
            latency_us: append.row.latency_us,
            text,
            spans,
        }
    }

    fn texts(&self) -> Texts<'_> {
        self.spans
            .map(|span| span.map(|(start, end)| &self.text[start as usize..end as usize]))
    }
}

/// A signed checkpoint of the chain's head, as stored (and as a line of the checkpoint
/// log); `audit::checkpoint` signs and verifies it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedCheckpoint {
    /// The node whose chain it signs; empty for the embedded store's one chain.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
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

const AUDIT_COLUMNS: &str =
    "seq, node, id, org_id, app_id, key_id, actor_user_id, performed_by_user_id, action, status,
     code, request_id, draft_id, execution_id, ip, user_agent, details, tool, risk, policy_ids, plugin,
     plugin_digest, latency_us, created_at, prev_event_hash, event_hash";

/// The embedded store's journal, once this process's chain writer opened it: everything
/// that reads `audit_events` indexes its pending rows first.
pub(super) type JournalSlot = Arc<std::sync::OnceLock<Arc<Journal>>>;

/// Indexes the rows appended to this process's journal and not yet in the table.
pub(super) fn index_pending(journal: &JournalSlot) -> Result<(), StoreError> {
    journal.get().map_or(Ok(()), |j| j.index_pending())
}

/// Audit queries on the request path's connection.
#[derive(Debug)]
pub struct AuditEvents {
    db: Arc<Db>,
    journal: JournalSlot,
}

impl AuditEvents {
    pub(super) fn new(db: Arc<Db>, journal: JournalSlot) -> Self {
        AuditEvents { db, journal }
    }

    /// The newest audit events first (or oldest first), after applying the filter.
    pub fn query(&self, filter: &AuditFilter) -> Result<Vec<AuditRow>, StoreError> {
        index_pending(&self.journal)?;
        self.db.read(|conn| select(conn, None, filter, Order::Position))
    }

    /// Events in time order, oldest first: every node's chain merged by `created_at` (then
    /// position). A page starts after `after`, the `(created_at, seq)` of the last event of
    /// the page before.
    pub fn in_time_order(&self, filter: &AuditFilter, after: Option<(&str, i64)>) -> Result<Vec<AuditRow>, StoreError> {
        index_pending(&self.journal)?;
        self.db.read(|conn| select(conn, None, filter, Order::Time { after }))
    }
}

/// A retention cut: every event up to `upto_seq` (whose hash was `upto_hash`) removed.
#[derive(Debug, Clone, PartialEq)]
pub struct PrunedCut {
    pub upto_seq: i64,
    pub upto_hash: String,
    pub removed: i64,
}

/// A chain's signed checkpoints, kept beside it (`ChainWriter::checkpoint_store`).
pub struct CheckpointStore {
    db: Arc<Db>,
    node: String,
}

impl CheckpointStore {
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Keeps a signed checkpoint beside the chain.
    pub fn insert(&self, checkpoint: &SignedCheckpoint) -> Result<(), StoreError> {
        self.db.read(|conn| {
            conn.execute(
                "INSERT INTO audit_signed_checkpoints (seq, node, head_hash, created_at, key_id, signature)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (seq) DO UPDATE SET node = excluded.node, head_hash = excluded.head_hash,
                     created_at = excluded.created_at, key_id = excluded.key_id, signature = excluded.signature",
                args![
                    checkpoint.seq,
                    checkpoint.node,
                    checkpoint.head_hash,
                    checkpoint.created_at,
                    checkpoint.key_id,
                    checkpoint.signature
                ],
            )?;
            Ok(())
        })
    }
}

/// One node's audit writer: the only one that appends to or cuts that node's chain. On the
/// embedded store it appends to the journal (`store/journal.rs`), on PostgreSQL to the table.
#[derive(Debug)]
pub struct ChainWriter {
    db: Arc<Db>,
    node: String,
    journal: Option<Arc<Journal>>,
}

impl ChainWriter {
    pub(super) fn new(db: Arc<Db>, node: &str, journal: Option<Arc<Journal>>) -> ChainWriter {
        ChainWriter {
            db,
            node: node.to_string(),
            journal,
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// The newest event's sequence number and hash, where the chain continues.
    pub fn head(&self) -> Result<Option<(i64, String)>, StoreError> {
        match &self.journal {
            Some(journal) => Ok(journal.head()),
            None => self.db.read(|conn| head(conn, &self.node)),
        }
    }

    /// Copies what the journal holds into the table and removes its segments: after a clean
    /// stop the database alone holds the chain.
    pub fn settle(&self) -> Result<(), StoreError> {
        self.journal.as_ref().map_or(Ok(()), |j| j.settle())
    }

    /// Appends rows, durably; the caller computed their chain hashes. Returns the position
    /// of the last row.
    pub fn append(&mut self, rows: Vec<AuditAppend>) -> Result<i64, StoreError> {
        if let Some(journal) = &self.journal {
            return journal.append(rows);
        }
        let inserts: Vec<AuditInsert<'_>> = rows
            .iter()
            .map(|a| AuditInsert {
                row: &a.row,
                details: &a.details,
                policy_ids: &a.policy_ids,
            })
            .collect();
        // Only this node appends to its chain: no lock across nodes is needed.
        self.db.own_rows(|conn| insert(conn, &self.node, &inserts))
    }

    /// Where this chain's signed checkpoints are kept, written apart from its appends.
    pub fn checkpoint_store(&self) -> CheckpointStore {
        CheckpointStore {
            db: Arc::clone(&self.db),
            node: self.node.clone(),
        }
    }

    /// Removes this node's events created before `before`, records the cut, and appends
    /// the checkpoint event `checkpoint(&cut)` builds, all in one transaction. `None` when
    /// nothing was old enough.
    pub fn prune(
        &mut self,
        before: &str,
        now: &str,
        checkpoint: impl FnOnce(&PrunedCut) -> AuditRow,
    ) -> Result<Option<(PrunedCut, AuditRow)>, StoreError> {
        if let Some(journal) = self.journal.clone() {
            // The cut and its checkpoint event go to the table directly: first everything
            // appended must be there, and the journal's head must follow the new event.
            journal.index_pending()?;
            let pruned = self.prune_table(before, now, checkpoint)?;
            journal.reset_head(self.db.read(|conn| head(conn, &self.node))?);
            return Ok(pruned);
        }
        self.prune_table(before, now, checkpoint)
    }

    fn prune_table(
        &mut self,
        before: &str,
        now: &str,
        checkpoint: impl FnOnce(&PrunedCut) -> AuditRow,
    ) -> Result<Option<(PrunedCut, AuditRow)>, StoreError> {
        let node = self.node.as_str();
        self.db.own_rows(|conn| {
            let upto: Option<(i64, String)> = conn.query_optional(
                // Never the newest event: positions go on from the chain's head, never
                // from 1 again.
                "SELECT seq, event_hash FROM audit_events
                 WHERE node = ?2 AND created_at < ?1 AND seq < (SELECT MAX(seq) FROM audit_events WHERE node = ?2)
                 ORDER BY seq DESC LIMIT 1",
                args![before, node],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let Some((upto_seq, upto_hash)) = upto else {
                return Ok(None);
            };
            let removed = conn.execute("DELETE FROM audit_events WHERE node = ?2 AND seq <= ?1", args![upto_seq, node])?;
            let removed = i64::try_from(removed).unwrap_or(i64::MAX);
            conn.execute(
                "INSERT INTO audit_checkpoints (upto_seq, node, upto_hash, removed, created_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (upto_seq) DO UPDATE SET node = excluded.node, upto_hash = excluded.upto_hash,
                     removed = excluded.removed, created_at = excluded.created_at",
                args![upto_seq, node, upto_hash, removed, now],
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
                conn,
                node,
                &[AuditInsert {
                    row: &row,
                    details: &details,
                    policy_ids: &policy_ids,
                }],
            )?;
            Ok(Some((cut, row)))
        })
    }
}

/// A read-only walk of one node's chain for verification.
#[derive(Debug)]
pub struct ChainReader {
    db: Arc<Db>,
    node: String,
}

impl ChainReader {
    /// A reader of each chain in the database (one per node that wrote events; one, the
    /// embedded store's, when there are none).
    pub(super) fn all(db: Arc<Db>) -> Result<Vec<ChainReader>, StoreError> {
        let mut nodes: Vec<String> = db.read(|conn| {
            conn.query(
                "SELECT node FROM audit_events GROUP BY node
                 UNION SELECT node FROM audit_checkpoints GROUP BY node
                 UNION SELECT node FROM audit_signed_checkpoints GROUP BY node
                 ORDER BY 1",
                args![],
                |r| r.get(0),
            )
        })?;
        nodes.dedup();
        if nodes.is_empty() {
            nodes.push(String::new());
        }
        Ok(nodes
            .into_iter()
            .map(|node| ChainReader { db: db.clone(), node })
            .collect())
    }

    pub(super) fn of(db: Arc<Db>, node: &str) -> ChainReader {
        ChainReader {
            db,
            node: node.to_string(),
        }
    }

    /// The node whose chain this is; empty for the embedded store's one process.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The latest retention cut: `(upto_seq, upto_hash)`.
    pub fn anchor(&self) -> Result<Option<(i64, String)>, StoreError> {
        self.db.read(|conn| {
            conn.query_optional(
                "SELECT upto_seq, upto_hash FROM audit_checkpoints WHERE node = ?1 ORDER BY upto_seq DESC LIMIT 1",
                args![self.node],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })
    }

    /// The signed checkpoints kept in the database, oldest first.
    pub fn checkpoints(&self) -> Result<Vec<SignedCheckpoint>, StoreError> {
        self.db.read(|conn| {
            conn.query(
                "SELECT seq, head_hash, created_at, key_id, signature FROM audit_signed_checkpoints
                 WHERE node = ?1 ORDER BY seq",
                args![self.node],
                |r| {
                    Ok(SignedCheckpoint {
                        node: self.node.clone(),
                        seq: r.get(0)?,
                        head_hash: r.get(1)?,
                        created_at: r.get(2)?,
                        key_id: r.get(3)?,
                        signature: r.get(4)?,
                    })
                },
            )
        })
    }

    /// Rows after `after_seq` in chain order, at most `limit`: pages bound memory.
    pub fn page(&self, after_seq: i64, limit: usize) -> Result<Vec<AuditRow>, StoreError> {
        self.db.read(|conn| {
            select(
                conn,
                Some(&self.node),
                &AuditFilter {
                    after_seq: Some(after_seq),
                    limit,
                    ascending: true,
                    ..AuditFilter::default()
                },
                Order::Position,
            )
        })
    }
}

pub(super) fn head(conn: &mut Conn<'_>, node: &str) -> Result<Option<(i64, String)>, StoreError> {
    conn.query_optional(
        "SELECT seq, event_hash FROM audit_events WHERE node = ?1 ORDER BY seq DESC LIMIT 1",
        args![node],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}

/// Rows a PostgreSQL insert carries at once: one round trip each (SQLite inserts a row at a
/// time through one cached statement, which costs it nothing more).
const POSTGRES_INSERT_ROWS: usize = 64;

/// Inserts rows in order (positions follow the order of a statement's rows); the position
/// (`seq`) of the last one.
fn insert(conn: &mut Conn<'_>, node: &str, rows: &[AuditInsert<'_>]) -> Result<i64, StoreError> {
    const COLUMNS: usize = 25;
    let postgres = conn.is_postgres();
    let chunk = if postgres { POSTGRES_INSERT_ROWS } else { 1 };
    // The statement for a whole chunk is built once: building it per row was 26 `format!`s
    // in the audit commit, which every request waits for.
    static SQLITE_ROW: LazyLock<String> = LazyLock::new(|| insert_sql(1, COLUMNS, false));
    static ONE_ROW: LazyLock<String> = LazyLock::new(|| insert_sql(1, COLUMNS, true));
    static FULL_CHUNK: LazyLock<String> = LazyLock::new(|| insert_sql(POSTGRES_INSERT_ROWS, COLUMNS, true));
    let mut last = 0;
    for part in rows.chunks(chunk) {
        let built;
        let sql: &str = match part.len() {
            1 if !postgres => &SQLITE_ROW,
            1 => &ONE_ROW,
            POSTGRES_INSERT_ROWS => &FULL_CHUNK,
            n => {
                built = insert_sql(n, COLUMNS, true);
                &built
            }
        };
        let texts: Vec<Texts<'_>> = part.iter().map(AuditInsert::texts).collect();
        let mut params: Vec<&dyn super::sql::Param> = Vec::with_capacity(part.len() * COLUMNS);
        for (insert, texts) in part.iter().zip(&texts) {
            params.extend(row_values(&node, texts, &insert.row.latency_us));
        }
        if let Some(seq) = conn.insert_rowid(sql, &params)? {
            last = seq;
            continue;
        }
        let positions: Vec<i64> = conn.query(sql, &params, |r| r.get(0))?;
        last = positions.into_iter().max().unwrap_or(last);
    }
    Ok(last)
}

/// Copies journaled rows into the table at their positions. A row already there (another
/// process recovering the same journal) is left as it is: the two are the same line.
pub(super) fn index_rows(conn: &mut Conn<'_>, node: &str, rows: &[IndexRow]) -> Result<(), StoreError> {
    static INDEX_ROW: LazyLock<String> = LazyLock::new(|| {
        format!(
            "INSERT OR IGNORE INTO audit_events ({AUDIT_COLUMNS}) VALUES ({})",
            (1..=26).map(|c| format!("?{c}")).collect::<Vec<_>>().join(", ")
        )
    });
    for row in rows {
        let texts = row.texts();
        let mut params: Vec<&dyn super::sql::Param> = Vec::with_capacity(26);
        params.push(&row.seq);
        params.extend(row_values(&node, &texts, &row.latency_us));
        conn.execute(&INDEX_ROW, &params)?;
    }
    Ok(())
}

/// A row's values in `AUDIT_COLUMNS` order after `seq`: `node`, then its texts with
/// `latency_us`, the one number among them, after the first [`TEXTS_BEFORE_LATENCY`].
fn row_values<'a>(
    node: &'a &'a str,
    texts: &'a Texts<'a>,
    latency_us: &'a Option<i64>,
) -> impl Iterator<Item = &'a dyn super::sql::Param> {
    let (before, after) = texts.split_at(TEXTS_BEFORE_LATENCY);
    let text = |t: &'a Option<&'a str>| t as &dyn super::sql::Param;
    std::iter::once(node as &dyn super::sql::Param)
        .chain(before.iter().map(text))
        .chain(std::iter::once(latency_us as &dyn super::sql::Param))
        .chain(after.iter().map(text))
}

/// `INSERT INTO audit_events … VALUES (?1, …), …` for `rows` rows, with `RETURNING seq`
/// where the store has no rowid to read instead (PostgreSQL).
fn insert_sql(rows: usize, columns: usize, returning: bool) -> String {
    let values: Vec<String> = (0..rows)
        .map(|row| {
            let slots: Vec<String> = (1..=columns).map(|c| format!("?{}", row * columns + c)).collect();
            format!("({})", slots.join(", "))
        })
        .collect();
    format!(
        "INSERT INTO audit_events ({}) VALUES {}{}",
        AUDIT_COLUMNS.trim_start_matches("seq, "),
        values.join(", "),
        if returning { " RETURNING seq" } else { "" }
    )
}

/// How `select` orders its rows.
#[derive(Debug, Clone, Copy)]
enum Order<'a> {
    /// By position (`seq`), as the filter's `ascending` says.
    Position,
    /// By time, oldest first, after a `(created_at, seq)` cursor.
    Time { after: Option<(&'a str, i64)> },
}

fn select(
    conn: &mut Conn<'_>,
    node: Option<&str>,
    f: &AuditFilter,
    order: Order<'_>,
) -> Result<Vec<AuditRow>, StoreError> {
    let mut sql = format!("SELECT {AUDIT_COLUMNS} FROM audit_events WHERE 1 = 1");
    let mut values: Vec<Box<dyn super::sql::Param>> = Vec::new();
    let mut add = |clause: &str, value: Box<dyn super::sql::Param>| {
        values.push(value);
        sql.push_str(&format!(" AND {clause} ?{}", values.len()));
    };
    if let Some(v) = node {
        add("node =", Box::new(v.to_string()));
    }
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
    match order {
        Order::Position => sql.push_str(if f.ascending {
            " ORDER BY seq ASC"
        } else {
            " ORDER BY seq DESC"
        }),
        Order::Time { after } => {
            if let Some((time, seq)) = after {
                values.push(Box::new(time.to_string()));
                values.push(Box::new(seq));
                let (t, s) = (values.len() - 1, values.len());
                sql.push_str(&format!(
                    " AND (created_at > ?{t} OR (created_at = ?{t} AND seq > ?{s}))"
                ));
            }
            sql.push_str(" ORDER BY created_at ASC, seq ASC");
        }
    }
    sql.push_str(&format!(" LIMIT {}", f.limit.max(1)));
    let params: Vec<&dyn super::sql::Param> = values.iter().map(AsRef::as_ref).collect();
    conn.query(&sql, &params, |r| {
        Ok(AuditRow {
            seq: r.get(0)?,
            node: r.get(1)?,
            id: r.get(2)?,
            org_id: r.get(3)?,
            app_id: r.get(4)?,
            key_id: r.get(5)?,
            actor_user_id: r.get(6)?,
            performed_by_user_id: r.get(7)?,
            action: r.get(8)?,
            status: r.get(9)?,
            code: r.get(10)?,
            request_id: r.get(11)?,
            draft_id: r.get(12)?,
            execution_id: r.get(13)?,
            ip: r.get(14)?,
            user_agent: r.get(15)?,
            details: json_col(r, 16, "details")?,
            tool: r.get(17)?,
            risk: r.get(18)?,
            policy_ids: json_col(r, 19, "policy_ids")?,
            plugin: r.get(20)?,
            plugin_digest: r.get(21)?,
            latency_us: r.get(22)?,
            created_at: r.get(23)?,
            prev_event_hash: r.get(24)?,
            event_hash: r.get(25)?,
        })
    })
}
