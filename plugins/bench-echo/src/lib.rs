//! Benchmark fixture: the trivial adapter of `bench/run`. One read tool that echoes its
//! payload. Its name comes from the manifest's `grants.config.name` (default `echo`), so one
//! component can be loaded many times as different plugins: `<name>.read` served at
//! `GET /api/agent/v1/<name>`, scope `bench.read`.

wit_bindgen::generate!({ world: "tool-adapter", path: "../../wit" });

use openport::plugin::host;
use openport::plugin::types::{Effect, Risk};

fn name() -> String {
    host::config_get("name").ok().flatten().unwrap_or_else(|| "echo".into())
}

struct Echo;

impl Guest for Echo {
    fn describe() -> Result<Vec<ToolDescriptor>, Error> {
        let name = name();
        Ok(vec![ToolDescriptor {
            name: format!("{name}.read"),
            description: "Echoes its payload (benchmark fixture).".into(),
            input_schema:
                r#"{"type":"object","properties":{"q":{"type":"string","maxLength":64}},"additionalProperties":false}"#
                    .into(),
            output_schema: None,
            effect: Effect::Read,
            risk: Risk::Low,
            required_scopes: vec!["bench.read".into()],
            requires_confirmation: false,
            http_path: Some(name),
            idempotent: true,
        }])
    }

    fn plan(_ctx: CallContext, tool: String, _payload: String) -> Result<Impact, Error> {
        Err(Error::InvalidInput(format!("`{tool}` is a read")))
    }

    fn invoke(_ctx: CallContext, _tool: String, payload: String) -> Result<ToolResult, Error> {
        Ok(ToolResult {
            structured: Some(format!("{{\"echo\":{payload}}}")),
            content: Vec::new(),
        })
    }
}

export!(Echo);
