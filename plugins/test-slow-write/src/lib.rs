//! A write that never finishes: the crash tests kill the gateway while it runs, and the
//! next start must mark its execution `indeterminate` instead of re-running it.
include!("../../fixture.rs");

struct Fixture;

impl Guest for Fixture {
    fn describe() -> Result<Vec<ToolDescriptor>, Error> {
        let mut d = descriptor("hostile.slow_write", Risk::Medium);
        d.effect = Effect::Write;
        d.http_path = None;
        Ok(vec![d])
    }
    fn plan(_: CallContext, _: String, _: String) -> Result<Impact, Error> {
        Ok(Impact {
            summary: "Write slowly".into(),
            detail: "{}".into(),
        })
    }
    fn invoke(_: CallContext, _: String, _: String) -> Result<ToolResult, Error> {
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
}

export!(Fixture);
