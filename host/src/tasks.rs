//! Reads that finish in the background as tasks (the MCP Tasks extension, SEP-2663).
//!
//! A read whose manifest lists it under `tasks` runs here for a client that takes tasks.
//! It starts like any read; if the plugin calls `run-as-task`, the task is stored, the
//! client is answered with it, and the call goes on in the background with the manifest's
//! task time budget. What the call ends in is the task's outcome:
//!
//! | the call | the task |
//! |---|---|
//! | returns a result | `completed`, with the result |
//! | returns the plugin's own error | `completed`, with the error as the result (`isError`) |
//! | traps, runs out of time or memory | `failed`, with the error |
//! | asks for input (`require-input`) | `input_required` until the client answers, then the tool runs again |
//! | is cancelled by its client | `cancelled`, and the plugin call is stopped |
//!
//! A task is durable (the store), belongs to the key that started it, and every
//! transition is audited (`agent.task.*`). A task still running when its process stops
//! fails at the next start; it is never run again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::AbortHandle;

use crate::audit::{AuditEvent, AuditLog};
use crate::catalog::Tool;
use crate::clock::{self, SharedClock};
use crate::hashing::canonical_json;
use crate::outcome::{Refused, Reply, call_refusal};
use crate::plugin::interaction::{Round, TaskSwitch};
use crate::plugin::{CallContext, CallError, ToolOutput};
use crate::protocol::codes::{self, Code};
use crate::protocol::ids::{Kind, new_id};
use crate::store::{Stamp, Store, StoreError, TaskRecord, TaskStatus};

/// How long a task stays readable after its last change (a running one stays while it runs).
pub const TTL_MS: i64 = 60 * 60 * 1000;
/// Tasks one key may have running at once: more calls go on inline, so that one key
/// cannot hold all of a plugin's call slots for minutes.
const RUNNING_PER_KEY: usize = 4;

/// Now, and the expiry a change made now gives a task.
pub fn stamp(clock: &SharedClock) -> Stamp {
    let now = clock.now();
    Stamp {
        now: clock::iso(now),
        expires: clock::iso(now + time::Duration::milliseconds(TTL_MS)),
    }
}

/// A task's runner in this process.
#[derive(Debug)]
struct Runner {
    abort: AbortHandle,
    key_id: String,
}

/// Turns a read's output into its reply (redaction and the like): the pipeline's own rule,
/// applied to a background result too.
pub type Shape = fn(&Tool, &CallContext, ToolOutput) -> Reply;

/// Who a task belongs to: the key that started it, and whom it acts for.
#[derive(Debug, Clone)]
pub struct Owner {
    pub org_id: String,
    pub app_id: String,
    pub key_id: String,
    pub actor_user_id: String,
}

/// One run of a read that may be (or already is) a task.
pub struct Job {
    pub owner: Owner,
    pub tool: Arc<Tool>,
    pub context: CallContext,
    pub payload: Value,
    pub round: Round,
    pub shape: Shape,
}

/// How a run that may become a task went.
#[derive(Debug)]
pub enum Started {
    /// The plugin never asked to become a task: the call's own output.
    Inline(Box<Result<ToolOutput, CallError>>),
    /// It did: the task, stored before the client hears of it.
    Task(Box<TaskRecord>),
}

/// The runners of this process's tasks, and where their outcomes go.
#[derive(Debug, Clone)]
pub struct TaskRunner {
    store: Arc<Store>,
    audit: AuditLog,
    clock: SharedClock,
    running: Arc<Mutex<HashMap<String, Runner>>>,
}

impl TaskRunner {
    pub fn new(store: Arc<Store>, audit: AuditLog, clock: SharedClock) -> TaskRunner {
        TaskRunner {
            store,
            audit,
            clock,
            running: Arc::default(),
        }
    }

    /// At start: fails the tasks a previous process left running, each audited. On a
    /// shared store only those older than any task's time budget (24 hours): a younger one
    /// may run on a live node.
    pub async fn fail_orphans(&self) -> Result<(), OrphanError> {
        let at = stamp(&self.clock);
        let outcome = failure_outcome(codes::EXECUTION_FAILED, "The gateway stopped while the task ran");
        let changed_before = self
            .store
            .is_shared()
            .then(|| clock::iso(self.clock.now() - time::Duration::hours(25)));
        for task in self
            .store
            .tasks
            .interrupt_running(&outcome, &at, changed_before.as_deref())?
        {
            let mut event = owned_event(
                "agent.task.failed",
                codes::EXECUTION_FAILED,
                at.now.clone(),
                &self.owner_of(&task),
            );
            event.tool = Some(task.tool.clone());
            event.details.insert("taskId".into(), task.id.into());
            event.details.insert("reason".into(), "stopped with the process".into());
            self.audit.record(event).await?;
        }
        Ok(())
    }

    /// Runs `job` (its round's task switch is offered to the plugin); answers when the
    /// call ends, or as soon as it became a task.
    pub async fn run(&self, mut job: Job) -> Result<Started, Refused> {
        let (offer, offered) = oneshot::channel();
        job.round.task = TaskSwitch::Offered(offer);
        let (done, mut finished) = oneshot::channel();
        let task_id = Arc::new(OnceLock::new());
        let owner = job.owner.clone();
        let (tool, payload) = (job.tool.clone(), job.payload.clone());
        let handle = tokio::spawn(self.clone().call(job, task_id.clone(), Some(done)));
        tokio::select! {
            output = &mut finished => Ok(inline(output)),
            Ok(answer) = offered => {
                if self.running_for(&owner.key_id) >= RUNNING_PER_KEY {
                    // Declined: the plugin hears `false` and the call goes on inline.
                    drop(answer);
                    return Ok(inline(finished.await));
                }
                let record = self.new_record(new_id(Kind::Task), &owner, &tool, payload);
                if let Err(e) = self.store.tasks.insert(&record) {
                    handle.abort();
                    return Err(Refused::internal(e));
                }
                // Fresh above, so this is its only value.
                let _ = task_id.set(record.id.clone());
                self.hold(&record.id, &owner.key_id, handle.abort_handle());
                self.watch(handle, record.id.clone(), owner);
                // The plugin goes on only now that the task is durable.
                let _ = answer.send(true);
                Ok(Started::Task(Box::new(record)))
            }
        }
    }

    /// Runs a parked task again once its client answered everything it asked.
    pub fn resume(&self, task_id: &str, mut job: Job) {
        job.round.task = TaskSwitch::Running;
        let id = Arc::new(OnceLock::from(task_id.to_string()));
        let owner = job.owner.clone();
        let handle = tokio::spawn(self.clone().call(job, id, None));
        self.hold(task_id, &owner.key_id, handle.abort_handle());
        self.watch(handle, task_id.to_string(), owner);
    }

    /// Fails a task whose runner panicked (a gateway bug): it would stay `working`
    /// otherwise, unaudited, until the next start.
    fn watch(&self, runner: tokio::task::JoinHandle<()>, id: String, owner: Owner) {
        let this = self.clone();
        tokio::spawn(async move {
            let Err(ended) = runner.await else { return };
            if !ended.is_panic() {
                return;
            }
            tracing::error!(task_id = %id, "a task's runner panicked");
            let outcome = failure_outcome(codes::INTERNAL_ERROR, "The gateway failed while running the task");
            if this
                .store
                .tasks
                .finish(&id, TaskStatus::Failed, Some(&outcome), &stamp(&this.clock))
                .unwrap_or(false)
            {
                this.record(&id, &owner, None, "agent.task.failed", codes::INTERNAL_ERROR)
                    .await;
            }
        });
    }

    /// Cancels an active task of `owner`: `true` when this call cancelled it. Its plugin
    /// call stops if it runs in this process; elsewhere its outcome is discarded.
    pub fn cancel(&self, task: &TaskRecord) -> Result<bool, StoreError> {
        let cancelled = self
            .store
            .tasks
            .finish(&task.id, TaskStatus::Cancelled, None, &stamp(&self.clock))?;
        // Only a cancel that won stops the call: one that lost must not cut off the
        // completion's own audit event.
        if cancelled && let Some(runner) = self.runners().remove(&task.id) {
            runner.abort.abort();
        }
        Ok(cancelled)
    }

    /// Fails a parked task that waited on `was_pending` for `refused` (its tool can no
    /// longer run), audited; a concurrent answer that resumed it wins.
    pub async fn fail(&self, task: &TaskRecord, was_pending: &Value, refused: &Refused) -> Result<(), Refused> {
        let outcome = failure_outcome(refused.failure.code, &refused.failure.message);
        if self
            .store
            .tasks
            .fail_parked(&task.id, was_pending, &outcome, &stamp(&self.clock))
            .map_err(Refused::internal)?
        {
            self.record(
                &task.id,
                &self.owner_of(task),
                None,
                "agent.task.failed",
                refused.failure.code,
            )
            .await;
        }
        Ok(())
    }

    fn owner_of(&self, task: &TaskRecord) -> Owner {
        Owner {
            org_id: task.org_id.clone(),
            app_id: task.app_id.clone(),
            key_id: task.key_id.clone(),
            actor_user_id: task.actor_user_id.clone(),
        }
    }

    fn runners(&self) -> std::sync::MutexGuard<'_, HashMap<String, Runner>> {
        // The map stays consistent whatever panicked while holding it.
        self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn hold(&self, id: &str, key_id: &str, abort: AbortHandle) {
        let mut running = self.runners();
        running.retain(|_, r| !r.abort.is_finished());
        let key_id = key_id.to_string();
        running.insert(id.to_string(), Runner { abort, key_id });
    }

    fn running_for(&self, key_id: &str) -> usize {
        self.runners()
            .values()
            .filter(|r| r.key_id == key_id && !r.abort.is_finished())
            .count()
    }

    /// Forgets a task's runner, if it is still this one (a resumed task has a new one).
    fn release(&self, id: &str) {
        let current = tokio::task::try_id();
        let mut running = self.runners();
        if running.get(id).is_some_and(|r| Some(r.abort.id()) == current) {
            running.remove(id);
        }
    }

    fn new_record(&self, id: String, owner: &Owner, tool: &Tool, payload: Value) -> TaskRecord {
        let now = self.clock.now();
        let at = clock::iso(now);
        TaskRecord {
            id,
            org_id: owner.org_id.clone(),
            app_id: owner.app_id.clone(),
            key_id: owner.key_id.clone(),
            actor_user_id: owner.actor_user_id.clone(),
            tool: tool.name.clone(),
            payload,
            status: TaskStatus::Working,
            input_requests: None,
            input_responses: None,
            input_state: None,
            outcome: None,
            created_at: at.clone(),
            updated_at: at,
            expires_at: clock::iso(now + time::Duration::milliseconds(TTL_MS)),
        }
    }

    /// The plugin call, then its outcome: to the waiting request while the call is not a
    /// task (`done`), to the task once it is.
    async fn call(
        self,
        job: Job,
        task_id: Arc<OnceLock<String>>,
        done: Option<oneshot::Sender<Result<ToolOutput, CallError>>>,
    ) {
        let Job {
            owner,
            tool,
            context,
            payload,
            round,
            shape,
        } = job;
        let declared = round.client_capabilities.clone();
        let output = tool
            .plugin
            .invoke(&context, &tool.name, &canonical_json(&payload), round)
            .await;
        match task_id.get() {
            Some(id) => {
                let call = Settled {
                    owner: &owner,
                    tool: &tool,
                    context: &context,
                    declared: declared.as_ref(),
                };
                self.settle(id, call, output, shape).await;
            }
            None => {
                if let Some(done) = done {
                    let _ = done.send(output);
                }
            }
        }
    }

    /// Records what a task's call ended in, and audits it.
    async fn settle(&self, id: &str, call: Settled<'_>, output: Result<ToolOutput, CallError>, shape: Shape) {
        let Settled {
            owner,
            tool,
            context,
            declared,
        } = call;
        // Forgotten first: a resume after the change below registers its own runner.
        self.release(id);
        let now = stamp(&self.clock);
        let (action, code, applied) = match output {
            // Input its client cannot give: the task could only wait until it expires.
            Ok(ToolOutput { asked: Some(ask), .. }) if !ask.missing_capabilities(declared).is_empty() => {
                let missing = ask.missing_capabilities(declared).join(", ");
                let message = format!("The tool needs input this client cannot give ({missing})");
                let outcome = failure_outcome(codes::INPUT_REQUIRED, &message);
                let done = self.store.tasks.finish(id, TaskStatus::Failed, Some(&outcome), &now);
                ("agent.task.failed", codes::INPUT_REQUIRED, done)
            }
            Ok(ToolOutput { asked: Some(ask), .. }) => {
                let requests = Value::Object(ask.requests);
                let parked = self.store.tasks.park(id, &requests, ask.state.as_deref(), &now);
                ("agent.task.input_required", codes::SUCCESS, parked)
            }
            Ok(output) => {
                let reply = shape(tool, context, output);
                let outcome = json!({"data": reply.data, "content": reply.content});
                let done = self.store.tasks.finish(id, TaskStatus::Completed, Some(&outcome), &now);
                ("agent.task.completed", codes::SUCCESS, done)
            }
            // The tool ran and reported an error: a result, not a failure of the task.
            Err(error @ CallError::Guest(_)) => {
                let refused = call_refusal(error, true);
                let outcome = json!({"refusal": {
                    "code": refused.failure.code.name,
                    "message": refused.failure.message,
                    "details": refused.failure.details,
                }});
                let done = self.store.tasks.finish(id, TaskStatus::Completed, Some(&outcome), &now);
                ("agent.task.completed", refused.failure.code, done)
            }
            Err(error) => {
                let refused = call_refusal(error, true);
                let outcome = failure_outcome(refused.failure.code, &refused.failure.message);
                let done = self.store.tasks.finish(id, TaskStatus::Failed, Some(&outcome), &now);
                ("agent.task.failed", refused.failure.code, done)
            }
        };
        match applied {
            Ok(true) => self.record(id, owner, Some(tool), action, code).await,
            // Cancelled (or expired) meanwhile: the outcome has nowhere to go.
            Ok(false) => tracing::debug!(task_id = id, "task outcome discarded: the task had ended"),
            Err(e) => tracing::error!(task_id = id, error = %e, "task outcome not stored"),
        }
    }

    async fn record(&self, id: &str, owner: &Owner, tool: Option<&Tool>, action: &str, code: Code) {
        let mut event = owned_event(action, code, clock::iso(self.clock.now()), owner);
        if let Some(tool) = tool {
            event.tool = Some(tool.name.clone());
            event.risk = Some(tool.risk.as_str().into());
            event.plugin = Some(tool.plugin.name().into());
            event.plugin_digest = Some(tool.plugin.digest().into());
        }
        event.details.insert("taskId".into(), id.into());
        if let Err(e) = self.audit.record(event).await {
            tracing::error!(task_id = id, error = %e, "task transition not audited");
        }
    }
}

/// A call that stayed inline: its output, or a failure if its runner ended without one.
fn inline(output: Result<Result<ToolOutput, CallError>, oneshot::error::RecvError>) -> Started {
    let output = output.unwrap_or_else(|_| Err(CallError::Trap("the call's runner stopped".into())));
    Started::Inline(Box::new(output))
}

/// What a task's call was, for recording its outcome.
struct Settled<'a> {
    owner: &'a Owner,
    tool: &'a Tool,
    context: &'a CallContext,
    /// The client capabilities its round declared.
    declared: Option<&'a Value>,
}

/// A task's event, with whom the task belongs to.
fn owned_event(action: &str, code: Code, at: String, owner: &Owner) -> AuditEvent {
    let mut event = AuditEvent::new(action, code, at);
    event.org_id = Some(owner.org_id.clone());
    event.app_id = Some(owner.app_id.clone());
    event.key_id = Some(owner.key_id.clone());
    event.actor_user_id = Some(owner.actor_user_id.clone());
    event
}

/// A failed task's outcome: the reason code and message.
fn failure_outcome(code: Code, message: &str) -> Value {
    json!({"error": {"code": code.name, "message": message}})
}

#[derive(Debug, thiserror::Error)]
pub enum OrphanError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
}
