//! The demo ledger app as a tool adapter: the OpenPort reference's domain.
//!
//! Data lives in the host's key-value store, namespaced by tenant: `ledger/<id>` and
//! `txn/<id>` hold one JSON object each. The plugin never sees another tenant's keys.
//!
//! Calls run in parallel, so every write is atomic against the others: new ids come from
//! `kv-increment`, a new record is written only where none is, and a change to a record is
//! a compare-and-set on the version it read (docs/plugin-authoring.md).

mod tools;

wit_bindgen::generate!({ world: "tool-adapter", path: "../../wit" });

use openport::plugin::host;

struct Ledger;

impl Guest for Ledger {
    fn describe() -> Result<Vec<ToolDescriptor>, Error> {
        Ok(tools::descriptors())
    }

    fn plan(_ctx: CallContext, tool: String, payload: String) -> Result<Impact, Error> {
        let payload = tools::parse_payload(&payload)?;
        tools::plan(&tool, &payload)
    }

    fn invoke(ctx: CallContext, tool: String, payload: String) -> Result<ToolResult, Error> {
        let payload = tools::parse_payload(&payload)?;
        let data = tools::invoke(&tool, &payload, ctx.allow_sensitive_fields)?;
        Ok(ToolResult {
            structured: Some(data.to_string()),
            content: Vec::new(),
        })
    }
}

export!(Ledger);

/// Reads and decodes one stored JSON object.
fn load(key: &str) -> Result<Option<serde_json::Value>, Error> {
    match host::kv_get(key)? {
        None => Ok(None),
        Some(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| Error::Internal(format!("stored `{key}` is not JSON: {e}"))),
    }
}

/// Loads every stored object under a prefix.
fn load_all(prefix: &str) -> Result<Vec<serde_json::Value>, Error> {
    let mut out = Vec::new();
    for key in host::kv_list(prefix)? {
        if let Some(value) = load(&key)? {
            out.push(value);
        }
    }
    Ok(out)
}

/// Reads and decodes one stored JSON object with its version.
fn load_versioned(key: &str) -> Result<Option<(serde_json::Value, u64)>, Error> {
    match host::kv_get_versioned(key)? {
        None => Ok(None),
        Some(found) => serde_json::from_str(&found.value)
            .map(|value| Some((value, found.version)))
            .map_err(|e| Error::Internal(format!("stored `{key}` is not JSON: {e}"))),
    }
}

/// Writes `value` only if `key` is still at `version` (`None`: still absent). `false` when
/// a parallel call wrote it first: the caller reads again and retries.
fn store_if(key: &str, version: Option<u64>, value: &serde_json::Value) -> Result<bool, Error> {
    Ok(host::kv_compare_and_set(key, version, &value.to_string())?.is_some())
}
