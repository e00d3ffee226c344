//! Sessions kept in the store, for nodes that share it: a session one node opened is
//! continued by any other. The embedded store's one process keeps its sessions in memory
//! (the top-level `sessions` module) and never writes here.

use std::sync::Arc;

use super::StoreError;
use super::sql::{Db, args};

#[derive(Debug)]
pub struct SessionRows {
    db: Arc<Db>,
}

/// When a stored session ends by itself (as the `sessions` module's `Expiry` says).
#[derive(Debug, Clone, Copy)]
pub enum RowExpiry {
    /// After this many milliseconds without a request.
    IdleMs(i64),
    /// This many milliseconds after it was opened.
    AbsoluteMs(i64),
}

impl RowExpiry {
    /// The oldest `last_seen_ms` and `opened_ms` a live session may have at `now_ms`.
    fn bounds(self, now_ms: i64) -> (i64, i64) {
        match self {
            RowExpiry::IdleMs(ms) => (now_ms - ms + 1, i64::MIN),
            RowExpiry::AbsoluteMs(ms) => (i64::MIN, now_ms - ms + 1),
        }
    }
}

impl SessionRows {
    pub(super) fn new(db: Arc<Db>) -> Self {
        SessionRows { db }
    }

    /// Opens a session of `kind` and, past `capacity`, ends the least recently used ones.
    pub fn open(
        &self,
        kind: &str,
        id_hash: &str,
        value: &str,
        now_ms: i64,
        expiry: RowExpiry,
        capacity: usize,
    ) -> Result<(), StoreError> {
        let (seen_after, opened_after) = expiry.bounds(now_ms);
        let keep = i64::try_from(capacity.saturating_sub(1)).unwrap_or(i64::MAX);
        self.db.write(|conn| {
            conn.execute(
                "DELETE FROM sessions WHERE kind = ?1 AND (last_seen_ms < ?2 OR opened_ms < ?3)",
                args![kind, seen_after, opened_after],
            )?;
            // The `capacity`-th most recently used and every older one make room.
            conn.execute(
                "DELETE FROM sessions WHERE kind = ?1 AND last_seen_ms <= (
                     SELECT last_seen_ms FROM sessions WHERE kind = ?1 ORDER BY last_seen_ms DESC LIMIT 1 OFFSET ?2)",
                args![kind, keep],
            )?;
            conn.execute(
                "INSERT INTO sessions (kind, id_hash, value, opened_ms, last_seen_ms) VALUES (?1, ?2, ?3, ?4, ?4)
                 ON CONFLICT (kind, id_hash) DO UPDATE SET value = excluded.value,
                     opened_ms = excluded.opened_ms, last_seen_ms = excluded.last_seen_ms",
                args![kind, id_hash, value, now_ms],
            )?;
            Ok(())
        })
    }

    /// The live session's value, marked as used at `now_ms`; `None` if unknown or expired.
    pub fn touch(
        &self,
        kind: &str,
        id_hash: &str,
        now_ms: i64,
        expiry: RowExpiry,
    ) -> Result<Option<String>, StoreError> {
        let (seen_after, opened_after) = expiry.bounds(now_ms);
        self.db.read(|conn| {
            conn.query_optional(
                "UPDATE sessions SET last_seen_ms = ?3
                 WHERE kind = ?1 AND id_hash = ?2 AND last_seen_ms >= ?4 AND opened_ms >= ?5
                 RETURNING value",
                args![kind, id_hash, now_ms, seen_after, opened_after],
                |r| r.get(0),
            )
        })
    }

    /// Ends a session; `true` if it was there.
    pub fn close(&self, kind: &str, id_hash: &str) -> Result<bool, StoreError> {
        let n = self.db.read(|conn| {
            conn.execute(
                "DELETE FROM sessions WHERE kind = ?1 AND id_hash = ?2",
                args![kind, id_hash],
            )
        })?;
        Ok(n == 1)
    }
}
