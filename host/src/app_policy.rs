//! An app's own policies, typed: its data policy (`{network, data, rate_class}`) and its
//! auto-execute policy (`{writes, high_risk}`). Parsed once where they enter (the admin
//! plane, via `apps`, and the store when it reads a row); every other module reads fields.
//! The serialized form is the reference's: absent sections are left out.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::attr::Attr;
use crate::clock;

/// `{network, data, rate_class}`: where an app may call from, what data it may see, and
/// its admission class.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<DataPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_class: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkPolicy {
    /// IP addresses and CIDRs; empty allows every address.
    #[serde(default)]
    pub allowed_ips: Vec<String>,
    /// SHA-256 fingerprints (lowercase hex of the DER) of the TLS client certificates the
    /// app's requests must come with (mutual TLS); empty: no certificate is required.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_certificates: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_ledger_ids: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_org_ids: Option<Vec<String>>,
    /// 1 to 3650 days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_days: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_sensitive_fields: Option<bool>,
}

/// The most days a `max_days` window may span.
pub const MAX_DAYS_LIMIT: i64 = 3650;

impl AppPolicy {
    /// The addresses the app may call from; empty: any.
    pub fn allowed_ips(&self) -> &[String] {
        self.network.as_ref().map_or(&[], |n| &n.allowed_ips)
    }

    /// The client certificates (SHA-256 fingerprints) the app's requests must carry;
    /// empty: none is required.
    pub fn client_certificates(&self) -> &[String] {
        self.network.as_ref().map_or(&[], |n| &n.client_certificates)
    }

    /// The app's `max_days`, clamped to 1..3650; 0 when unset (no limit).
    pub fn max_days(&self) -> i64 {
        self.data
            .as_ref()
            .and_then(|d| d.max_days)
            .filter(|d| *d > 0)
            .map_or(0, |d| d.min(MAX_DAYS_LIMIT))
    }

    /// Whether the app may see sensitive fields (the default).
    pub fn allows_sensitive_fields(&self) -> bool {
        self.data.as_ref().and_then(|d| d.allow_sensitive_fields) != Some(false)
    }

    pub fn allowed_ledger_ids(&self) -> &[String] {
        self.data
            .as_ref()
            .and_then(|d| d.allowed_ledger_ids.as_deref())
            .unwrap_or(&[])
    }

    pub fn allowed_org_ids(&self) -> &[String] {
        self.data
            .as_ref()
            .and_then(|d| d.allowed_org_ids.as_deref())
            .unwrap_or(&[])
    }

    pub fn rate_class(&self) -> Option<&str> {
        self.rate_class.as_deref()
    }

    /// The data policy as Cedar's `principal.data_policy` (the base schema's `DataPolicy`).
    pub fn cedar_data_policy(&self) -> Attr {
        let (ledgers, orgs) = (self.allowed_ledger_ids(), self.allowed_org_ids());
        let strings = |items: &[String]| Attr::Set(items.iter().cloned().map(Attr::String).collect());
        Attr::Record(BTreeMap::from([
            ("restrict_ledgers".to_string(), Attr::Bool(!ledgers.is_empty())),
            ("allowed_ledger_ids".to_string(), strings(ledgers)),
            ("restrict_orgs".to_string(), Attr::Bool(!orgs.is_empty())),
            ("allowed_org_ids".to_string(), strings(orgs)),
            ("max_days".to_string(), Attr::Long(self.max_days())),
            (
                "allow_sensitive_fields".to_string(),
                Attr::Bool(self.allows_sensitive_fields()),
            ),
        ]))
    }
}

/// `{writes, high_risk}`: when an app's actions may run without a reviewer. An absent
/// class is disabled.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoExecutePolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writes: Option<WritesClass>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high_risk: Option<HighRiskClass>,
}

/// The auto-execute window of ordinary writes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WritesClass {
    pub enabled: bool,
    /// RFC 3339; the window closes then. `None`: open-ended.
    pub expires_at: Option<String>,
    /// `None`: every tool of the class.
    pub allowed_actions: Option<Vec<String>>,
}

/// The auto-execute window of high-risk writes, with its extra safeguards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HighRiskClass {
    pub enabled: bool,
    pub expires_at: Option<String>,
    pub allowed_actions: Option<Vec<String>>,
    pub require_preflight: bool,
    pub require_idempotency: bool,
    /// A reviewer's single-use step-up grant per execution (SPEC 6).
    pub require_step_up: bool,
    pub max_export_rows: i64,
}

/// Why a class's window does not let an action run now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowClosed {
    Disabled,
    Expired,
    NotAllowed,
}

/// The window part of a class: on, not expired, and listing the tool.
fn window(
    enabled: bool,
    expires_at: Option<&str>,
    allowed_actions: Option<&[String]>,
    tool: &str,
    now: time::OffsetDateTime,
) -> Result<(), WindowClosed> {
    if !enabled {
        return Err(WindowClosed::Disabled);
    }
    // Passed, or unparseable: the window is closed.
    if let Some(text) = expires_at
        && clock::parse_iso(text).is_none_or(|t| t <= now)
    {
        return Err(WindowClosed::Expired);
    }
    if let Some(allowed) = allowed_actions
        && !allowed.iter().any(|a| a == tool)
    {
        return Err(WindowClosed::NotAllowed);
    }
    Ok(())
}

impl WritesClass {
    pub fn window(&self, tool: &str, now: time::OffsetDateTime) -> Result<(), WindowClosed> {
        window(
            self.enabled,
            self.expires_at.as_deref(),
            self.allowed_actions.as_deref(),
            tool,
            now,
        )
    }
}

impl HighRiskClass {
    pub fn window(&self, tool: &str, now: time::OffsetDateTime) -> Result<(), WindowClosed> {
        window(
            self.enabled,
            self.expires_at.as_deref(),
            self.allowed_actions.as_deref(),
            tool,
            now,
        )
    }
}

impl AutoExecutePolicy {
    /// Whether high-risk auto-execution waits for a reviewer's step-up grant.
    pub fn requires_step_up(&self) -> bool {
        self.high_risk.as_ref().is_some_and(|h| h.require_step_up)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn absent_sections_stay_absent_on_the_wire() {
        let policy: AppPolicy = serde_json::from_value(json!({"data": {"max_days": 30}})).unwrap();
        assert_eq!(
            serde_json::to_value(&policy).unwrap(),
            json!({"data": {"max_days": 30}})
        );
        assert_eq!(policy.max_days(), 30);
        assert!(policy.allows_sensitive_fields());
        assert!(policy.allowed_ips().is_empty());
        assert_eq!(serde_json::to_value(AutoExecutePolicy::default()).unwrap(), json!({}));
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(serde_json::from_value::<AppPolicy>(json!({"surprise": 1})).is_err());
        assert!(serde_json::from_value::<AppPolicy>(json!({"data": {"colour": 1}})).is_err());
    }

    #[test]
    fn a_window_is_closed_when_disabled_expired_or_not_listing_the_tool() {
        let now = clock::parse_iso("2026-06-01T00:00:00Z").unwrap();
        let mut class = WritesClass {
            enabled: true,
            expires_at: Some("2026-07-01T00:00:00Z".into()),
            allowed_actions: Some(vec!["ticket.create".into()]),
        };
        assert_eq!(class.window("ticket.create", now), Ok(()));
        assert_eq!(class.window("ticket.close", now), Err(WindowClosed::NotAllowed));
        class.expires_at = Some("2026-05-01T00:00:00Z".into());
        assert_eq!(class.window("ticket.create", now), Err(WindowClosed::Expired));
        class.expires_at = Some("not a time".into());
        assert_eq!(class.window("ticket.create", now), Err(WindowClosed::Expired));
        class.enabled = false;
        assert_eq!(class.window("ticket.create", now), Err(WindowClosed::Disabled));
    }
}
