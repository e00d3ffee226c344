//! The ledger's State Witness (profile `openport-v1-state-witness`): the reference's
//! `resource_version` snapshot of the transaction a write names. The operator grants it the
//! ledger adapter's key-value namespace (`grants.kv_namespace = "ledger"`), read through
//! the same host capability.

wit_bindgen::generate!({ world: "state-witness", path: "../../wit" });

use openport::plugin::host;
use serde_json::{Value, json};

struct LedgerWitness;

const WITNESSED: &[&str] = &["transaction.update", "transaction.delete", "transaction.hard_delete"];

fn snapshot(tool: &str, payload: &str) -> Result<Value, Error> {
    if !WITNESSED.contains(&tool) {
        return Err(Error::UnknownTool(tool.into()));
    }
    let payload: Value = serde_json::from_str(payload).map_err(|e| Error::InvalidInput(e.to_string()))?;
    let id = payload["transactionId"]
        .as_str()
        .ok_or_else(|| Error::InvalidInput("transactionId required".into()))?;
    Ok(match host::kv_get(&format!("txn/{id}"))? {
        None => json!({"kind": "resource_version", "resource": "transaction", "id": id, "exists": false}),
        Some(text) => {
            let t: Value = serde_json::from_str(&text).map_err(|e| Error::Internal(e.to_string()))?;
            json!({
                "kind": "resource_version",
                "resource": "transaction",
                "id": id,
                "ledger_id": t["ledger_id"],
                "updated_at": t["updated_at"],
                "is_deleted": t["is_deleted"],
            })
        }
    })
}

impl Guest for LedgerWitness {
    fn witnessed_tools() -> Vec<String> {
        WITNESSED.iter().map(|t| t.to_string()).collect()
    }

    fn capture(_ctx: CallContext, tool: String, payload: String) -> Result<String, Error> {
        Ok(snapshot(&tool, &payload)?.to_string())
    }

    fn verify(_ctx: CallContext, tool: String, payload: String, witness: String) -> Result<Verdict, Error> {
        let then: Value = serde_json::from_str(&witness).map_err(|e| Error::InvalidInput(e.to_string()))?;
        let now = snapshot(&tool, &payload)?;
        Ok(if now == then {
            Verdict::Unchanged
        } else {
            Verdict::Changed(format!("transaction changed: was {then}, is {now}"))
        })
    }
}

export!(LedgerWitness);
