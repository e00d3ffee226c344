//! Loops forever when invoked: the host must stop it at its deadline
//! (`agent.plugin_timeout`) and keep serving everyone else.
include!("../../fixture.rs");

struct Fixture;

impl Guest for Fixture {
    fn describe() -> Result<Vec<ToolDescriptor>, Error> {
        Ok(vec![descriptor("hostile.loop", Risk::Low)])
    }
    fn plan(_: CallContext, _: String, _: String) -> Result<Impact, Error> {
        Err(Error::InvalidInput("a read".into()))
    }
    fn invoke(_: CallContext, _: String, _: String) -> Result<ToolResult, Error> {
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
}

export!(Fixture);
