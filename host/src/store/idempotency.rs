//! Idempotency reservations: one per (app, key, idempotency key), taken before any effect.

use std::sync::Arc;

use super::StoreError;
use super::sql::{Db, args};

/// Whose key it is: (app id, key id, the client's idempotency key).
#[derive(Debug, Clone, Copy)]
pub struct IdempotencyScope<'a> {
    pub app_id: &'a str,
    pub key_id: &'a str,
    pub idempotency_key: &'a str,
}

/// What a reservation attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// This request holds the reservation now.
    Taken,
    /// An earlier request holds it: its fingerprint, and its draft once it has one.
    Held {
        fingerprint: String,
        draft_id: Option<String>,
    },
}

#[derive(Debug)]
pub struct Idempotency {
    db: Arc<Db>,
}

impl Idempotency {
    pub(super) fn new(db: Arc<Db>) -> Self {
        Idempotency { db }
    }

    /// Reserves an idempotency key for a request with `fingerprint`, atomically. An expired
    /// reservation is replaced.
    pub fn reserve(
        &self,
        scope: IdempotencyScope<'_>,
        fingerprint: &str,
        now: &str,
        expires_at: &str,
    ) -> Result<Reservation, StoreError> {
        let IdempotencyScope {
            app_id,
            key_id,
            idempotency_key,
        } = scope;
        self.db.write(|conn| {
            conn.execute(
                "DELETE FROM idempotency WHERE app_id = ?1 AND key_id = ?2 AND idem_key = ?3 AND expires_at <= ?4",
                args![app_id, key_id, idempotency_key, now],
            )?;
            let inserted = conn.execute(
                "INSERT INTO idempotency (app_id, key_id, idem_key, fingerprint, draft_id, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, NULL, ?5, ?6) ON CONFLICT DO NOTHING",
                args![app_id, key_id, idempotency_key, fingerprint, now, expires_at],
            )?;
            if inserted == 1 {
                return Ok(Reservation::Taken);
            }
            conn.query_one(
                "SELECT fingerprint, draft_id FROM idempotency WHERE app_id = ?1 AND key_id = ?2 AND idem_key = ?3",
                args![app_id, key_id, idempotency_key],
                |r| {
                    Ok(Reservation::Held {
                        fingerprint: r.get(0)?,
                        draft_id: r.get(1)?,
                    })
                },
            )
        })
    }

    /// Records the draft a reserved key produced.
    pub fn complete(&self, scope: IdempotencyScope<'_>, draft_id: &str) -> Result<(), StoreError> {
        self.db.write(|conn| {
            conn.execute(
                "UPDATE idempotency SET draft_id = ?4 WHERE app_id = ?1 AND key_id = ?2 AND idem_key = ?3",
                args![scope.app_id, scope.key_id, scope.idempotency_key, draft_id],
            )?;
            Ok(())
        })
    }

    /// Frees a reservation whose request failed before producing a draft, so a retry runs.
    pub fn release(&self, scope: IdempotencyScope<'_>) -> Result<(), StoreError> {
        self.db.write(|conn| {
            conn.execute(
                "DELETE FROM idempotency WHERE app_id = ?1 AND key_id = ?2 AND idem_key = ?3 AND draft_id IS NULL",
                args![scope.app_id, scope.key_id, scope.idempotency_key],
            )?;
            Ok(())
        })
    }

    /// At startup: reservations a previous process left without a draft are settled. One
    /// whose request did store a draft is linked to it (its replay then shows the draft, or
    /// an execution that is `indeterminate`, never a re-run); one whose request stored
    /// nothing had no effect and is freed, so a retry runs. Only reservations taken before
    /// `taken_before` count (`None`: all): on a shared store a live node's request may hold
    /// one right now.
    /// Returns (linked, freed).
    pub fn settle_orphans(&self, taken_before: Option<&str>) -> Result<(usize, usize), StoreError> {
        self.db.write(|conn| {
            let linked = conn.execute(
                "UPDATE idempotency SET draft_id = (
                     SELECT d.id FROM drafts d
                     WHERE d.app_id = idempotency.app_id AND d.key_id = idempotency.key_id
                       AND d.idempotency_key = idempotency.idem_key
                     ORDER BY d.created_at DESC LIMIT 1)
                 WHERE draft_id IS NULL AND (CAST(?1 AS TEXT) IS NULL OR created_at < ?1)",
                args![taken_before],
            )?;
            let freed = conn.execute(
                "DELETE FROM idempotency WHERE draft_id IS NULL AND (CAST(?1 AS TEXT) IS NULL OR created_at < ?1)",
                args![taken_before],
            )?;
            Ok((linked.saturating_sub(freed), freed))
        })
    }
}
