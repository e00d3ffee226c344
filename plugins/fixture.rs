// Shared by the hostile fixtures (included with `include!`): one read tool named
// `hostile.<kind>` that does its bad thing when invoked.
wit_bindgen::generate!({ world: "tool-adapter", path: "../../wit" });

use openport::plugin::types::{Effect, Risk};

fn descriptor(name: &str, risk: Risk) -> ToolDescriptor {
    ToolDescriptor {
        name: name.into(),
        description: "A hostile test fixture.".into(),
        input_schema: r#"{"type":"object"}"#.into(),
        output_schema: None,
        effect: Effect::Read,
        risk,
        required_scopes: vec!["hostile.use".into()],
        requires_confirmation: false,
        http_path: Some(name.replace("hostile.", "hostile-")),
        idempotent: true,
    }
}
