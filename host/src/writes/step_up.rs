//! Step-up confirmation (SPEC 6): a reviewer issues a short-lived, single-use grant bound to
//! one preflight; an app whose high-risk auto-execute policy sets `require_step_up` can then
//! auto-execute exactly that preflighted action once, presenting the grant as `stepUpToken`.

use serde::Deserialize;
use serde_json::{Value, json};
use time::Duration;

use crate::auth::{self, Principal};
use crate::clock;
use crate::gateway::Gateway;
use crate::hashing::sha256_hex;
use crate::outcome::Refused;
use crate::protocol::codes;
use crate::protocol::ids::{self, Kind};
use crate::protocol::{ActionBody, Failure};
use crate::store::StepUpGrant;

/// The longest a grant may live, and the default.
const MAX_TTL_SECONDS: u64 = 3600;
const DEFAULT_TTL_SECONDS: u64 = 300;

/// `POST /preflights/:id/step-up` body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StepUpRequest {
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    #[serde(default)]
    pub note: Option<String>,
}

/// Issues a grant for a live preflight; returns the grant's public fields, the token (shown
/// once), and the app it is for.
pub fn issue(
    gw: &Gateway,
    preflight_id: &str,
    request: StepUpRequest,
    issued_by: &str,
    tenant: Option<&str>,
) -> Result<(Value, String), Failure> {
    let ttl = request.ttl_seconds.unwrap_or(DEFAULT_TTL_SECONDS);
    if !(1..=MAX_TTL_SECONDS).contains(&ttl) {
        return Err(Failure::validation(&["ttlSeconds"], "`ttlSeconds` must be 1 to 3600"));
    }
    let now = gw.clock.now();
    let internal = |e: crate::store::StoreError| {
        tracing::error!(error = %e, "step-up grant failed");
        Failure::internal()
    };
    let not_found = || Failure::new(codes::PREFLIGHT_NOT_FOUND, "Preflight not found");
    let preflight = gw
        .store
        .preflights
        .get(preflight_id)
        .map_err(internal)?
        .ok_or_else(not_found)?;
    let app = gw
        .store
        .apps
        .get(&preflight.app_id)
        .map_err(internal)?
        .ok_or_else(not_found)?;
    let live = clock::parse_iso(&preflight.expires_at).is_some_and(|t| t > now);
    if !live || tenant.is_some_and(|own| app.org_id.as_deref() != Some(own)) {
        return Err(not_found());
    }
    let minted = auth::mint("stp_");
    let expires = now + Duration::seconds(i64::try_from(ttl).unwrap_or(i64::MAX));
    let grant = StepUpGrant {
        id: ids::new_id(Kind::StepUp),
        token_hash: minted.hash,
        preflight_id: preflight.id.clone(),
        app_id: preflight.app_id.clone(),
        issued_by: issued_by.to_string(),
        note: request.note.map(|n| n.chars().take(500).collect()),
        created_at: clock::iso(now),
        expires_at: clock::iso(expires),
    };
    gw.store.preflights.insert_step_up(&grant).map_err(internal)?;
    let public = json!({
        "id": grant.id,
        "preflightId": grant.preflight_id,
        "action": preflight.action,
        "impactHash": preflight.impact_hash,
        "expiresAt": grant.expires_at,
    });
    Ok((json!({"stepUp": public, "token": minted.token}), preflight.app_id))
}

/// Checks and uses the request's grant. It must be this app's, for the preflight the request
/// names (`preflightId`), unused and unexpired.
pub fn redeem(gw: &Gateway, principal: &Principal, body: &ActionBody) -> Result<(), Refused> {
    let Some(token) = body.step_up_token.as_deref() else {
        return Err(Failure::new(
            codes::STEP_UP_REQUIRED,
            "This high-risk action needs a step-up grant: ask a reviewer to issue one for your preflight",
        )
        .with(
            "hint",
            "POST /api/agent-admin/v1/preflights/{preflightId}/step-up, then send `preflightId` and `stepUpToken`",
        )
        .into());
    };
    let invalid = |reason: &str| -> Refused {
        Failure::new(codes::STEP_UP_INVALID, "Step-up grant is not valid for this action")
            .with("reason", reason)
            .into()
    };
    let Some(preflight_id) = body.preflight_id.as_deref() else {
        return Err(invalid("no_preflight"));
    };
    let used = gw
        .store
        .preflights
        .use_step_up(
            &sha256_hex(token.as_bytes()),
            &principal.app.id,
            preflight_id,
            &clock::iso(gw.clock.now()),
        )
        .map_err(Refused::internal)?;
    if used {
        Ok(())
    } else {
        Err(invalid("unknown_expired_used_or_unbound"))
    }
}
