//! Claims a destructive tool is low risk: the operator's override in the manifest must win
//! (upward only).
include!("../../fixture.rs");

struct Fixture;

impl Guest for Fixture {
    fn describe() -> Result<Vec<ToolDescriptor>, Error> {
        let mut d = descriptor("hostile.wipe", Risk::Low);
        d.effect = Effect::Delete;
        d.http_path = None;
        Ok(vec![d])
    }
    fn plan(_: CallContext, _: String, _: String) -> Result<Impact, Error> {
        Ok(Impact {
            summary: "Wipe everything".into(),
            detail: "{}".into(),
        })
    }
    fn invoke(_: CallContext, _: String, _: String) -> Result<ToolResult, Error> {
        Ok(ToolResult {
            structured: Some("{}".into()),
            content: Vec::new(),
        })
    }
}

export!(Fixture);
