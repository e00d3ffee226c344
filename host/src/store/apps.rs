//! Apps (integrations), their keys, and the admin plane's credentials.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

use super::sql::{Cache, Conn, Db, Freshness, Row, args};
use super::{StoreError, json_col, to_json};
use crate::app_policy::{AppPolicy, AutoExecutePolicy};

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
    pub policy: AppPolicy,
    pub auto_execute: AutoExecutePolicy,
    pub created_by: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// Operator-set tags, seen by Cedar as the app's entity tags.
    pub tags: BTreeMap<String, String>,
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

/// Apps, keys and admin credentials.
#[derive(Debug)]
pub struct Apps {
    db: Arc<Db>,
    fresh: Arc<Freshness>,
    credentials: Mutex<CredentialCache>,
}

/// Keys by token prefix and apps by id, as authentication reads them on every request.
///
/// Every write to `apps` or `keys` goes through [`Apps`] and moves the cache's generation
/// before it returns (on PostgreSQL, every other node's too, within milliseconds), so a
/// revocation takes effect on the next request. A value read from the database is kept
/// only if no write moved the generation while it was read, so no read can keep a value a
/// write has replaced.
#[derive(Debug, Default)]
struct CredentialCache {
    generation: u64,
    keys: HashMap<String, Vec<Arc<KeyRecord>>>,
    apps: HashMap<String, Arc<AppRecord>>,
}

impl CredentialCache {
    fn clear(&mut self) {
        self.keys.clear();
        self.apps.clear();
    }

    /// The cache as of `generation`: emptied if it was filled at another.
    fn at(&mut self, generation: u64) -> &mut CredentialCache {
        if self.generation != generation {
            self.clear();
            self.generation = generation;
        }
        self
    }
}

/// Entries kept before the credential cache starts over (misses are not kept, so a
/// stream of unknown tokens cannot fill it).
const MAX_CACHED_CREDENTIALS: usize = 10_000;

const APP_COLUMNS: &str = "id, name, description, scope, org_id, user_id, service_user_id, scopes, status,
     policy, auto_execute, created_by, created_at, updated_at, tags";

const KEY_COLUMNS: &str =
    "id, app_id, name, token_prefix, token_hash, last_used_at, expires_at, revoked_at, created_by, created_at";

const ADMIN_TOKEN_COLUMNS: &str = "id, name, role, org_id, token_prefix, token_hash, revoked_at, created_at";

fn admin_token_from_row(r: &Row<'_>) -> Result<AdminTokenRecord, StoreError> {
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
}

fn app_from_row(r: &Row<'_>) -> Result<AppRecord, StoreError> {
    Ok(AppRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        description: r.get(2)?,
        scope: r.get(3)?,
        org_id: r.get(4)?,
        user_id: r.get(5)?,
        service_user_id: r.get(6)?,
        scopes: json_col(r, 7, "scopes")?,
        status: r.get(8)?,
        policy: json_col(r, 9, "policy")?,
        auto_execute: json_col(r, 10, "auto_execute")?,
        created_by: r.get(11)?,
        created_at: r.get(12)?,
        updated_at: r.get(13)?,
        tags: json_col(r, 14, "tags")?,
    })
}

fn key_from_row(r: &Row<'_>) -> Result<KeyRecord, StoreError> {
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
}

fn keys_where(conn: &mut Conn<'_>, condition: &str, order: &str, value: &str) -> Result<Vec<KeyRecord>, StoreError> {
    conn.query(
        &format!("SELECT {KEY_COLUMNS} FROM keys WHERE {condition} {order}"),
        args![value],
        key_from_row,
    )
}

/// The app columns a caller may replace as a whole.
#[derive(Debug, Clone, Copy)]
enum AppColumn {
    Status,
    Policy,
    AutoExecute,
    Tags,
}

impl AppColumn {
    fn name(self) -> &'static str {
        match self {
            AppColumn::Status => "status",
            AppColumn::Policy => "policy",
            AppColumn::AutoExecute => "auto_execute",
            AppColumn::Tags => "tags",
        }
    }
}

impl Apps {
    pub(super) fn new(db: Arc<Db>, fresh: Arc<Freshness>) -> Self {
        Apps {
            db,
            fresh,
            credentials: Mutex::new(CredentialCache::default()),
        }
    }

    fn credentials(&self) -> MutexGuard<'_, CredentialCache> {
        // The cache holds no invariant a panic could break: a poisoned one is just emptied.
        self.credentials.lock().unwrap_or_else(|e| {
            let mut cache = e.into_inner();
            cache.clear();
            cache
        })
    }

    /// Runs a write to `apps` or `keys` and moves the credential cache's generation, here
    /// and (by a notification sent when the transaction commits) on every other node.
    fn write_credentials<T>(
        &self,
        write: impl FnOnce(&mut Conn<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let result = self.db.write(|conn| {
            let value = write(conn)?;
            conn.notify(Cache::Credentials)?;
            Ok(value)
        });
        self.fresh.invalidate(Cache::Credentials);
        result
    }

    /// Reads through the credential cache: `cached` looks up, `read` reads the store,
    /// `keep` stores a found value unless a write moved the generation meanwhile.
    fn read_credential<T>(
        &self,
        cached: impl Fn(&CredentialCache) -> Option<T>,
        read: impl FnOnce(&mut Conn<'_>) -> Result<T, StoreError>,
        keep: impl FnOnce(&mut CredentialCache, &T),
    ) -> Result<T, StoreError> {
        let Some(generation) = self.fresh.generation(Cache::Credentials) else {
            return self.db.read(read);
        };
        if let Some(hit) = cached(self.credentials().at(generation)) {
            return Ok(hit);
        }
        let value = self.db.read(read)?;
        if self.fresh.generation(Cache::Credentials) == Some(generation) {
            let mut cache = self.credentials();
            let cache = cache.at(generation);
            if cache.keys.len() + cache.apps.len() >= MAX_CACHED_CREDENTIALS {
                cache.clear();
            }
            keep(cache, &value);
        }
        Ok(value)
    }

    /// Inserts an app unless another app of its tenant has its name; `false` then.
    pub fn insert(&self, app: &AppRecord) -> Result<bool, StoreError> {
        self.write_credentials(|conn| {
            let n = conn.execute(
                &format!(
                    "INSERT INTO apps ({APP_COLUMNS}) SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15
                     WHERE NOT EXISTS (SELECT 1 FROM apps WHERE org_id IS NOT DISTINCT FROM ?5 AND name = ?2)"
                ),
                args![
                    app.id,
                    app.name,
                    app.description,
                    app.scope,
                    app.org_id,
                    app.user_id,
                    app.service_user_id,
                    to_json(&app.scopes, "scopes")?,
                    app.status,
                    to_json(&app.policy, "policy")?,
                    to_json(&app.auto_execute, "auto_execute")?,
                    app.created_by,
                    app.created_at,
                    app.updated_at,
                    to_json(&app.tags, "tags")?
                ],
            )?;
            Ok(n == 1)
        })
    }

    /// Replaces what an operator may change of an app (name, description, scopes, data
    /// policy, tags) in one statement, unless another app of its tenant has the new name;
    /// `false` then, or when there is no such app.
    pub fn update(&self, app: &AppRecord, now: &str) -> Result<bool, StoreError> {
        self.write_credentials(|conn| {
            let n = conn.execute(
                "UPDATE apps SET name = ?2, description = ?3, scopes = ?4, policy = ?5, tags = ?6, updated_at = ?7
                 WHERE id = ?1 AND NOT EXISTS (
                     SELECT 1 FROM apps other
                     WHERE other.org_id IS NOT DISTINCT FROM apps.org_id AND other.name = ?2 AND other.id != ?1)",
                args![
                    app.id,
                    app.name,
                    app.description,
                    to_json(&app.scopes, "scopes")?,
                    to_json(&app.policy, "policy")?,
                    to_json(&app.tags, "tags")?,
                    now
                ],
            )?;
            Ok(n == 1)
        })
    }

    pub fn get(&self, id: &str) -> Result<Option<AppRecord>, StoreError> {
        Ok(self.shared(id)?.map(Arc::unwrap_or_clone))
    }

    /// The app as the credential cache holds it: authentication takes it without a copy.
    pub fn shared(&self, id: &str) -> Result<Option<Arc<AppRecord>>, StoreError> {
        self.read_credential(
            |cache| cache.apps.get(id).cloned().map(Some),
            |conn| {
                Ok(conn
                    .query_optional(
                        &format!("SELECT {APP_COLUMNS} FROM apps WHERE id = ?1"),
                        args![id],
                        app_from_row,
                    )?
                    .map(Arc::new))
            },
            |cache, found| {
                if let Some(app) = found {
                    cache.apps.insert(id.to_string(), app.clone());
                }
            },
        )
    }

    pub fn list(&self) -> Result<Vec<AppRecord>, StoreError> {
        self.db.read(|conn| {
            conn.query(
                &format!("SELECT {APP_COLUMNS} FROM apps ORDER BY created_at, id"),
                args![],
                app_from_row,
            )
        })
    }

    pub fn set_status(&self, id: &str, status: &str, now: &str) -> Result<bool, StoreError> {
        self.set_column(id, AppColumn::Status, status, now)
    }

    /// Replaces an app's auto-execute policy.
    pub fn set_auto_execute(&self, id: &str, policy: &AutoExecutePolicy, now: &str) -> Result<bool, StoreError> {
        self.set_column(id, AppColumn::AutoExecute, &to_json(policy, "auto_execute")?, now)
    }

    /// Replaces an app's tags.
    pub fn set_tags(&self, id: &str, tags: &BTreeMap<String, String>, now: &str) -> Result<bool, StoreError> {
        self.set_column(id, AppColumn::Tags, &to_json(tags, "tags")?, now)
    }

    /// Replaces an app's data policy.
    pub fn set_policy(&self, id: &str, policy: &AppPolicy, now: &str) -> Result<bool, StoreError> {
        self.set_column(id, AppColumn::Policy, &to_json(policy, "policy")?, now)
    }

    /// Sets one app column; `false` when there is no such app.
    fn set_column(&self, id: &str, column: AppColumn, value: &str, now: &str) -> Result<bool, StoreError> {
        self.write_credentials(|conn| {
            let n = conn.execute(
                &format!("UPDATE apps SET {} = ?2, updated_at = ?3 WHERE id = ?1", column.name()),
                args![id, value, now],
            )?;
            Ok(n == 1)
        })
    }

    /// Deletes an app and (by cascade) its keys.
    pub fn delete(&self, app_id: &str) -> Result<(), StoreError> {
        self.write_credentials(|conn| {
            conn.execute("DELETE FROM apps WHERE id = ?1", args![app_id])?;
            Ok(())
        })
    }

    pub fn insert_key(&self, key: &KeyRecord) -> Result<(), StoreError> {
        self.write_credentials(|conn| {
            conn.execute(
                &format!("INSERT INTO keys ({KEY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
                args![
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
        })
    }

    /// Keys whose token starts with `prefix`, in no particular order: authentication
    /// compares them all. (No `ORDER BY`: with it, the bundled SQLite's STAT4 planner made
    /// the statement depend on the bound value, so it was re-prepared on every call.)
    pub fn keys_by_prefix(&self, prefix: &str) -> Result<Vec<Arc<KeyRecord>>, StoreError> {
        self.read_credential(
            |cache| cache.keys.get(prefix).cloned(),
            |conn| {
                Ok(keys_where(conn, "token_prefix = ?1", "", prefix)?
                    .into_iter()
                    .map(Arc::new)
                    .collect())
            },
            |cache, found| {
                if !found.is_empty() {
                    cache.keys.insert(prefix.to_string(), found.clone());
                }
            },
        )
    }

    pub fn keys_of_app(&self, app_id: &str) -> Result<Vec<KeyRecord>, StoreError> {
        self.db
            .read(|conn| keys_where(conn, "app_id = ?1", "ORDER BY created_at", app_id))
    }

    pub fn key(&self, key_id: &str) -> Result<Option<KeyRecord>, StoreError> {
        Ok(self
            .db
            .read(|conn| keys_where(conn, "id = ?1", "", key_id))?
            .into_iter()
            .next())
    }

    /// Revokes one key; `false` when there is no such key.
    pub fn revoke_key(&self, key_id: &str, now: &str) -> Result<bool, StoreError> {
        self.write_credentials(|conn| {
            let n = conn.execute(
                "UPDATE keys SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
                args![key_id, now],
            )?;
            Ok(n == 1)
        })
    }

    pub fn revoke_keys_of_app(&self, app_id: &str, now: &str) -> Result<(), StoreError> {
        self.write_credentials(|conn| {
            conn.execute(
                "UPDATE keys SET revoked_at = ?2 WHERE app_id = ?1 AND revoked_at IS NULL",
                args![app_id, now],
            )?;
            Ok(())
        })
    }

    pub fn insert_admin_token(&self, token: &AdminTokenRecord) -> Result<(), StoreError> {
        self.db.write(|conn| {
            conn.execute(
                "INSERT INTO admin_tokens (id, name, role, org_id, token_prefix, token_hash, revoked_at, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                args![
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
        })
    }

    /// Whether any admin token that is not revoked exists (a fresh store has none).
    pub fn has_admin_tokens(&self) -> Result<bool, StoreError> {
        let n: i64 = self.db.read(|conn| {
            conn.query_one(
                "SELECT count(*) FROM admin_tokens WHERE revoked_at IS NULL",
                args![],
                |r| r.get(0),
            )
        })?;
        Ok(n > 0)
    }

    pub fn admin_tokens_by_prefix(&self, prefix: &str) -> Result<Vec<AdminTokenRecord>, StoreError> {
        self.db.read(|conn| {
            conn.query(
                &format!("SELECT {ADMIN_TOKEN_COLUMNS} FROM admin_tokens WHERE token_prefix = ?1"),
                args![prefix],
                admin_token_from_row,
            )
        })
    }

    pub fn admin_token(&self, id: &str) -> Result<Option<AdminTokenRecord>, StoreError> {
        self.db.read(|conn| {
            conn.query_optional(
                &format!("SELECT {ADMIN_TOKEN_COLUMNS} FROM admin_tokens WHERE id = ?1"),
                args![id],
                admin_token_from_row,
            )
        })
    }
}
