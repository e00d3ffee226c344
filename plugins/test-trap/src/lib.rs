//! Panics when invoked, with a message that must not reach the agent. With the operator's
//! config value `fail_describe` set, its `describe` fails instead, so the load is refused.
include!("../../fixture.rs");

struct Fixture;

impl Guest for Fixture {
    fn describe() -> Result<Vec<ToolDescriptor>, Error> {
        if openport::plugin::host::config_get("fail_describe")?.is_some() {
            return Err(Error::Internal("describe refused on purpose".into()));
        }
        Ok(vec![descriptor("hostile.trap", Risk::Low)])
    }
    fn plan(_: CallContext, _: String, _: String) -> Result<Impact, Error> {
        Err(Error::InvalidInput("a read".into()))
    }
    fn invoke(_: CallContext, _: String, _: String) -> Result<ToolResult, Error> {
        panic!("secret internal state: password=hunter2");
    }
}

export!(Fixture);
