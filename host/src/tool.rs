//! What a tool is, independent of who serves or authorizes it: its risk and effect, the
//! descriptor a plugin reports, and the facts Cedar decides on. The bottom of the tool
//! layer: `plugin`, `catalog` and `authz` all import it, and it imports none of them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Risk classes, ordered: an override may only move a tool up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Risk {
    Low,
    Medium,
    High,
    Critical,
}

impl Risk {
    pub fn as_str(self) -> &'static str {
        match self {
            Risk::Low => "low",
            Risk::Medium => "medium",
            Risk::High => "high",
            Risk::Critical => "critical",
        }
    }

    /// 1 (low) to 4 (critical), for Cedar comparisons.
    pub fn level(self) -> i64 {
        match self {
            Risk::Low => 1,
            Risk::Medium => 2,
            Risk::High => 3,
            Risk::Critical => 4,
        }
    }
}

impl fmt::Display for Risk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Effect {
    Read,
    Write,
    Delete,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Read => "read",
            Effect::Write => "write",
            Effect::Delete => "delete",
        }
    }
}

/// One schema violation, in the reference's `details.issues` shape.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Issue {
    pub code: &'static str,
    pub path: Vec<String>,
    pub message: String,
}

/// What a tool descriptor from a plugin says, before the host checks it.
#[derive(Debug, Clone)]
pub struct Descriptor {
    pub name: String,
    pub description: String,
    pub input_schema: String,
    pub output_schema: Option<String>,
    pub effect: Effect,
    pub risk: Risk,
    pub required_scopes: Vec<String>,
    pub requires_confirmation: bool,
    pub http_path: Option<String>,
    pub idempotent: bool,
}

/// The resource as Cedar sees it: a tool's name and metadata.
#[derive(Debug, Clone)]
pub struct ToolFacts<'a> {
    pub name: &'a str,
    pub risk: Risk,
    pub effect: Effect,
    pub required_scopes: &'a [String],
    pub plugin: &'a str,
}
