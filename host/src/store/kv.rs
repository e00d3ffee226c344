//! Plugin key-value namespaces, by plugin and tenant, read through a cache.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{OptionalExtension, params};

use super::{Db, StoreError};

#[derive(Debug)]
pub struct PluginKv {
    db: Arc<Db>,
    cache: Mutex<KvCache>,
}

/// Plugin key-value reads, by plugin, tenant and key (`None`: the key is absent). A plugin
/// call reads a few keys per request and each SQLite read costs a few microseconds (a read
/// transaction's two `fcntl` locks, the statement), so a ledger read spent 14% of its CPU
/// there.
///
/// It stays exact because every access to `plugin_kv` goes through [`PluginKv`], with the
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

impl PluginKv {
    pub(super) fn new(db: Arc<Db>) -> Self {
        PluginKv {
            db,
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

    /// Reads through the cache; a miss is read from the store and remembered.
    pub fn get(&self, plugin: &str, tenant: &str, key: &str) -> Result<Option<String>, StoreError> {
        if let Some(hit) = self.cache().get(plugin, tenant, key) {
            return Ok(hit);
        }
        let conn = self.db.conn()?;
        let mut stmt =
            conn.prepare_cached("SELECT value FROM plugin_kv WHERE plugin = ?1 AND tenant = ?2 AND key = ?3")?;
        let value: Option<String> = stmt.query_row(params![plugin, tenant, key], |r| r.get(0)).optional()?;
        // Still holding the connection: no write can land between the read and the insert.
        self.cache().insert(plugin, tenant, key, value.clone());
        Ok(value)
    }

    pub fn set(&self, plugin: &str, tenant: &str, key: &str, value: &str) -> Result<(), StoreError> {
        let conn = self.db.conn()?;
        let mut stmt = conn.prepare_cached(
            "INSERT INTO plugin_kv (plugin, tenant, key, value) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (plugin, tenant, key) DO UPDATE SET value = excluded.value",
        )?;
        // Forgotten before the write, so a failed write leaves no stale entry either.
        self.cache().forget(plugin, tenant, key);
        stmt.execute(params![plugin, tenant, key, value])?;
        Ok(())
    }

    pub fn delete(&self, plugin: &str, tenant: &str, key: &str) -> Result<(), StoreError> {
        let conn = self.db.conn()?;
        self.cache().forget(plugin, tenant, key);
        conn.execute(
            "DELETE FROM plugin_kv WHERE plugin = ?1 AND tenant = ?2 AND key = ?3",
            params![plugin, tenant, key],
        )?;
        Ok(())
    }

    /// Keys starting with `prefix`, in byte order, at most `limit` of them: a range over the
    /// primary key, so only the matching keys are read (a `substr` filter scanned the whole
    /// namespace).
    pub fn list(&self, plugin: &str, tenant: &str, prefix: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        let conn = self.db.conn()?;
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
}
