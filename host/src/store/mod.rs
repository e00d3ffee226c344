//! The gateway's durable state: the only module with SQL. It runs on the embedded SQLite
//! file (the default) or on a PostgreSQL database that several gateway nodes share
//! (`sql.rs` is the one place that tells the two apart).
//!
//! One aggregate a file, each behind its own narrow type:
//!
//! | field | type | what it holds |
//! |---|---|---|
//! | `apps` | [`Apps`] | apps, their keys, admin credentials (with the credential cache) |
//! | `drafts` | [`Drafts`] | drafts and their executions |
//! | `idempotency` | [`Idempotency`] | idempotency reservations |
//! | `preflights` | [`Preflights`] | preflight bindings and step-up grants |
//! | `kv` | [`PluginKv`] | plugin key-value namespaces (with their read cache) |
//! | `audit` | [`AuditEvents`] | audit queries; the chain itself is written by [`ChainWriter`] |
//! | `plugins` | [`PluginRegistry`] | plugins loaded at run time |
//! | `nodes` | [`Nodes`] | the gateway processes sharing the store, and when each was last seen |
//! | `sessions` | [`SessionRows`] | MCP sessions and reviewer sign-ins, on a shared store |
//! | `meta` | [`Meta`] | small settings of the store itself |
//!
//! On SQLite, one connection behind a mutex serves the request path and the audit writer
//! opens its own; WAL mode lets readers run beside the writer. On PostgreSQL, a pool serves
//! both. Each call holds a connection for one short statement or transaction.

#![expect(
    clippy::disallowed_types,
    reason = "the store is where SQL lives: the one module that names rusqlite's types"
)]

mod apps;
mod audit;
mod drafts;
mod idempotency;
mod journal;
mod kv;
mod nodes;
mod pg_tls;
mod plugins;
mod preflights;
mod sessions;
pub(crate) mod sql;
mod tasks;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use rusqlite::Connection;
use serde_json::Value;

use sql::{Db, Postgres, Row, args};

pub use apps::{AdminTokenRecord, AppRecord, Apps, KeyRecord};
pub use audit::{
    AuditAppend, AuditEvents, AuditFilter, AuditRow, ChainReader, ChainWriter, CheckpointStore, PrunedCut,
    SignedCheckpoint,
};
pub use drafts::{
    DraftFilter, DraftRecord, DraftStatus, Drafts, ExecutionRecord, ExecutionStatus, OrphanedExecution,
    WITHDRAWN_BY_AGENT,
};
pub use idempotency::{Idempotency, IdempotencyScope, Reservation};
pub use kv::{IncrementError, KvCondition, KvWrite, PluginKv, Versioned};
pub use nodes::Nodes;
pub use plugins::{NewVersion, PluginRegistry, PluginVersion, Remembered, StoredPlugin};
pub use preflights::{PreflightRecord, Preflights, StepUpGrant};
pub use sessions::{RowExpiry, SessionRows};
pub use tasks::{Stamp, TaskRecord, TaskStatus, Tasks};

/// Ordered migrations; never edit one after it shipped, add the next.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_audit_checkpoints.sql"),
    include_str!("migrations/0003_plugins.sql"),
    include_str!("migrations/0004_executions.sql"),
    include_str!("migrations/0005_idempotency.sql"),
    include_str!("migrations/0006_step_up.sql"),
    include_str!("migrations/0007_kv_versions.sql"),
    include_str!("migrations/0008_audit_signed_checkpoints.sql"),
    include_str!("migrations/0009_app_tags.sql"),
    include_str!("migrations/0010_plugin_versions.sql"),
    include_str!("migrations/0011_draft_canceled_by.sql"),
    include_str!("migrations/0012_tasks.sql"),
    include_str!("migrations/0013_audit_nodes.sql"),
    include_str!("migrations/0014_execution_attempts.sql"),
];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database error: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("database connection pool: {0}")]
    Pool(String),
    #[error("database URL: {0}")]
    Url(String),
    #[error("a query that always returns a row returned none")]
    NoRow,
    #[error(
        "another live process is node `{0}` (same `node-id` in its data directory): give each node its own data directory"
    )]
    NodeTaken(String),
    #[error("stored JSON in `{column}` is invalid: {source}")]
    Json {
        column: &'static str,
        source: serde_json::Error,
    },
    #[error("stored value `{value}` in `{column}` is not one this binary knows")]
    UnknownValue { column: &'static str, value: String },
    #[error("database `{path}` has schema version {found}, newer than this binary's {known}")]
    TooNew { path: String, found: usize, known: usize },
    #[error("the store lock was poisoned by a panic")]
    Poisoned,
    #[error("cannot start a store thread: {0}")]
    Thread(String),
    #[error("audit journal: {0}")]
    Journal(String),
}

/// A node's claim on its name (see [`Store::claim_node`]), held as long as this lives.
pub struct NodeClaim {
    _conn: deadpool_postgres::Object,
}

impl std::fmt::Debug for NodeClaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeClaim")
    }
}

/// Where the store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// The embedded SQLite file.
    File(PathBuf),
    /// A PostgreSQL database (`postgres://…`), shared by every node.
    Postgres(String),
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::File(path) => write!(f, "{}", path.display()),
            Location::Postgres(url) => f.write_str(&sql::redacted(url)),
        }
    }
}

/// The gateway's durable state, one narrow type per aggregate.
#[derive(Debug)]
pub struct Store {
    location: Location,
    db: Arc<Db>,
    /// The embedded store's audit journal, once this process's chain writer opened it.
    journal: audit::JournalSlot,
    pub apps: Apps,
    pub drafts: Drafts,
    pub idempotency: Idempotency,
    pub preflights: Preflights,
    pub tasks: Tasks,
    pub kv: PluginKv,
    pub audit: AuditEvents,
    pub plugins: PluginRegistry,
    pub nodes: Nodes,
    pub sessions: SessionRows,
    pub meta: Meta,
}

impl Store {
    /// Opens (creating if needed) and migrates the SQLite database at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_at(&Location::File(path.to_path_buf()))
    }

    /// Opens (creating if needed) and migrates the store at `location`.
    pub fn open_at(location: &Location) -> Result<Store, StoreError> {
        let db = match location {
            Location::File(path) => {
                let mut conn = connect(path)?;
                migrate(&mut conn, path)?;
                let db = Db::Sqlite(Mutex::new(conn));
                // What a stopped gateway appended and had not indexed yet: every process
                // that opens the store sees every acknowledged event.
                journal::recover(&journal::dir_of(path), &db, "")?;
                db
            }
            Location::Postgres(url) => {
                let pg = Postgres::connect(url)?;
                postgres_migrations::apply(&pg)?;
                Db::Postgres(pg)
            }
        };
        Ok(Store::over(location.clone(), Arc::new(db)))
    }

    fn over(location: Location, db: Arc<Db>) -> Store {
        // The embedded store has one writer, this process: its caches are always fresh. A
        // shared one trusts them only while it listens to the other nodes' writes.
        let fresh = Arc::new(sql::Freshness::new(!db.is_postgres()));
        if let Db::Postgres(pg) = db.as_ref() {
            pg.listen(fresh.clone());
        }
        let journal = audit::JournalSlot::default();
        Store {
            location,
            db: db.clone(),
            journal: journal.clone(),
            apps: Apps::new(db.clone(), fresh.clone()),
            drafts: Drafts::new(db.clone()),
            idempotency: Idempotency::new(db.clone()),
            preflights: Preflights::new(db.clone()),
            tasks: Tasks::new(db.clone()),
            kv: PluginKv::new(db.clone(), fresh),
            audit: AuditEvents::new(db.clone(), journal),
            plugins: PluginRegistry::new(db.clone()),
            nodes: Nodes::new(db.clone()),
            sessions: SessionRows::new(db.clone()),
            meta: Meta { db },
        }
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    /// The SQLite file, if the store is one.
    pub fn path(&self) -> Option<&Path> {
        match &self.location {
            Location::File(path) => Some(path),
            Location::Postgres(_) => None,
        }
    }

    pub fn is_shared(&self) -> bool {
        self.db.is_postgres()
    }

    /// The audit chain's writer: on SQLite the journal, indexed on a connection of its own
    /// beside the request path's; on PostgreSQL the pool. One per process and store.
    pub fn chain_writer(&self, node: &str) -> Result<ChainWriter, StoreError> {
        match &self.location {
            Location::File(path) => {
                let conn = connect(path)?;
                // The writer's rows take `status` from `audit::Status`, a closed enum, so
                // the column's `CHECK (status IN (…))` holds by construction; SQLite checks
                // an `IN` list of three by building a temporary index for every inserted
                // row (1.6% of the ledger read's CPU). This connection alone skips CHECK
                // constraints; every other one still enforces them.
                conn.pragma_update(None, "ignore_check_constraints", true)?;
                let db = Arc::new(Db::Sqlite(Mutex::new(conn)));
                let journal = journal::Journal::open(&journal::dir_of(path), db.clone(), node)?;
                if self.journal.set(journal.clone()).is_err() {
                    return Err(StoreError::Journal("this store already has a chain writer".into()));
                }
                Ok(ChainWriter::new(db, node, Some(journal)))
            }
            Location::Postgres(_) => Ok(ChainWriter::new(self.db.clone(), node, None)),
        }
    }

    /// A reader of each audit chain in the store (one per node), for verification.
    pub fn chain_readers(&self) -> Result<Vec<ChainReader>, StoreError> {
        audit::index_pending(&self.journal)?;
        ChainReader::all(self.own_connection()?)
    }

    /// Claims `node` for this process while the claim is held: on a shared store a session
    /// lock in the database, so two live processes never continue one audit chain (a lock
    /// of a process that died is released with its connection). `None` on the embedded
    /// store, whose file has one process.
    pub fn claim_node(&self, node: &str) -> Result<Option<NodeClaim>, StoreError> {
        let Db::Postgres(pg) = self.db.as_ref() else {
            return Ok(None);
        };
        let conn = pg.connection()?;
        let key = format!("openport-node:{node}");
        let rows = pg.block(conn.query("SELECT pg_try_advisory_lock(hashtext($1)::BIGINT)", &[&key]))?;
        let claimed = rows
            .first()
            .map(|r| r.try_get::<_, bool>(0))
            .transpose()?
            .unwrap_or(false);
        if !claimed {
            return Err(StoreError::NodeTaken(node.to_string()));
        }
        Ok(Some(NodeClaim { _conn: conn }))
    }

    /// A reader of `node`'s chain, whether or not the store still holds any of it.
    pub fn chain_reader(&self, node: &str) -> Result<ChainReader, StoreError> {
        audit::index_pending(&self.journal)?;
        Ok(ChainReader::of(self.own_connection()?, node))
    }

    fn own_connection(&self) -> Result<Arc<Db>, StoreError> {
        match &self.location {
            Location::File(path) => Ok(Arc::new(Db::Sqlite(Mutex::new(connect(path)?)))),
            Location::Postgres(_) => Ok(self.db.clone()),
        }
    }
}

/// Small settings of the store itself (for example, whether the demo was seeded).
#[derive(Debug)]
pub struct Meta {
    db: Arc<Db>,
}

impl Meta {
    pub fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.db
            .read(|conn| conn.query_optional("SELECT value FROM meta WHERE key = ?1", args![key], |r| r.get(0)))
    }

    pub fn set(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.db.write(|conn| {
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                args![key, value],
            )?;
            Ok(())
        })
    }

    /// Adds one to the counter under `key` (absent: 0) and returns it, atomically.
    pub fn bump(&self, key: &str) -> Result<i64, StoreError> {
        self.db.write(|conn| {
            let current: Option<String> =
                conn.query_optional("SELECT value FROM meta WHERE key = ?1", args![key], |r| r.get(0))?;
            let next = current
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0)
                .saturating_add(1);
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                args![key, next.to_string()],
            )?;
            Ok(next)
        })
    }

    /// The value under `key`, set to `value` first if there is none: the first writer
    /// wins, so every process sharing the store ends up with the same value.
    pub fn get_or_insert(&self, key: &str, value: &str) -> Result<String, StoreError> {
        self.db.write(|conn| {
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
                args![key, value],
            )?;
            conn.query_one("SELECT value FROM meta WHERE key = ?1", args![key], |r| r.get(0))
        })
    }
}

/// SQLite's answer to a connection that finds another one writing: wait and try again, up
/// to about 5 s. SQLite's own `busy_timeout` sleeps 1, 2, 5, 10 ms and more between
/// tries; a write transaction here holds the lock for tens of microseconds, and the waiter
/// is often the request's own thread (the audit writer is a request: `audit/writer.rs`),
/// so it tries again every 50 us for the first 10 ms, then every millisecond.
fn wait_for_writer(attempt: i32) -> bool {
    const FINE: i32 = 200;
    const MAX: i32 = FINE + 4_990;
    let pause = match attempt {
        a if a >= MAX => return false,
        a if a < FINE => std::time::Duration::from_micros(50),
        _ => std::time::Duration::from_millis(1),
    };
    std::thread::sleep(pause);
    true
}

/// Opens a connection with the settings every connection of the gateway uses. Public for
/// tests that tamper with the database the way an attacker with file access would.
pub fn connect(path: &Path) -> Result<Connection, StoreError> {
    let mut conn = Connection::open(path)?;
    // WAL + synchronous=NORMAL: a committed transaction survives a process crash; a power
    // loss may lose the last commits (docs/operations.md says how to choose FULL).
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // No checkpoint on a commit: it would run on the committing thread (usually the audit
    // writer) and stall every request waiting for that commit for milliseconds. A
    // background thread checkpoints instead (`start_checkpointer`).
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    // 32 MiB of page cache per connection keeps the audit table's hot pages in memory.
    conn.pragma_update(None, "cache_size", -32_768)?;
    conn.busy_handler(Some(wait_for_writer))?;
    // Every query is a cached prepared statement; the default cache (16) is smaller than
    // the number of distinct queries a request path runs, so statements were re-parsed.
    conn.set_prepared_statement_cache_capacity(256);
    // The query planner stability guarantee: plans never depend on bound values. Without it
    // (SQLite is built with STAT4) a cached statement with a range over a parameter, such as
    // `kv_list`'s, was compiled again on every call: 9% of a ledger read's CPU.
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(conn)
}

/// How often the background checkpointer copies the WAL back into the database. Often, so
/// each checkpoint (and its fsync) is small: at 500 ms the bursts of I/O stalled the whole
/// machine for tens of milliseconds (p99.9 27 ms at half the governed peak, against 3.6 ms
/// at 50 ms; BENCHMARKS.md). A checkpoint with nothing to copy costs nothing.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(50);
/// Log size (in 4 KiB pages, 16 MiB) past which the checkpointer restarts the log. Under
/// sustained writes a PASSIVE checkpoint never catches up with the writer, so SQLite never
/// restarts the log by itself; the restart copies what the last pass missed and makes the
/// writer wait for that. At 200 MB that wait was a 35 - 50 ms stall every few seconds
/// (p99.9 at full load); at 16 MiB the stalls are short and the p99.9 was 11 - 15 ms.
const MAX_WAL_FRAMES: i64 = 4096;

/// Starts the thread that checkpoints the WAL in the background (PASSIVE: it never blocks
/// readers or the writer; SQLite restarts the log once a checkpoint has caught up). It runs
/// as long as the returned token is held.
pub fn start_checkpointer(path: &Path) -> Result<Arc<()>, StoreError> {
    let conn = connect(path)?;
    let alive = Arc::new(());
    let watched = Arc::downgrade(&alive);
    std::thread::Builder::new()
        .name("wal-checkpoint".into())
        .spawn(move || {
            loop {
                std::thread::sleep(CHECKPOINT_EVERY);
                if watched.upgrade().is_none() {
                    return;
                }
                // PASSIVE never waits, but under sustained writes it never catches up with the
                // log either, so the log would only grow: past a bound, RESTART once (it waits
                // for the writer between two commits) and the log starts over.
                let frames = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1));
                let restart = match frames {
                    Ok(frames) => frames > MAX_WAL_FRAMES,
                    Err(e) => {
                        tracing::warn!(error = %e, "WAL checkpoint failed; retrying");
                        false
                    }
                };
                if restart && let Err(e) = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(())) {
                    tracing::warn!(error = %e, "WAL restart failed; retrying");
                }
            }
        })
        .map_err(|e| StoreError::Thread(e.to_string()))?;
    Ok(alive)
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let version = usize::try_from(version).unwrap_or(usize::MAX);
    if version > MIGRATIONS.len() {
        return Err(StoreError::TooNew {
            path: path.display().to_string(),
            found: version,
            known: MIGRATIONS.len(),
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i64::try_from(index + 1).unwrap_or(i64::MAX))?;
        tx.commit()?;
    }
    Ok(())
}

/// A JSON column, as `T`; a bad one is an error naming the column.
fn json_col<T: serde::de::DeserializeOwned>(
    row: &Row<'_>,
    index: usize,
    column: &'static str,
) -> Result<T, StoreError> {
    let text: String = row.get(index)?;
    serde_json::from_str(&text).map_err(|source| StoreError::Json { column, source })
}

/// An optional JSON column; unreadable JSON reads as absent (as these columns always have).
fn optional_json_col(row: &Row<'_>, index: usize) -> Result<Option<Value>, StoreError> {
    let text: Option<String> = row.get(index)?;
    Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
}

/// A text column holding one of an enum's names.
fn enum_col<T: std::str::FromStr>(row: &Row<'_>, index: usize, column: &'static str) -> Result<T, StoreError> {
    let text: String = row.get(index)?;
    text.parse()
        .map_err(|_| StoreError::UnknownValue { column, value: text })
}

fn to_json<T: serde::Serialize>(value: &T, column: &'static str) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|source| StoreError::Json { column, source })
}

/// The PostgreSQL schema's migrations, applied under an advisory lock so nodes starting
/// together do not race; the version is kept in `schema_version`.
mod postgres_migrations {
    use super::{Postgres, StoreError};

    /// Ordered; never edit one after it shipped, add the next.
    const MIGRATIONS: &[&str] = &[
        include_str!("migrations/postgres/0001_init.sql"),
        include_str!("migrations/postgres/0002_execution_attempts.sql"),
    ];

    /// The session lock's key: "opmigrat".
    const MIGRATION_LOCK: i64 = 0x6f70_6d69_6772_6174;

    pub(super) fn apply(pg: &Postgres) -> Result<(), StoreError> {
        let client = pg.connection()?;
        pg.block(client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]))?;
        let applied = apply_locked(pg, &client);
        // Unlocked whatever happened: the connection goes back to the pool.
        let unlocked = pg.block(client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]));
        applied?;
        unlocked?;
        Ok(())
    }

    fn apply_locked(pg: &Postgres, client: &deadpool_postgres::Object) -> Result<(), StoreError> {
        // Quietly: a database already made says so in a notice on every start.
        pg.block(client.batch_execute(
            "SET client_min_messages = warning;
             CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL);
             RESET client_min_messages;",
        ))?;
        let rows = pg.block(client.query("SELECT version FROM schema_version", &[]))?;
        let version = match rows.first() {
            Some(row) => row.try_get::<_, i64>(0)?,
            None => {
                pg.block(client.execute("INSERT INTO schema_version (version) VALUES (0)", &[]))?;
                0
            }
        };
        let version = usize::try_from(version).unwrap_or(usize::MAX);
        if version > MIGRATIONS.len() {
            return Err(StoreError::TooNew {
                path: super::sql::redacted(pg.url()),
                found: version,
                known: MIGRATIONS.len(),
            });
        }
        for (index, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            let next = i64::try_from(index + 1).unwrap_or(i64::MAX);
            let applied = pg.block(client.batch_execute(&format!(
                "BEGIN; {sql}; UPDATE schema_version SET version = {next}; COMMIT;"
            )));
            if let Err(e) = applied {
                // The connection goes back to the pool: not inside the failed transaction.
                let _ = pg.block(client.batch_execute("ROLLBACK"));
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// The newest schema version this binary knows.
    pub(crate) fn latest() -> usize {
        MIGRATIONS.len()
    }
}

/// Applies the store's migrations without serving (`openport migrate`); the schema version
/// it is at afterwards.
pub fn migrate_at(location: &Location) -> Result<usize, StoreError> {
    Store::open_at(location)?;
    Ok(match location {
        Location::File(_) => MIGRATIONS.len(),
        Location::Postgres(_) => postgres_migrations::latest(),
    })
}
