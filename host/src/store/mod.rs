//! The embedded SQLite store: the only module with SQL.
//!
//! One connection behind a mutex serves the request path; the audit writer opens its own
//! (see `audit`). WAL mode lets readers run beside the writer. Each call holds the lock
//! for one short statement or transaction.

mod records;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

pub use rusqlite::Connection;
use rusqlite::{OptionalExtension, params};

pub use records::{
    AdminTokenRecord, AppRecord, AuditInsert, AuditRow, DraftRecord, ExecutionRecord, KeyRecord, PreflightRecord,
    StepUpGrant,
};

/// Ordered migrations; never edit one after it shipped, add the next.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_audit_checkpoints.sql"),
    include_str!("migrations/0003_plugins.sql"),
    include_str!("migrations/0004_executions.sql"),
    include_str!("migrations/0005_idempotency.sql"),
    include_str!("migrations/0006_step_up.sql"),
];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored JSON in `{column}` is invalid: {source}")]
    Json {
        column: &'static str,
        source: serde_json::Error,
    },
    #[error("database `{path}` has schema version {found}, newer than this binary's {known}")]
    TooNew { path: String, found: usize, known: usize },
    #[error("the store lock was poisoned by a panic")]
    Poisoned,
    #[error("cannot start a store thread: {0}")]
    Thread(String),
}

#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    conn: Mutex<Connection>,
    credentials: Mutex<CredentialCache>,
    kv_values: Mutex<KvCache>,
}

/// Keys by token prefix and apps by id, as authentication reads them on every request.
///
/// Every write to `apps` or `keys` goes through this `Store` (the gateway is the only
/// writer of its SQLite file) and empties the cache before it returns, so a revocation
/// still takes effect on the next request. Like [`KvCache`], it changes only while the
/// connection is held, so no read can keep a value a write has replaced.
#[derive(Debug, Default)]
struct CredentialCache {
    keys: HashMap<String, Vec<KeyRecord>>,
    apps: HashMap<String, Arc<AppRecord>>,
}

/// Entries kept before the credential cache starts over (misses are not kept, so a
/// stream of unknown tokens cannot fill it).
const MAX_CACHED_CREDENTIALS: usize = 10_000;

/// Plugin key-value reads, by plugin, tenant and key (`None`: the key is absent). A plugin
/// call reads a few keys per request and each SQLite read costs a few microseconds (a read
/// transaction's two `fcntl` locks, the statement), so a ledger read spent 14% of its CPU
/// there.
///
/// It stays exact because every access to `plugin_kv` goes through this `Store`, with the
/// connection held: a miss is inserted, and a write forgets its key, before the connection
/// is released. (The gateway is the only writer of its database: docs/operations.md.)
#[derive(Debug, Default)]
struct KvCache {
    values: HashMap<String, HashMap<String, HashMap<String, Option<String>>>>,
    bytes: usize,
}

/// Bytes of keys and values kept before the key-value cache starts over.
const MAX_CACHED_KV_BYTES: usize = 16 << 20;

impl KvCache {
    fn get(&self, plugin: &str, tenant: &str, key: &str) -> Option<Option<String>> {
        self.values.get(plugin)?.get(tenant)?.get(key).cloned()
    }

    fn insert(&mut self, plugin: &str, tenant: &str, key: &str, value: Option<String>) {
        let size = key.len() + value.as_ref().map_or(0, String::len);
        if self.bytes + size > MAX_CACHED_KV_BYTES {
            self.clear();
        }
        self.bytes += size;
        self.values
            .entry(plugin.to_string())
            .or_default()
            .entry(tenant.to_string())
            .or_default()
            .insert(key.to_string(), value);
    }

    fn forget(&mut self, plugin: &str, tenant: &str, key: &str) {
        if let Some(keys) = self.values.get_mut(plugin).and_then(|t| t.get_mut(tenant)) {
            keys.remove(key);
        }
    }

    fn clear(&mut self) {
        self.values.clear();
        self.bytes = 0;
    }
}

/// Opens a connection with the settings every connection of the gateway uses.
pub fn connect(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
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
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
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

impl Store {
    /// Opens (creating if needed) and migrates the database at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let mut conn = connect(path)?;
        migrate(&mut conn, path)?;
        Ok(Store {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
            credentials: Mutex::new(CredentialCache::default()),
            kv_values: Mutex::new(KvCache::default()),
        })
    }

    fn credentials(&self) -> MutexGuard<'_, CredentialCache> {
        // The cache holds no invariant a panic could break: a poisoned one is just emptied.
        self.credentials.lock().unwrap_or_else(|e| {
            let mut cache = e.into_inner();
            cache.keys.clear();
            cache.apps.clear();
            cache
        })
    }

    /// Runs a write to `apps` or `keys` and forgets every cached credential, while the
    /// connection is still held so no read can slip between the two.
    fn write_credentials<T>(&self, write: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let conn = self.conn()?;
        let result = write(&conn);
        let mut cache = self.credentials();
        cache.keys.clear();
        cache.apps.clear();
        result
    }

    /// Reads through the credential cache: `cached` looks up, `read` reads the store,
    /// `keep` stores a found value before the connection is released.
    fn read_credential<T>(
        &self,
        cached: impl Fn(&CredentialCache) -> Option<T>,
        read: impl FnOnce(&Connection) -> Result<T, StoreError>,
        keep: impl FnOnce(&mut CredentialCache, &T),
    ) -> Result<T, StoreError> {
        if let Some(hit) = cached(&self.credentials()) {
            return Ok(hit);
        }
        let conn = self.conn()?;
        let value = read(&conn)?;
        let mut cache = self.credentials();
        if cache.keys.len() + cache.apps.len() >= MAX_CACHED_CREDENTIALS {
            cache.keys.clear();
            cache.apps.clear();
        }
        keep(&mut cache, &value);
        drop(cache);
        drop(conn);
        Ok(value)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> Result<MutexGuard<'_, Connection>, StoreError> {
        self.conn.lock().map_err(|_| StoreError::Poisoned)
    }

    // ---- meta ----

    pub fn meta_get(&self, key: &str) -> Result<Option<String>, StoreError> {
        let conn = self.conn()?;
        Ok(conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    pub fn meta_set(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let conn = self.conn()?;
        conn.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    // ---- apps and keys ----

    pub fn insert_app(&self, app: &AppRecord) -> Result<(), StoreError> {
        self.write_credentials(|conn| records::insert_app(conn, app))
    }

    pub fn app(&self, id: &str) -> Result<Option<AppRecord>, StoreError> {
        Ok(self.shared_app(id)?.map(Arc::unwrap_or_clone))
    }

    /// The app as the credential cache holds it: authentication takes it without a copy.
    pub fn shared_app(&self, id: &str) -> Result<Option<Arc<AppRecord>>, StoreError> {
        self.read_credential(
            |cache| cache.apps.get(id).cloned().map(Some),
            |conn| Ok(records::app(conn, id)?.map(Arc::new)),
            |cache, found| {
                if let Some(app) = found {
                    cache.apps.insert(id.to_string(), app.clone());
                }
            },
        )
    }

    pub fn apps(&self) -> Result<Vec<AppRecord>, StoreError> {
        let conn = self.conn()?;
        records::apps(&conn)
    }

    pub fn set_app_status(&self, id: &str, status: &str, now: &str) -> Result<bool, StoreError> {
        self.set_app_column(id, "status", status, now)
    }

    /// Replaces an app's auto-execute policy (`{writes, high_risk}`).
    pub fn set_app_auto_execute(&self, id: &str, policy: &serde_json::Value, now: &str) -> Result<bool, StoreError> {
        self.set_app_column(id, "auto_execute", &policy.to_string(), now)
    }

    /// Replaces an app's data policy (`{network, data}`).
    pub fn set_app_policy(&self, id: &str, policy: &serde_json::Value, now: &str) -> Result<bool, StoreError> {
        self.set_app_column(id, "policy", &policy.to_string(), now)
    }

    /// Sets one of the app columns above; `false` when there is no such app.
    fn set_app_column(&self, id: &str, column: &'static str, value: &str, now: &str) -> Result<bool, StoreError> {
        self.write_credentials(|conn| {
            let n = conn.execute(
                &format!("UPDATE apps SET {column} = ?2, updated_at = ?3 WHERE id = ?1"),
                params![id, value, now],
            )?;
            Ok(n == 1)
        })
    }

    /// Drafts of an app still waiting for review.
    pub fn pending_drafts_of_app(&self, app_id: &str) -> Result<i64, StoreError> {
        let conn = self.conn()?;
        Ok(conn.query_row(
            "SELECT COUNT(*) FROM drafts WHERE app_id = ?1 AND status = 'draft'",
            [app_id],
            |r| r.get(0),
        )?)
    }

    /// Deletes an app and (by cascade) its keys.
    pub fn delete_app(&self, app_id: &str) -> Result<(), StoreError> {
        self.write_credentials(|conn| {
            conn.execute("DELETE FROM apps WHERE id = ?1", [app_id])?;
            Ok(())
        })
    }

    pub fn insert_key(&self, key: &KeyRecord) -> Result<(), StoreError> {
        self.write_credentials(|conn| records::insert_key(conn, key))
    }

    /// Keys whose token starts with `prefix`, for the constant-time comparison in `auth`.
    /// Keys whose token starts with `prefix`, in no particular order: authentication
    /// compares them all. (No `ORDER BY`: with it, the bundled SQLite's STAT4 planner made
    /// the statement depend on the bound value, so it was re-prepared on every call.)
    pub fn keys_by_prefix(&self, prefix: &str) -> Result<Vec<KeyRecord>, StoreError> {
        self.read_credential(
            |cache| cache.keys.get(prefix).cloned(),
            |conn| records::keys_where(conn, "token_prefix = ?1", "", prefix),
            |cache, found| {
                if !found.is_empty() {
                    cache.keys.insert(prefix.to_string(), found.clone());
                }
            },
        )
    }

    pub fn keys_of_app(&self, app_id: &str) -> Result<Vec<KeyRecord>, StoreError> {
        let conn = self.conn()?;
        records::keys_where(&conn, "app_id = ?1", "ORDER BY created_at", app_id)
    }

    /// Revokes one key; `false` when there is no such key.
    pub fn revoke_key(&self, key_id: &str, now: &str) -> Result<bool, StoreError> {
        self.write_credentials(|conn| {
            let n = conn.execute(
                "UPDATE keys SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
                params![key_id, now],
            )?;
            Ok(n == 1)
        })
    }

    pub fn key(&self, key_id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let conn = self.conn()?;
        Ok(records::keys_where(&conn, "id = ?1", "", key_id)?.into_iter().next())
    }

    pub fn revoke_keys_of_app(&self, app_id: &str, now: &str) -> Result<(), StoreError> {
        self.write_credentials(|conn| {
            conn.execute(
                "UPDATE keys SET revoked_at = ?2 WHERE app_id = ?1 AND revoked_at IS NULL",
                params![app_id, now],
            )?;
            Ok(())
        })
    }

    // ---- admin credentials ----

    pub fn insert_admin_token(&self, token: &AdminTokenRecord) -> Result<(), StoreError> {
        let conn = self.conn()?;
        conn.execute(
            "INSERT INTO admin_tokens (id, name, role, org_id, token_prefix, token_hash, revoked_at, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                token.id,
                token.name,
                token.role,
                token.org_id,
                token.token_prefix,
                token.token_hash,
                token.revoked_at,
                token.created_at
            ],
        )?;
        Ok(())
    }

    pub fn admin_tokens_by_prefix(&self, prefix: &str) -> Result<Vec<AdminTokenRecord>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT id, name, role, org_id, token_prefix, token_hash, revoked_at, created_at
             FROM admin_tokens WHERE token_prefix = ?1",
        )?;
        let rows = stmt.query_map([prefix], |r| {
            Ok(AdminTokenRecord {
                id: r.get(0)?,
                name: r.get(1)?,
                role: r.get(2)?,
                org_id: r.get(3)?,
                token_prefix: r.get(4)?,
                token_hash: r.get(5)?,
                revoked_at: r.get(6)?,
                created_at: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    // ---- plugin key-value namespaces ----

    /// Reads through the key-value cache; a miss is read from the store and remembered.
    pub fn kv_get(&self, plugin: &str, tenant: &str, key: &str) -> Result<Option<String>, StoreError> {
        if let Some(hit) = self.kv_cache().get(plugin, tenant, key) {
            return Ok(hit);
        }
        let conn = self.conn()?;
        let mut stmt =
            conn.prepare_cached("SELECT value FROM plugin_kv WHERE plugin = ?1 AND tenant = ?2 AND key = ?3")?;
        let value: Option<String> = stmt.query_row(params![plugin, tenant, key], |r| r.get(0)).optional()?;
        // Still holding the connection: no write can land between the read and the insert.
        self.kv_cache().insert(plugin, tenant, key, value.clone());
        Ok(value)
    }

    pub fn kv_set(&self, plugin: &str, tenant: &str, key: &str, value: &str) -> Result<(), StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "INSERT INTO plugin_kv (plugin, tenant, key, value) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (plugin, tenant, key) DO UPDATE SET value = excluded.value",
        )?;
        // Forgotten before the write, so a failed write leaves no stale entry either.
        self.kv_cache().forget(plugin, tenant, key);
        stmt.execute(params![plugin, tenant, key, value])?;
        Ok(())
    }

    pub fn kv_delete(&self, plugin: &str, tenant: &str, key: &str) -> Result<(), StoreError> {
        let conn = self.conn()?;
        self.kv_cache().forget(plugin, tenant, key);
        conn.execute(
            "DELETE FROM plugin_kv WHERE plugin = ?1 AND tenant = ?2 AND key = ?3",
            params![plugin, tenant, key],
        )?;
        Ok(())
    }

    fn kv_cache(&self) -> MutexGuard<'_, KvCache> {
        // Every entry can be read again: a poisoned cache is just emptied.
        self.kv_values.lock().unwrap_or_else(|e| {
            let mut cache = e.into_inner();
            cache.clear();
            cache
        })
    }

    /// Keys starting with `prefix`, in byte order, at most `limit` of them: a range over the
    /// primary key, so only the matching keys are read (a `substr` filter scanned the whole
    /// namespace).
    pub fn kv_list(&self, plugin: &str, tenant: &str, prefix: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        let conn = self.conn()?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let keys = match prefix_end(prefix) {
            Some(end) => {
                // Bound as a blob and cast: `end` need not be valid UTF-8, and text compares
                // bytewise (BINARY), which is what a prefix range needs.
                let mut stmt = conn.prepare_cached(
                    "SELECT key FROM plugin_kv WHERE plugin = ?1 AND tenant = ?2
                     AND key >= ?3 AND key < CAST(?4 AS TEXT) ORDER BY key LIMIT ?5",
                )?;
                let rows = stmt.query_map(params![plugin, tenant, prefix, end, limit], |r| r.get(0))?;
                rows.collect::<Result<_, _>>()?
            }
            None => {
                let mut stmt = conn.prepare_cached(
                    "SELECT key FROM plugin_kv WHERE plugin = ?1 AND tenant = ?2 ORDER BY key LIMIT ?3",
                )?;
                let rows = stmt.query_map(params![plugin, tenant, limit], |r| r.get(0))?;
                rows.collect::<Result<_, _>>()?
            }
        };
        Ok(keys)
    }

    // ---- plugins loaded at run time ----

    pub fn remember_plugin(&self, name: &str, manifest: &str, now: &str) -> Result<(), StoreError> {
        let conn = self.conn()?;
        conn.execute(
            "INSERT INTO plugins (name, manifest, loaded_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET manifest = excluded.manifest, loaded_at = excluded.loaded_at",
            params![name, manifest, now],
        )?;
        Ok(())
    }

    pub fn forget_plugin(&self, name: &str) -> Result<(), StoreError> {
        let conn = self.conn()?;
        conn.execute("DELETE FROM plugins WHERE name = ?1", [name])?;
        Ok(())
    }

    /// Manifests of plugins loaded through the admin plane, in load order.
    pub fn remembered_plugins(&self) -> Result<Vec<(String, String)>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached("SELECT name, manifest FROM plugins ORDER BY loaded_at, name")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    // ---- drafts ----

    pub fn insert_draft(&self, draft: &DraftRecord) -> Result<(), StoreError> {
        let conn = self.conn()?;
        records::insert_draft(&conn, draft)
    }

    /// Moves a draft from `from` to `to` in one statement; `false` when it was not in
    /// `from` any more (another request won the race, or it is final). `by` and `at` fill
    /// the confirmation or cancellation columns the target state has.
    pub fn transition_draft(
        &self,
        id: &str,
        from: &str,
        to: &str,
        by: Option<&str>,
        at: &str,
    ) -> Result<bool, StoreError> {
        let conn = self.conn()?;
        let n = conn.execute(
            "UPDATE drafts SET status = ?3, updated_at = ?5,
                 confirmed_at = CASE WHEN ?3 = 'confirmed' THEN ?5 ELSE confirmed_at END,
                 confirmed_by_user_id = CASE WHEN ?3 = 'confirmed' THEN ?4 ELSE confirmed_by_user_id END,
                 canceled_at = CASE WHEN ?3 = 'canceled' THEN ?5 ELSE canceled_at END
             WHERE id = ?1 AND status = ?2",
            params![id, from, to, by, at],
        )?;
        Ok(n == 1)
    }

    /// Reserves an idempotency key for a request with `fingerprint`, atomically. An expired
    /// reservation is replaced. Returns `None` when this request holds the reservation, or
    /// the existing one's fingerprint and draft (`None` while it is still running).
    pub fn reserve_idempotency(
        &self,
        scope: (&str, &str, &str),
        fingerprint: &str,
        now: &str,
        expires_at: &str,
    ) -> Result<Option<(String, Option<String>)>, StoreError> {
        let (app_id, key_id, idem_key) = scope;
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        tx.execute(
            "DELETE FROM idempotency WHERE app_id = ?1 AND key_id = ?2 AND idem_key = ?3 AND expires_at <= ?4",
            params![app_id, key_id, idem_key, now],
        )?;
        let inserted = tx.execute(
            "INSERT OR IGNORE INTO idempotency (app_id, key_id, idem_key, fingerprint, draft_id, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, NULL, ?5, ?6)",
            params![app_id, key_id, idem_key, fingerprint, now, expires_at],
        )?;
        let existing = if inserted == 1 {
            None
        } else {
            Some(tx.query_row(
                "SELECT fingerprint, draft_id FROM idempotency WHERE app_id = ?1 AND key_id = ?2 AND idem_key = ?3",
                params![app_id, key_id, idem_key],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?)
        };
        tx.commit()?;
        Ok(existing)
    }

    /// Records the draft a reserved key produced.
    pub fn complete_idempotency(&self, scope: (&str, &str, &str), draft_id: &str) -> Result<(), StoreError> {
        let conn = self.conn()?;
        conn.execute(
            "UPDATE idempotency SET draft_id = ?4 WHERE app_id = ?1 AND key_id = ?2 AND idem_key = ?3",
            params![scope.0, scope.1, scope.2, draft_id],
        )?;
        Ok(())
    }

    /// At startup: reservations a previous process left without a draft are settled. One
    /// whose request did store a draft is linked to it (its replay then shows the draft, or
    /// an execution that is `indeterminate`, never a re-run); one whose request stored
    /// nothing had no effect and is freed, so a retry runs. Returns (linked, freed).
    pub fn settle_orphan_reservations(&self) -> Result<(usize, usize), StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let linked = tx.execute(
            "UPDATE idempotency SET draft_id = (
                 SELECT d.id FROM drafts d
                 WHERE d.app_id = idempotency.app_id AND d.key_id = idempotency.key_id
                   AND d.idempotency_key = idempotency.idem_key
                 ORDER BY d.created_at DESC LIMIT 1)
             WHERE draft_id IS NULL",
            [],
        )?;
        let freed = tx.execute("DELETE FROM idempotency WHERE draft_id IS NULL", [])?;
        tx.commit()?;
        Ok((linked.saturating_sub(freed), freed))
    }

    /// Frees a reservation whose request failed before producing a draft, so a retry runs.
    pub fn release_idempotency(&self, scope: (&str, &str, &str)) -> Result<(), StoreError> {
        let conn = self.conn()?;
        conn.execute(
            "DELETE FROM idempotency WHERE app_id = ?1 AND key_id = ?2 AND idem_key = ?3 AND draft_id IS NULL",
            params![scope.0, scope.1, scope.2],
        )?;
        Ok(())
    }

    /// Records an execution of a draft.
    pub fn insert_execution(&self, execution: &ExecutionRecord) -> Result<(), StoreError> {
        let conn = self.conn()?;
        conn.execute(
            "INSERT INTO executions (id, draft_id, app_id, idempotency_key, status, result, error, instance_id, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                execution.id,
                execution.draft_id,
                execution.app_id,
                execution.idempotency_key,
                execution.status,
                execution.result.as_ref().map(serde_json::Value::to_string),
                execution.error,
                execution.instance_id,
                execution.created_at
            ],
        )?;
        Ok(())
    }

    /// Records how a running execution ended; `false` if it was not running.
    pub fn finish_execution(
        &self,
        id: &str,
        status: &str,
        result: Option<&serde_json::Value>,
        error: Option<&str>,
    ) -> Result<bool, StoreError> {
        let conn = self.conn()?;
        let n = conn.execute(
            "UPDATE executions SET status = ?2, result = ?3, error = ?4 WHERE id = ?1 AND status = 'running'",
            params![id, status, result.map(serde_json::Value::to_string), error],
        )?;
        Ok(n == 1)
    }

    /// Marks executions left `running` by another (dead) gateway instance as
    /// `indeterminate`; returns them as (execution id, draft id).
    pub fn mark_indeterminate(&self, current_instance: &str) -> Result<Vec<(String, String)>, StoreError> {
        let conn = self.conn()?;
        let mut stmt =
            conn.prepare("SELECT id, draft_id FROM executions WHERE status = 'running' AND instance_id != ?1")?;
        let rows: Vec<(String, String)> = stmt
            .query_map([current_instance], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        conn.execute(
            "UPDATE executions SET status = 'indeterminate' WHERE status = 'running' AND instance_id != ?1",
            [current_instance],
        )?;
        Ok(rows)
    }

    /// At startup: approved drafts a previous process claimed but never started (no
    /// execution record, which is written before the plugin is called) become `failed`
    /// with a failed execution saying nothing ran, so their replay is a failure, never a
    /// silent re-run. Returns (draft id, execution id) of each.
    pub fn fail_unstarted_approvals(
        &self,
        instance_id: &str,
        now: &str,
        new_execution_id: impl Fn() -> String,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let stranded: Vec<(String, String, Option<String>)> = {
            let mut stmt = tx.prepare(
                "SELECT d.id, d.app_id, d.idempotency_key FROM drafts d
                 WHERE d.status = 'confirmed' AND NOT EXISTS (SELECT 1 FROM executions e WHERE e.draft_id = d.id)",
            )?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?
        };
        let mut failed = Vec::new();
        for (draft_id, app_id, idempotency_key) in stranded {
            let execution_id = new_execution_id();
            tx.execute(
                "UPDATE drafts SET status = 'failed', updated_at = ?2 WHERE id = ?1 AND status = 'confirmed'",
                params![draft_id, now],
            )?;
            tx.execute(
                "INSERT INTO executions (id, draft_id, app_id, idempotency_key, status, result, error, instance_id, created_at)
                 VALUES (?1, ?2, ?3, ?4, 'failed', NULL, ?5, ?6, ?7)",
                params![
                    execution_id,
                    draft_id,
                    app_id,
                    idempotency_key,
                    "the gateway stopped after the approval and before the write started; nothing was executed",
                    instance_id,
                    now
                ],
            )?;
            failed.push((draft_id, execution_id));
        }
        tx.commit()?;
        Ok(failed)
    }

    /// An operator's decision on an indeterminate execution; `false` if it was not one.
    pub fn resolve_execution(
        &self,
        id: &str,
        outcome: &str,
        note: &str,
    ) -> Result<Option<ExecutionRecord>, StoreError> {
        let conn = self.conn()?;
        let n = conn.execute(
            "UPDATE executions SET status = ?2, error = ?3 WHERE id = ?1 AND status = 'indeterminate'",
            params![id, outcome, note],
        )?;
        if n == 0 {
            return Ok(None);
        }
        drop(conn);
        let draft_id: Option<String> = {
            let conn = self.conn()?;
            conn.query_row("SELECT draft_id FROM executions WHERE id = ?1", [id], |r| r.get(0))
                .optional()?
        };
        match draft_id {
            Some(d) => self.latest_execution(&d),
            None => Ok(None),
        }
    }

    /// The latest execution of a draft.
    pub fn latest_execution(&self, draft_id: &str) -> Result<Option<ExecutionRecord>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT id, draft_id, app_id, idempotency_key, status, result, error, instance_id, created_at
             FROM executions WHERE draft_id = ?1 ORDER BY created_at DESC, id DESC LIMIT 1",
        )?;
        Ok(stmt
            .query_row([draft_id], |r| {
                let result: Option<String> = r.get(5)?;
                Ok(ExecutionRecord {
                    id: r.get(0)?,
                    draft_id: r.get(1)?,
                    app_id: r.get(2)?,
                    idempotency_key: r.get(3)?,
                    status: r.get(4)?,
                    result: result.and_then(|t| serde_json::from_str(&t).ok()),
                    error: r.get(6)?,
                    instance_id: r.get(7)?,
                    created_at: r.get(8)?,
                })
            })
            .optional()?)
    }

    /// Drafts for review, newest first, filtered by tenant, app and status.
    pub fn drafts(&self, filter: &DraftFilter<'_>) -> Result<Vec<DraftRecord>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(
            "SELECT id FROM drafts WHERE (?1 IS NULL OR org_id = ?1) AND (?2 IS NULL OR app_id = ?2)
             AND (?3 IS NULL OR status = ?3) AND (?4 IS NULL OR risk = ?4)
             AND (?5 IS NULL OR created_at <= ?5) AND (?6 IS NULL OR created_at >= ?6)
             ORDER BY created_at DESC, id DESC LIMIT ?7",
        )?;
        let ids: Vec<String> = stmt
            .query_map(
                params![
                    filter.org_id,
                    filter.app_id,
                    filter.status,
                    filter.risk,
                    filter.created_before,
                    filter.created_after,
                    i64::try_from(filter.limit).unwrap_or(i64::MAX)
                ],
                |r| r.get(0),
            )?
            .collect::<Result<_, _>>()?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(d) = records::draft(&conn, &id)? {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// Draft counts by state, for the metrics.
    pub fn drafts_by_state(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached("SELECT status, COUNT(*) FROM drafts GROUP BY status ORDER BY status")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn draft(&self, id: &str) -> Result<Option<DraftRecord>, StoreError> {
        let conn = self.conn()?;
        records::draft(&conn, id)
    }

    // ---- preflights ----

    pub fn insert_preflight(&self, preflight: &PreflightRecord) -> Result<(), StoreError> {
        let conn = self.conn()?;
        records::insert_preflight(&conn, preflight)
    }

    pub fn preflight(&self, id: &str) -> Result<Option<PreflightRecord>, StoreError> {
        let conn = self.conn()?;
        records::preflight(&conn, id)
    }

    // ---- step-up grants ----

    pub fn insert_step_up(&self, grant: &StepUpGrant) -> Result<(), StoreError> {
        let conn = self.conn()?;
        conn.execute(
            "INSERT INTO step_up_grants (id, token_hash, preflight_id, app_id, issued_by, note, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            rusqlite::params![
                grant.id,
                grant.token_hash,
                grant.preflight_id,
                grant.app_id,
                grant.issued_by,
                grant.note,
                grant.created_at,
                grant.expires_at
            ],
        )?;
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
        let conn = self.conn()?;
        let changed = conn.execute(
            "UPDATE step_up_grants SET used_at = ?1
             WHERE token_hash = ?2 AND app_id = ?3 AND preflight_id = ?4 AND used_at IS NULL AND expires_at > ?1",
            rusqlite::params![now, token_hash, app_id, preflight_id],
        )?;
        Ok(changed == 1)
    }

    // ---- audit (reads; the writer lives in `audit`) ----

    /// The newest audit events first, after applying the filter.
    pub fn audit_events(&self, filter: &AuditFilter) -> Result<Vec<AuditRow>, StoreError> {
        let conn = self.conn()?;
        records::audit_events(&conn, filter)
    }
}

/// Filters for listing drafts; `None` matches everything.
#[derive(Debug, Default, Clone)]
pub struct DraftFilter<'a> {
    pub org_id: Option<&'a str>,
    pub app_id: Option<&'a str>,
    pub status: Option<&'a str>,
    pub risk: Option<&'a str>,
    /// Only drafts created at or before this instant (RFC 3339): at least this old.
    pub created_before: Option<String>,
    /// Only drafts created at or after this instant: at most this old.
    pub created_after: Option<String>,
    pub limit: usize,
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

/// Reads all audit rows in chain order for verification, in pages to bound memory.
pub fn audit_chain_page(conn: &Connection, after_seq: i64, limit: usize) -> Result<Vec<AuditRow>, StoreError> {
    records::audit_events(
        conn,
        &AuditFilter {
            after_seq: Some(after_seq),
            limit,
            ascending: true,
            ..AuditFilter::default()
        },
    )
}

/// The newest event's sequence number and hash, where the chain continues.
pub fn audit_chain_head(conn: &Connection) -> Result<Option<(i64, String)>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT seq, event_hash FROM audit_events ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
}

/// The latest retention cut: `(upto_seq, upto_hash)`.
pub fn audit_anchor(conn: &Connection) -> Result<Option<(i64, String)>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT upto_seq, upto_hash FROM audit_checkpoints ORDER BY upto_seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
}

/// Removes events created before `before`, records the cut, and appends the checkpoint
/// event built by `checkpoint(upto_seq, upto_hash, removed)`, all in one transaction.
/// Returns the cut, or `None` when nothing was old enough.
pub fn prune_audit(
    conn: &mut Connection,
    before: &str,
    now: &str,
    checkpoint: impl FnOnce(i64, &str, i64) -> AuditRow,
) -> Result<Option<(i64, String, i64, AuditRow)>, StoreError> {
    let tx = conn.transaction()?;
    let upto: Option<(i64, String)> = tx
        .query_row(
            "SELECT seq, event_hash FROM audit_events WHERE created_at < ?1 ORDER BY seq DESC LIMIT 1",
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
    let row = checkpoint(upto_seq, &upto_hash, removed);
    let details = row.details.to_string();
    let policy_ids = serde_json::to_string(&row.policy_ids).map_err(|source| StoreError::Json {
        column: "policy_ids",
        source,
    })?;
    records::insert_audit_rows(
        &tx,
        &[AuditInsert {
            row: &row,
            details: &details,
            policy_ids: &policy_ids,
        }],
    )?;
    tx.commit()?;
    Ok(Some((upto_seq, upto_hash, removed, row)))
}

/// Appends audit rows in one transaction; the caller computed their chain hashes.
pub fn append_audit_rows(conn: &mut Connection, rows: &[AuditInsert<'_>]) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    records::insert_audit_rows(&tx, rows)?;
    tx.commit()?;
    Ok(())
}

/// The least byte string greater than every string that starts with `prefix`, or `None`
/// when every string does (the empty prefix). UTF-8 never contains 0xFF, so incrementing
/// the last byte is enough.
fn prefix_end(prefix: &str) -> Option<Vec<u8>> {
    let mut end = prefix.as_bytes().to_vec();
    let last = end.last_mut()?;
    *last += 1;
    Some(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_list_returns_exactly_the_keys_under_a_prefix_in_byte_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("kv.db")).unwrap();
        let keys = [
            "a",
            "txn",
            "txn/",
            "txn/1",
            "txn/2",
            "txn/é",
            "txn0",
            "txo",
            "u/é",
            "u/\u{10FFFF}x",
        ];
        for key in keys {
            store.kv_set("ledger", "org_a", key, "v").unwrap();
        }
        // Another tenant's and another plugin's keys never show.
        store.kv_set("ledger", "org_b", "txn/9", "v").unwrap();
        store.kv_set("tickets", "org_a", "txn/8", "v").unwrap();

        let list = |prefix: &str, limit: usize| store.kv_list("ledger", "org_a", prefix, limit).unwrap();
        assert_eq!(list("txn/", 100), ["txn/", "txn/1", "txn/2", "txn/é"]);
        assert_eq!(list("txn", 100), ["txn", "txn/", "txn/1", "txn/2", "txn/é", "txn0"]);
        assert_eq!(list("txn/", 2), ["txn/", "txn/1"]);
        assert_eq!(list("u/", 100), ["u/é", "u/\u{10FFFF}x"]);
        assert_eq!(list("u/\u{10FFFF}", 100), ["u/\u{10FFFF}x"]);
        assert_eq!(list("", 100), keys);
        assert!(list("nothing", 100).is_empty());
    }

    #[test]
    fn kv_reads_see_every_write_through_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("kv.db")).unwrap();
        let get = |tenant: &str, key: &str| store.kv_get("ledger", tenant, key).unwrap();

        assert_eq!(get("org_a", "k"), None); // a cached absence ...
        store.kv_set("ledger", "org_a", "k", "1").unwrap();
        assert_eq!(get("org_a", "k").as_deref(), Some("1")); // ... is forgotten by a write
        store.kv_set("ledger", "org_a", "k", "2").unwrap();
        assert_eq!(get("org_a", "k").as_deref(), Some("2"));
        assert_eq!(get("org_b", "k"), None, "tenants do not share entries");
        assert_eq!(
            store.kv_get("tickets", "org_a", "k").unwrap(),
            None,
            "plugins do not share entries"
        );
        store.kv_delete("ledger", "org_a", "k").unwrap();
        assert_eq!(get("org_a", "k"), None);

        // A full cache starts over and still answers from the store.
        let big = "x".repeat(200 * 1024);
        for i in 0..100 {
            store.kv_set("ledger", "org_a", &format!("big/{i}"), &big).unwrap();
            assert_eq!(get("org_a", &format!("big/{i}")).map(|v| v.len()), Some(big.len()));
        }
        assert!(store.kv_cache().bytes <= MAX_CACHED_KV_BYTES);
        assert_eq!(get("org_a", "big/0").map(|v| v.len()), Some(big.len()));
    }
}
