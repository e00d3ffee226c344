//! The gateway processes that share the store, each with the last time it was seen alive.

use std::sync::Arc;

use super::StoreError;
use super::sql::{Db, args};

#[derive(Debug)]
pub struct Nodes {
    db: Arc<Db>,
}

impl Nodes {
    pub(super) fn new(db: Arc<Db>) -> Self {
        Nodes { db }
    }

    /// Records that the process `instance_id` (of node `node`) is alive at `now`.
    pub fn beat(&self, instance_id: &str, node: &str, now: &str) -> Result<(), StoreError> {
        self.db.read(|conn| {
            conn.execute(
                "INSERT INTO nodes (instance_id, node, started_at, seen_at) VALUES (?1, ?2, ?3, ?3)
                 ON CONFLICT (instance_id) DO UPDATE SET seen_at = excluded.seen_at",
                args![instance_id, node, now],
            )?;
            Ok(())
        })
    }

    /// Processes seen alive at or after `since`, as (instance id, node), and forgets those
    /// not seen since `forget_before`.
    pub fn alive_since(&self, since: &str, forget_before: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.db.read(|conn| {
            conn.execute("DELETE FROM nodes WHERE seen_at < ?1", args![forget_before])?;
            conn.query(
                "SELECT instance_id, node FROM nodes WHERE seen_at >= ?1 ORDER BY instance_id",
                args![since],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })
    }

    /// Forgets a process that stops cleanly.
    pub fn leave(&self, instance_id: &str) -> Result<(), StoreError> {
        self.db.read(|conn| {
            conn.execute("DELETE FROM nodes WHERE instance_id = ?1", args![instance_id])?;
            Ok(())
        })
    }
}
