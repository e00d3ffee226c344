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
    // A read's output schema describes its structured content. An action's result over
    // MCP is the draft or execution shape instead, so its schema is not advertised.
    if read && described["outputSchema"]["type"] == "object" {
        tool["outputSchema"] = described["outputSchema"].clone();
    }
    tool
}

/// A successful `tools/call`. A read returns the adapter's content (its structured result
/// as text when it gave no content); an action returns the `/actions` data.
pub fn call_result(reply: Reply, request_id: &str) -> Value {
    let structured = reply.data.as_object().is_some_and(|m| !m.is_empty());
    let mut content: Vec<Value> = reply.content.iter().map(block).collect();
    if content.is_empty() {
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
