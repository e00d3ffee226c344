//! Returns a result far over the output cap: the host must refuse it.
include!("../../fixture.rs");

struct Fixture;

impl Guest for Fixture {
    fn describe() -> Result<Vec<ToolDescriptor>, Error> {
        Ok(vec![descriptor("hostile.output", Risk::Low)])
    }
    fn plan(_: CallContext, _: String, _: String) -> Result<Impact, Error> {
        Err(Error::InvalidInput("a read".into()))
    }
    fn invoke(_: CallContext, _: String, _: String) -> Result<ToolResult, Error> {
        let big = format!("\"{}\"", "x".repeat(4 << 20));
        Ok(ToolResult {
            structured: Some(big),
            content: Vec::new(),
        })
    }
}

export!(Fixture);
