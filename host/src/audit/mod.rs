//! The tamper-evident audit trail (SPEC section 8).
//!
//! One writer thread owns the chain: it takes events in arrival order, computes
//! `event_hash = sha256(JCS(event with prev_event_hash))`, and appends a batch in one
//! transaction (group commit). [`AuditLog::record`] resolves only after the batch holding
//! the event committed, so every event a client was answered for is durable: a request
//! is acknowledged after its audit event, never before.

mod canonical;
pub mod checkpoint;
pub mod coalesce;
mod verify;

use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::oneshot;

use crate::clock::{SharedClock, Stopwatch};
use crate::metrics::AuditWriterMetrics;
use crate::protocol::codes::{Code, Reason};
use crate::protocol::ids::{self, Kind};
use crate::store::{AuditInsert, AuditRow, ChainReader, ChainWriter, PrunedCut, StoreError};

pub use verify::{Anchors, BrokenLink, VerifyReport, verify_chain, verify_store};

/// The `prev_event_hash` of the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Most events written in one transaction.
const MAX_BATCH: usize = 512;

/// A batch smaller than this, arriving while the writer is busy, waits [`LINGER`] for
/// company before it commits.
const SMALL_BATCH: usize = 32;
/// How long a small batch waits. Each commit rewrites the log's last pages whatever its
/// size: at two or three events a commit, SQLite wrote 6 KB of log per event and the
/// commit overhead was most of the writer's CPU.
const LINGER: Duration = Duration::from_micros(100);
/// The writer counts as busy when its previous commit ended less than this ago; an idle
/// gateway's events commit at once.
const BUSY_GAP: Duration = Duration::from_millis(1);

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("the audit writer stopped")]
    WriterStopped,
    #[error("audit write failed: {0}")]
    Write(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Outcome class of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Success,
    Failed,
    Denied,
}

impl Status {
    /// The outcome class of a reason code: the one rule every plane's events follow.
    /// Refusals by governance (credentials, grants, policy, admission, conflicts, and the
    /// auto-execute gate) are `denied`; everything else that is not a success `failed`.
    pub fn of(code: Code) -> Status {
        match code.reason {
            Reason::Success | Reason::IdempotencyReplay => Status::Success,
            Reason::TokenInvalid
            | Reason::TokenExpired
            | Reason::Forbidden
            | Reason::ScopeDenied
            | Reason::PolicyDenied
            | Reason::StepUpRequired
            | Reason::StepUpInvalid
            | Reason::RateLimited
            | Reason::QuotaExceeded
            | Reason::ConcurrencyLimited
            | Reason::IdempotencyMismatch
            | Reason::IdempotencyInProgress
            | Reason::PreconditionFailed
            | Reason::PreflightRequired
            | Reason::IdempotencyRequired
            | Reason::AutoExecuteDisabled
            | Reason::AutoExecuteDenied
            | Reason::AutoExecuteExpired
            | Reason::AdminUnauthorized
            | Reason::AdminForbidden
            | Reason::RequestStateInvalid => Status::Denied,
            Reason::Validation
            | Reason::InternalError
            | Reason::ActionUnknown
            | Reason::ActionInvalid
            | Reason::NotFound
            | Reason::DraftNotFound
            | Reason::DraftAlreadyFinal
            | Reason::PreflightMismatch
            | Reason::PreflightNotFound
            | Reason::ExecutionFailed
            | Reason::ExecutionIndeterminate
            | Reason::Overloaded
            | Reason::RequestTooLarge
            | Reason::PluginTimeout
            | Reason::PluginUnavailable
            | Reason::WitnessUnavailable
            | Reason::DraftExpired
            | Reason::InputRequired
            | Reason::AdminConflict => Status::Failed,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Failed => "failed",
            Status::Denied => "denied",
        }
    }
}

/// An event before it joins the chain.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub org_id: Option<String>,
    pub app_id: Option<String>,
    pub key_id: Option<String>,
    pub actor_user_id: Option<String>,
    pub performed_by_user_id: Option<String>,
    pub action: String,
    pub status: Status,
    pub code: String,
    pub request_id: Option<String>,
    pub draft_id: Option<String>,
    pub execution_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub details: Map<String, Value>,
    pub tool: Option<String>,
    pub risk: Option<String>,
    pub policy_ids: Vec<String>,
    pub plugin: Option<String>,
    pub plugin_digest: Option<String>,
    pub latency_us: Option<i64>,
    pub created_at: String,
}

/// The request an event answers, as every plane records it.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub request_id: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    /// The client's address (after trusted proxies, where the plane applies them).
    pub client_ip: IpAddr,
    pub user_agent: Option<&'a str>,
}

/// The one truncation rule for what a client sends that the trail keeps in clear.
const MAX_USER_AGENT_CHARS: usize = 256;
const MAX_PATH_CHARS: usize = 512;

impl AuditEvent {
    /// An event whose status follows from its code ([`Status::of`]).
    pub fn new(action: impl Into<String>, code: Code, created_at: String) -> Self {
        AuditEvent {
            org_id: None,
            app_id: None,
            key_id: None,
            actor_user_id: None,
            performed_by_user_id: None,
            action: action.into(),
            status: Status::of(code),
            code: code.name.to_string(),
            request_id: None,
            draft_id: None,
            execution_id: None,
            ip: None,
            user_agent: None,
            details: Map::new(),
            tool: None,
            risk: None,
            policy_ids: Vec::new(),
            plugin: None,
            plugin_digest: None,
            latency_us: None,
            created_at,
        }
    }

    /// The terminal event of a request, on any plane: the request's id, client, user agent,
    /// method and path, each bounded by the same rule.
    pub fn for_request(action: impl Into<String>, code: Code, created_at: String, request: &RequestFacts<'_>) -> Self {
        let mut event = AuditEvent::new(action, code, created_at);
        event.request_id = Some(request.request_id.to_string());
        event.ip = Some(request.client_ip.to_string());
        event.user_agent = request
            .user_agent
            .map(|ua| ua.chars().take(MAX_USER_AGENT_CHARS).collect());
        event.details.insert("method".into(), request.method.into());
        event.details.insert(
            "path".into(),
            request.path.chars().take(MAX_PATH_CHARS).collect::<String>().into(),
        );
        event
    }

    /// The row without its chain hashes, and its canonical form split for the writer.
    fn prepare(self, node: &str) -> (AuditRow, canonical::Split) {
        let row = self.unchained_row(String::new(), node);
        let split = canonical::split(&row);
        (row, split)
    }

    /// The row chained after `prev_event_hash`, with its `event_hash`.
    fn into_row(self, prev_event_hash: String, node: &str) -> AuditRow {
        let mut row = self.unchained_row(prev_event_hash, node);
        row.event_hash = event_hash(&row);
        row
    }

    fn unchained_row(self, prev_event_hash: String, node: &str) -> AuditRow {
        AuditRow {
            seq: 0,
            node: node.to_string(),
            id: ids::new_id(Kind::Audit),
            org_id: self.org_id,
            app_id: self.app_id,
            key_id: self.key_id,
            actor_user_id: self.actor_user_id,
            performed_by_user_id: self.performed_by_user_id,
            action: self.action,
            status: self.status.as_str().to_string(),
            code: self.code,
            request_id: self.request_id,
            draft_id: self.draft_id,
            execution_id: self.execution_id,
            ip: self.ip,
            user_agent: self.user_agent,
            details: Value::Object(self.details),
            tool: self.tool,
            risk: self.risk,
            policy_ids: self.policy_ids,
            plugin: self.plugin,
            plugin_digest: self.plugin_digest,
            latency_us: self.latency_us,
            created_at: self.created_at,
            prev_event_hash,
            event_hash: String::new(),
        }
    }
}

/// The signed checkpoints to check a chain against: those in the database and in every
/// given log file, trusted only under the public key (or the secret key) at `key`.
pub fn anchors(chain: &ChainReader, key: Option<&Path>, logs: &[std::path::PathBuf]) -> Result<Anchors, String> {
    let key = key
        .map(checkpoint::load_verifying_key)
        .transpose()
        .map_err(|e| e.to_string())?;
    let mut checkpoints = chain.checkpoints().map_err(|e| e.to_string())?;
    for log in logs {
        // A configured log that is not there yet holds no checkpoints; one named on the
        // command line must exist.
        if log.exists() {
            // A log may hold several nodes' checkpoints: only this chain's count here.
            checkpoints.extend(
                checkpoint::read_log(log)?
                    .into_iter()
                    .filter(|c| c.node == chain.node()),
            );
        }
    }
    Ok(Anchors { checkpoints, key })
}

/// `hex(sha256(JCS(every field but event_hash)))`.
pub fn event_hash(row: &AuditRow) -> String {
    canonical::hash(&canonical::split(row), &row.prev_event_hash)
}

struct Pending {
    row: AuditRow,
    split: canonical::Split,
    done: oneshot::Sender<Result<Written, String>>,
}

/// A stored event handed back to its producer, which frees it: memory is cheapest to free
/// on the thread that allocated it, and the writer is the chain's bottleneck.
struct Written {
    row: AuditRow,
    _split: canonical::Split,
}

/// Work for the writer thread, in arrival order.
#[expect(
    clippy::large_enum_variant,
    reason = "appends are the hot path; boxing them would allocate per event"
)]
enum Job {
    Append(Pending),
    /// Remove events created before `before` and chain a checkpoint event.
    Prune {
        before: String,
        now: String,
        done: oneshot::Sender<Result<PruneReport, String>>,
    },
    /// Sign the head now, whenever the last checkpoint was (on shutdown).
    Seal {
        done: oneshot::Sender<()>,
    },
}

/// What a retention run removed.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PruneReport {
    pub removed: i64,
    /// The last removed event's sequence number, if any was removed.
    pub upto_seq: Option<i64>,
}

/// Handle to the audit writer. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AuditLog {
    queue: mpsc::SyncSender<Job>,
    /// The node whose chain the writer continues, named in every event it writes.
    node: Arc<str>,
}

impl AuditLog {
    /// Starts the writer on `chain` (its own connection, or a shared store's pool). With
    /// `signing`, it signs a checkpoint of the chain's head at least every second while
    /// events flow.
    pub fn start(
        mut chain: ChainWriter,
        metrics: AuditWriterMetrics,
        signing: Option<Signing>,
    ) -> Result<AuditLog, AuditError> {
        let node: Arc<str> = Arc::from(chain.node());
        let (mut head_seq, mut head) = chain.head()?.unwrap_or_else(|| (0, GENESIS_HASH.into()));
        // Signed at once on start (`signed_seq` -1): a restart is a checkpoint too.
        let mut checkpoints = signing.map(|signing| Checkpoints {
            signing,
            signed_seq: -1,
            last: None,
        });
        // Bounded: when the disk stalls, producers wait instead of growing memory.
        let (queue, inbox) = mpsc::sync_channel::<Job>(16 * MAX_BATCH);
        thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || {
                let mut next: Option<Job> = None;
                let mut last_commit = Stopwatch::start();
                loop {
                    if let Some(c) = &mut checkpoints
                        && c.due_in(head_seq) == Some(Duration::ZERO)
                    {
                        c.sign(&chain, head_seq, &head);
                    }
                    let job = match next.take() {
                        Some(job) => job,
                        // Idle: wait for work, but not past the moment the head is due a
                        // checkpoint.
                        None => match checkpoints.as_ref().and_then(|c| c.due_in(head_seq)) {
                            Some(wait) => match inbox.recv_timeout(wait) {
                                Ok(job) => job,
                                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                                Err(mpsc::RecvTimeoutError::Disconnected) => {
                                    if let Some(c) = &mut checkpoints {
                                        c.sign(&chain, head_seq, &head);
                                    }
                                    return;
                                }
                            },
                            None => match inbox.recv() {
                                Ok(job) => job,
                                Err(_) => return,
                            },
                        },
                    };
                    match job {
                        Job::Append(first) => {
                            let mut batch = vec![first];
                            next = drain(&inbox, &mut batch);
                            if next.is_none() && batch.len() < SMALL_BATCH && last_commit.elapsed() < BUSY_GAP {
                                thread::sleep(LINGER);
                                next = drain(&inbox, &mut batch);
                            }
                            metrics.batch_events.observe(batch.len() as f64);
                            let started = Stopwatch::start();
                            if let Some(seq) = write_batch(&mut chain, &mut head, batch) {
                                head_seq = seq;
                            }
                            metrics.commit_seconds.observe(started.elapsed().as_secs_f64());
                            last_commit = Stopwatch::start();
                        }
                        Job::Prune { before, now, done } => {
                            let report = prune(&mut chain, &mut head, &before, &now);
                            if let Ok(Some((seq, _))) = chain.head() {
                                head_seq = seq;
                            }
                            // The cut is signed at once: the retention event that attests it
                            // is the head of a signed checkpoint before anyone hears back.
                            if let Some(c) = &mut checkpoints
                                && c.due_in(head_seq).is_some()
                            {
                                c.sign(&chain, head_seq, &head);
                            }
                            let _ = done.send(report);
                        }
                        Job::Seal { done } => {
                            if let Some(c) = &mut checkpoints
                                && c.due_in(head_seq).is_some()
                            {
                                c.sign(&chain, head_seq, &head);
                            }
                            let _ = done.send(());
                        }
                    }
                }
            })
            .map_err(|e| AuditError::Write(e.to_string()))?;
        Ok(AuditLog { queue, node })
    }

    /// Removes events created before `before` (RFC 3339), keeping the chain verifiable
    /// through a checkpoint event. Runs on the writer, in order with appends.
    pub async fn prune(&self, before: String, now: String) -> Result<PruneReport, AuditError> {
        let (done, wait) = oneshot::channel();
        let queue = self.queue.clone();
        tokio::task::spawn_blocking(move || queue.send(Job::Prune { before, now, done }))
            .await
            .map_err(|_| AuditError::WriterStopped)?
            .map_err(|_| AuditError::WriterStopped)?;
        match wait.await {
            Ok(Ok(report)) => Ok(report),
            Ok(Err(message)) => Err(AuditError::Write(message)),
            Err(_) => Err(AuditError::WriterStopped),
        }
    }

    /// Signs a checkpoint of the head now if it has none yet, and waits for it: a gateway
    /// that stops leaves its last events covered.
    pub async fn seal(&self) -> Result<(), AuditError> {
        let (done, wait) = oneshot::channel();
        let queue = self.queue.clone();
        tokio::task::spawn_blocking(move || queue.send(Job::Seal { done }))
            .await
            .map_err(|_| AuditError::WriterStopped)?
            .map_err(|_| AuditError::WriterStopped)?;
        wait.await.map_err(|_| AuditError::WriterStopped)
    }

    /// Appends an event and waits until it is durable. Returns the event id.
    pub async fn record(&self, event: AuditEvent) -> Result<String, AuditError> {
        let (done, wait) = oneshot::channel();
        let queue = self.queue.clone();
        // Serialize here, on the request's thread: the writer only chains and stores.
        let (row, split) = event.prepare(&self.node);
        let pending = Job::Append(Pending { row, split, done });
        // `try_send` first: the common case never blocks the async worker.
        match queue.try_send(pending) {
            Ok(()) => {}
            Err(mpsc::TrySendError::Full(pending)) => {
                tokio::task::spawn_blocking(move || queue.send(pending))
                    .await
                    .map_err(|_| AuditError::WriterStopped)?
                    .map_err(|_| AuditError::WriterStopped)?;
            }
            Err(mpsc::TrySendError::Disconnected(_)) => return Err(AuditError::WriterStopped),
        }
        match wait.await {
            Ok(Ok(written)) => Ok(written.row.id),
            Ok(Err(message)) => Err(AuditError::Write(message)),
            Err(_) => Err(AuditError::WriterStopped),
        }
    }
}

/// Moves queued appends into `batch` (up to [`MAX_BATCH`]); returns the first other job.
fn drain(inbox: &mpsc::Receiver<Job>, batch: &mut Vec<Pending>) -> Option<Job> {
    while batch.len() < MAX_BATCH {
        match inbox.try_recv() {
            Ok(Job::Append(p)) => batch.push(p),
            Ok(other) => return Some(other),
            Err(_) => return None,
        }
    }
    None
}

/// Appends one batch in one transaction and answers every waiter. Returns the position of
/// the new head, when the batch was written.
fn write_batch(chain: &mut ChainWriter, head: &mut String, mut batch: Vec<Pending>) -> Option<i64> {
    let mut prev = head.clone();
    for pending in &mut batch {
        let row = &mut pending.row;
        row.event_hash = canonical::hash(&pending.split, &prev);
        row.prev_event_hash = std::mem::replace(&mut prev, row.event_hash.clone());
    }
    let inserts: Vec<AuditInsert<'_>> = batch
        .iter()
        .map(|p| AuditInsert {
            row: &p.row,
            details: &p.split.details,
            policy_ids: &p.split.policy_ids,
        })
        .collect();
    let result = chain.append(&inserts);
    drop(inserts);
    match result {
        Ok(seq) => {
            *head = prev;
            for Pending { row, split, done } in batch {
                let _ = done.send(Ok(Written { row, _split: split }));
            }
            Some(seq)
        }
        Err(e) => {
            tracing::error!(error = %e, "audit batch not written");
            for pending in batch {
                let _ = pending.done.send(Err(e.to_string()));
            }
            // A commit whose answer was lost may have been applied (a dropped database
            // connection): the chain continues from what the store holds, not from memory.
            match chain.head() {
                Ok(Some((seq, hash))) => {
                    *head = hash;
                    Some(seq)
                }
                _ => None,
            }
        }
    }
}

/// What the writer needs to sign checkpoints: the signer and the gateway's clock.
#[derive(Debug)]
pub struct Signing {
    pub signer: checkpoint::Signer,
    pub clock: SharedClock,
}

/// The longest a head waits for its signed checkpoint while events flow.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// The writer's checkpoint state.
struct Checkpoints {
    signing: Signing,
    /// The position of the last signed head (-1: none yet in this process).
    signed_seq: i64,
    last: Option<Stopwatch>,
}

impl Checkpoints {
    /// How long until the head at `head_seq` is due a checkpoint; `None` if it is signed.
    fn due_in(&self, head_seq: i64) -> Option<Duration> {
        if head_seq == self.signed_seq {
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
    fn sign(&mut self, chain: &ChainWriter, head_seq: i64, head: &str) {
        self.last = Some(Stopwatch::start());
        if head_seq == 0 {
            self.signed_seq = 0;
            return;
        }
        let checkpoint = self.signing.signer.sign(
            chain.node(),
            head_seq,
            head,
            &crate::clock::iso(self.signing.clock.now()),
        );
        let stored = chain.insert_checkpoint(&checkpoint).map_err(|e| e.to_string());
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

fn prune(chain: &mut ChainWriter, head: &mut String, before: &str, now: &str) -> Result<PruneReport, String> {
    let prev = head.clone();
    let node = chain.node().to_string();
    let result = chain.prune(before, now, |cut: &PrunedCut| {
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
    match result {
        Ok(Some((cut, row))) => {
            *head = row.event_hash;
            Ok(PruneReport {
                removed: cut.removed,
                upto_seq: Some(cut.upto_seq),
            })
        }
        Ok(None) => Ok(PruneReport {
            removed: 0,
            upto_seq: None,
        }),
        Err(e) => Err(e.to_string()),
    }
}
