//! The registry of plugins loaded at run time, so they come back after a restart.

use std::sync::Arc;

use rusqlite::params;

use super::{Db, StoreError};

#[derive(Debug)]
pub struct PluginRegistry {
    db: Arc<Db>,
}

impl PluginRegistry {
    pub(super) fn new(db: Arc<Db>) -> Self {
        PluginRegistry { db }
    }

    pub fn remember(&self, name: &str, manifest: &str, now: &str) -> Result<(), StoreError> {
        let conn = self.db.conn()?;
        conn.execute(
            "INSERT INTO plugins (name, manifest, loaded_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET manifest = excluded.manifest, loaded_at = excluded.loaded_at",
            params![name, manifest, now],
        )?;
        Ok(())
    }

    pub fn forget(&self, name: &str) -> Result<(), StoreError> {
        let conn = self.db.conn()?;
        conn.execute("DELETE FROM plugins WHERE name = ?1", [name])?;
        Ok(())
    }

    /// Manifests of plugins loaded through the admin plane, in load order: (name, path).
    pub fn remembered(&self) -> Result<Vec<(String, String)>, StoreError> {
        let conn = self.db.conn()?;
        let mut stmt = conn.prepare_cached("SELECT name, manifest FROM plugins ORDER BY loaded_at, name")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
