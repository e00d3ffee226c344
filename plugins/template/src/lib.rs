//! A minimal tool adapter to copy: one read tool, `hello.greet`, served at
//! `GET /api/agent/v1/hello?name=...`. See `docs/plugin-authoring.md`.

// Generates the Rust side of the `tool-adapter` world from the shared WIT.
wit_bindgen::generate!({ world: "tool-adapter", path: "../../wit" });

use openport::plugin::types::{Content, Effect, Risk};
use serde_json::{Value, json};

struct Template;

impl Guest for Template {
    /// The tools this plugin serves. The gateway calls it once, at load.
    fn describe() -> Result<Vec<ToolDescriptor>, Error> {
        Ok(vec![ToolDescriptor {
            name: "hello.greet".into(),
            description: "Greet someone by name.".into(),
            input_schema: json!({
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 100}},
                "additionalProperties": false
            })
            .to_string(),
            output_schema: None,
            effect: Effect::Read,
            risk: Risk::Low,
            required_scopes: vec!["hello.read".into()],
            requires_confirmation: false,
            http_path: Some("hello".into()),
            idempotent: true,
        }])
    }

    /// Reads have no plan; writes compute their impact here, from live state.
    fn plan(_ctx: CallContext, tool: String, _payload: String) -> Result<Impact, Error> {
        Err(Error::InvalidInput(format!("`{tool}` is a read and has no plan")))
    }

    /// Runs a tool. The payload was already validated against `input_schema`, and `ctx`
    /// carries the tenant and integration the gateway verified.
    fn invoke(ctx: CallContext, tool: String, payload: String) -> Result<ToolResult, Error> {
        if tool != "hello.greet" {
            return Err(Error::UnknownTool(tool));
        }
        let payload: Value = serde_json::from_str(&payload).map_err(|e| Error::InvalidInput(e.to_string()))?;
        let name = payload["name"].as_str().unwrap_or("there");
        let greeting = format!("Hello, {name}!");
        Ok(ToolResult {
            structured: Some(json!({"greeting": greeting, "tenant": ctx.tenant}).to_string()),
            content: vec![Content::Text(greeting)],
        })
    }
}

export!(Template);
