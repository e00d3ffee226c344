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
use crate::plugin::CallContext;
use crate::protocol::codes;
use crate::protocol::ids::{self, Kind};
use crate::store::{DraftRecord, DraftStatus, ExecutionRecord, OrphanedExecution, StoreError};

use super::review::{Ran, Reviewer, execution_context, lifecycle, lifecycle_event, run};

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
    /// Taken over but not run to an outcome (the store or the audit trail failed): handed
    /// back, still `running`, for the next pass.
    pub interrupted: usize,
    /// Left to an operator.
    pub indeterminate: usize,
}

/// Settles every execution a process that is gone left `running`: resumed or marked
/// `indeterminate`. Of processes racing to settle one, exactly one does.
pub async fn settle_orphaned_executions(gw: &Gateway) -> Result<Settled, RecoveryError> {
    // Seen alive first: what this process takes over is not taken from it in turn.
    gw.heartbeat()?;
    let orphans = gw.store.drafts.orphaned_executions(&gw.live_instances()?)?;
    let catalog = gw.catalog();
    let mut settled = Settled::default();
    for orphan in orphans {
        let OrphanedExecution { execution, action_type } = orphan;
        let from = execution.instance_id.clone();
        // Resuming one execution can take as long as its plugin call: whether the process
        // it belongs to is gone is asked again for each.
        if gw.live_instances()?.contains(&from) {
            continue;
        }
        let draft = gw.store.drafts.get(&execution.draft_id)?;
        let fate = match (catalog.tool(&action_type), &draft) {
            (_, None) => Err("its draft is gone"),
            (_, Some(draft)) if draft.status != DraftStatus::Confirmed => Err("its draft is no longer confirmed"),
            (None, _) => Err("the tool is not loaded on the node settling it"),
            (Some(tool), _) if !tool.resumable() => {
                Err("the tool is not resumable: its plugin does not record effects by execution id")
            }
            // Its record of what it did is in its own namespace, in its own format: another
            // plugin, or another version, would not find it.
            (Some(tool), Some(draft))
                if tool.plugin.name() != draft.plugin || tool.plugin.digest() != draft.plugin_digest =>
            {
                Err("the plugin serving the tool changed since the draft was made")
            }
            (Some(_), _) if execution.attempts >= MAX_ATTEMPTS => Err("every attempt was interrupted"),
            (Some(tool), Some(draft)) => Ok((Arc::clone(tool), draft.clone())),
        };
        match fate {
            Ok((tool, draft)) => {
                let request_id = ids::new_id(Kind::Request);
                let context = match execution_context(gw, &draft, &tool, &request_id) {
                    Ok(context) => context,
                    Err(refused) => {
                        tracing::error!(execution = %execution.id, error = %refused.failure.message, "cannot resume an execution now");
                        continue;
                    }
                };
                if !gw.store.drafts.take_over(&execution.id, &from, &gw.instance_id)? {
                    continue;
                }
                let resuming = Resuming {
                    tool: &tool,
                    draft: &draft,
                    context,
                    request_id: &request_id,
                };
                match resume(gw, resuming, execution).await {
                    Ok(()) => settled.resumed += 1,
                    Err((id, refused)) => {
                        tracing::error!(execution = %id, error = %refused.failure.message, "a resumed execution was interrupted");
                        // For the next pass, which counts another attempt.
                        if let Err(e) = gw.store.drafts.give_back(&id, &gw.instance_id, &from) {
                            tracing::error!(execution = %id, error = %e, "a resumed execution was not handed back");
                        }
                        settled.interrupted += 1;
                    }
                }
            }
            Err(reason) => {
                if !gw.store.drafts.mark_indeterminate(&execution.id, &from)? {
                    continue;
                }
                tracing::warn!(execution = %execution.id, reason, "an execution a stopped process left running is indeterminate");
                indeterminate_event(gw, &execution, draft.as_ref(), reason).await?;
                settled.indeterminate += 1;
            }
        }
    }
    Ok(settled)
}

/// The audit event of an execution left to an operator.
async fn indeterminate_event(
    gw: &Gateway,
    execution: &ExecutionRecord,
    draft: Option<&DraftRecord>,
    reason: &str,
) -> Result<(), RecoveryError> {
    let request_id = ids::new_id(Kind::Request);
    let runner = Reviewer {
        name: RECOVERY,
        org_id: None,
        request_id: &request_id,
    };
    let mut event = match draft {
        Some(draft) => lifecycle_event(
            gw,
            &runner,
            draft,
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

/// What a taken-over execution runs with.
struct Resuming<'a> {
    tool: &'a Tool,
    draft: &'a DraftRecord,
    context: CallContext,
    request_id: &'a str,
}

/// Runs a taken-over execution again, with its id, and records its outcome as an approval's
/// execution would be. An error (the store, the audit trail) before an outcome was recorded
/// is returned with the execution's id: the execution is still `running` under this process.
async fn resume(gw: &Gateway, resuming: Resuming<'_>, mut record: ExecutionRecord) -> Result<(), (String, Refused)> {
    let Resuming {
        tool,
        draft,
        context,
        request_id,
    } = resuming;
    let id = record.id.clone();
    record.attempts += 1;
    record.instance_id = gw.instance_id.clone();
    let runner = Reviewer {
        name: RECOVERY,
        org_id: None,
        request_id,
    };
    // On the record before the plugin is called again, like the first attempt.
    let mut event = lifecycle_event(gw, &runner, draft, "agent.execution.resumed", codes::SUCCESS, Some(&id));
    event.details.insert("attempt".into(), record.attempts.into());
    gw.audit
        .record(event)
        .await
        .map_err(|e| (id.clone(), Refused::internal(e)))?;
    let payload_text = canonical_json(&draft.payload);
    let code = match run(gw, tool, context, &payload_text, &mut record)
        .await
        .map_err(|r| (id.clone(), r))?
    {
        Ran::Succeeded => codes::SUCCESS,
        Ran::Failed(refusal) => {
            let _ = gw.store.drafts.transition(
                &draft.id,
                DraftStatus::Confirmed,
                DraftStatus::Failed,
                None,
                &gw.now_iso(),
            );
            refusal.failure.code
        }
        // Taken over again (this process was taken for dead): the other one records it.
        Ran::Superseded => return Ok(()),
    };
    // The outcome is recorded: a failure to audit it is logged, not retried.
    if let Err(refused) = lifecycle(gw, &runner, draft, "agent.action.execute", code, Some(&id)).await {
        tracing::error!(execution = %id, error = %refused.failure.message, "a resumed execution's outcome was not audited");
    }
    Ok(())
}
