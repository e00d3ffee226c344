//! Executions a gateway process left `running` when it died (SPEC 6: never re-run silently).
//!
//! A live process takes such an execution over once the dead one's lease has run out (at
//! once for a restarted node, which holds its predecessor's claim). A write whose plugin
//! records its effects under the execution id (`resumable` in its manifest) runs again with
//! the same id, at most [`MAX_ATTEMPTS`] times in all, each attempt on the audit trail: the
//! plugin answers a repeated call from its record, so an effect is never made twice. Any
//! other execution becomes `indeterminate` until an operator resolves it, as before.
//!
//! The State Witness and the impact are not checked again on a resumed attempt: they held
//! before the first attempt, and that attempt's own effect may have changed both.

use std::sync::Arc;

use crate::audit::{AuditError, AuditEvent};
use crate::catalog::Tool;
use crate::gateway::Gateway;
use crate::hashing::canonical_json;
use crate::outcome::Refused;
use crate::protocol::codes;
use crate::protocol::ids::{self, Kind};
use crate::store::{DraftStatus, ExecutionRecord, ExecutionStatus, OrphanedExecution, StoreError};

use super::review::{Reviewer, execution_context, lifecycle, lifecycle_event, run};

/// Attempts an execution gets in all, the first included. A call that keeps killing the
/// process running it (a plugin bug) stops there, `indeterminate`, instead of taking every
/// node down in turn.
pub const MAX_ATTEMPTS: i64 = 3;

/// Who the audit trail names as running a resumed attempt.
const RECOVERY: &str = "recovery";

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// What one pass did with the executions dead processes left running.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    /// Run again to an outcome (success or failure) by this process.
    pub resumed: usize,
    /// Taken over but not run to an outcome (the store or the audit trail failed); still
    /// `running` under this process, and taken over again by the next one.
    pub interrupted: usize,
    /// Left to an operator.
    pub indeterminate: usize,
}

/// Settles every execution a process that is gone left `running`: resumed or marked
/// `indeterminate`. Of processes racing to settle one, exactly one does.
pub async fn settle_orphaned_executions(gw: &Gateway) -> Result<Settled, RecoveryError> {
    let live = gw.live_instances()?;
    let orphans = gw.store.drafts.orphaned_executions(&live)?;
    let catalog = gw.catalog();
    let mut settled = Settled::default();
    for orphan in orphans {
        let OrphanedExecution { execution, action_type } = orphan;
        let from = execution.instance_id.clone();
        let tool = catalog.tool(&action_type);
        let fate = match tool {
            None => Err("the tool is not loaded on the node settling it"),
            Some(tool) if !tool.resumable() => {
                Err("the tool is not resumable: its plugin does not record effects by execution id")
            }
            Some(_) if execution.attempts >= MAX_ATTEMPTS => Err("every attempt was interrupted"),
            Some(tool) => Ok(Arc::clone(tool)),
        };
        match fate {
            Ok(tool) => {
                if !gw.store.drafts.take_over(&execution.id, &from, &gw.instance_id)? {
                    continue;
                }
                match resume(gw, &tool, execution).await {
                    Ok(()) => settled.resumed += 1,
                    Err((id, refused)) => {
                        tracing::error!(execution = %id, error = %refused.failure.message, "a resumed execution was interrupted");
                        settled.interrupted += 1;
                    }
                }
            }
            Err(reason) => {
                if !gw.store.drafts.mark_indeterminate(&execution.id, &from)? {
                    continue;
                }
                tracing::warn!(execution = %execution.id, reason, "an execution a stopped process left running is indeterminate");
                indeterminate_event(gw, &execution, reason).await?;
                settled.indeterminate += 1;
            }
        }
    }
    Ok(settled)
}

/// The audit event of an execution left to an operator.
async fn indeterminate_event(gw: &Gateway, execution: &ExecutionRecord, reason: &str) -> Result<(), RecoveryError> {
    let request_id = ids::new_id(Kind::Request);
    let runner = Reviewer {
        name: RECOVERY,
        org_id: None,
        request_id: &request_id,
    };
    let mut event = match gw.store.drafts.get(&execution.draft_id)? {
        Some(draft) => lifecycle_event(
            gw,
            &runner,
            &draft,
            "agent.execution.indeterminate",
            codes::EXECUTION_INDETERMINATE,
            Some(&execution.id),
        ),
        None => {
            let mut event = AuditEvent::new(
                "agent.execution.indeterminate",
                codes::EXECUTION_INDETERMINATE,
                gw.now_iso(),
            );
            event.execution_id = Some(execution.id.clone());
            event.draft_id = Some(execution.draft_id.clone());
            event
        }
    };
    event.details.insert("reason".into(), reason.into());
    event.details.insert("attempts".into(), execution.attempts.into());
    gw.audit.record(event).await?;
    Ok(())
}

/// Runs a taken-over execution again, with its id, and records its outcome as an approval's
/// execution would be. Errors (the store, the audit trail) leave it `running` under this
/// process; they are returned with the execution's id.
async fn resume(gw: &Gateway, tool: &Tool, mut record: ExecutionRecord) -> Result<(), (String, Refused)> {
    let failed = |r: Refused| (record.id.clone(), r);
    let draft = gw
        .store
        .drafts
        .get(&record.draft_id)
        .map_err(Refused::internal)
        .and_then(|d| d.ok_or_else(|| Refused::internal("the execution's draft is gone")))
        .map_err(failed)?;
    record.attempts += 1;
    record.instance_id = gw.instance_id.clone();
    let request_id = ids::new_id(Kind::Request);
    let runner = Reviewer {
        name: RECOVERY,
        org_id: None,
        request_id: &request_id,
    };
    // On the record before the plugin is called again, like the first attempt.
    let mut event = lifecycle_event(
        gw,
        &runner,
        &draft,
        "agent.execution.resumed",
        codes::SUCCESS,
        Some(&record.id),
    );
    event.details.insert("attempt".into(), record.attempts.into());
    gw.audit.record(event).await.map_err(|e| failed(Refused::internal(e)))?;
    let context = execution_context(gw, &draft, tool, &request_id).map_err(failed)?;
    let payload_text = canonical_json(&draft.payload);
    let id = record.id.clone();
    let code = match run(gw, tool, context, &payload_text, &mut record).await {
        Ok(()) => codes::SUCCESS,
        // The plugin's failure is the execution's outcome, recorded by `run`; a store
        // failure leaves the execution `running`.
        Err(refusal) if record.status == ExecutionStatus::Failed => {
            let _ = gw.store.drafts.transition(
                &draft.id,
                DraftStatus::Confirmed,
                DraftStatus::Failed,
                None,
                &gw.now_iso(),
            );
            refusal.failure.code
        }
        Err(refusal) => return Err((id, refusal)),
    };
    lifecycle(gw, &runner, &draft, "agent.action.execute", code, Some(&id))
        .await
        .map_err(|r| (id, r))
}
