//! What Cedar sees of a governed request: the app and the request's facts.

use super::Governed;
use super::discovery::Viewer;
use super::request::Flags;
use crate::attr::Attr;
use crate::authz::{AppFacts, RequestFacts};

impl Governed<'_> {
    pub(super) fn app_facts(&self) -> AppFacts<'_> {
        AppFacts {
            app_id: &self.principal.app.id,
            app_name: &self.principal.app.name,
            org_id: &self.principal.org_id,
            key_id: &self.principal.key.id,
            scopes: &self.principal.app.scopes,
            data_policy: &self.data_policy,
            tags: &self.principal.app.tags,
        }
    }

    /// `args`: the typed arguments, `None` for discovery.
    pub(super) fn facts<'p>(&'p self, args: Option<&'p Attr>, flags: Flags) -> RequestFacts<'p> {
        RequestFacts {
            client_ip: self.client_ip,
            now: self.now,
            channel: self.channel(),
            actor: &self.principal.actor_user_id,
            args,
            has_idempotency_key: flags.idempotency_key,
            has_preflight_hash: flags.preflight_hash,
            has_justification: flags.justification,
        }
    }
}

impl Governed<'_> {
    /// The caller as discovery sees it.
    pub(super) fn viewer(&self) -> Viewer<'_> {
        Viewer {
            key_id: &self.principal.key.id,
            client_ip: self.client_ip,
            channel: self.channel(),
            actor: &self.principal.actor_user_id,
        }
    }

    /// The binding's name as policies see it: `rest` or `mcp`.
    pub(super) fn channel(&self) -> &'static str {
        self.binding.name().unwrap_or("rest")
    }
}
