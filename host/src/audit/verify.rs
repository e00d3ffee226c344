//! Re-walks the hash chain and reports the first broken link.

use serde::Serialize;

use super::{GENESIS_HASH, event_hash};
use crate::store::{ChainReader, StoreError};

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
    /// `edited` (the stored hash does not match the content), `unlinked` (its
    /// `prev_event_hash` is not the previous event's hash: a deletion or reordering), or
    /// `unattested_checkpoint` (a retention cut no chained checkpoint event vouches for).
    pub reason: &'static str,
}

/// Whether each row's stored hash matches its content.
fn rehash_in_parallel(rows: &[crate::store::AuditRow]) -> Vec<bool> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8);
    let chunk = rows.len().div_ceil(workers).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = rows
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(|r| event_hash(r) == r.event_hash).collect::<Vec<_>>()))
            .collect();
        // A panicked worker reports its rows as not intact: fail closed.
        handles
            .into_iter()
            .zip(rows.chunks(chunk))
            .flat_map(|(h, part)| h.join().unwrap_or_else(|_| vec![false; part.len()]))
            .collect()
    })
}

/// Verifies every event of the chain in `conn`, oldest first. After a retention cut the
/// chain starts at the cut's hash, and a chained checkpoint event must attest the cut.
pub fn verify_chain(chain: &ChainReader) -> Result<VerifyReport, StoreError> {
    let anchor = chain.anchor()?;
    let mut prev = anchor
        .as_ref()
        .map_or_else(|| GENESIS_HASH.to_string(), |(_, hash)| hash.clone());
    let mut attested = anchor.is_none();
    let mut after = 0_i64;
    let mut events = 0_u64;
    loop {
        let page = chain.page(after, 8192)?;
        if page.is_empty() {
            if !attested {
                let (seq, _) = anchor.unwrap_or_default();
                return Ok(VerifyReport {
                    events,
                    intact: false,
                    first_broken: Some(BrokenLink {
                        seq,
                        id: String::new(),
                        reason: "unattested_checkpoint",
                    }),
                });
            }
            return Ok(VerifyReport {
                events,
                intact: true,
                first_broken: None,
            });
        }
        // Re-hashing is independent per row: spread it over the cores; links are checked
        // in order below.
        let intact = rehash_in_parallel(&page);
        for (row, content_intact) in page.into_iter().zip(intact) {
            events += 1;
            after = row.seq;
            let reason = if row.prev_event_hash != prev {
                Some("unlinked")
            } else if !content_intact {
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
            if let Some((seq, hash)) = &anchor
                && row.action == "audit.retention.checkpoint"
                && row.details["upto_seq"].as_i64() == Some(*seq)
                && row.details["upto_hash"].as_str() == Some(hash.as_str())
            {
                attested = true;
            }
            prev = row.event_hash;
        }
    }
}
