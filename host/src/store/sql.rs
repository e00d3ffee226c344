//! One SQL interface over the store's two databases: SQLite (embedded, the default) and
//! PostgreSQL (shared by several gateway nodes).
//!
//! Each aggregate writes its SQL once, in the dialect both accept (`?1` placeholders, which
//! become `$1` for PostgreSQL; `IS NOT DISTINCT FROM`; `ON CONFLICT`), and runs it through
//! [`Db::read`] or [`Db::write`]. The few statements the two spell differently ask
//! [`Conn::is_postgres`].
//!
//! The store's API stays synchronous, as SQLite's is: a PostgreSQL statement runs on the
//! calling thread by blocking on tokio-postgres's future, while the connections' socket I/O
//! runs on the store's own one-thread runtime. So a store call never needs (or starts) the
//! caller's runtime, and it blocks its thread for one round trip, as a SQLite call blocks
//! for one disk read.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use rusqlite::Connection;

use super::StoreError;

/// A value bound to a statement: a type both drivers encode the same way. Integers are
/// `i64` (PostgreSQL's `BIGINT`), flags `bool` (`BOOLEAN`), text and JSON `&str`/`String`.
pub(crate) trait Param: Sync {
    fn sqlite(&self) -> &dyn rusqlite::ToSql;
    fn postgres(&self) -> &(dyn tokio_postgres::types::ToSql + Sync);
}

impl<T: rusqlite::ToSql + tokio_postgres::types::ToSql + Sync> Param for T {
    fn sqlite(&self) -> &dyn rusqlite::ToSql {
        self
    }
    fn postgres(&self) -> &(dyn tokio_postgres::types::ToSql + Sync) {
        self
    }
}

/// A statement's parameters: `args![a, b, c]`.
macro_rules! args {
    ($($value:expr),* $(,)?) => {
        &[$(&$value as &dyn $crate::store::sql::Param),*] as &[&dyn $crate::store::sql::Param]
    };
}
pub(crate) use args;

/// A column type both drivers decode the same way.
pub(crate) trait Column: Sized {
    fn sqlite(row: &rusqlite::Row<'_>, index: usize) -> Result<Self, StoreError>;
    fn postgres(row: &tokio_postgres::Row, index: usize) -> Result<Self, StoreError>;
}

impl<T: rusqlite::types::FromSql + for<'r> tokio_postgres::types::FromSql<'r>> Column for T {
    fn sqlite(row: &rusqlite::Row<'_>, index: usize) -> Result<Self, StoreError> {
        Ok(row.get(index)?)
    }
    fn postgres(row: &tokio_postgres::Row, index: usize) -> Result<Self, StoreError> {
        Ok(row.try_get(index)?)
    }
}

/// One row of a result, from either database.
pub(crate) enum Row<'a> {
    Sqlite(&'a rusqlite::Row<'a>),
    Postgres(&'a tokio_postgres::Row),
}

impl Row<'_> {
    pub(crate) fn get<T: Column>(&self, index: usize) -> Result<T, StoreError> {
        match self {
            Row::Sqlite(row) => T::sqlite(row, index),
            Row::Postgres(row) => T::postgres(row, index),
        }
    }
}

/// A connection inside a call of [`Db::read`] or [`Db::write`].
pub(crate) enum Conn<'a> {
    Sqlite(&'a Connection),
    Postgres(PgSession<'a>, &'a Postgres),
}

/// Where a PostgreSQL statement runs: inside a transaction, or on its own (a read, or a
/// statement that is atomic by itself: one round trip, no `BEGIN` and `COMMIT` around it).
pub(crate) enum PgSession<'a> {
    Transaction(&'a deadpool_postgres::Transaction<'a>),
    Autocommit(&'a deadpool_postgres::ClientWrapper),
}

impl PgSession<'_> {
    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
        match self {
            PgSession::Transaction(tx) => {
                let stmt = tx.prepare_cached(sql).await?;
                tx.query(&stmt, params).await
            }
            PgSession::Autocommit(client) => {
                let stmt = client.prepare_cached(sql).await?;
                client.query(&stmt, params).await
            }
        }
    }

    async fn execute(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64, tokio_postgres::Error> {
        match self {
            PgSession::Transaction(tx) => {
                let stmt = tx.prepare_cached(sql).await?;
                tx.execute(&stmt, params).await
            }
            PgSession::Autocommit(client) => {
                let stmt = client.prepare_cached(sql).await?;
                client.execute(&stmt, params).await
            }
        }
    }
}

impl Conn<'_> {
    pub(crate) fn is_postgres(&self) -> bool {
        matches!(self, Conn::Postgres(..))
    }

    /// Runs one statement; the number of rows it changed.
    pub(crate) fn execute(&mut self, sql: &str, params: &[&dyn Param]) -> Result<usize, StoreError> {
        match self {
            Conn::Sqlite(conn) => {
                let mut stmt = conn.prepare_cached(sql)?;
                Ok(stmt.execute(rusqlite::params_from_iter(params.iter().map(|p| p.sqlite())))?)
            }
            Conn::Postgres(session, pg) => {
                let sql = dollar_placeholders(sql);
                let params: Vec<_> = params.iter().map(|p| p.postgres()).collect();
                let n = pg.block(session.execute(&sql, &params))?;
                Ok(usize::try_from(n).unwrap_or(usize::MAX))
            }
        }
    }

    /// Runs one `INSERT` of one row on SQLite; the row's rowid (an `INTEGER PRIMARY KEY`
    /// column is that rowid). SQLite answers `RETURNING` by staging the rows in a temporary
    /// b-tree, opened and dropped per statement: that showed in the audit writer's profile.
    /// `None` on PostgreSQL, which has no rowid: use `RETURNING` there.
    pub(crate) fn insert_rowid(&mut self, sql: &str, params: &[&dyn Param]) -> Result<Option<i64>, StoreError> {
        match self {
            Conn::Sqlite(conn) => {
                let mut stmt = conn.prepare_cached(sql)?;
                stmt.execute(rusqlite::params_from_iter(params.iter().map(|p| p.sqlite())))?;
                Ok(Some(conn.last_insert_rowid()))
            }
            Conn::Postgres(..) => Ok(None),
        }
    }

    /// Every row of a query, each read by `read`.
    pub(crate) fn query<T>(
        &mut self,
        sql: &str,
        params: &[&dyn Param],
        mut read: impl FnMut(&Row<'_>) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        match self {
            Conn::Sqlite(conn) => {
                let mut stmt = conn.prepare_cached(sql)?;
                let mut rows = stmt.query(rusqlite::params_from_iter(params.iter().map(|p| p.sqlite())))?;
                let mut out = Vec::new();
                while let Some(row) = rows.next()? {
                    out.push(read(&Row::Sqlite(row))?);
                }
                Ok(out)
            }
            Conn::Postgres(session, pg) => {
                let sql = dollar_placeholders(sql);
                let params: Vec<_> = params.iter().map(|p| p.postgres()).collect();
                let rows = pg.block(session.query(&sql, &params))?;
                rows.iter().map(|row| read(&Row::Postgres(row))).collect()
            }
        }
    }

    /// The first row of a query, if there is one.
    pub(crate) fn query_optional<T>(
        &mut self,
        sql: &str,
        params: &[&dyn Param],
        read: impl FnOnce(&Row<'_>) -> Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        let mut read = Some(read);
        let mut rows = self.query(sql, params, |row| match read.take() {
            Some(read) => read(row).map(Some),
            None => Ok(None),
        })?;
        Ok(if rows.is_empty() { None } else { rows.swap_remove(0) })
    }

    /// The one row a query always has (an aggregate, say).
    pub(crate) fn query_one<T>(
        &mut self,
        sql: &str,
        params: &[&dyn Param],
        read: impl FnOnce(&Row<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.query_optional(sql, params, read)?.ok_or(StoreError::NoRow)
    }
}

impl Conn<'_> {
    /// Tells every node (this one too) that `cache` changed, when the transaction commits.
    /// SQLite has one process: its caches are emptied by the writer itself.
    pub(crate) fn notify(&mut self, cache: Cache) -> Result<(), StoreError> {
        if self.is_postgres() {
            self.execute("SELECT pg_notify('openport_cache', ?1)", args![cache.name()])?;
        }
        Ok(())
    }

    /// Tells every node that one plugin key changed: only that key leaves their caches (a
    /// key too long for a notification empties the whole key-value cache instead).
    pub(crate) fn notify_kv_key(&mut self, plugin: &str, tenant: &str, key: &str) -> Result<(), StoreError> {
        if !self.is_postgres() {
            return Ok(());
        }
        let payload = format!("{KV_KEY_PREFIX}{}", serde_json::json!([plugin, tenant, key]));
        let payload = if payload.len() <= MAX_NOTIFY_PAYLOAD {
            payload
        } else {
            Cache::Kv.name().to_string()
        };
        self.execute("SELECT pg_notify('openport_cache', ?1)", args![payload])?;
        Ok(())
    }
}

/// A notification naming one changed plugin key: `kv:["plugin","tenant","key"]`.
const KV_KEY_PREFIX: &str = "kv:";
/// PostgreSQL refuses a notification payload of 8000 bytes or more.
const MAX_NOTIFY_PAYLOAD: usize = 7900;

/// The read caches another node's write must empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cache {
    Credentials,
    Kv,
}

impl Cache {
    fn name(self) -> &'static str {
        match self {
            Cache::Credentials => "credentials",
            Cache::Kv => "kv",
        }
    }

    fn index(self) -> usize {
        match self {
            Cache::Credentials => 0,
            Cache::Kv => 1,
        }
    }

    fn named(name: &str) -> Option<Cache> {
        [Cache::Credentials, Cache::Kv].into_iter().find(|c| c.name() == name)
    }
}

/// Whether a cache may be trusted, and since when: each cache keeps the generation it was
/// filled at and starts over when the generation moved. A write moves it on its own node
/// at once and, on PostgreSQL, on every other node when the notification arrives. While a
/// node is not listening (at start, or its listener's connection dropped) nothing may be
/// cached: every read goes to the database.
///
/// One plugin key changing moves no generation: it is forgotten alone ([`Freshness::kv_key_changed`]),
/// so a node writing its keys keeps the rest of its cache. `kv_changes` counts such changes,
/// so a read that raced one does not keep what it read.
#[derive(Debug)]
pub(crate) struct Freshness {
    generations: [AtomicU64; 2],
    listening: AtomicBool,
    kv_changes: AtomicU64,
    /// Keys changed elsewhere, for the key-value cache to forget at its next use.
    forgotten_kv: Mutex<Vec<(String, String, String)>>,
}

impl Freshness {
    pub(crate) fn new(listening: bool) -> Freshness {
        Freshness {
            generations: [AtomicU64::new(0), AtomicU64::new(0)],
            listening: AtomicBool::new(listening),
            kv_changes: AtomicU64::new(0),
            forgotten_kv: Mutex::new(Vec::new()),
        }
    }

    /// A plugin key changed (here, after the commit, or on another node): it is forgotten
    /// at the cache's next use, and reads in flight do not keep what they read.
    pub(crate) fn kv_key_changed(&self, plugin: &str, tenant: &str, key: &str) {
        // Counted before the key is listed: a read that saw the old count inserted before
        // the key is listed, so the next use of the cache forgets what it inserted.
        self.kv_changes.fetch_add(1, Ordering::AcqRel);
        let mut forgotten = self.forgotten_kv.lock().unwrap_or_else(|p| p.into_inner());
        if forgotten.len() >= MAX_FORGOTTEN_KV {
            // Nobody read the cache for a long while: it starts over instead.
            forgotten.clear();
            self.invalidate(Cache::Kv);
        } else {
            forgotten.push((plugin.to_string(), tenant.to_string(), key.to_string()));
        }
    }

    /// How many single keys changed so far.
    pub(crate) fn kv_changes(&self) -> u64 {
        self.kv_changes.load(Ordering::Acquire)
    }

    /// The keys changed since the last call, for the cache to forget.
    pub(crate) fn take_forgotten_kv(&self) -> Vec<(String, String, String)> {
        std::mem::take(&mut *self.forgotten_kv.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The generation to fill `cache` at; `None` while caching is not safe.
    pub(crate) fn generation(&self, cache: Cache) -> Option<u64> {
        if !self.listening.load(Ordering::Acquire) {
            return None;
        }
        Some(self.generations[cache.index()].load(Ordering::Acquire))
    }

    pub(crate) fn invalidate(&self, cache: Cache) {
        self.generations[cache.index()].fetch_add(1, Ordering::AcqRel);
    }

    fn invalidate_all(&self) {
        for generation in &self.generations {
            generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn set_listening(&self, listening: bool) {
        // Whatever changed while nobody listened is unknown: everything starts over.
        self.invalidate_all();
        self.listening.store(listening, Ordering::Release);
        self.invalidate_all();
    }
}

/// Changed keys kept for the key-value cache to forget before it starts over instead.
const MAX_FORGOTTEN_KV: usize = 10_000;

/// How often the listener checks that its connection still delivers notifications.
const LISTEN_PING: std::time::Duration = std::time::Duration::from_secs(5);
/// A listener's ping to itself: `ping:N`.
const PING_PREFIX: &str = "ping:";

/// How long a node waits before listening again after its listener's connection failed.
const LISTEN_RETRY: std::time::Duration = std::time::Duration::from_millis(500);

impl Postgres {
    /// Listens for other nodes' writes and moves `fresh`'s generations, reconnecting as long
    /// as the store lives.
    pub(crate) fn listen(&self, fresh: std::sync::Arc<Freshness>) {
        let target = self.target.clone();
        self.spawn(async move {
            loop {
                let config = &target.config;
                let listened = match &target.tls {
                    Some(tls) => listen_once(config.connect(tls.clone()).await, &fresh).await,
                    None => listen_once(config.connect(tokio_postgres::NoTls).await, &fresh).await,
                };
                if let Err(e) = listened {
                    tracing::warn!(error = %e, "cache invalidation listener lost its connection; caches are off until it is back");
                }
                fresh.set_listening(false);
                tokio::time::sleep(LISTEN_RETRY).await;
            }
        });
    }
}

/// Listens on one connection (plain or TLS) until it fails or stops answering pings.
async fn listen_once<S, T>(
    connected: Result<(tokio_postgres::Client, tokio_postgres::Connection<S, T>), tokio_postgres::Error>,
    fresh: &Freshness,
) -> Result<(), tokio_postgres::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use futures_util::StreamExt;
    let (client, mut connection) = connected?;
    let (sender, mut notifications) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                    if sender.send(n.payload().to_string()).is_err() {
                        return Ok(());
                    }
                }
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    });
    client.batch_execute("LISTEN openport_cache").await?;
    fresh.set_listening(true);
    // A connection can look open and deliver nothing (a firewall dropped it silently, a
    // pooler that does not pass notifications): the listener pings itself, and a ping
    // that does not come back in time ends the connection, caches off, and it starts over.
    let mut ping = tokio::time::interval(LISTEN_PING);
    let (mut sent, mut echoed) = (0_u64, 0_u64);
    loop {
        let payload = tokio::select! {
            received = notifications.recv() => match received {
                Some(payload) => payload,
                None => break,
            },
            _ = ping.tick() => {
                if sent != echoed {
                    tracing::warn!("cache invalidation listener got no answer to its ping; reconnecting");
                    driver.abort();
                    return Ok(());
                }
                sent += 1;
                client.batch_execute(&format!("NOTIFY openport_cache, '{PING_PREFIX}{sent}'")).await?;
                continue;
            }
        };
        if let Some(n) = payload.strip_prefix(PING_PREFIX) {
            echoed = n.parse().unwrap_or(echoed);
            continue;
        }
        if let Some(key) = payload.strip_prefix(KV_KEY_PREFIX) {
            match serde_json::from_str::<(String, String, String)>(key) {
                Ok((plugin, tenant, key)) => fresh.kv_key_changed(&plugin, &tenant, &key),
                Err(_) => fresh.invalidate(Cache::Kv),
            }
            continue;
        }
        match Cache::named(&payload) {
            Some(cache) => fresh.invalidate(cache),
            None => tracing::debug!(payload, "unknown cache notification"),
        }
    }
    drop(client);
    match driver.await {
        Ok(result) => result,
        Err(_) => Ok(()),
    }
}

/// `?1` → `$1`: the store's SQL names parameters as SQLite does. No statement of the store
/// holds a `?` inside a string literal.
fn dollar_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

/// The store's database.
#[derive(Debug)]
pub(crate) enum Db {
    /// One connection behind a mutex; WAL lets the audit writer's own connection run beside.
    Sqlite(Mutex<Connection>),
    Postgres(Postgres),
}

impl Db {
    pub(crate) fn is_postgres(&self) -> bool {
        matches!(self, Db::Postgres(_))
    }

    /// Runs reads (or statements each atomic by itself) on a connection, each statement on
    /// its own: SQLite's autocommit, and PostgreSQL's.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&mut Conn<'_>) -> Result<T, StoreError>) -> Result<T, StoreError> {
        match self {
            Db::Sqlite(conn) => f(&mut Conn::Sqlite(&*lock(conn)?)),
            Db::Postgres(pg) => pg.autocommit(f),
        }
    }

    /// Runs `f` in one write transaction: SQLite's `BEGIN IMMEDIATE` (one writer at a time);
    /// on PostgreSQL a transaction holding the store's write lock, so a read followed by a
    /// write sees what SQLite's single writer would, across every node.
    pub(crate) fn write<T>(&self, f: impl FnOnce(&mut Conn<'_>) -> Result<T, StoreError>) -> Result<T, StoreError> {
        match self {
            Db::Sqlite(conn) => {
                let conn = lock(conn)?;
                // `BEGIN` and `COMMIT` as cached statements: rusqlite's `Transaction` parses
                // both again for every transaction (0.7% of the ledger read's CPU, most of
                // it in the audit commit).
                let tx = OpenTransaction::begin(&conn)?;
                let out = f(&mut Conn::Sqlite(&conn))?;
                tx.commit()?;
                Ok(out)
            }
            Db::Postgres(pg) => pg.transaction(true, f),
        }
    }

    /// Runs `f` in one transaction that takes no lock across nodes: for rows only this
    /// node writes (its audit chain).
    pub(crate) fn own_rows<T>(&self, f: impl FnOnce(&mut Conn<'_>) -> Result<T, StoreError>) -> Result<T, StoreError> {
        match self {
            Db::Sqlite(_) => self.write(f),
            Db::Postgres(pg) => pg.transaction(false, f),
        }
    }
}

/// A SQLite transaction begun and not yet committed: rolled back when dropped (an error or
/// a panic in its body, or a failed `COMMIT`), as rusqlite's `Transaction` would.
struct OpenTransaction<'a> {
    conn: &'a Connection,
    committed: bool,
}

impl<'a> OpenTransaction<'a> {
    fn begin(conn: &'a Connection) -> Result<Self, StoreError> {
        conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        Ok(OpenTransaction { conn, committed: false })
    }

    fn commit(mut self) -> Result<(), StoreError> {
        self.conn.prepare_cached("COMMIT")?.execute([])?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for OpenTransaction<'_> {
    fn drop(&mut self) {
        // SQLite may have rolled back already (some errors end the transaction).
        if !self.committed && !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

fn lock(conn: &Mutex<Connection>) -> Result<MutexGuard<'_, Connection>, StoreError> {
    conn.lock().map_err(|_| StoreError::Poisoned)
}

/// The advisory lock key that serializes the store's write transactions across nodes.
const WRITE_LOCK: i64 = 0x6f70_656e_706f_7274; // "openport"

/// A pool of PostgreSQL connections and the runtime that drives their sockets.
pub(crate) struct Postgres {
    pool: deadpool_postgres::Pool,
    /// Its own runtime: taken out and shut down in the background on drop, because a
    /// runtime may not be dropped inside another one's task.
    runtime: Option<tokio::runtime::Runtime>,
    url: String,
    /// How the listener connects, as the pool does.
    target: std::sync::Arc<super::pg_tls::Target>,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("url", &redacted(&self.url))
            .finish_non_exhaustive()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Connections a node keeps open at most.
const POOL_SIZE: usize = 16;

impl Postgres {
    pub(crate) fn connect(url: &str) -> Result<Postgres, StoreError> {
        let super::pg_tls::Target { mut config, tls } = super::pg_tls::target(url)?;
        // No statement, lock wait or open transaction outlives a request: a node that hangs
        // holding the write lock stalls the others for at most this, and a request that
        // waits for the database fails (500) instead of hanging.
        let bounded = "-c statement_timeout=30000 -c lock_timeout=15000 -c idle_in_transaction_session_timeout=30000";
        let options = match config.get_options() {
            Some(own) if !own.is_empty() => format!("{own} {bounded}"),
            _ => bounded.to_string(),
        };
        config.options(&options);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("store-postgres")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Thread(e.to_string()))?;
        let manager_config = || deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        };
        let manager = match &tls {
            Some(tls) => deadpool_postgres::Manager::from_config(config.clone(), tls.clone(), manager_config()),
            None => deadpool_postgres::Manager::from_config(config.clone(), tokio_postgres::NoTls, manager_config()),
        };
        let pool = {
            let _entered = runtime.enter();
            deadpool_postgres::Pool::builder(manager)
                .max_size(POOL_SIZE)
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .wait_timeout(Some(std::time::Duration::from_secs(10)))
                .create_timeout(Some(std::time::Duration::from_secs(5)))
                .build()
                .map_err(|e| StoreError::Pool(e.to_string()))?
        };
        let pg = Postgres {
            pool,
            runtime: Some(runtime),
            url: url.to_string(),
            target: std::sync::Arc::new(super::pg_tls::Target { config, tls }),
        };
        // Fail at open, not at the first request, when the database cannot be reached.
        pg.transaction(false, |conn| {
            conn.query_one("SELECT 1::BIGINT", args![], |r| r.get::<i64>(0))
        })?;
        Ok(pg)
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Runs a future on this thread while the store's runtime drives the sockets.
    ///
    /// On a worker of a multi-threaded runtime the wait is announced (`block_in_place`),
    /// so the runtime hands this worker's other tasks to another thread meanwhile: a round
    /// trip to the database is long enough that blocking the worker would cap the node at
    /// one request in flight per core (1,246 governed reads a second, against 6,974 on
    /// SQLite, before this; BENCHMARKS.md).
    pub(crate) fn block<F: Future>(&self, future: F) -> F::Output {
        let run = || {
            let _entered = self.runtime.as_ref().map(tokio::runtime::Runtime::enter);
            futures_executor::block_on(future)
        };
        let on_worker = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if on_worker {
            tokio::task::block_in_place(run)
        } else {
            run()
        }
    }

    /// Spawns a task on the store's runtime (the listener of invalidations).
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        if let Some(runtime) = &self.runtime {
            runtime.spawn(task);
        }
    }

    fn autocommit<T>(&self, f: impl FnOnce(&mut Conn<'_>) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let client = self.connection()?;
        f(&mut Conn::Postgres(PgSession::Autocommit(&client), self))
    }

    fn transaction<T>(
        &self,
        write: bool,
        f: impl FnOnce(&mut Conn<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut client = self.connection()?;
        let tx = self.block(client.transaction())?;
        if write {
            self.block(tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK]))?;
        }
        let out = f(&mut Conn::Postgres(PgSession::Transaction(&tx), self));
        match out {
            Ok(value) => {
                self.block(tx.commit())?;
                Ok(value)
            }
            Err(e) => {
                // A failed rollback closes the connection; the pool drops it.
                let _ = self.block(tx.rollback());
                Err(e)
            }
        }
    }

    /// A connection from the pool, back in it when dropped (kept for as long as a
    /// session-long lock must be held).
    pub(crate) fn connection(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.block(self.pool.get())
            .map_err(|e| StoreError::Pool(with_causes(&e)))
    }
}

/// An error and every cause under it: a pool's "error performing TLS handshake" says
/// nothing without its cause ("invalid peer certificate: UnknownIssuer").
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        cause = c.source();
    }
    text
}

/// A database URL without its password, for logs.
pub(crate) fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let hidden = if userinfo.contains(':') { ":***" } else { "" };
            format!("{}{user}{hidden}{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_renamed_for_postgres() {
        assert_eq!(
            dollar_placeholders("SELECT a FROM t WHERE b = ?1 AND c = ?12 AND d IS ?"),
            "SELECT a FROM t WHERE b = $1 AND c = $12 AND d IS ?"
        );
    }

    fn sqlite_db() -> Db {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch("CREATE TABLE t (v INTEGER)").expect("create");
        Db::Sqlite(Mutex::new(conn))
    }

    fn rows(db: &Db) -> i64 {
        db.read(|c| c.query_optional("SELECT COUNT(*) FROM t", &[], |r| r.get(0)))
            .expect("count")
            .unwrap_or(-1)
    }

    #[test]
    fn a_write_transaction_commits_its_body_or_nothing() {
        let db = sqlite_db();
        db.write(|c| c.execute("INSERT INTO t VALUES (1)", &[]))
            .expect("commit");
        assert_eq!(rows(&db), 1);

        let failed = db.write(|c| {
            c.execute("INSERT INTO t VALUES (2)", &[])?;
            Err::<(), _>(StoreError::NoRow)
        });
        assert!(matches!(failed, Err(StoreError::NoRow)));
        assert_eq!(rows(&db), 1, "the failed body's insert is rolled back");

        // The connection is usable again: the next transaction begins and commits.
        db.write(|c| c.execute("INSERT INTO t VALUES (3)", &[]))
            .expect("commit");
        assert_eq!(rows(&db), 2);
    }

    #[test]
    fn a_url_loses_its_password_in_logs() {
        assert_eq!(redacted("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redacted("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redacted("postgres://h/db"), "postgres://h/db");
    }
}
