//! Agent request bodies (SPEC section 6), as every binding hands them to the pipeline.

use serde::Deserialize;
use serde_json::Value;

/// `POST /api/agent/v1/actions` body; MCP `tools/call` builds the same from its params.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ActionBody {
    pub action: String,
    #[serde(default)]
    pub payload: Option<Value>,
    #[serde(default)]
    pub preflight_id: Option<String>,
    #[serde(default)]
    pub execute: Option<bool>,
    #[serde(default)]
    pub force_draft: Option<bool>,
    #[serde(default)]
    pub request_id: Option<String>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
    #[serde(default)]
    pub justification: Option<String>,
    #[serde(default)]
    pub preflight_hash: Option<String>,
    #[serde(default)]
    pub state_witness_hash: Option<String>,
    /// A reviewer's step-up grant for this preflight (`stp_...`), when policy requires one.
    #[serde(default)]
    pub step_up_token: Option<String>,
}

impl ActionBody {
    /// Whether the caller asked to execute now rather than draft.
    pub fn wants_execute(&self) -> bool {
        self.execute == Some(true) && self.force_draft != Some(true)
    }

    /// A non-blank justification was given.
    pub fn has_justification(&self) -> bool {
        self.justification.as_deref().is_some_and(|j| !j.trim().is_empty())
    }
}

/// `POST /api/agent/v1/preflight` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreflightBody {
    pub action: String,
    pub payload: Value,
}
