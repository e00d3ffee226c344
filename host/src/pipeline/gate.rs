//! Before any step: the data directory has room for the request's audit event, and the
//! client's address has not spent its budget of refusals before authentication.

use crate::admission::Refusal;
use crate::auth::network;
use crate::gateway::Gateway;
use crate::outcome::{Refused, Reply, rate_refusal};
use crate::protocol::{Failure, codes};

use super::request::Inbound;
use super::trail::Trail;

/// The client, as the gate found it.
pub(super) struct Client {
    /// Its address, as admission keys it.
    pub address: String,
    /// The address spent its budget of refusals before authentication: a request that
    /// does not authenticate is refused with this instead of its own answer.
    spent: Option<Refusal>,
}

/// Finds the client's address (the peer's, or the forwarded one from a trusted proxy) and
/// refuses what can be refused before the request is even parsed: everything while the
/// disk is nearly full, and a request without credentials from an address that spent its
/// budget. A request with credentials goes on, so that agents sharing an address with an
/// attacker keep being served. A refusal here may be coalesced under a flood.
pub(super) fn before(gw: &Gateway, inbound: &Inbound, trail: &mut Trail) -> Result<Client, Refused> {
    let client_ip = network::client_ip(
        inbound.peer,
        inbound.forwarded_for.as_deref(),
        &gw.config.trusted_proxies,
    );
    trail.client_ip = Some(client_ip);
    if gw.disk.exceeded() {
        trail.coalescable = true;
        return Err(Refused {
            failure: Failure::new(
                codes::OVERLOADED,
                "The gateway is not accepting requests: its disk is nearly full",
            )
            .with("reason", "disk_budget"),
            headers: vec![("Retry-After", "30".into())],
            internal: None,
        });
    }
    let address = client_ip.to_string();
    let spent = gw.admission.admit_address(&address, gw.clock.now_ms()).err();
    match spent {
        Some(refusal) if inbound.authorization.is_none() => {
            trail.coalescable = true;
            gw.metrics.refusal(refusal.limit.name());
            Err(rate_refusal(&refusal))
        }
        spent => Ok(Client { address, spent }),
    }
}

/// A refusal before authentication spends one of the address's budget, or, once it is
/// spent, becomes the address's `429` (so a bad token is no oracle either).
pub(super) fn after(
    gw: &Gateway,
    client: &Client,
    trail: &mut Trail,
    outcome: Result<Reply, Refused>,
) -> Result<Reply, Refused> {
    if trail.principal.is_some() || !matches!(&outcome, Err(refused) if refused.internal.is_none()) {
        return outcome;
    }
    match &client.spent {
        Some(refusal) => {
            trail.coalescable = true;
            gw.metrics.refusal(refusal.limit.name());
            Err(rate_refusal(refusal))
        }
        None => {
            gw.admission.charge_address(&client.address, gw.clock.now_ms());
            outcome
        }
    }
}
