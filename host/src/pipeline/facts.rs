//! What Cedar sees of a governed request: the app and the request's facts.

use serde_json::Value;

use super::Governed;
use super::request::Flags;
use crate::authz::{AppFacts, RequestFacts};

impl Governed<'_> {
    pub(super) fn app_facts(&self) -> AppFacts<'_> {
        AppFacts {
            app_id: &self.principal.app.id,
            app_name: &self.principal.app.name,
            org_id: &self.principal.org_id,
            key_id: &self.principal.key.id,
            scopes: &self.principal.app.scopes,
            policy: &self.principal.app.policy,
        }
    }

    pub(super) fn facts<'p>(&self, payload: Option<&'p Value>, flags: Flags) -> RequestFacts<'p> {
        RequestFacts {
            client_ip: self.client_ip,
            now: self.gw.clock.now(),
            payload,
            has_idempotency_key: flags.idempotency_key,
            has_preflight_hash: flags.preflight_hash,
            has_justification: flags.justification,
        }
    }
}
