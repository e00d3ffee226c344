//! Re-walks the hash chain and reports the first broken link.

use rusqlite::Connection;
use serde::Serialize;

use super::{GENESIS_HASH, event_hash};
use crate::store::{self, StoreError};

/// The result of [`verify_chain`].
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VerifyReport {
    /// Events checked.
    pub events: u64,
    /// Whether the whole chain holds.
    pub intact: bool,
    /// The first event whose link is broken, if any.
    pub first_broken: Option<BrokenLink>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BrokenLink {
    pub seq: i64,
    pub id: String,
    /// `edited` (the stored hash does not match the content) or `unlinked` (its
    /// `prev_event_hash` is not the previous event's hash: a deletion or reordering).
    pub reason: &'static str,
}

/// Verifies every event of the chain in `conn`, oldest first.
pub fn verify_chain(conn: &Connection) -> Result<VerifyReport, StoreError> {
    let mut prev = GENESIS_HASH.to_string();
    let mut after = 0_i64;
    let mut events = 0_u64;
    loop {
        let page = store::audit_chain_page(conn, after, 2048)?;
        if page.is_empty() {
            return Ok(VerifyReport {
                events,
                intact: true,
                first_broken: None,
            });
        }
        for row in page {
            events += 1;
            after = row.seq;
            let reason = if row.prev_event_hash != prev {
                Some("unlinked")
            } else if event_hash(&row) != row.event_hash {
                Some("edited")
            } else {
                None
            };
            if let Some(reason) = reason {
                return Ok(VerifyReport {
                    events,
                    intact: false,
                    first_broken: Some(BrokenLink {
                        seq: row.seq,
                        id: row.id,
                        reason,
                    }),
                });
            }
            prev = row.event_hash;
        }
    }
}
