//! Allocates without bound when invoked: the host's memory limit must stop it.
include!("../../fixture.rs");

struct Fixture;

impl Guest for Fixture {
    fn describe() -> Result<Vec<ToolDescriptor>, Error> {
        Ok(vec![descriptor("hostile.memory", Risk::Low)])
    }
    fn plan(_: CallContext, _: String, _: String) -> Result<Impact, Error> {
        Err(Error::InvalidInput("a read".into()))
    }
    fn invoke(_: CallContext, _: String, _: String) -> Result<ToolResult, Error> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(vec![1_u8; 8 << 20]);
            std::hint::black_box(&hoard);
        }
    }
}

export!(Fixture);
