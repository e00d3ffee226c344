//! Writes that never finish: the crash tests kill the gateway while one runs.
//!
//! - `hostile.slow_write` loops from the start. Its plugin does not record effects by
//!   execution id, so the next start must mark its execution `indeterminate`, never re-run it.
//! - `hostile.resumable_write` makes its effect (a counter, `effects`), records its result
//!   under its execution id (`done/<id>`), and only then loops: a node that dies there has
//!   made the effect without answering. Run again with the same id it answers from the
//!   record. It counts every call it gets (`calls/<id>`) so the tests can tell it ran twice.
include!("../../fixture.rs");

use openport::plugin::host;

struct Fixture;

fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

fn write(name: &str) -> ToolDescriptor {
    let mut d = descriptor(name, Risk::Medium);
    d.effect = Effect::Write;
    d.http_path = None;
    d
}

fn resumable_write() -> Result<ToolResult, Error> {
    let id = host::execution_id().ok_or_else(|| Error::Internal("a write's invoke has an execution id".into()))?;
    host::kv_increment(&format!("calls/{id}"), 1)?;
    let done = format!("done/{id}");
    if let Some(result) = host::kv_get(&done)? {
        return Ok(ToolResult {
            structured: Some(result),
            content: Vec::new(),
        });
    }
    let effect = host::kv_increment("effects", 1)?;
    host::kv_set(&done, &format!(r#"{{"executionId":"{id}","effect":{effect}}}"#))?;
    spin()
}

impl Guest for Fixture {
    fn describe() -> Result<Vec<ToolDescriptor>, Error> {
        Ok(vec![write("hostile.slow_write"), write("hostile.resumable_write")])
    }
    fn plan(_: CallContext, _: String, _: String) -> Result<Impact, Error> {
        Ok(Impact {
            summary: "Write slowly".into(),
            detail: "{}".into(),
        })
    }
    fn invoke(_: CallContext, tool: String, _: String) -> Result<ToolResult, Error> {
        match tool.as_str() {
            "hostile.resumable_write" => resumable_write(),
            _ => spin(),
        }
    }
}

export!(Fixture);
