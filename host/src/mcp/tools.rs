//! OpenPort tools and results as MCP shapes.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::outcome::{Refused, Reply};
use crate::plugin::Content;
use crate::protocol::Envelope;

/// `tools/list`: the manifest's tools (already filtered by scopes and Cedar), each with its
/// schema, MCP annotations derived from the OpenPort metadata, and that metadata in `_meta`.
pub fn list(manifest: &Value) -> Value {
    let tools: Vec<Value> = manifest["tools"]
        .as_array()
        .map(|tools| tools.iter().map(tool).collect())
        .unwrap_or_default();
    json!({ "tools": tools })
}

fn tool(described: &Value) -> Value {
    let effect = described["effect"].as_str().unwrap_or("write");
    let read = effect == "read";
    let mut tool = json!({
        "name": described["name"],
        "description": described["description"],
        "inputSchema": described["inputSchema"],
        "annotations": {
            "readOnlyHint": read,
            "destructiveHint": effect == "delete",
            "idempotentHint": described["idempotent"].as_bool().unwrap_or(false),
            "openWorldHint": false,
        },
        "_meta": {
            "openport": {
                "risk": described["risk"],
                "requiredScopes": described["requiredScopes"],
                "requiresConfirmation": described["requiresConfirmation"],
                "draftPolicy": described["draftPolicy"],
                "rateLimitHints": described["rateLimitHints"],
                "kind": described["kind"],
                "effect": effect,
                "http": described["http"],
            }
        },
    });
    // A read that may finish in the background says so (MCP Tasks extension).
    if let Some(support) = described["taskSupport"].as_str() {
        tool["execution"] = json!({"taskSupport": support});
    }
    // A read's output schema describes its structured content. An action's result over
    // MCP is the draft or execution shape instead, so its schema is not advertised.
    if read && described["outputSchema"]["type"] == "object" {
        tool["outputSchema"] = described["outputSchema"].clone();
    }
    tool
}

/// The progress a read reported, as notifications for the client's `progressToken`.
pub fn progress_notifications(token: Option<&Value>, reply: &Reply) -> Vec<Value> {
    let Some(token) = token else { return Vec::new() };
    reply
        .progress
        .iter()
        .map(|p| {
            let mut params = json!({"progressToken": token, "progress": p.progress});
            if let Some(total) = p.total {
                params["total"] = json!(total);
            }
            if let Some(message) = &p.message {
                params["message"] = json!(message);
            }
            json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": params})
        })
        .collect()
}

/// A successful `tools/call`. A read returns the adapter's content (its structured result
/// as text when it gave no content); an action returns the `/actions` data.
pub fn call_result(reply: Reply, request_id: &str) -> Value {
    let structured = reply.data.as_object().is_some_and(|m| !m.is_empty());
    let mut content: Vec<Value> = reply.content.iter().map(block).collect();
    if content.is_empty() {
        // A write's outcome as a sentence an agent can act on, then the data as JSON text
        // (for clients that do not read structured content).
        if let Some(sentence) = write_outcome(&reply.data) {
            content.push(json!({"type": "text", "text": sentence}));
        }
        content.push(json!({"type": "text", "text": reply.data.to_string()}));
    }
    let mut result = json!({
        "content": content,
        "isError": false,
        "_meta": {"openport": {"code": reply.code.name, "requestId": request_id}},
    });
    if structured {
        result["structuredContent"] = reply.data;
    }
    result
}

/// What happened to a write, in one sentence: drafted (and what happens next), or executed.
fn write_outcome(data: &Value) -> Option<String> {
    let draft = &data["draft"];
    let id = draft["id"].as_str()?;
    match data["status"].as_str()? {
        "draft" => {
            let action = draft["action_type"].as_str().unwrap_or("the action");
            let until = draft["expires_at"]
                .as_str()
                .map(|t| format!(" until {t}"))
                .unwrap_or_default();
            Some(format!(
                "Draft {id} of {action} was created and nothing has run yet: it waits for a human reviewer{until}. \
                 Do not retry it. Read its outcome with the REST call GET /api/agent/v1/drafts/{id}?wait=30, \
                 or tell the user it needs approval."
            ))
        }
        "executed" => {
            let execution = &data["execution"];
            let status = execution["status"].as_str().unwrap_or("finished");
            let replayed = if data["replayed"] == true {
                " (a replay of an earlier identical call)"
            } else {
                ""
            };
            Some(format!(
                "Executed without review{replayed}: execution {} {status}; draft {id} records it.",
                execution["id"].as_str().unwrap_or("?")
            ))
        }
        _ => None,
    }
}

/// A governance refusal of a `tools/call`: a tool error the model can read and react to,
/// with the REST envelope (its `agent.*` code, message and details) as structured content.
pub fn refusal_result(refused: &Refused, request_id: &str) -> Value {
    let envelope = Envelope::failure(&refused.failure, request_id);
    let text = format!("{}: {}", refused.failure.code.name, refused.failure.message);
    json!({
        "content": [{"type": "text", "text": text}],
        "structuredContent": envelope,
        "isError": true,
        "_meta": {"openport": {"code": refused.failure.code.name, "requestId": request_id,
                               "retryable": refused.failure.code.retryable}},
    })
}

fn block(content: &Content) -> Value {
    match content {
        Content::Text(text) | Content::Json(text) => json!({"type": "text", "text": text}),
        Content::Image { mime_type, data } => {
            json!({"type": "image", "mimeType": mime_type, "data": STANDARD.encode(data)})
        }
        Content::Audio { mime_type, data } => {
            json!({"type": "audio", "mimeType": mime_type, "data": STANDARD.encode(data)})
        }
        Content::Resource {
            uri,
            mime_type,
            text,
            blob,
        } => {
            let mut resource = json!({"uri": uri});
            if let Some(mime_type) = mime_type {
                resource["mimeType"] = json!(mime_type);
            }
            match (text, blob) {
                (Some(text), _) => resource["text"] = json!(text),
                (None, Some(blob)) => resource["blob"] = json!(STANDARD.encode(blob)),
                (None, None) => resource["text"] = json!(""),
            }
            json!({"type": "resource", "resource": resource})
        }
    }
}
