//! The audit writer: group commits on the requests' own threads.
//!
//! A request queues its event, then tries to take the chain. The one that gets it, the
//! leader, writes what is queued (up to [`MAX_BATCH`] events) in one append (a write to the
//! embedded store's journal, a transaction on PostgreSQL: `ChainWriter::append`), answers
//! each waiter and lets the chain go; the others, followers, wait for their answer. A
//! leader that lets go with events still queued hands the turn to a waiting follower, so
//! no leader serves more than one batch. An event is thus committed by a thread that was
//! already running: the hand-off to a writer thread and back, two wake-ups on two busy
//! cores, was most of the audit stage's time at half load (BENCHMARKS.md, session 16).
//!
//! A batch forms while the previous one commits. Under load (the chain busy and other
//! requests in flight), a request about to lead a small batch first yields once to the
//! runtime's other ready requests, which queue theirs beside it: no timer, and a gateway
//! below saturation commits at once, since a yield puts the request behind every ready
//! one. The store call blocks the leader's thread (a PostgreSQL round trip is announced
//! to the runtime, as every store call is); at most one thread at a time is in it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError, Weak};
use std::thread;
use std::time::Duration;

use tokio::sync::{Notify, oneshot};

use super::{AuditError, AuditEvent, GENESIS_HASH, canonical, checkpoint};
use crate::clock::{SharedClock, Stopwatch};
use crate::metrics::AuditWriterMetrics;
use crate::store::{AuditAppend, AuditRow, ChainWriter, CheckpointStore, PrunedCut};

/// Most events written in one append.
const MAX_BATCH: usize = 512;
/// Most events waiting for a leader. Only requests in flight queue one, and admission
/// bounds them, but a request dropped while it waits (a closed connection) leaves its event
/// behind: while the store stalls, new events are refused rather than memory grown.
const MAX_QUEUED: usize = 16 * MAX_BATCH;

/// A batch smaller than this, queued while the chain is busy, first lets the runtime run
/// its other ready requests, which join it: a commit rewrites the log's last pages whatever
/// its size, and at one or two events a commit the ledger read lost a fifth of its rate.
const SMALL_BATCH: usize = 32;
/// The chain counts as busy when its last commit ended less than this ago; an idle
/// gateway's event commits at once.
const BUSY_GAP: Duration = Duration::from_millis(1);
/// Other requests in flight from which a small batch waits for company. Below it a yield
/// gathers almost nothing and costs the request a turn behind every ready one: below
/// saturation that turn was most of the audit stage (p50 up to 0.64 ms against 0.02 ms,
/// BENCHMARKS.md, session 20).
const COMPANY: usize = 4;

/// The longest a head waits for its signed checkpoint while events flow.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// How often the ticker looks for events left queued and a head due a checkpoint. It signs
/// a head due within the next tick, so that no head waits past [`CHECKPOINT_EVERY`].
const TICK: Duration = Duration::from_millis(250);

/// Handle to the audit writer. Cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    shared: Arc<Shared>,
    /// The node whose chain the writer continues, named in every event it writes.
    node: Arc<str>,
    /// Requests in flight (each holding an admission permit, the recording one included),
    /// when the gateway counts them: a small batch waits for company only when there is
    /// some. Without it, a busy chain is taken as company enough.
    in_flight: Option<Arc<AtomicUsize>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

struct Shared {
    /// Events waiting for a leader, in arrival order.
    queue: Mutex<Vec<Pending>>,
    /// The chain's writer and head; whoever holds it writes.
    chain: Mutex<Chain>,
    /// A follower's turn to lead: given when the chain is let go with events queued.
    turn: Notify,
    /// When the last commit ended, in microseconds since `opened`.
    last_commit_us: AtomicU64,
    opened: Stopwatch,
    metrics: AuditWriterMetrics,
    /// Taken after the chain, never before it: the ticker signs with the chain let go,
    /// since a signature is a database row and a synced log line, and holding the chain
    /// through them held up every request's event (a WAL restart blocks the row's insert
    /// for as long as it copies the log).
    checkpoints: Option<Mutex<Checkpoints>>,
}

struct Pending {
    row: AuditRow,
    split: canonical::Split,
    done: oneshot::Sender<Result<(), String>>,
}

/// What a retention run removed.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PruneReport {
    pub removed: i64,
    /// The last removed event's sequence number, if any was removed.
    pub upto_seq: Option<i64>,
}

/// What the writer needs to sign checkpoints: the signer and the gateway's clock.
#[derive(Debug)]
pub struct Signing {
    pub signer: checkpoint::Signer,
    pub clock: SharedClock,
}

impl AuditLog {
    /// Opens the writer on `chain` (its own connection, or a shared store's pool). With
    /// `signing`, it signs a checkpoint of the chain's head at once (a restart is a
    /// checkpoint too) and at least every second while events flow.
    pub fn start(
        writer: ChainWriter,
        metrics: AuditWriterMetrics,
        signing: Option<Signing>,
    ) -> Result<AuditLog, AuditError> {
        let node: Arc<str> = Arc::from(writer.node());
        let (head_seq, head) = writer.head()?.unwrap_or_else(|| (0, GENESIS_HASH.into()));
        let checkpoints = signing.map(|signing| {
            Mutex::new(Checkpoints {
                signing,
                store: writer.checkpoint_store(),
                signed_seq: -1,
                last: None,
            })
        });
        let chain = Chain {
            writer,
            head,
            head_seq,
            batch: Vec::new(),
        };
        let shared = Arc::new(Shared {
            queue: Mutex::new(Vec::new()),
            chain: Mutex::new(chain),
            turn: Notify::new(),
            last_commit_us: AtomicU64::new(0),
            opened: Stopwatch::start(),
            metrics,
            checkpoints,
        });
        // A restart is a checkpoint too.
        let _ = shared.with_chain(|chain| shared.sign_unsigned(chain));
        // The writer's one thread. It commits events whose request stopped waiting before
        // it could lead (a dropped connection), and signs the head when it is due.
        let weak: Weak<Shared> = Arc::downgrade(&shared);
        thread::Builder::new()
            .name("audit-ticker".into())
            .spawn(move || {
                loop {
                    thread::sleep(TICK);
                    let Some(shared) = weak.upgrade() else { return };
                    // A poisoned chain answers what is queued with an error, each tick.
                    let head = shared.with_chain(|chain| {
                        shared.write_queued(chain);
                        (chain.head_seq, chain.head.clone())
                    });
                    if let Ok((head_seq, head)) = head {
                        shared.sign_if_due(head_seq, &head);
                    }
                }
            })
            .map_err(|e| AuditError::Write(e.to_string()))?;
        Ok(AuditLog {
            shared,
            node,
            in_flight: None,
        })
    }

    /// Counts `in_flight` (requests in flight) before a small batch waits for company.
    pub fn with_in_flight(mut self, in_flight: Arc<AtomicUsize>) -> AuditLog {
        self.in_flight = Some(in_flight);
        self
    }

    /// Appends an event and waits until it is durable. Returns the event id.
    pub async fn record(&self, event: AuditEvent) -> Result<String, AuditError> {
        // Serialized here, before the queue: the leader only chains and stores.
        let (row, split) = event.prepare(&self.node);
        let id = row.id.clone();
        let (done, mut answer) = oneshot::channel();
        let queued = {
            let mut queue = self.shared.queue();
            if queue.len() >= MAX_QUEUED {
                return Err(AuditError::Write(
                    "the audit queue is full: the store is not keeping up".into(),
                ));
            }
            queue.push(Pending { row, split, done });
            queue.len()
        };
        if queued < SMALL_BATCH && self.shared.busy() && self.has_company() {
            tokio::task::yield_now().await;
        }
        self.shared.lead();
        let outcome = loop {
            tokio::select! {
                biased;
                outcome = &mut answer => break outcome,
                () = self.shared.turn.notified() => self.shared.lead(),
            }
        };
        match outcome {
            Ok(Ok(())) => Ok(id),
            Ok(Err(message)) => Err(AuditError::Write(message)),
            Err(_) => Err(AuditError::WriterStopped),
        }
    }

    /// Whether other requests in flight may queue events beside this one's.
    fn has_company(&self) -> bool {
        self.in_flight
            .as_ref()
            .is_none_or(|n| n.load(Ordering::Relaxed) > COMPANY)
    }

    /// Removes events created before `before` (RFC 3339), keeping the chain verifiable
    /// through a checkpoint event, which is signed at once.
    pub async fn prune(&self, before: String, now: String) -> Result<PruneReport, AuditError> {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || {
            shared.with_chain(|chain| {
                let (report, head_read) = chain.prune(&before, &now)?;
                // Signed at once, so the retention event that attests the cut is the head
                // of a signed checkpoint before anyone hears back.
                if head_read {
                    shared.sign_unsigned(chain);
                }
                Ok(report)
            })
        })
        .await
        .map_err(|_| AuditError::WriterStopped)??
        .map_err(AuditError::Write)
    }

    /// Writes what is queued, signs a checkpoint of the head now if it has none yet and
    /// indexes the journal: a gateway that stops leaves its last events stored and covered.
    pub async fn seal(&self) -> Result<(), AuditError> {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || {
            let shared = &*shared;
            shared.with_chain(|chain| {
                shared.write_queued(chain);
                shared.sign_unsigned(chain);
                if let Err(e) = chain.writer.settle() {
                    tracing::error!(error = %e, "audit journal not indexed at the seal; the next start recovers it");
                }
            })
        })
        .await
        .map_err(|_| AuditError::WriterStopped)?
    }
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, Vec<Pending>> {
        // A queue is a list of waiters whatever panicked while it was held.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the last commit ended less than [`BUSY_GAP`] ago.
    fn busy(&self) -> bool {
        let now = self.opened.elapsed().as_micros() as u64;
        now.saturating_sub(self.last_commit_us.load(Ordering::Relaxed)) < BUSY_GAP.as_micros() as u64
    }

    /// Writes one batch if no one else holds the chain; its holder hands the turn on.
    fn lead(&self) {
        let chain = match self.chain.try_lock() {
            Ok(chain) => chain,
            Err(TryLockError::WouldBlock) => return,
            Err(TryLockError::Poisoned(poisoned)) => {
                drop(poisoned);
                self.fail_queued();
                return;
            }
        };
        let mut held = Held {
            chain,
            _hand_on: HandOn(self),
        };
        self.write_one_batch(&mut held.chain);
    }

    /// Writes the oldest queued events (up to [`MAX_BATCH`]); whether there were any.
    fn write_one_batch(&self, chain: &mut Chain) -> bool {
        // Out of the chain while it is written: a panic drops it, answering its waiters.
        let mut batch = std::mem::take(&mut chain.batch);
        {
            let mut queue = self.queue();
            let take = queue.len().min(MAX_BATCH);
            batch.extend(queue.drain(..take));
        }
        let wrote = !batch.is_empty();
        if wrote {
            self.metrics.batch_events.observe(batch.len() as f64);
            let started = Stopwatch::start();
            chain.write_batch(&mut batch);
            self.metrics.commit_seconds.observe(started.elapsed().as_secs_f64());
            self.last_commit_us
                .store(self.opened.elapsed().as_micros() as u64, Ordering::Relaxed);
        }
        chain.batch = batch;
        wrote
    }

    /// Writes everything queued.
    fn write_queued(&self, chain: &mut Chain) {
        while self.write_one_batch(chain) {}
    }

    /// Signs `head`, read from the chain and let go, if its checkpoint is due within a
    /// tick: the events behind it are not held up by the signature.
    fn sign_if_due(&self, head_seq: i64, head: &str) {
        if let Some(checkpoints) = &self.checkpoints {
            let mut checkpoints = lock(checkpoints);
            // A head that a prune signed meanwhile, with a later one, is no longer due.
            if checkpoints.due_in(head_seq).is_some_and(|due| due <= TICK) {
                checkpoints.sign(head_seq, head);
            }
        }
    }

    /// Signs the head of `chain`, which the caller holds, now if it is not signed yet: at a
    /// start, a seal or a prune.
    fn sign_unsigned(&self, chain: &Chain) {
        if let Some(checkpoints) = &self.checkpoints {
            let mut checkpoints = lock(checkpoints);
            if checkpoints.due_in(chain.head_seq).is_some() {
                checkpoints.sign(chain.head_seq, &chain.head);
            }
        }
    }

    /// A writer panicked mid-batch, so the head in memory may not be the stored one. Fail
    /// closed: every queued request is answered that the writer stopped. Called with the
    /// chain let go, so an event queued by a request that found it held is answered too.
    fn fail_queued(&self) {
        drop(std::mem::take(&mut *self.queue()));
    }

    /// Runs `f` on the chain, waiting for it: off the runtime's workers.
    fn with_chain<T>(&self, f: impl FnOnce(&mut Chain) -> T) -> Result<T, AuditError> {
        let chain = match self.chain.lock() {
            Ok(chain) => chain,
            Err(poisoned) => {
                drop(poisoned);
                self.fail_queued();
                return Err(AuditError::WriterStopped);
            }
        };
        let mut held = Held {
            chain,
            _hand_on: HandOn(self),
        };
        Ok(f(&mut held.chain))
    }
}

/// The checkpoint state, whatever panicked while it was held: a signature either was
/// kept or is retried at the next one.
fn lock(checkpoints: &Mutex<Checkpoints>) -> MutexGuard<'_, Checkpoints> {
    checkpoints.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The chain while someone writes to it. Its fields drop in order: the chain is let go
/// first, then, if events are queued (even after a panic), a follower is woken to lead.
/// A pusher that found the chain held pushed before this looks: no queued event waits
/// for an arrival that may not come.
struct Held<'a> {
    chain: MutexGuard<'a, Chain>,
    _hand_on: HandOn<'a>,
}

struct HandOn<'a>(&'a Shared);

impl Drop for HandOn<'_> {
    fn drop(&mut self) {
        if !self.0.queue().is_empty() {
            self.0.turn.notify_one();
        }
    }
}

/// The chain's writer and where it continues.
struct Chain {
    writer: ChainWriter,
    head: String,
    head_seq: i64,
    /// A spare batch, kept to reuse its allocation.
    batch: Vec<Pending>,
}

impl Chain {
    /// Appends `batch` durably and answers (and empties) every waiter.
    fn write_batch(&mut self, batch: &mut Vec<Pending>) {
        let mut prev = self.head.clone();
        let mut appends = Vec::with_capacity(batch.len());
        let mut waiters = Vec::with_capacity(batch.len());
        for Pending { mut row, split, done } in batch.drain(..) {
            let (event_hash, canonical) = canonical::chain(&split, &prev);
            row.event_hash = event_hash;
            row.prev_event_hash = std::mem::replace(&mut prev, row.event_hash.clone());
            appends.push(AuditAppend {
                row,
                details: split.details,
                policy_ids: split.policy_ids,
                canonical,
            });
            waiters.push(done);
        }
        match self.writer.append(appends) {
            Ok(seq) => {
                self.head = prev;
                self.head_seq = seq;
                for done in waiters {
                    let _ = done.send(Ok(()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "audit batch not written");
                for done in waiters {
                    let _ = done.send(Err(e.to_string()));
                }
                // A commit whose answer was lost may have been applied (a dropped database
                // connection): the chain continues from what the store holds, not from memory.
                if let Ok(Some((seq, hash))) = self.writer.head() {
                    self.head = hash;
                    self.head_seq = seq;
                }
            }
        }
    }

    /// Removes events created before `before` and chains a checkpoint event. The caller
    /// signs the new head at once, if it was read back (`true`): a head whose position is
    /// not known is not signed.
    fn prune(&mut self, before: &str, now: &str) -> Result<(PruneReport, bool), String> {
        let prev = self.head.clone();
        let node = self.writer.node().to_string();
        let result = self.writer.prune(before, now, |cut: &PrunedCut| {
            let mut event = AuditEvent::new(
                "audit.retention.checkpoint",
                crate::protocol::codes::SUCCESS,
                now.to_string(),
            );
            event.details.insert("upto_seq".into(), cut.upto_seq.into());
            event.details.insert("upto_hash".into(), cut.upto_hash.clone().into());
            event.details.insert("removed".into(), cut.removed.into());
            event.details.insert("before".into(), before.into());
            event.into_row(prev, &node)
        });
        let report = match result {
            Ok(Some((cut, row))) => {
                self.head = row.event_hash;
                PruneReport {
                    removed: cut.removed,
                    upto_seq: Some(cut.upto_seq),
                }
            }
            Ok(None) => PruneReport {
                removed: 0,
                upto_seq: None,
            },
            Err(e) => return Err(e.to_string()),
        };
        // The head and its position, read together: a checkpoint never pairs one with the
        // other's predecessor.
        let head_read = match self.writer.head() {
            Ok(Some((seq, hash))) => {
                self.head = hash;
                self.head_seq = seq;
                true
            }
            Ok(None) => false,
            Err(e) => {
                tracing::error!(error = %e, "audit head not read after a prune; not signed");
                false
            }
        };
        Ok((report, head_read))
    }
}

impl Drop for Shared {
    /// The last handle is gone: what is queued is written and the head signed, as on a
    /// seal. Not after a panic, when the head in memory may not be the stored one.
    fn drop(&mut self) {
        if let Ok(mut chain) = self.chain.lock() {
            self.write_queued(&mut chain);
            self.sign_unsigned(&chain);
        }
    }
}

/// The writer's checkpoint state.
struct Checkpoints {
    signing: Signing,
    store: CheckpointStore,
    /// The position of the last signed head (-1: none yet in this process).
    signed_seq: i64,
    last: Option<Stopwatch>,
}

impl Checkpoints {
    /// How long until the head at `head_seq` is due a checkpoint; `None` if it, or a later
    /// head, is signed.
    fn due_in(&self, head_seq: i64) -> Option<Duration> {
        if head_seq <= self.signed_seq {
            return None;
        }
        Some(
            self.last
                .map_or(Duration::ZERO, |t| CHECKPOINT_EVERY.saturating_sub(t.elapsed())),
        )
    }

    /// Signs the head, keeps the checkpoint in the database and appends it to the log. A
    /// checkpoint that cannot be kept is logged and retried at the next one: the events
    /// themselves are durable, and the next checkpoint covers them.
    fn sign(&mut self, head_seq: i64, head: &str) {
        self.last = Some(Stopwatch::start());
        if head_seq == 0 {
            self.signed_seq = 0;
            return;
        }
        let checkpoint = self.signing.signer.sign(
            self.store.node(),
            head_seq,
            head,
            &crate::clock::iso(self.signing.clock.now()),
        );
        let stored = self.store.insert(&checkpoint).map_err(|e| e.to_string());
        let logged = self
            .signing
            .signer
            .append_to_log(&checkpoint)
            .map_err(|e| e.to_string());
        match stored.and(logged) {
            Ok(()) => self.signed_seq = head_seq,
            Err(e) => tracing::error!(error = %e, seq = head_seq, "audit checkpoint not kept"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::future::Future;

    use super::*;
    use crate::audit::assert_intact_with;
    use crate::protocol::codes::SUCCESS;
    use crate::store::Store;

    /// A fresh store and a writer on its chain (the directory lives as long as it is held).
    fn open_log() -> (tempfile::TempDir, Store, AuditLog) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("audit.db")).unwrap();
        let log = AuditLog::start(store.chain_writer("").unwrap(), AuditWriterMetrics::default(), None).unwrap();
        (dir, store, log)
    }

    fn event() -> AuditEvent {
        AuditEvent::new("test.event", SUCCESS, "2026-12-02T00:00:00Z".into())
    }

    #[test]
    fn a_small_batch_waits_for_company_only_when_other_requests_are_in_flight() {
        let (_dir, _store, log) = open_log();
        // Without a count (tests, benches), a busy chain is company enough.
        assert!(log.has_company());
        let in_flight = Arc::new(AtomicUsize::new(1));
        let log = log.with_in_flight(Arc::clone(&in_flight));
        assert!(!log.has_company(), "the recording request alone");
        in_flight.store(COMPANY, Ordering::Relaxed);
        assert!(!log.has_company(), "fewer than COMPANY others");
        in_flight.store(COMPANY + 1, Ordering::Relaxed);
        assert!(log.has_company());
    }

    /// Requests on two workers record at once, as under load: each is answered once its
    /// event is stored, no event is lost or stored twice, and the chain is one unbroken line.
    #[test]
    fn concurrent_records_are_each_stored_once_in_one_unbroken_chain() {
        let (_dir, store, log) = open_log();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let ids: Vec<String> = runtime.block_on(async {
            let tasks: Vec<_> = (0..64)
                .map(|task| {
                    let log = log.clone();
                    tokio::spawn(async move {
                        let mut ids = Vec::new();
                        for i in 0..50 {
                            let mut event = event();
                            event.details.insert("n".into(), (task * 50 + i).into());
                            ids.push(log.record(event).await.unwrap());
                        }
                        ids
                    })
                })
                .collect();
            let mut ids = Vec::new();
            for task in tasks {
                ids.extend(task.await.unwrap());
            }
            ids
        });
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 3200);
        assert_intact_with(&store, 3200);
    }

    /// A request that goes away (a closed connection) after queueing its event, before it
    /// could lead, still has its event stored: by the seal here, else by the ticker.
    #[test]
    fn an_event_whose_request_stopped_waiting_is_still_stored() {
        let (_dir, store, log) = open_log();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            log.record(event()).await.unwrap();
            // Right after a commit the chain is busy: the next request queues its event and
            // yields before it leads, and is dropped there.
            let mut abandoned = Box::pin(log.record(event()));
            let _ = abandoned
                .as_mut()
                .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()));
            drop(abandoned);
            log.seal().await.unwrap();
        });
        assert_intact_with(&store, 2);
    }

    /// A checkpoint whose row cannot be written yet (another connection holds SQLite's
    /// write lock, as a WAL restart does while it copies the log) holds up no event: events
    /// are answered meanwhile, and the head is signed once the lock is let go.
    #[test]
    fn a_stalled_checkpoint_holds_up_no_event() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let store = Store::open(&path).unwrap();
        let key = dir.path().join("audit.key");
        checkpoint::generate_key(&key).unwrap();
        let signing = Signing {
            signer: checkpoint::Signer::new(checkpoint::load_signing_key(&key).unwrap(), None),
            clock: Arc::new(crate::clock::SystemClock),
        };
        let log = AuditLog::start(
            store.chain_writer("").unwrap(),
            AuditWriterMetrics::default(),
            Some(signing),
        )
        .unwrap();
        let blocker = crate::store::connect(&path).unwrap();
        blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // Past a checkpoint's due time (a second), so one is tried while the lock is held;
        // its insert then waits up to about 5 s for it.
        let slowest = runtime.block_on(async {
            let mut slowest = Duration::ZERO;
            for _ in 0..30 {
                let started = Stopwatch::start();
                log.record(event()).await.unwrap();
                slowest = slowest.max(started.elapsed());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            slowest
        });
        assert!(slowest < Duration::from_secs(1), "an event waited {slowest:?}");
        blocker.execute_batch("ROLLBACK").unwrap();
        let reader = store.chain_reader("").unwrap();
        let signed = (0..100).any(|_| {
            thread::sleep(Duration::from_millis(50));
            reader.checkpoints().unwrap().iter().any(|c| c.seq == 30)
        });
        assert!(signed, "the head after the stall is signed");
        assert_intact_with(&store, 30);
    }
}
