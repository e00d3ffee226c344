//! The hyper server: the only module that knows hyper exists. It bounds the request,
//! hands a plain [`Inbound`] to the binding or plane its path belongs to, and writes the
//! [`Outbound`] back.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::admin::{self, review};
use crate::gateway::Gateway;
use crate::hashing::sha256_hex;
use crate::mcp;
use crate::pipeline::{BodyError, Inbound, McpHeaders, Outbound};
use crate::protocol::Envelope;
use crate::protocol::ids::{self, Kind};
use crate::protocol::trace::TraceContext;
use crate::rest;
use crate::store::StoreError;

/// Slow-client protection: headers and body must arrive within these.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(15);
/// The largest request head, and the most headers, a request may have: a larger one is
/// refused with `413 agent.request_too_large` in the envelope and audited like any other
/// refusal (without the oversized values).
const MAX_HEADER_BYTES: usize = 32 * 1024;
const MAX_HEADERS: usize = 100;
/// What hyper buffers and parses before it answers a bare `431` itself: generous, so that
/// a head between these and the limits above gets the envelope and its audit event.
const HYPER_HEAD_BUFFER: usize = 256 * 1024;
const HYPER_MAX_HEADERS: usize = 1024;
/// The largest admin-plane body: a plugin upload.
const ADMIN_MAX_BODY_BYTES: usize = 64 << 20;
/// Open connections per listener; more wait in the accept queue.
const MAX_CONNECTIONS: usize = 4096;

/// Which listener a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plane {
    Agent,
    Admin,
}

/// The bindings' and planes' own state: their session tables.
#[derive(Debug)]
pub struct Sessions {
    pub mcp: mcp::Sessions,
    /// Seals MCP `requestState` between the rounds of a call.
    pub request_states: mcp::Sealer,
    pub review: review::Sessions,
}

impl Sessions {
    pub fn new(gw: &Gateway) -> Result<Sessions, StoreError> {
        Ok(Sessions {
            mcp: mcp::session_table(gw.clock.clone()).shared(&gw.store, "mcp"),
            request_states: mcp::Sealer::shared(&gw.store)?,
            review: review::session_table(gw.clock.clone()).shared(&gw.store, "review"),
        })
    }
}

/// Serves one listener until `shutdown` turns true.
pub async fn serve(
    gw: Arc<Gateway>,
    sessions: Arc<Sessions>,
    listener: TcpListener,
    plane: Plane,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let gw = gw.clone();
        let sessions = sessions.clone();
        // The acceptor in use now: a reload changes it for the next connections.
        let tls = gw.tls.as_ref().map(|tls| match plane {
            Plane::Agent => tls.agent(),
            Plane::Admin => tls.admin(),
        });
        tokio::spawn(async move {
            match tls {
                // The handshake shares the header timeout: a client that never finishes
                // it holds a connection slot no longer than one that never sends headers.
                Some(acceptor) => match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        // The client certificate (verified against `client_ca` in the
                        // handshake), by fingerprint, for apps bound to one.
                        let client_cert = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|chain| chain.first())
                            .map(|leaf| Arc::<str>::from(sha256_hex(leaf.as_ref())));
                        let peer = Peer {
                            addr: peer,
                            client_cert,
                        };
                        serve_connection(gw, sessions, plane, peer, stream).await
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, %peer, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                },
                None => {
                    let peer = Peer {
                        addr: peer,
                        client_cert: None,
                    };
                    serve_connection(gw, sessions, plane, peer, stream).await
                }
            }
            drop(permit);
        });
    }
}

/// HTTP/1.1 with the head limits and timeouts every listener uses.
fn connection_builder() -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(HYPER_HEAD_BUFFER)
        .max_headers(HYPER_MAX_HEADERS);
    builder
}

/// Who is at the other end of a connection.
#[derive(Debug, Clone)]
struct Peer {
    addr: SocketAddr,
    /// SHA-256 of the TLS client certificate, when the client presented one.
    client_cert: Option<Arc<str>>,
}

/// Serves HTTP/1.1 on one accepted connection, plain or TLS.
async fn serve_connection<S>(gw: Arc<Gateway>, sessions: Arc<Sessions>, plane: Plane, peer: Peer, stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let addr = peer.addr;
    let service = service_fn(move |req| {
        let gw = gw.clone();
        let sessions = sessions.clone();
        let peer = peer.clone();
        async move { Ok::<_, Infallible>(dispatch(&gw, &sessions, plane, &peer, req).await) }
    });
    let result = connection_builder()
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(e) = result {
        tracing::debug!(error = %e, peer = %addr, "connection ended with an error");
    }
}

async fn dispatch(
    gw: &Gateway,
    sessions: &Sessions,
    plane: Plane,
    peer: &Peer,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let request_id = ids::new_id(Kind::Request);
    let path = req.uri().path().to_string();
    if req.method() == hyper::Method::GET && (path == "/healthz" || path == "/readyz") {
        // Probes are not agent requests: answered without credentials or audit events.
        // Not ready while a remembered plugin failed to load (unless marked optional).
        let unavailable = gw.unavailable_plugins();
        if path == "/readyz" && !unavailable.is_empty() {
            let failure = crate::protocol::Failure::new(
                crate::protocol::codes::PLUGIN_UNAVAILABLE,
                "Remembered plugins failed to load",
            )
            .with("plugins", json!(unavailable));
            return write(Outbound::json(
                503,
                Envelope::failure(failure, &request_id).to_bytes(),
                Vec::new(),
                &request_id,
            ));
        }
        let data = if path == "/healthz" {
            json!({"status": "ok"})
        } else {
            json!({"status": "ready", "tools": gw.catalog().tools().count()})
        };
        return write(Outbound::json(
            200,
            Envelope::success(data, &request_id).to_bytes(),
            Vec::new(),
            &request_id,
        ));
    }
    if plane == Plane::Agent && req.method() == hyper::Method::GET && mcp::is_resource_metadata_path(&path) {
        // OAuth protected-resource metadata (RFC 9728) is public discovery, like a probe.
        let host = header(req.headers(), "host");
        return write(mcp::resource_metadata(gw, host.as_deref(), &request_id));
    }
    let inbound = read_inbound(gw, peer, req, request_id, plane).await;
    let outbound = match plane {
        Plane::Agent if inbound.path == mcp::PATH => {
            mcp::handle(gw, &sessions.mcp, &sessions.request_states, inbound).await
        }
        Plane::Agent => rest::handle(gw, inbound).await,
        Plane::Admin if review::is_review_path(&inbound.path) => review::handle(gw, &sessions.review, inbound).await,
        Plane::Admin => admin::handle(gw, inbound).await,
    };
    write(outbound)
}

/// The benchmark's ceiling: the same server settings and a JSON echo of the request in the
/// envelope, with no governance at all. Its throughput bounds what the gateway can reach
/// on the same machine (`bench/run`, workload 1).
pub async fn serve_ceiling(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(|req: Request<Incoming>| async move {
                let request_id = ids::new_id(Kind::Request);
                let (parts, body) = req.into_parts();
                let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                let echo = json!({
                    "method": parts.method.as_str(),
                    "path": parts.uri.path(),
                    "query": parts.uri.query(),
                    "bytes": body.len(),
                });
                Ok::<_, Infallible>(write(Outbound::json(
                    200,
                    Envelope::success(echo, &request_id).to_bytes(),
                    Vec::new(),
                    &request_id,
                )))
            });
            let _ = connection_builder()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(String::from)
}

/// The headers an [`Inbound`] carries, read in one pass over the head: a lookup by name
/// hashes the name each time, and a request asks for fourteen of them.
#[derive(Default)]
struct Heads {
    /// Each header's first value, as a request reads it (`None` if it is not text).
    authorization: Option<Option<String>>,
    /// How many `Authorization` headers came.
    authorizations: usize,
    forwarded_for: Option<Option<String>>,
    user_agent: Option<Option<String>>,
    content_type: Option<Option<String>>,
    idempotency_key: Option<Option<String>>,
    cookie: Option<Option<String>>,
    host: Option<Option<String>>,
    origin: Option<Option<String>>,
    session_id: Option<Option<String>>,
    protocol_version: Option<Option<String>>,
    accept: Option<Option<String>>,
    mcp_method: Option<Option<String>>,
    mcp_name: Option<Option<String>>,
    traceparent: Option<Option<String>>,
    tracestate: Option<Option<String>>,
    mcp_params: Vec<(String, String)>,
    /// The head's size: every name and value, with their separators.
    bytes: usize,
}

impl Heads {
    fn read(headers: &HeaderMap) -> Heads {
        let mut heads = Heads::default();
        for (name, value) in headers {
            heads.bytes += name.as_str().len() + value.len() + 4;
            let slot = match name.as_str() {
                "authorization" => {
                    heads.authorizations += 1;
                    &mut heads.authorization
                }
                "x-forwarded-for" => &mut heads.forwarded_for,
                "user-agent" => &mut heads.user_agent,
                "content-type" => &mut heads.content_type,
                "idempotency-key" => &mut heads.idempotency_key,
                "cookie" => &mut heads.cookie,
                "host" => &mut heads.host,
                "origin" => &mut heads.origin,
                "mcp-session-id" => &mut heads.session_id,
                "mcp-protocol-version" => &mut heads.protocol_version,
                "accept" => &mut heads.accept,
                "mcp-method" => &mut heads.mcp_method,
                "mcp-name" => &mut heads.mcp_name,
                "traceparent" => &mut heads.traceparent,
                "tracestate" => &mut heads.tracestate,
                other => {
                    if let Some(param) = other.strip_prefix("mcp-param-")
                        && let Ok(value) = value.to_str()
                    {
                        heads.mcp_params.push((param.to_string(), value.to_string()));
                    }
                    continue;
                }
            };
            if slot.is_none() {
                *slot = Some(value.to_str().ok().map(String::from));
            }
        }
        heads
    }

    /// The `Authorization` header. Two of them are ambiguous (proxies and servers disagree
    /// on which one counts), so they stand for a credential that never authenticates.
    fn authorization(&mut self) -> Option<String> {
        if self.authorizations > 1 {
            return Some("(two Authorization headers)".into());
        }
        self.authorization.take().flatten()
    }
}

/// The length of a value's text, without writing it out.
fn display_len(value: &impl std::fmt::Display) -> usize {
    struct Count(usize);
    impl std::fmt::Write for Count {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0 += s.len();
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = std::fmt::write(&mut count, format_args!("{value}"));
    count.0
}

async fn read_inbound(gw: &Gateway, peer: &Peer, req: Request<Incoming>, request_id: String, plane: Plane) -> Inbound {
    let (mut parts, body) = req.into_parts();
    let mut heads = Heads::read(&parts.headers);
    let head_bytes = heads.bytes + display_len(&parts.uri);
    let head_too_large = head_bytes > MAX_HEADER_BYTES || parts.headers.len() > MAX_HEADERS;
    if head_too_large {
        // Nothing of an oversized head is kept: its refusal is audited without it.
        parts.headers.clear();
        heads = Heads::default();
    }
    // The admin plane takes plugin uploads (a component, base64): a larger body.
    let limit = match plane {
        Plane::Agent => gw.config.max_body_bytes,
        Plane::Admin => gw.config.max_body_bytes.max(ADMIN_MAX_BODY_BYTES),
    };
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body = if declared.is_some_and(|n| n > limit as u64) {
        Err(BodyError::TooLarge)
    } else {
        match tokio::time::timeout(BODY_READ_TIMEOUT, Limited::new(body, limit).collect()).await {
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(BodyError::TooLarge),
            Ok(Err(_)) | Err(_) => Err(BodyError::Unreadable),
        }
    };
    Inbound {
        request_id,
        method: parts.method.as_str().to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(String::from),
        authorization: heads.authorization(),
        forwarded_for: heads.forwarded_for.flatten(),
        user_agent: heads.user_agent.flatten(),
        content_type: heads.content_type.flatten(),
        idempotency_key: heads.idempotency_key.flatten(),
        cookie: heads.cookie.flatten(),
        mcp: McpHeaders {
            host: heads.host.flatten(),
            origin: heads.origin.flatten(),
            session_id: heads.session_id.flatten(),
            protocol_version: heads.protocol_version.flatten(),
            accept: heads.accept.flatten(),
            method: heads.mcp_method.flatten(),
            name: heads.mcp_name.flatten(),
            params: heads.mcp_params,
        },
        trace: heads
            .traceparent
            .flatten()
            .and_then(|tp| TraceContext::parse(&tp, heads.tracestate.flatten().as_deref())),
        peer: peer.addr.ip(),
        client_cert: peer.client_cert.as_deref().map(String::from),
        head_too_large,
        body,
    }
}

fn write(outbound: Outbound) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(outbound.body)));
    *response.status_mut() =
        hyper::StatusCode::from_u16(outbound.status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.reserve(outbound.headers.len());
    for (name, value) in outbound.headers {
        // Visible ASCII only, as `HeaderValue::from_str`; the buffer is taken, not copied.
        if !value.is_ascii() {
            continue;
        }
        if let (Some(name), Ok(value)) = (header_name(name), HeaderValue::try_from(value)) {
            headers.insert(name, value);
        }
    }
    response
}

/// The name of a header the pipeline sets. The ones every response or refusal carries are
/// constants: looking a mixed-case name up parses it each time, and a nonstandard one
/// (`X-Request-Id`, `RateLimit`) is copied to a new buffer, on every response.
fn header_name(name: &'static str) -> Option<HeaderName> {
    const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
    const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
    const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
    Some(match name {
        "Content-Type" => CONTENT_TYPE,
        "X-Request-Id" => X_REQUEST_ID,
        "Cache-Control" => CACHE_CONTROL,
        "Retry-After" => RETRY_AFTER,
        "RateLimit" => RATELIMIT,
        "RateLimit-Policy" => RATELIMIT_POLICY,
        other => HeaderName::from_bytes(other.as_bytes()).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_carries_its_headers_by_their_lowercase_names_and_drops_values_that_are_not_ascii() {
        let names = [
            "Content-Type",
            "X-Request-Id",
            "Cache-Control",
            "Retry-After",
            "RateLimit",
            "RateLimit-Policy",
            "Location",
        ];
        let headers = names
            .iter()
            .map(|n| (*n, format!("v-{n}")))
            .chain([("Allow", "caf\u{e9}".to_string())])
            .collect();
        let response = write(Outbound {
            status: 429,
            headers,
            body: Vec::new(),
        });
        for name in names {
            let value = response.headers().get(name.to_ascii_lowercase()).expect(name);
            assert_eq!(value.to_str().ok(), Some(format!("v-{name}").as_str()));
        }
        assert!(
            response.headers().get("allow").is_none(),
            "a value that is not ASCII is dropped"
        );
        assert_eq!(response.headers().len(), names.len());
    }

    fn head(pairs: &[(&'static str, &[u8])]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_bytes(value).expect("a header value"));
        }
        headers
    }

    #[test]
    fn a_head_is_read_as_lookups_by_name_would_read_it() {
        let headers = head(&[
            ("user-agent", b"first"),
            ("user-agent", b"second"),
            ("mcp-session-id", b"caf\xe9"),
            ("mcp-session-id", b"text"),
            ("mcp-param-region", b"eu"),
            ("mcp-param-bad", b"\xff"),
            ("accept", b"application/json"),
            ("authorization", b"Bearer op_x"),
        ]);
        let mut heads = Heads::read(&headers);
        // The first value of a header counts; a first value that is not text is absent.
        assert_eq!(heads.user_agent.clone().flatten().as_deref(), Some("first"));
        assert_eq!(heads.session_id.clone().flatten(), None);
        assert_eq!(heads.accept.clone().flatten().as_deref(), Some("application/json"));
        assert_eq!(heads.mcp_params, vec![("region".to_string(), "eu".to_string())]);
        assert_eq!(heads.authorization().as_deref(), Some("Bearer op_x"));
        let expected: usize = headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum();
        assert_eq!(heads.bytes, expected);
    }

    #[test]
    fn two_authorization_headers_never_authenticate() {
        let headers = head(&[("authorization", b"Bearer op_a"), ("authorization", b"Bearer op_a")]);
        let credential = Heads::read(&headers).authorization().expect("a stand-in credential");
        assert_eq!(crate::auth::bearer(Some(&credential)), None);
    }

    #[test]
    fn a_uri_is_measured_without_being_written_out() {
        let uri: hyper::Uri = "/api/agent/v1/transactions?ledgerId=ledger_main"
            .parse()
            .expect("a uri");
        assert_eq!(display_len(&uri), uri.to_string().len());
    }
}
