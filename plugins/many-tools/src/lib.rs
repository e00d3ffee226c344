//! Benchmark fixture: 500 read tools (`bulk.t000` to `bulk.t499`), for measuring a large
//! manifest. Each answers with its own name.

wit_bindgen::generate!({ world: "tool-adapter", path: "../../wit" });

use openport::plugin::types::{Effect, Risk};

struct ManyTools;

impl Guest for ManyTools {
    fn describe() -> Result<Vec<ToolDescriptor>, Error> {
        Ok((0..500)
            .map(|i| ToolDescriptor {
                name: format!("bulk.t{i:03}"),
                description: format!("Bulk tool number {i}."),
                input_schema: r#"{"type":"object","properties":{"q":{"type":"string"}},"additionalProperties":false}"#
                    .into(),
                output_schema: None,
                effect: Effect::Read,
                risk: Risk::Low,
                required_scopes: vec!["bulk.read".into()],
                requires_confirmation: false,
                http_path: Some(format!("bulk-{i:03}")),
                idempotent: true,
            })
            .collect())
    }
    fn plan(_: CallContext, _: String, _: String) -> Result<Impact, Error> {
        Err(Error::InvalidInput("reads have no plan".into()))
    }
    fn invoke(_: CallContext, tool: String, _: String) -> Result<ToolResult, Error> {
        Ok(ToolResult {
            structured: Some(format!("{{\"tool\":\"{tool}\"}}")),
            content: Vec::new(),
        })
    }
}

export!(ManyTools);
