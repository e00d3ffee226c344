//! The plugin registry: every version ever added (manifest, shipped policies, component),
//! and which version of each plugin is active, so plugins come back after a restart from
//! the store alone and can be rolled back.

use std::sync::Arc;

use serde::Serialize;

use super::StoreError;
use super::sql::{Db, args};

#[derive(Debug)]
pub struct PluginRegistry {
    db: Arc<Db>,
}

/// A kept version, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PluginVersion {
    pub id: String,
    pub name: String,
    pub version: String,
    pub digest: String,
    pub added_at: String,
    pub added_by: String,
    pub active: bool,
}

/// A kept version's content: what loading it needs.
#[derive(Debug, Clone)]
pub struct StoredPlugin {
    pub id: String,
    pub manifest: String,
    /// The policy files it ships: (file name, text).
    pub policies: Vec<(String, String)>,
    pub component: Vec<u8>,
}

/// A plugin to load at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remembered {
    pub name: String,
    /// The active version; `None` for a plugin added before versions were kept, loaded
    /// from its manifest path once and then kept.
    pub version_id: Option<String>,
    pub manifest_path: String,
    /// The gateway is ready without it.
    pub optional: bool,
}

/// What a new version is.
#[derive(Debug, Clone, Copy)]
pub struct NewVersion<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub version: &'a str,
    pub digest: &'a str,
    pub manifest: &'a str,
    pub policies: &'a [(String, String)],
    pub component: &'a [u8],
}

impl PluginRegistry {
    pub(super) fn new(db: Arc<Db>) -> Self {
        PluginRegistry { db }
    }

    /// Keeps a version (once: the same id is the same content) and makes it the active one.
    pub fn activate(
        &self,
        new: NewVersion<'_>,
        source: &str,
        optional: bool,
        by: &str,
        now: &str,
    ) -> Result<(), StoreError> {
        let policies = serde_json::to_string(new.policies).map_err(|source| StoreError::Json {
            column: "plugin_versions.policies",
            source,
        })?;
        self.db.write(|conn| {
            conn.execute(
            "INSERT INTO plugin_versions (id, name, version, digest, manifest, policies, component, added_at, added_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (id) DO NOTHING",
            args![
                new.id,
                new.name,
                new.version,
                new.digest,
                new.manifest,
                policies,
                new.component,
                now,
                by
            ],
        )?;
            conn.execute(
                "INSERT INTO plugins (name, manifest, loaded_at, version_id, optional) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (name) DO UPDATE SET manifest = excluded.manifest, loaded_at = excluded.loaded_at,
                 version_id = excluded.version_id, optional = excluded.optional",
                args![new.name, source, now, new.id, optional],
            )?;
            Ok(())
        })
    }

    /// Forgets which version is active (the versions stay kept).
    pub fn forget(&self, name: &str) -> Result<(), StoreError> {
        self.db
            .write(|conn| conn.execute("DELETE FROM plugins WHERE name = ?1", args![name]))?;
        Ok(())
    }

    /// Plugins loaded through the admin plane, in load order.
    pub fn remembered(&self) -> Result<Vec<Remembered>, StoreError> {
        self.db.read(|conn| {
            conn.query(
                "SELECT name, version_id, manifest, optional FROM plugins ORDER BY loaded_at, name",
                args![],
                |r| {
                    Ok(Remembered {
                        name: r.get(0)?,
                        version_id: r.get(1)?,
                        manifest_path: r.get(2)?,
                        optional: r.get(3)?,
                    })
                },
            )
        })
    }

    /// Every kept version of a plugin, oldest first.
    pub fn versions(&self, name: &str) -> Result<Vec<PluginVersion>, StoreError> {
        self.db.read(|conn| {
            // Insertion order breaks ties of `added_at`: SQLite's rowid, PostgreSQL's serial.
            let order = if conn.is_postgres() { "v.added_seq" } else { "v.rowid" };
            conn.query(
                &format!(
                    "SELECT v.id, v.name, v.version, v.digest, v.added_at, v.added_by, p.version_id IS NOT NULL
                     FROM plugin_versions v LEFT JOIN plugins p ON p.name = v.name AND p.version_id = v.id
                     WHERE v.name = ?1 ORDER BY v.added_at, {order}"
                ),
                args![name],
                |r| {
                    Ok(PluginVersion {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        version: r.get(2)?,
                        digest: r.get(3)?,
                        added_at: r.get(4)?,
                        added_by: r.get(5)?,
                        active: r.get(6)?,
                    })
                },
            )
        })
    }

    /// A kept version's content.
    pub fn content(&self, id: &str) -> Result<Option<StoredPlugin>, StoreError> {
        let row = self.db.read(|conn| {
            conn.query_optional(
                "SELECT manifest, policies, component FROM plugin_versions WHERE id = ?1",
                args![id],
                |r| Ok((r.get::<String>(0)?, r.get::<String>(1)?, r.get::<Vec<u8>>(2)?)),
            )
        })?;
        row.map(|(manifest, policies, component)| {
            let policies = serde_json::from_str(&policies).map_err(|source| StoreError::Json {
                column: "plugin_versions.policies",
                source,
            })?;
            Ok(StoredPlugin {
                id: id.to_string(),
                manifest,
                policies,
                component,
            })
        })
        .transpose()
    }
}
