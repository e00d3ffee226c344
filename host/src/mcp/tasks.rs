//! The MCP Tasks extension (`io.modelcontextprotocol/tasks`) on the 2026-07-28 wire, for
//! reads that finish in the background (`crate::tasks`: the task's status is its own) and
//! for draft-first writes. A write that becomes a draft is a task, and the task is the draft:
//! its id is the draft's, it lives as long as the draft (so across restarts and on any
//! node), and only the key that proposed it may read or cancel it.
//!
//! | draft | task |
//! |---|---|
//! | pending review | `input_required`: a URL elicitation pointing at the reviewer page |
//! | approved, executing | `working` |
//! | executed | `completed`, with the call's result (`isError` when the tool failed) |
//! | rejected, stale, expired, indeterminate | `failed`, with an error |
//! | withdrawn by `tasks/cancel` | `cancelled` |
//!
//! Every transition is the draft's own and audited as such (`agent.draft.*`); each
//! `tasks/*` request gets its audit event too.

use serde_json::{Value, json};

use super::tools;
use crate::outcome::{Refused, Reply};
use crate::plugin::Content;
use crate::protocol::Failure;
use crate::protocol::codes::{self, Code};
use crate::store::{TaskRecord, TaskStatus};

/// The extension's identifier, in capabilities.
pub const EXTENSION: &str = "io.modelcontextprotocol/tasks";

/// How often a client should poll a draft's task (a human decides), in ms ...
const POLL_INTERVAL_MS: u64 = 2_000;
/// ... and a background read's.
const READ_POLL_INTERVAL_MS: u64 = 500;

/// Whether a request opted in: its client capabilities name the extension.
pub fn opted_in(capabilities: &Value) -> bool {
    capabilities["extensions"].get(EXTENSION).is_some_and(Value::is_object)
}

/// The capability a request that did not opt in is missing.
pub fn required_capabilities() -> Value {
    json!({"extensions": {EXTENSION: {}}})
}

/// A `tools/call` answer that made a draft, as the task it started; `None` when the call
/// did not leave a pending draft (it executed at once, or was refused).
pub fn created(call_data: &Value) -> Option<Value> {
    let draft = &call_data["draft"];
    if call_data["status"] != "draft" || draft["status"] != "draft" {
        return None;
    }
    let mut task = summary(draft, "input_required");
    task["resultType"] = json!("task");
    Some(task)
}

/// The fields every task view carries.
fn summary(draft: &Value, status: &str) -> Value {
    json!({
        "taskId": draft["id"],
        "status": status,
        "createdAt": draft["created_at"],
        "lastUpdatedAt": draft["updated_at"],
        // A task lives as long as its draft, which the store keeps.
        "ttlMs": null,
        "pollIntervalMs": POLL_INTERVAL_MS,
    })
}

/// `tasks/get`: the draft (`own_draft`'s data) as a detailed task. `review_url` is where
/// a reviewer decides.
pub fn detailed(data: &Value, review_url: &str) -> Value {
    let draft = &data["draft"];
    let execution = &data["execution"];
    // The error names the draft's status and, where one fits, the reason code.
    let failed = |message: &str, code: Option<Code>| {
        let mut task = summary(draft, "failed");
        let mut data = json!({"draftStatus": draft["status"]});
        if let Some(code) = code {
            data["code"] = json!(code.name);
        }
        task["error"] = json!({"code": super::REFUSED, "message": message, "data": data});
        task
    };
    let mut task = match draft["status"].as_str().unwrap_or_default() {
        "draft" => {
            let mut task = summary(draft, "input_required");
            task["inputRequests"] = json!({
                "review": {
                    "method": "elicitation/create",
                    "params": {
                        "mode": "url",
                        "elicitationId": draft["id"],
                        "url": review_url,
                        "message": format!(
                            "A reviewer must approve draft {} ({}) before it runs.",
                            draft["id"].as_str().unwrap_or_default(),
                            draft["action_type"].as_str().unwrap_or_default()
                        ),
                    }
                }
            });
            task
        }
        "canceled" if data["withdrawnByAgent"] == true => summary(draft, "cancelled"),
        "canceled" => failed("A reviewer rejected the draft; nothing ran", None),
        "expired" => failed(
            "The draft's review window passed; nothing ran",
            Some(codes::DRAFT_EXPIRED),
        ),
        "stale" => failed(
            "The state the draft depends on changed after review; nothing ran",
            Some(codes::PRECONDITION_FAILED),
        ),
        _ => match execution["status"].as_str() {
            Some("success") => completed(draft, execution, false),
            Some("failed") => completed(draft, execution, true),
            Some("indeterminate") => failed(
                "The execution's outcome is unknown; it is never re-run",
                Some(codes::EXECUTION_INDETERMINATE),
            ),
            _ if draft["status"] == "failed" => failed("The execution never started", Some(codes::EXECUTION_FAILED)),
            _ => summary(draft, "working"),
        },
    };
    task["resultType"] = json!("complete");
    task
}

/// A `tools/call` of a read that went on in the background: the task it became.
pub fn read_created(task: &TaskRecord) -> Value {
    let mut view = read_summary(task);
    view["resultType"] = json!("task");
    view
}

fn read_summary(task: &TaskRecord) -> Value {
    json!({
        "taskId": task.id,
        "status": task.status.as_str(),
        "createdAt": task.created_at,
        "lastUpdatedAt": task.updated_at,
        "ttlMs": crate::tasks::TTL_MS,
        "pollIntervalMs": READ_POLL_INTERVAL_MS,
    })
}

/// `tasks/get` of a background read's task: what it waits on, or how it ended.
pub fn read_detailed(task: &TaskRecord, request_id: &str) -> Value {
    let mut view = read_summary(task);
    let outcome = task.outcome.as_ref().unwrap_or(&Value::Null);
    match task.status {
        TaskStatus::InputRequired => {
            view["inputRequests"] = task.input_requests.clone().unwrap_or_else(|| json!({}));
        }
        TaskStatus::Completed if outcome.get("refusal").is_some() => {
            let refusal = &outcome["refusal"];
            let code = refusal["code"]
                .as_str()
                .and_then(codes::by_name)
                .unwrap_or(codes::EXECUTION_FAILED);
            let mut failure = Failure::new(code, refusal["message"].as_str().unwrap_or("The tool failed"));
            failure.details = refusal["details"].as_object().cloned().unwrap_or_default();
            view["result"] = tools::refusal_result(&Refused::from(failure), request_id);
        }
        TaskStatus::Completed => {
            let content: Vec<Content> = serde_json::from_value(outcome["content"].clone()).unwrap_or_default();
            let reply = Reply {
                content,
                ..Reply::ok(outcome["data"].clone())
            };
            let result = tools::call_result(reply, request_id);
            view["result"] = serde_json::to_value(result).unwrap_or_else(|_| json!({}));
        }
        TaskStatus::Failed => {
            let error = &outcome["error"];
            view["error"] = json!({
                "code": super::REFUSED,
                "message": error["message"].as_str().unwrap_or("The task failed"),
                "data": {"code": error["code"]},
            });
        }
        TaskStatus::Working | TaskStatus::Cancelled => {}
    }
    view["resultType"] = json!("complete");
    view
}

/// A finished execution as the call's result.
fn completed(draft: &Value, execution: &Value, is_error: bool) -> Value {
    let text = if is_error {
        format!(
            "The approved {} failed: {}",
            draft["action_type"].as_str().unwrap_or_default(),
            execution["error"].as_str().unwrap_or("the adapter failed")
        )
    } else {
        format!(
            "The approved {} ran (execution {}).",
            draft["action_type"].as_str().unwrap_or_default(),
            execution["id"].as_str().unwrap_or_default()
        )
    };
    let mut task = summary(draft, "completed");
    task["result"] = json!({
        "content": [{"type": "text", "text": text}],
        "structuredContent": {"status": "executed", "draft": draft, "execution": execution},
        "isError": is_error,
    });
    task
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(status: &str, execution: Value, withdrawn: bool) -> Value {
        json!({
            "draft": {"id": "drft_1", "status": status, "action_type": "ticket.create",
                      "created_at": "2026-12-01T00:00:00Z", "updated_at": "2026-12-01T00:01:00Z"},
            "execution": execution,
            "withdrawnByAgent": withdrawn,
        })
    }

    #[test]
    fn a_pending_draft_asks_for_a_reviewer_at_the_review_page() {
        let task = detailed(&data("draft", Value::Null, false), "http://127.0.0.1:8081/review");
        assert_eq!(task["status"], "input_required");
        assert_eq!(task["inputRequests"]["review"]["params"]["mode"], "url");
        assert_eq!(
            task["inputRequests"]["review"]["params"]["url"],
            "http://127.0.0.1:8081/review"
        );
        assert_eq!(task["resultType"], "complete");
    }

    #[test]
    fn each_draft_status_is_one_task_status() {
        let url = "http://x/review";
        let status = |s, e, w| detailed(&data(s, e, w), url)["status"].clone();
        assert_eq!(status("confirmed", Value::Null, false), "working");
        assert_eq!(status("confirmed", json!({"status": "running"}), false), "working");
        assert_eq!(
            status("confirmed", json!({"status": "success", "id": "exec_1"}), false),
            "completed"
        );
        assert_eq!(
            status("failed", json!({"status": "failed", "error": "boom"}), false),
            "completed"
        );
        assert_eq!(status("confirmed", json!({"status": "indeterminate"}), false), "failed");
        assert_eq!(status("canceled", Value::Null, true), "cancelled");
        assert_eq!(status("canceled", Value::Null, false), "failed");
        assert_eq!(status("expired", Value::Null, false), "failed");
        assert_eq!(status("stale", Value::Null, false), "failed");
        let failed = detailed(
            &data("failed", json!({"status": "failed", "error": "boom"}), false),
            url,
        );
        assert_eq!(failed["result"]["isError"], true);
    }

    #[test]
    fn only_a_pending_draft_starts_a_task() {
        let made = json!({"status": "draft", "draft": {"id": "drft_1", "status": "draft"}});
        let task = created(&made).expect("a task");
        assert_eq!(task["resultType"], "task");
        assert_eq!(task["taskId"], "drft_1");
        assert!(task.get("result").is_none());
        assert_eq!(created(&json!({"status": "executed"})), None);
    }
}
