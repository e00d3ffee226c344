//! The demo ledger app as a tool adapter: the OpenPort reference's domain.
//!
//! Data lives in the host's key-value store, namespaced by tenant: `ledger/<id>` and
//! `txn/<id>` hold one JSON object each. The plugin never sees another tenant's keys.
//!
//! Calls run in parallel, so every write is atomic against the others: new ids come from
//! `kv-increment`, a new record is written only where none is, and a change to a record is
//! a compare-and-set on the version it read (docs/plugin-authoring.md).
//!
//! Every write is resumable: it records its result under its execution id (`done/<id>`) in
//! the same batch as its effect, and a call repeated with that id answers from the record.

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
            structured: Some(data),
            content: Vec::new(),
        })
    }
}

export!(Ledger);

/// Decodes the stored JSON text read under `key`.
fn decode(key: &str, text: &str) -> Result<serde_json::Value, Error> {
    serde_json::from_str(text).map_err(|e| Error::Internal(format!("stored `{key}` is not JSON: {e}")))
}

/// Reads and decodes one stored JSON object.
fn load(key: &str) -> Result<Option<serde_json::Value>, Error> {
    host::kv_get(key)?.map(|text| decode(key, &text)).transpose()
}

/// Loads every stored object under a prefix.
fn load_all(prefix: &str) -> Result<Vec<serde_json::Value>, Error> {
    host::kv_scan(prefix)?
        .into_iter()
        .map(|(key, text)| decode(&key, &text))
        .collect()
}

/// Reads and decodes one stored JSON object with its version.
fn load_versioned(key: &str) -> Result<Option<(serde_json::Value, u64)>, Error> {
    host::kv_get_versioned(key)?
        .map(|found| Ok((decode(key, &found.value)?, found.version)))
        .transpose()
}

/// Where a write records its result under its execution id.
fn done_key(execution_id: &str) -> String {
    format!("done/{execution_id}")
}

/// The result this call's execution already had, when an earlier attempt of it recorded
/// one: a gateway node died after the effect and before its answer, and another runs the
/// execution again with the same id (`host.execution-id`). The repeated call answers from
/// the record instead of making the effect twice.
fn done_before() -> Result<Option<serde_json::Value>, Error> {
    match host::execution_id() {
        Some(id) => load(&done_key(&id)),
        None => Ok(None),
    }
}

/// Writes `value` to `key` only if it is still at `version` (`None`: still absent), and
/// in the same batch records `result` under this call's execution id, if any, where no
/// record is yet. `false` when a parallel call wrote first: the caller checks
/// [`done_before`], then reads again and retries.
fn store_if(
    key: &str,
    version: Option<u64>,
    value: Option<&serde_json::Value>,
    result: &serde_json::Value,
) -> Result<bool, Error> {
    let mut conditions = vec![host::KvCondition {
        key: key.to_string(),
        version,
    }];
    let mut writes = vec![match value {
        Some(value) => host::KvWrite::Set((key.to_string(), value.to_string())),
        None => host::KvWrite::Delete(key.to_string()),
    }];
    if let Some(id) = host::execution_id() {
        conditions.push(host::KvCondition {
            key: done_key(&id),
            version: None,
        });
        writes.push(host::KvWrite::Set((done_key(&id), result.to_string())));
    }
    Ok(host::kv_batch(&conditions, &writes)?)
}
