//! OpenPort tools and results as MCP shapes.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::outcome::{Refused, Reply};
use crate::plugin::Content;
use crate::protocol::{Data, Envelope};

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

/// A successful `tools/call` (MCP's `CallToolResult`).
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallResult {
    content: Vec<Value>,
    is_error: bool,
    #[serde(rename = "_meta")]
    meta: ResultMeta,
    #[serde(skip_serializing_if = "Option::is_none")]
    structured_content: Option<Box<RawValue>>,
    /// `complete` on the 2026-07-28 wire, absent on the session revisions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result_type: Option<&'static str>,
}

#[derive(Debug, serde::Serialize)]
struct ResultMeta {
    openport: OpenPortMeta,
}

#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct OpenPortMeta {
    code: &'static str,
    request_id: String,
}

/// A successful `tools/call`. A read returns the adapter's content (its structured result
/// as text when it gave no content); an action returns the `/actions` data.
///
/// The data is serialized at most once (a read with nothing to redact is not serialized at
/// all: its data is the plugin's own JSON text): the text block and `structuredContent`
/// carry the same bytes, so a client reading either sees the same JSON.
pub fn call_result(reply: Reply, request_id: &str) -> CallResult {
    let structured = reply.data.is_nonempty_object();
    let mut content: Vec<Value> = reply.content.iter().map(block).collect();
    // Without the adapter's own content: a write's outcome as a sentence an agent can act
    // on, then the data as JSON text (for clients that do not read structured content).
    let as_text = content.is_empty();
    let sentence = match &reply.data {
        Data::Value(value) if as_text => write_outcome(value),
        _ => None,
    };
    let data = (as_text || structured).then(|| reply.data.into_json());
    if let Some(data) = data.as_ref().filter(|_| as_text) {
        if let Some(sentence) = sentence {
            content.push(json!({"type": "text", "text": sentence}));
        }
        content.push(json!({"type": "text", "text": data.get()}));
    }
    let structured_content = data.filter(|_| structured);
    CallResult {
        content,
        is_error: false,
        meta: ResultMeta {
            openport: OpenPortMeta {
                code: reply.code.name,
                request_id: request_id.to_string(),
            },
        },
        structured_content,
        result_type: None,
    }
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
    let envelope = Envelope::failure(refused.failure.clone(), request_id);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_without_content_carries_its_data_as_text_and_as_structured_content() {
        let data = json!({"items": [{"id": "txn_1", "note": "a \"quoted\" word"}], "hasMore": false});
        let mut result = call_result(Reply::ok(data.clone()), "req_1");
        result.result_type = Some("complete");
        let wire: Value = serde_json::from_slice(&serde_json::to_vec(&result).expect("serializes")).expect("JSON");
        let text = wire["content"][0]["text"].as_str().expect("a text block");
        assert_eq!(serde_json::from_str::<Value>(text).expect("the text is JSON"), data);
        assert_eq!(wire["structuredContent"], data);
        assert_eq!(wire["isError"], false);
        assert_eq!(wire["_meta"]["openport"]["requestId"], "req_1");
        assert_eq!(wire["resultType"], "complete");
        // The same result inside a task view goes through `Value`.
        assert_eq!(serde_json::to_value(&result).expect("a value"), wire);
    }

    #[test]
    fn content_from_the_adapter_is_kept_and_empty_data_is_not_structured() {
        let reply = Reply {
            content: vec![Content::Text("hello".into())],
            ..Reply::ok(json!({}))
        };
        let wire = serde_json::to_value(call_result(reply, "req_2")).expect("a value");
        assert_eq!(wire["content"], json!([{"type": "text", "text": "hello"}]));
        assert!(wire.get("structuredContent").is_none());
        assert!(wire.get("resultType").is_none(), "absent on the session revisions");
    }
}
