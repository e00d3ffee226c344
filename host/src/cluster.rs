//! What nodes sharing a store keep in step beyond the rows themselves: the active plugin
//! versions and the active policy set, which each node holds compiled in memory.
//!
//! A node that changes either (a plugin added, replaced, rolled back or removed; a policy
//! reload) records it in the store and moves `cluster.config_version`. Every node reads
//! that counter four times a second and, when it moved, applies the store's plugin registry
//! and policy set. What a node cannot apply it does not: the version it has keeps
//! serving, and `/readyz` and the metrics say so until it can.
//!
//! On the embedded store there is one node: none of this runs.

use serde::{Deserialize, Serialize};

use crate::authz::PolicySource;

/// The counter a change moves.
pub const CONFIG_VERSION: &str = "cluster.config_version";
/// The active operator policy set (JSON [`StoredPolicies`]).
pub const POLICY_SET: &str = "cluster.policy_set";
/// How often a node looks for changes: a change reaches every node within about this.
pub const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_millis(250);
/// The name a failed sync is reported under on `/readyz`.
pub const POLICIES_UNAVAILABLE: &str = "(policies)";

/// The operator's policies as the store keeps them for every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPolicies {
    pub base: String,
    pub sources: Vec<(String, String)>,
}

impl StoredPolicies {
    pub fn new(base: &str, sources: &[PolicySource]) -> StoredPolicies {
        StoredPolicies {
            base: base.to_string(),
            sources: sources.iter().map(|s| (s.file.clone(), s.text.clone())).collect(),
        }
    }

    pub fn sources(&self) -> Vec<PolicySource> {
        self.sources.iter().map(|(f, t)| PolicySource::new(f, t)).collect()
    }
}
