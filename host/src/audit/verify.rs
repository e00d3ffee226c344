//! Re-walks the hash chain and reports the first broken link, and checks the chain against
//! every signed checkpoint it is given: a checkpoint names a position and the hash the
//! event there had, so a truncated tail, a wipe or a rewrite whose later hashes were
//! recomputed no longer matches one.

use ed25519_dalek::VerifyingKey;
use serde::Serialize;

use super::checkpoint;
use super::{GENESIS_HASH, event_hash};
use crate::store::{ChainReader, SignedCheckpoint, StoreError};

/// The result of [`verify_chain`].
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VerifyReport {
    /// Events checked.
    pub events: u64,
    /// Whether the whole chain holds.
    pub intact: bool,
    /// The first event whose link is broken, if any.
    pub first_broken: Option<BrokenLink>,
    /// Signed checkpoints the chain was checked against.
    pub checkpoints: u64,
    /// The newest of them, if any: the position the signed trail reaches.
    pub signed_through: Option<i64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BrokenLink {
    /// The first position that is missing or not as it was.
    pub seq: i64,
    pub id: String,
    /// `edited` (the stored hash does not match the content), `unlinked` (its
    /// `prev_event_hash` is not the previous event's hash: a deletion or reordering),
    /// `unattested_checkpoint` (a retention cut no chained checkpoint event vouches for),
    /// `truncated` (a signed checkpoint names a position past the end: events were
    /// deleted from there on; a wipe is truncated at 1), `rewritten` (the event at a signed
    /// position has another hash: something from `seq` to `detected_at` was changed and
    /// the later hashes recomputed), or `bad_signature` (a checkpoint the key did not sign).
    pub reason: &'static str,
    /// The signed position that revealed a truncation or rewrite.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detected_at: Option<i64>,
}

/// What the chain is checked against beyond its own links: signed checkpoints (from the
/// database, the checkpoint log, or a file kept elsewhere) and the key that signed them.
#[derive(Debug, Default)]
pub struct Anchors {
    pub checkpoints: Vec<SignedCheckpoint>,
    /// Without a key, checkpoints cannot be trusted and are not used.
    pub key: Option<VerifyingKey>,
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

fn broken(events: u64, signed: &[SignedCheckpoint], link: BrokenLink) -> VerifyReport {
    VerifyReport {
        events,
        intact: false,
        first_broken: Some(link),
        checkpoints: signed.len() as u64,
        signed_through: signed.last().map(|c| c.seq),
    }
}

/// Verifies every event of the chain, oldest first, against its links and the signed
/// checkpoints. After a retention cut the chain starts at the cut's hash, and a chained
/// checkpoint event must attest the cut.
pub fn verify_chain(chain: &ChainReader, anchors: &Anchors) -> Result<VerifyReport, StoreError> {
    // The signed checkpoints, by position; one the key did not sign is itself a finding.
    let mut signed: Vec<SignedCheckpoint> = Vec::new();
    if let Some(key) = &anchors.key {
        for c in &anchors.checkpoints {
            if !checkpoint::verify(c, key) {
                let link = BrokenLink {
                    seq: c.seq,
                    id: String::new(),
                    reason: "bad_signature",
                    detected_at: Some(c.seq),
                };
                return Ok(broken(0, &signed, link));
            }
            signed.push(c.clone());
        }
    }
    signed.sort_by_key(|c| c.seq);
    signed.dedup();
    let anchor = chain.anchor()?;
    let mut prev = anchor
        .as_ref()
        .map_or_else(|| GENESIS_HASH.to_string(), |(_, hash)| hash.clone());
    let mut attested = anchor.is_none();
    // Checkpoints at or before a retention cut name events that are gone by design.
    let cut = anchor.as_ref().map_or(0, |(seq, _)| *seq);
    let mut pending = signed.iter().filter(|c| c.seq > cut).peekable();
    // The last position a checkpoint confirmed: a rewrite begins after it.
    let mut confirmed = cut;
    let mut after = 0_i64;
    let mut last = cut;
    let mut events = 0_u64;
    loop {
        let page = chain.page(after, 8192)?;
        if page.is_empty() {
            break;
        }
        // Re-hashing is independent per row: spread it over the cores; links are checked
        // in order below.
        let intact = rehash_in_parallel(&page);
        for (row, content_intact) in page.into_iter().zip(intact) {
            events += 1;
            after = row.seq;
            last = row.seq;
            let reason = if row.prev_event_hash != prev {
                Some("unlinked")
            } else if !content_intact {
                Some("edited")
            } else {
                None
            };
            if let Some(reason) = reason {
                let link = BrokenLink {
                    seq: row.seq,
                    id: row.id,
                    reason,
                    detected_at: None,
                };
                return Ok(broken(events, &signed, link));
            }
            // A checkpoint whose position was skipped (its event is gone) or whose event
            // has another hash: the trail was changed at or before it.
            while let Some(c) = pending.next_if(|c| c.seq <= row.seq) {
                if c.seq < row.seq || c.head_hash != row.event_hash {
                    let link = BrokenLink {
                        seq: confirmed + 1,
                        id: String::new(),
                        reason: "rewritten",
                        detected_at: Some(c.seq),
                    };
                    return Ok(broken(events, &signed, link));
                }
                confirmed = c.seq;
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
    if let Some(c) = pending.next() {
        let link = BrokenLink {
            seq: last + 1,
            id: String::new(),
            reason: "truncated",
            detected_at: Some(c.seq),
        };
        return Ok(broken(events, &signed, link));
    }
    if !attested {
        let link = BrokenLink {
            seq: cut,
            id: String::new(),
            reason: "unattested_checkpoint",
            detected_at: None,
        };
        return Ok(broken(events, &signed, link));
    }
    Ok(VerifyReport {
        events,
        intact: true,
        first_broken: None,
        checkpoints: signed.len() as u64,
        signed_through: signed.last().map(|c| c.seq),
    })
}

/// Every chain of the store (one per node) verified against the signed checkpoints of its
/// node, from the database and the given logs, trusted under `key`. Returns whether all
/// hold, and the report: the one chain's report on the embedded store, else one per node.
pub fn verify_store(
    store: &crate::store::Store,
    key: Option<&std::path::Path>,
    logs: &[std::path::PathBuf],
) -> Result<(bool, serde_json::Value), String> {
    let mut chains = store.chain_readers().map_err(|e| e.to_string())?;
    // A chain the logs sign but the database no longer holds was wiped: verify it too.
    for log in logs.iter().filter(|log| log.exists()) {
        for signed in checkpoint::read_log(log)? {
            if !chains.iter().any(|c| c.node() == signed.node) {
                chains.push(store.chain_reader(&signed.node).map_err(|e| e.to_string())?);
            }
        }
    }
    let mut reports = Vec::new();
    for chain in &chains {
        let anchors = super::anchors(chain, key, logs)?;
        let report = verify_chain(chain, &anchors).map_err(|e| e.to_string())?;
        reports.push((chain.node().to_string(), report));
    }
    let intact = reports.iter().all(|(_, r)| r.intact);
    if let [(node, report)] = reports.as_slice()
        && node.is_empty()
    {
        return Ok((intact, serde_json::to_value(report).unwrap_or_default()));
    }
    let events: u64 = reports.iter().map(|(_, r)| r.events).sum();
    let checkpoints: u64 = reports.iter().map(|(_, r)| r.checkpoints).sum();
    // The single chain's fields, over every chain: the first broken link names its node.
    let first_broken = reports
        .iter()
        .find_map(|(node, r)| {
            let mut link = serde_json::to_value(r.first_broken.as_ref()?).ok()?;
            link.as_object_mut()?.insert("node".into(), node.clone().into());
            Some(link)
        })
        .unwrap_or(serde_json::Value::Null);
    let chains: Vec<serde_json::Value> = reports
        .into_iter()
        .map(|(node, report)| {
            let mut value = serde_json::to_value(&report).unwrap_or_default();
            if let Some(map) = value.as_object_mut() {
                map.insert("node".into(), node.into());
            }
            value
        })
        .collect();
    Ok((
        intact,
        serde_json::json!({
            "events": events,
            "intact": intact,
            "first_broken": first_broken,
            "checkpoints": checkpoints,
            "chains": chains,
        }),
    ))
}

/// Test support: the store's chains verify and hold `events` events.
#[cfg(test)]
pub(crate) fn assert_intact_with(store: &crate::store::Store, events: u64) {
    let (intact, report) = verify_store(store, None, &[]).unwrap_or_else(|e| panic!("verify: {e}"));
    assert!(intact, "{report}");
    assert_eq!(report["events"], events, "{report}");
}
