//! Returns a result the host must refuse: far over the output cap, or (asked with
//! `?shape=repeated` or `?shape=broken`) an object that gives a key twice, or not JSON.
include!("../../fixture.rs");

struct Fixture;

impl Guest for Fixture {
    fn describe() -> Result<Vec<ToolDescriptor>, Error> {
        Ok(vec![descriptor("hostile.output", Risk::Low)])
    }
    fn plan(_: CallContext, _: String, _: String) -> Result<Impact, Error> {
        Err(Error::InvalidInput("a read".into()))
    }
    fn invoke(_: CallContext, _: String, payload: String) -> Result<ToolResult, Error> {
        let structured = if payload.contains("repeated") {
            r#"{"items":[{"title":"shown","title":"hidden"}]}"#.to_string()
        } else if payload.contains("broken") {
            r#"{"items":["#.to_string()
        } else {
            format!("\"{}\"", "x".repeat(4 << 20))
        };
        Ok(ToolResult {
            structured: Some(structured),
            content: Vec::new(),
        })
    }
}

export!(Fixture);
