//! The REST binding (`/api/agent/v1/...`): step (1) for REST, parsing the route and body
//! into an [`Operation`], and the envelope (SPEC section 2) back. Every other step is the
//! pipeline's.

use bytes::Bytes;
use serde::Deserialize;

use crate::catalog::Tool;
use crate::gateway::Gateway;
use crate::outcome::{Refused, Reply};
use crate::pipeline::{self, Binding, BodyError, Credentials, Inbound, Operation, Outbound};
use crate::protocol::codes;
use crate::protocol::{ActionBody, Envelope, Failure, strict_json};

/// The longest `GET /drafts/{id}?wait=` allowed.
const MAX_DRAFT_WAIT_SECONDS: u64 = 30;

/// Runs one REST agent request through the pipeline and answers it with an envelope.
pub async fn handle(gw: &Gateway, inbound: Inbound) -> Outbound {
    let operation = parse(&inbound);
    let outcome = pipeline::govern(gw, &inbound, operation, &Rest, Credentials::Bearer).await;
    envelope_response(&inbound.request_id, outcome)
}

/// REST's part in the steps: no session, and the reference's answers for tools a caller
/// cannot use (a hidden read is a missing route, a hidden action an unknown one).
struct Rest;

impl Binding for Rest {
    fn name(&self) -> Option<&'static str> {
        None
    }

    fn check_session(&self) -> Result<(), Failure> {
        Ok(())
    }

    fn hidden_tool(&self, tool: &Tool) -> Failure {
        if tool.is_read() {
            not_found_failure()
        } else {
            Failure::new(codes::ACTION_UNKNOWN, "Unknown action")
        }
    }

    fn not_an_action(&self, found: Option<&Tool>) -> Failure {
        let unknown = Failure::new(codes::ACTION_UNKNOWN, "Unknown action");
        match found {
            Some(read) => unknown.with(
                "hint",
                format!(
                    "`{}` is a read: use GET /api/agent/v1/{}",
                    read.name,
                    read.http_path.as_deref().unwrap_or("")
                ),
            ),
            None => unknown,
        }
    }
}

/// The REST answer: the SPEC's envelope, with the code's HTTP status.
pub fn envelope_response(request_id: &str, outcome: Result<Reply, Refused>) -> Outbound {
    match outcome {
        Ok(reply) => Outbound::json(
            200,
            Envelope::success_with(reply.code, reply.data, request_id).to_bytes(),
            Vec::new(),
            request_id,
        ),
        Err(refused) => Outbound::json(
            refused.failure.code.status,
            Envelope::failure(refused.failure, request_id).to_bytes(),
            refused.headers,
            request_id,
        ),
    }
}

/// Step 1: route and body. Everything here is decided without credentials.
pub fn parse(inbound: &Inbound) -> Result<Operation, Refused> {
    if inbound.head_too_large {
        return Err(Failure::new(codes::REQUEST_TOO_LARGE, "Request headers too large").into());
    }
    let body = match &inbound.body {
        Ok(bytes) => bytes,
        Err(BodyError::TooLarge) => return Err(Failure::new(codes::REQUEST_TOO_LARGE, "Request body too large").into()),
        Err(BodyError::Unreadable) => return Err(Failure::validation(&[], "request body could not be read").into()),
    };
    if let Some(query) = &inbound.query
        && form_urlencoded::parse(query.as_bytes()).any(|(k, _)| is_credential_param(&k))
    {
        return Err(Failure::validation(
            &["query"],
            "credentials are not accepted in the query string; use the Authorization header",
        )
        .into());
    }
    let Some(rest) = inbound.path.strip_prefix("/api/agent/v1/") else {
        return Err(not_found());
    };
    let segments: Vec<&str> = rest.split('/').collect();
    match (inbound.method.as_str(), segments.as_slice()) {
        ("GET", ["manifest"]) => {
            no_body(body)?;
            Ok(Operation::Manifest)
        }
        ("GET", ["drafts", id]) if !id.is_empty() => {
            no_body(body)?;
            let wait = form_urlencoded::parse(inbound.query.as_deref().unwrap_or("").as_bytes())
                .find(|(k, _)| k == "wait")
                .map(|(_, v)| v.parse::<u64>())
                .transpose()
                .map_err(|_| {
                    Refused::from(Failure::validation(
                        &["wait"],
                        "`wait` must be whole seconds (at most 30)",
                    ))
                })?
                .unwrap_or(0);
            if wait > MAX_DRAFT_WAIT_SECONDS {
                return Err(Failure::validation(&["wait"], "`wait` must be whole seconds (at most 30)").into());
            }
            Ok(Operation::Draft {
                id: (*id).to_string(),
                wait_seconds: wait,
            })
        }
        ("POST", ["actions"]) => {
            let mut action: ActionBody = json_body(inbound, body)?;
            match (&action.idempotency_key, &inbound.idempotency_key) {
                (Some(a), Some(b)) if a != b => {
                    return Err(Failure::validation(
                        &["idempotencyKey"],
                        "the `Idempotency-Key` header and `idempotencyKey` differ",
                    )
                    .into());
                }
                (None, Some(header)) => action.idempotency_key = Some(header.clone()),
                _ => {}
            }
            Ok(Operation::Action(action))
        }
        ("POST", ["preflight"]) => Ok(Operation::Preflight(json_body(inbound, body)?)),
        ("GET", [route]) if is_route(route) => {
            no_body(body)?;
            Ok(Operation::Read {
                route: (*route).to_string(),
                query: inbound.query.clone(),
            })
        }
        _ => Err(not_found()),
    }
}

fn not_found() -> Refused {
    not_found_failure().into()
}

fn not_found_failure() -> Failure {
    Failure::new(codes::NOT_FOUND, "Route not found")
}

fn is_route(segment: &str) -> bool {
    !segment.is_empty()
        && segment.len() <= 64
        && segment
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn is_credential_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "token",
        "access_token",
        "api_key",
        "apikey",
        "key",
        "authorization",
        "bearer",
    ]
    .contains(&name.as_str())
}

fn no_body(body: &Bytes) -> Result<(), Refused> {
    if body.is_empty() {
        Ok(())
    } else {
        Err(Failure::validation(&[], "this route takes no request body").into())
    }
}

fn json_body<T: for<'de> Deserialize<'de>>(inbound: &Inbound, body: &Bytes) -> Result<T, Refused> {
    let is_json = inbound.content_type.as_deref().is_some_and(|ct| {
        ct.split(';')
            .next()
            .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
    });
    if !is_json {
        return Err(Failure::validation(&["content-type"], "content type must be application/json").into());
    }
    // serde also reads a struct from a JSON array; a request body must be an object.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(Failure::validation(&[], "body must be a JSON object").into());
    }
    let value = strict_json::parse(body).map_err(|e| {
        let message = if strict_json::is_duplicate_key(&e) {
            format!("body has a {e}")
        } else {
            format!("body is not valid JSON: {e}")
        };
        Refused::from(Failure::validation(&[], message))
    })?;
    serde_json::from_value(value)
        .map_err(|e| Failure::validation(&[], format!("body does not match the request schema: {e}")).into())
}
