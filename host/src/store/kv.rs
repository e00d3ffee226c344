//! Plugin key-value namespaces, by plugin and tenant, read through a cache.
//!
//! Calls of one plugin run in parallel, so a plugin that reads a value and writes it back
//! races with itself. Every write therefore takes a version from one counter that never
//! goes back (`kv_versions`), and the atomic operations (compare-and-set, increment, a
//! conditional batch) each run in one write transaction: SQLite's single writer, or on
//! PostgreSQL the store's write lock, serializes them across every node.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::StoreError;
use super::sql::{Cache, Conn, Db, Freshness, args};

#[derive(Debug)]
pub struct PluginKv {
    db: Arc<Db>,
    fresh: Arc<Freshness>,
    cache: Mutex<KvCache>,
}

/// A stored value and the version of the write that stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub value: String,
    pub version: u64,
}

/// What a conditional batch requires of one key: at `version`, or absent (`None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvCondition {
    pub key: String,
    pub version: Option<u64>,
}

/// One write of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvWrite {
    Set { key: String, value: String },
    Delete { key: String },
}

/// Why an increment was refused.
#[derive(Debug, thiserror::Error)]
pub enum IncrementError {
    #[error("the value at `{0}` is not a decimal integer")]
    NotAnInteger(String),
    #[error("incrementing `{0}` overflows a 64-bit integer")]
    Overflow(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Plugin key-value reads, by plugin, tenant and key (`None`: the key is absent). A plugin
/// call reads a few keys per request and each SQLite read costs a few microseconds (a read
/// transaction's two `fcntl` locks, the statement), so a ledger read spent 14% of its CPU
/// there.
///
/// It stays exact because every access to `plugin_kv` goes through [`PluginKv`]. On SQLite,
/// with the connection held: a miss is inserted, and a write forgets its key, before the
/// connection is released (the gateway is the only writer of its database). On PostgreSQL
/// a write names its keys to every node ([`Freshness::kv_key_changed`]), which forget
/// them, and a miss read while any key changed is not kept.
///
/// Listings are kept the same way, by prefix and limit: a write forgets every listing whose
/// prefix its key starts with (a ledger read lists its transactions on every call, and that
/// query was 5% of its CPU).
#[derive(Debug, Default)]
struct KvCache {
    generation: u64,
    values: ByNamespace<HashMap<String, Option<Versioned>>>,
    /// Keys under a prefix, by prefix, then limit.
    lists: ByNamespace<HashMap<String, HashMap<usize, Vec<String>>>>,
    bytes: usize,
}

/// By plugin, then tenant.
type ByNamespace<T> = HashMap<String, HashMap<String, T>>;

/// One namespace's entry of `map`, made if absent.
fn namespace<'m, T: Default>(map: &'m mut ByNamespace<T>, plugin: &str, tenant: &str) -> &'m mut T {
    map.entry(plugin.to_string())
        .or_default()
        .entry(tenant.to_string())
        .or_default()
}

/// Bytes of keys and values kept before the key-value cache starts over.
const MAX_CACHED_KV_BYTES: usize = 16 << 20;

impl KvCache {
    fn get(&self, plugin: &str, tenant: &str, key: &str) -> Option<Option<Versioned>> {
        self.values.get(plugin)?.get(tenant)?.get(key).cloned()
    }

    fn insert(&mut self, plugin: &str, tenant: &str, key: &str, value: Option<Versioned>) {
        self.reserve(key.len() + value.as_ref().map_or(0, |v| v.value.len()));
        namespace(&mut self.values, plugin, tenant).insert(key.to_string(), value);
    }

    fn list(&self, plugin: &str, tenant: &str, prefix: &str, limit: usize) -> Option<Vec<String>> {
        self.lists.get(plugin)?.get(tenant)?.get(prefix)?.get(&limit).cloned()
    }

    /// A whole [`PluginKv::scan`] from the cache, when its listing and every listed key's
    /// value are there: `None` sends the scan to the store. The inner `None` is a scan
    /// past `max_bytes`.
    fn scan(
        &self,
        plugin: &str,
        tenant: &str,
        prefix: &str,
        limit: usize,
        max_bytes: usize,
    ) -> Option<Option<Vec<(String, String)>>> {
        let keys = self.lists.get(plugin)?.get(tenant)?.get(prefix)?.get(&limit)?;
        let values = self.values.get(plugin)?.get(tenant)?;
        // A key whose value is not cached (`Err`) sends the whole scan to the store.
        let entries = keys.iter().map(|key| {
            let found = values.get(key).ok_or(())?;
            Ok::<_, ()>(found.as_ref().map(|v| (key.clone(), v.value.clone())))
        });
        within(entries, max_bytes).ok()
    }

    fn insert_list(&mut self, plugin: &str, tenant: &str, prefix: &str, limit: usize, keys: Vec<String>) {
        self.reserve(prefix.len() + keys.iter().map(String::len).sum::<usize>());
        let lists = namespace(&mut self.lists, plugin, tenant);
        lists.entry(prefix.to_string()).or_default().insert(limit, keys);
    }

    /// Counts `size` more bytes; a cache that would pass its bound starts over first.
    fn reserve(&mut self, size: usize) {
        if self.bytes + size > MAX_CACHED_KV_BYTES {
            self.clear();
        }
        self.bytes += size;
    }

    /// Forgets `key`'s value and every listing it may appear in (set or deleted).
    fn forget(&mut self, plugin: &str, tenant: &str, key: &str) {
        if let Some(keys) = self.values.get_mut(plugin).and_then(|t| t.get_mut(tenant)) {
            keys.remove(key);
        }
        if let Some(lists) = self.lists.get_mut(plugin).and_then(|t| t.get_mut(tenant)) {
            lists.retain(|prefix, _| !key.starts_with(prefix.as_str()));
        }
    }

    fn clear(&mut self) {
        self.values.clear();
        self.lists.clear();
        self.bytes = 0;
    }

    /// The cache as of `generation`: emptied if it was filled at another.
    fn at(&mut self, generation: u64) -> &mut KvCache {
        if self.generation != generation {
            self.clear();
            self.generation = generation;
        }
        self
    }
}

/// The next write version: one counter for every key of every plugin, never reused.
fn next_version(conn: &mut Conn<'_>) -> Result<u64, StoreError> {
    let version: i64 = conn.query_one(
        "UPDATE kv_versions SET last = last + 1 WHERE id = 1 RETURNING last",
        args![],
        |r| r.get(0),
    )?;
    Ok(u64::try_from(version).unwrap_or(0))
}

fn read(conn: &mut Conn<'_>, plugin: &str, tenant: &str, key: &str) -> Result<Option<Versioned>, StoreError> {
    conn.query_optional(
        "SELECT value, version FROM plugin_kv WHERE plugin = ?1 AND tenant = ?2 AND key = ?3",
        args![plugin, tenant, key],
        |r| {
            Ok(Versioned {
                value: r.get(0)?,
                version: u64::try_from(r.get::<i64>(1)?).unwrap_or(0),
            })
        },
    )
}

fn write(conn: &mut Conn<'_>, plugin: &str, tenant: &str, key: &str, value: &str) -> Result<u64, StoreError> {
    let version = next_version(conn)?;
    conn.execute(
        "INSERT INTO plugin_kv (plugin, tenant, key, value, version) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (plugin, tenant, key) DO UPDATE SET value = excluded.value, version = excluded.version",
        args![plugin, tenant, key, value, i64::try_from(version).unwrap_or(i64::MAX)],
    )?;
    Ok(version)
}

fn delete(conn: &mut Conn<'_>, plugin: &str, tenant: &str, key: &str) -> Result<(), StoreError> {
    conn.execute(
        "DELETE FROM plugin_kv WHERE plugin = ?1 AND tenant = ?2 AND key = ?3",
        args![plugin, tenant, key],
    )?;
    Ok(())
}

impl PluginKv {
    pub(super) fn new(db: Arc<Db>, fresh: Arc<Freshness>) -> Self {
        PluginKv {
            db,
            fresh,
            cache: Mutex::new(KvCache::default()),
        }
    }

    fn cache(&self) -> MutexGuard<'_, KvCache> {
        // Every entry can be read again: a poisoned cache is just emptied.
        self.cache.lock().unwrap_or_else(|e| {
            let mut cache = e.into_inner();
            cache.clear();
            cache
        })
    }

    /// Runs a write transaction that changes `keys`: they are forgotten first (so a failed
    /// write leaves no stale entry either) and, on a shared store, every node's cache
    /// starts over once it commits.
    fn write<'k, T>(
        &self,
        plugin: &str,
        tenant: &str,
        keys: impl IntoIterator<Item = &'k str> + Clone,
        f: impl FnOnce(&mut Conn<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let result = self.db.write(|conn| {
            {
                let mut cache = self.cache();
                for key in keys.clone() {
                    cache.forget(plugin, tenant, key);
                }
            }
            let value = f(conn)?;
            for key in keys.clone() {
                conn.notify_kv_key(plugin, tenant, key)?;
            }
            Ok(value)
        });
        if self.db.is_postgres() {
            // Committed (or not): a read that raced the write must not keep what it read.
            for key in keys {
                self.fresh.kv_key_changed(plugin, tenant, key);
            }
        }
        result
    }

    /// Reads through the cache; a miss is read from the store and remembered.
    pub fn get(&self, plugin: &str, tenant: &str, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.get_versioned(plugin, tenant, key)?.map(|v| v.value))
    }

    /// A value with its version, through the cache.
    pub fn get_versioned(&self, plugin: &str, tenant: &str, key: &str) -> Result<Option<Versioned>, StoreError> {
        self.through_cache(
            |cache| cache.get(plugin, tenant, key),
            |conn| read(conn, plugin, tenant, key),
            |cache, value| cache.insert(plugin, tenant, key, value.clone()),
        )
    }

    /// Answers from the cache (`hit`), or reads from the store (`miss`) and remembers what
    /// it read (`keep`) unless the cache moved on meanwhile.
    fn through_cache<T>(
        &self,
        hit: impl FnOnce(&KvCache) -> Option<T>,
        miss: impl FnOnce(&mut Conn<'_>) -> Result<T, StoreError>,
        keep: impl FnOnce(&mut KvCache, &T),
    ) -> Result<T, StoreError> {
        let generation = self.fresh.generation(Cache::Kv);
        let changes = self.fresh.kv_changes();
        if let Some(found) = self.cached(generation, hit) {
            return Ok(found);
        }
        self.db.read(|conn| {
            let value = miss(conn)?;
            // Still holding the connection (SQLite): no write can land between the read and
            // the insert. On PostgreSQL a write that did counted a change.
            if let Some(generation) = generation {
                // Checked and inserted under the cache's lock, which every forgetting takes.
                let mut cache = self.cache();
                if self.fresh.generation(Cache::Kv) == Some(generation) && self.fresh.kv_changes() == changes {
                    keep(cache.at(generation), &value);
                }
            }
            Ok(value)
        })
    }

    /// What `hit` finds in the cache as of `generation` (`None`: caching is off).
    fn cached<T>(&self, generation: Option<u64>, hit: impl FnOnce(&KvCache) -> Option<T>) -> Option<T> {
        let generation = generation?;
        let mut cache = self.cache();
        let cache = cache.at(generation);
        for (p, t, k) in self.fresh.take_forgotten_kv() {
            cache.forget(&p, &t, &k);
        }
        hit(cache)
    }

    /// Writes a value; returns its version.
    pub fn set(&self, plugin: &str, tenant: &str, key: &str, value: &str) -> Result<u64, StoreError> {
        self.write(plugin, tenant, [key], |conn| write(conn, plugin, tenant, key, value))
    }

    pub fn delete(&self, plugin: &str, tenant: &str, key: &str) -> Result<(), StoreError> {
        self.write(plugin, tenant, [key], |conn| delete(conn, plugin, tenant, key))
    }

    /// Writes `value` only if the key is at `expected` (`None`: absent). The new version,
    /// or `None` when the key moved on and nothing was written.
    pub fn compare_and_set(
        &self,
        plugin: &str,
        tenant: &str,
        key: &str,
        expected: Option<u64>,
        value: &str,
    ) -> Result<Option<u64>, StoreError> {
        self.write(plugin, tenant, [key], |conn| {
            let current = read(conn, plugin, tenant, key)?.map(|v| v.version);
            if current != expected {
                return Ok(None);
            }
            Ok(Some(write(conn, plugin, tenant, key, value)?))
        })
    }

    /// Adds `delta` to the integer at `key` (absent: 0) and returns the sum, atomically.
    pub fn increment(&self, plugin: &str, tenant: &str, key: &str, delta: i64) -> Result<i64, IncrementError> {
        let mut refused = None;
        let sum = self.write(plugin, tenant, [key], |conn| {
            let current = match read(conn, plugin, tenant, key)? {
                None => 0,
                Some(v) => match v.value.trim().parse::<i64>() {
                    Ok(n) => n,
                    Err(_) => {
                        refused = Some(IncrementError::NotAnInteger(key.to_string()));
                        return Ok(None);
                    }
                },
            };
            let Some(sum) = current.checked_add(delta) else {
                refused = Some(IncrementError::Overflow(key.to_string()));
                return Ok(None);
            };
            write(conn, plugin, tenant, key, &sum.to_string())?;
            Ok(Some(sum))
        })?;
        match (sum, refused) {
            (Some(sum), _) => Ok(sum),
            (None, Some(refused)) => Err(refused),
            (None, None) => Err(IncrementError::Store(StoreError::NoRow)),
        }
    }

    /// Applies every write if every condition holds, else nothing: `true` when applied.
    pub fn batch(
        &self,
        plugin: &str,
        tenant: &str,
        conditions: &[KvCondition],
        writes: &[KvWrite],
    ) -> Result<bool, StoreError> {
        let keys = writes.iter().map(|w| {
            let (KvWrite::Set { key, .. } | KvWrite::Delete { key }) = w;
            key.as_str()
        });
        self.write(plugin, tenant, keys, |conn| {
            for condition in conditions {
                let current = read(conn, plugin, tenant, &condition.key)?.map(|v| v.version);
                if current != condition.version {
                    return Ok(false);
                }
            }
            for w in writes {
                match w {
                    KvWrite::Set { key, value } => {
                        write(conn, plugin, tenant, key, value)?;
                    }
                    KvWrite::Delete { key } => delete(conn, plugin, tenant, key)?,
                }
            }
            Ok(true)
        })
    }

    /// Keys starting with `prefix`, in byte order, at most `limit` of them: a range over the
    /// primary key, so only the matching keys are read (a `substr` filter scanned the whole
    /// namespace).
    pub fn list(&self, plugin: &str, tenant: &str, prefix: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        self.through_cache(
            |cache| cache.list(plugin, tenant, prefix, limit),
            |conn| list(conn, plugin, tenant, prefix, limit),
            |cache, keys| cache.insert_list(plugin, tenant, prefix, limit, keys.clone()),
        )
    }

    /// The keys under `prefix` (at most `limit`) with their values, in byte order of the
    /// keys: [`list`](Self::list) and a [`get`](Self::get) of each key, through the cache,
    /// so not a snapshot (a key deleted after the list is left out). `None` when the keys
    /// and values pass `max_bytes`.
    pub fn scan(
        &self,
        plugin: &str,
        tenant: &str,
        prefix: &str,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Option<Vec<(String, String)>>, StoreError> {
        // Every read of a ledger scans its transactions: from the cache that is one lock
        // and one lookup a key, not a listing clone plus a lock and three lookups a key.
        let generation = self.fresh.generation(Cache::Kv);
        if let Some(found) = self.cached(generation, |cache| cache.scan(plugin, tenant, prefix, limit, max_bytes)) {
            return Ok(found);
        }
        let keys = self.list(plugin, tenant, prefix, limit)?;
        let entries = keys
            .into_iter()
            .map(|key| Ok(self.get(plugin, tenant, &key)?.map(|value| (key, value))));
        within(entries, max_bytes)
    }
}

/// A scan's entries in order, a deleted key's (`None`) left out, while their keys and
/// values fit in `max_bytes`: `None` past it.
fn within<E>(
    entries: impl Iterator<Item = Result<Option<(String, String)>, E>>,
    max_bytes: usize,
) -> Result<Option<Vec<(String, String)>>, E> {
    let mut kept = Vec::with_capacity(entries.size_hint().0);
    let mut bytes = 0;
    for entry in entries {
        let Some((key, value)) = entry? else {
            continue;
        };
        bytes += key.len() + value.len();
        if bytes > max_bytes {
            return Ok(None);
        }
        kept.push((key, value));
    }
    Ok(Some(kept))
}

/// The keys under `prefix`, from the store.
fn list(
    conn: &mut Conn<'_>,
    plugin: &str,
    tenant: &str,
    prefix: &str,
    limit: usize,
) -> Result<Vec<String>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    match prefix_end(prefix) {
        Some(end) if conn.is_postgres() => {
            // The column compares bytewise (COLLATE "C"). `end` is not always valid
            // UTF-8, so it is bound as bytes and compared as bytes.
            conn.query(
                "SELECT key FROM plugin_kv WHERE plugin = ?1 AND tenant = ?2
                 AND key >= ?3 AND convert_to(key, 'UTF8') < ?4 ORDER BY key LIMIT ?5",
                args![plugin, tenant, prefix, end, limit],
                |r| r.get(0),
            )
        }
        Some(end) => {
            // Bound as a blob and cast: `end` need not be valid UTF-8, and text compares
            // bytewise (BINARY), which is what a prefix range needs.
            conn.query(
                "SELECT key FROM plugin_kv WHERE plugin = ?1 AND tenant = ?2
                 AND key >= ?3 AND key < CAST(?4 AS TEXT) ORDER BY key LIMIT ?5",
                args![plugin, tenant, prefix, end, limit],
                |r| r.get(0),
            )
        }
        None => conn.query(
            "SELECT key FROM plugin_kv WHERE plugin = ?1 AND tenant = ?2 ORDER BY key LIMIT ?3",
            args![plugin, tenant, limit],
            |r| r.get(0),
        ),
    }
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
    use super::super::Store;
    use super::*;

    #[test]
    fn list_returns_exactly_the_keys_under_a_prefix_in_byte_order() {
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
            store.kv.set("ledger", "org_a", key, "v").unwrap();
        }
        // Another tenant's and another plugin's keys never show.
        store.kv.set("ledger", "org_b", "txn/9", "v").unwrap();
        store.kv.set("tickets", "org_a", "txn/8", "v").unwrap();

        let list = |prefix: &str, limit: usize| store.kv.list("ledger", "org_a", prefix, limit).unwrap();
        assert_eq!(list("txn/", 100), ["txn/", "txn/1", "txn/2", "txn/é"]);
        assert_eq!(list("txn", 100), ["txn", "txn/", "txn/1", "txn/2", "txn/é", "txn0"]);
        assert_eq!(list("txn/", 2), ["txn/", "txn/1"]);
        assert_eq!(list("u/", 100), ["u/é", "u/\u{10FFFF}x"]);
        assert_eq!(list("u/\u{10FFFF}", 100), ["u/\u{10FFFF}x"]);
        assert_eq!(list("", 100), keys);
        assert!(list("nothing", 100).is_empty());
    }

    #[test]
    fn listings_see_every_write_through_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("kv.db")).unwrap();
        let kv = &store.kv;
        let list = |tenant: &str, prefix: &str| kv.list("ledger", tenant, prefix, 100).unwrap();

        assert!(list("org_a", "txn/").is_empty()); // a cached empty listing ...
        kv.set("ledger", "org_a", "txn/1", "v").unwrap();
        assert_eq!(list("org_a", "txn/"), ["txn/1"]); // ... is forgotten by a set under it
        assert_eq!(list("org_a", "txn"), ["txn/1"]);
        kv.set("ledger", "org_a", "txn/2", "v").unwrap();
        assert_eq!(list("org_a", "txn/"), ["txn/1", "txn/2"]);
        assert_eq!(
            list("org_a", "txn"),
            ["txn/1", "txn/2"],
            "a shorter prefix is forgotten too"
        );
        assert_eq!(kv.list("ledger", "org_a", "txn/", 1).unwrap(), ["txn/1"], "by limit");
        assert!(list("org_b", "txn/").is_empty(), "tenants do not share listings");
        kv.delete("ledger", "org_a", "txn/1").unwrap();
        assert_eq!(list("org_a", "txn/"), ["txn/2"]);
        assert_eq!(kv.list("ledger", "org_a", "txn/", 1).unwrap(), ["txn/2"]);
        let batch = [KvWrite::Set {
            key: "txn/3".into(),
            value: "v".into(),
        }];
        assert!(kv.batch("ledger", "org_a", &[], &batch).unwrap());
        assert_eq!(kv.increment("ledger", "org_a", "txn/0", 1).unwrap(), 1);
        assert_eq!(list("org_a", "txn/"), ["txn/0", "txn/2", "txn/3"]);
        // A write elsewhere keeps the listing; the answer stays the same.
        kv.set("ledger", "org_a", "ledger/1", "v").unwrap();
        assert_eq!(list("org_a", "txn/"), ["txn/0", "txn/2", "txn/3"]);
    }

    #[test]
    fn a_scan_reads_the_entries_under_a_prefix_in_key_order_through_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("kv.db")).unwrap();
        let kv = &store.kv;
        let scan = |max_bytes: usize| kv.scan("ledger", "org_a", "txn/", 100, max_bytes).unwrap();
        let entries = |pairs: &[(&str, &str)]| -> Option<Vec<(String, String)>> {
            Some(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
        };

        assert_eq!(scan(1_000), entries(&[]));
        kv.set("ledger", "org_a", "txn/2", "two").unwrap();
        kv.set("ledger", "org_a", "txn/1", "one").unwrap();
        kv.set("ledger", "org_a", "txo", "not under the prefix").unwrap();
        kv.set("ledger", "org_b", "txn/3", "another tenant's").unwrap();
        kv.set("tickets", "org_a", "txn/4", "another plugin's").unwrap();
        assert_eq!(scan(1_000), entries(&[("txn/1", "one"), ("txn/2", "two")]));

        kv.set("ledger", "org_a", "txn/1", "uno").unwrap();
        kv.delete("ledger", "org_a", "txn/2").unwrap();
        assert_eq!(
            scan(1_000),
            entries(&[("txn/1", "uno")]),
            "writes show through the cache"
        );

        // Answered from the cache now (the scan above filled it), with the same bound:
        // "txn/1" + "uno" is 8 bytes, so a bound of 8 holds it and 7 does not.
        assert_eq!(scan(8), entries(&[("txn/1", "uno")]));
        assert_eq!(scan(7), None);
    }

    #[test]
    fn reads_see_every_write_through_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("kv.db")).unwrap();
        let kv = &store.kv;
        let get = |tenant: &str, key: &str| kv.get("ledger", tenant, key).unwrap();

        assert_eq!(get("org_a", "k"), None); // a cached absence ...
        kv.set("ledger", "org_a", "k", "1").unwrap();
        assert_eq!(get("org_a", "k").as_deref(), Some("1")); // ... is forgotten by a write
        kv.set("ledger", "org_a", "k", "2").unwrap();
        assert_eq!(get("org_a", "k").as_deref(), Some("2"));
        assert_eq!(get("org_b", "k"), None, "tenants do not share entries");
        assert_eq!(
            kv.get("tickets", "org_a", "k").unwrap(),
            None,
            "plugins do not share entries"
        );
        kv.delete("ledger", "org_a", "k").unwrap();
        assert_eq!(get("org_a", "k"), None);

        // A full cache starts over and still answers from the store.
        let big = "x".repeat(200 * 1024);
        for i in 0..100 {
            kv.set("ledger", "org_a", &format!("big/{i}"), &big).unwrap();
            assert_eq!(get("org_a", &format!("big/{i}")).map(|v| v.len()), Some(big.len()));
        }
        assert!(kv.cache().bytes <= MAX_CACHED_KV_BYTES);
        assert_eq!(get("org_a", "big/0").map(|v| v.len()), Some(big.len()));
    }

    #[test]
    fn every_write_gets_a_new_version_and_a_recreated_key_never_reuses_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("kv.db")).unwrap();
        let kv = &store.kv;
        let first = kv.set("p", "t", "k", "a").unwrap();
        let second = kv.set("p", "t", "k", "b").unwrap();
        assert!(second > first);
        kv.delete("p", "t", "k").unwrap();
        let third = kv.set("p", "t", "k", "a").unwrap();
        assert!(third > second, "a key deleted and written again is at a new version");
        assert_eq!(
            kv.get_versioned("p", "t", "k").unwrap(),
            Some(Versioned {
                value: "a".into(),
                version: third
            })
        );
    }

    #[test]
    fn compare_and_set_writes_only_at_the_version_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("kv.db")).unwrap();
        let kv = &store.kv;
        let created = kv
            .compare_and_set("p", "t", "k", None, "1")
            .unwrap()
            .expect("absent: written");
        assert_eq!(
            kv.compare_and_set("p", "t", "k", None, "x").unwrap(),
            None,
            "no longer absent"
        );
        assert_eq!(
            kv.compare_and_set("p", "t", "k", Some(created + 99), "x").unwrap(),
            None
        );
        let updated = kv
            .compare_and_set("p", "t", "k", Some(created), "2")
            .unwrap()
            .expect("at its version");
        assert_eq!(kv.get("p", "t", "k").unwrap().as_deref(), Some("2"));
        assert_eq!(
            kv.compare_and_set("p", "t", "k", Some(created), "3").unwrap(),
            None,
            "stale version"
        );
        assert_eq!(
            kv.get_versioned("p", "t", "k").unwrap().map(|v| v.version),
            Some(updated)
        );
        assert_eq!(
            kv.compare_and_set("p", "other", "k", Some(updated), "x").unwrap(),
            None,
            "another tenant's key is another key"
        );
    }

    #[test]
    fn increments_start_at_zero_and_refuse_what_is_not_an_integer() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("kv.db")).unwrap();
        let kv = &store.kv;
        assert_eq!(kv.increment("p", "t", "n", 5).unwrap(), 5);
        assert_eq!(kv.increment("p", "t", "n", -2).unwrap(), 3);
        assert_eq!(kv.get("p", "t", "n").unwrap().as_deref(), Some("3"));
        kv.set("p", "t", "s", "three").unwrap();
        assert!(matches!(
            kv.increment("p", "t", "s", 1),
            Err(IncrementError::NotAnInteger(_))
        ));
        kv.set("p", "t", "max", &i64::MAX.to_string()).unwrap();
        assert!(matches!(
            kv.increment("p", "t", "max", 1),
            Err(IncrementError::Overflow(_))
        ));
        assert_eq!(
            kv.get("p", "t", "max").unwrap(),
            Some(i64::MAX.to_string()),
            "unchanged"
        );
    }

    #[test]
    fn a_batch_applies_every_write_or_none() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("kv.db")).unwrap();
        let kv = &store.kv;
        let a = kv.set("p", "t", "a", "1").unwrap();
        let writes = [
            KvWrite::Set {
                key: "b".into(),
                value: "2".into(),
            },
            KvWrite::Delete { key: "a".into() },
        ];
        let stale = [KvCondition {
            key: "a".into(),
            version: Some(a + 1),
        }];
        assert!(!kv.batch("p", "t", &stale, &writes).unwrap());
        assert_eq!(kv.get("p", "t", "a").unwrap().as_deref(), Some("1"), "nothing applied");
        assert_eq!(kv.get("p", "t", "b").unwrap(), None, "nothing applied");
        let holds = [
            KvCondition {
                key: "a".into(),
                version: Some(a),
            },
            KvCondition {
                key: "b".into(),
                version: None,
            },
        ];
        assert!(kv.batch("p", "t", &holds, &writes).unwrap());
        assert_eq!(kv.get("p", "t", "a").unwrap(), None);
        assert_eq!(kv.get("p", "t", "b").unwrap().as_deref(), Some("2"));
    }

    #[test]
    fn parallel_read_modify_writes_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("kv.db")).unwrap();
        let (threads, rounds) = (8, 100);
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    for _ in 0..rounds {
                        store.kv.increment("p", "t", "counter", 1).unwrap();
                        // The same with compare-and-set: read, add one, write if unchanged.
                        loop {
                            let current = store.kv.get_versioned("p", "t", "cas").unwrap();
                            let n: i64 = current.as_ref().map_or(0, |v| v.value.parse().unwrap());
                            let written = store
                                .kv
                                .compare_and_set("p", "t", "cas", current.map(|v| v.version), &(n + 1).to_string())
                                .unwrap();
                            if written.is_some() {
                                break;
                            }
                        }
                    }
                });
            }
        });
        let total = (threads * rounds).to_string();
        assert_eq!(store.kv.get("p", "t", "counter").unwrap(), Some(total.clone()));
        assert_eq!(store.kv.get("p", "t", "cas").unwrap(), Some(total));
    }
}
