//! The reviewer's web page on the admin plane, `/review`: server-rendered HTML, no
//! JavaScript. A reviewer signs in with their `opa_` credential, sees the pending drafts
//! with their impact, and approves or rejects them. Approval goes through the same
//! `writes::review` code as the JSON API, bound to the impact hash the page showed.
//!
//! The credential never reaches the browser, nor the session: signing in opens a
//! server-side session (an `HttpOnly`, `SameSite=Strict` cookie holding a random id) that
//! names the credential by its id, and every request checks that credential again, so
//! revoking it ends the session at once.
//! Each form carries the session's CSRF token. Every request gets one audit event.

use std::collections::HashMap;

use subtle::ConstantTimeEq;

use super::AdminRecord;
use crate::auth::{self, AdminPrincipal, Role};
use crate::clock::SharedClock;
use crate::gateway::Gateway;
use crate::pipeline::{Inbound, Outbound};
use crate::protocol::codes::{self, Code};
use crate::sessions::{Expiry, SessionTable};
use crate::store::{DraftRecord, DraftStatus};
use crate::writes::review::{self, Reviewer};

/// Where the page lives on the admin listener.
pub const PATH: &str = crate::gateway::REVIEW_PATH;
const COOKIE: &str = "openport_review";
/// The sign-in form's CSRF token, also set as this `SameSite=Strict` cookie: a form posted
/// from another site carries neither the cookie nor the token.
const LOGIN_COOKIE: &str = "openport_login";
const SESSION_TTL_MS: i64 = 8 * 3600 * 1000;
const MAX_SESSIONS: usize = 1000;

/// A signed-in reviewer: which admin credential signed in (its id: the credential itself
/// is never kept, so a session in a shared store gives a reader of the store nothing to
/// present), and the CSRF token.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Session {
    admin_token_id: String,
    csrf: String,
}

/// Signed-in reviewers by session id (the cookie).
pub type Sessions = SessionTable<Session>;

/// The table the review page keeps its sign-ins in: eight hours from sign-in.
pub fn session_table(clock: SharedClock) -> Sessions {
    SessionTable::new(clock, Expiry::AbsoluteMs(SESSION_TTL_MS), MAX_SESSIONS)
}

/// Whether the admin listener should hand this path to the review page.
pub fn is_review_path(path: &str) -> bool {
    path == PATH || path.starts_with("/review/") || path == crate::writes::REVIEW_PATH
}

/// What a review request did, for its audit event.
struct Outcome {
    action: &'static str,
    code: Code,
    draft_id: Option<String>,
    response: Outbound,
}

/// Answers one `/review` request and records its audit event.
pub async fn handle(gw: &Gateway, sessions: &Sessions, inbound: Inbound) -> Outbound {
    let session_id = cookie(inbound.cookie.as_deref(), COOKIE);
    let session = session_id.as_deref().and_then(|id| sessions.touch(id));
    // The credential that signed in is checked again on every request: a revoked one is out.
    let principal = match &session {
        Some(s) => auth::admin_by_id(&gw.store, &s.admin_token_id).ok().flatten(),
        None => None,
    };
    let mut performer = principal.clone();
    let request = Page {
        gw,
        sessions,
        inbound: &inbound,
        session_id: session_id.as_deref(),
        session: session.as_ref(),
        principal: principal.as_ref(),
    };
    let outcome = request.route(&mut performer).await;
    let mut record = AdminRecord {
        admin: performer,
        draft_id: outcome.draft_id,
        ..AdminRecord::default()
    };
    record.details.insert("surface".into(), "review-page".into());
    if let Err(e) = super::record(gw, &inbound, outcome.action, outcome.code, record).await {
        tracing::error!(error = %e, "review audit event not durable");
        return page(
            500,
            "Error",
            "<p>The action could not be recorded; nothing was done.</p>",
            Vec::new(),
        );
    }
    outcome.response
}

/// One request to the page, with the session it presented.
struct Page<'a> {
    gw: &'a Gateway,
    sessions: &'a Sessions,
    inbound: &'a Inbound,
    session_id: Option<&'a str>,
    session: Option<&'a Session>,
    principal: Option<&'a AdminPrincipal>,
}

impl Page<'_> {
    async fn route(&self, performer: &mut Option<AdminPrincipal>) -> Outcome {
        let Page {
            gw,
            sessions,
            inbound,
            session_id,
            session,
            principal,
        } = *self;
        let method = inbound.method.as_str();
        let path = inbound.path.as_str();
        let form = || form_fields(inbound);
        match (method, path) {
            // The `review_path` a draft answer names (the reference's): this page.
            ("GET", crate::writes::REVIEW_PATH) => Outcome {
                action: "admin.review.redirect",
                code: codes::SUCCESS,
                draft_id: None,
                response: redirect(PATH, Vec::new()),
            },
            ("POST", "/review/login") => {
                let fields = form();
                if !login_form_is_ours(inbound, fields.get("login_csrf").map(String::as_str)) {
                    return Outcome {
                        action: "admin.review.sign_in",
                        code: codes::ADMIN_FORBIDDEN,
                        draft_id: None,
                        response: login_page(403, "The sign-in form was not sent from this page. Sign in again here."),
                    };
                }
                let token = fields.get("token").map(String::as_str).unwrap_or("").trim();
                let found = super::authenticate(gw, Some(&format!("Bearer {token}"))).ok().flatten();
                match found {
                    Some(p) if p.role == Role::Reviewer => {
                        let id = auth::random_secret();
                        sessions.open(
                            id.clone(),
                            Session {
                                admin_token_id: p.id.clone(),
                                csrf: auth::random_secret(),
                            },
                        );
                        *performer = Some(p);
                        let cookie = format!("{COOKIE}={id}; Path=/review; HttpOnly; SameSite=Strict; Max-Age=28800");
                        Outcome {
                            action: "admin.review.sign_in",
                            code: codes::SUCCESS,
                            draft_id: None,
                            response: redirect(PATH, vec![("Set-Cookie", cookie)]),
                        }
                    }
                    Some(p) => {
                        *performer = Some(p);
                        Outcome {
                            action: "admin.review.sign_in",
                            code: codes::ADMIN_FORBIDDEN,
                            draft_id: None,
                            response: login_page(403, "Only a reviewer credential can sign in here."),
                        }
                    }
                    None => Outcome {
                        action: "admin.review.sign_in",
                        code: codes::ADMIN_UNAUTHORIZED,
                        draft_id: None,
                        response: login_page(401, "That credential was not accepted."),
                    },
                }
            }
            ("POST", "/review/logout") => {
                if let Some(id) = session_id {
                    sessions.close_if(id, |_| true);
                }
                let clear = format!("{COOKIE}=; Path=/review; HttpOnly; SameSite=Strict; Max-Age=0");
                Outcome {
                    action: "admin.review.sign_out",
                    code: codes::SUCCESS,
                    draft_id: None,
                    response: redirect(PATH, vec![("Set-Cookie", clear)]),
                }
            }
            ("GET", PATH) => match principal {
                None => Outcome {
                    action: "admin.review.page",
                    code: codes::SUCCESS,
                    draft_id: None,
                    response: login_page(200, ""),
                },
                Some(p) => {
                    let notice = inbound
                        .query
                        .as_deref()
                        .and_then(|q| form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "notice"))
                        .map(|(_, v)| v.to_string());
                    let filter = crate::store::DraftFilter {
                        org_id: p.org_id.as_deref(),
                        status: Some(DraftStatus::Draft),
                        limit: 200,
                        ..Default::default()
                    };
                    let response = match gw.store.drafts.list(&filter) {
                        Ok(drafts) => list_page(p, session.map_or("", |s| s.csrf.as_str()), &drafts, notice.as_deref()),
                        Err(e) => {
                            tracing::error!(error = %e, "review page could not read drafts");
                            page(500, "Error", "<p>The drafts could not be read.</p>", Vec::new())
                        }
                    };
                    Outcome {
                        action: "admin.review.page",
                        code: codes::SUCCESS,
                        draft_id: None,
                        response,
                    }
                }
            },
            ("POST", _) if path.starts_with("/review/drafts/") => {
                let rest = &path["/review/drafts/".len()..];
                let Some((id, verb)) = rest.split_once('/').filter(|(_, v)| matches!(*v, "approve" | "reject")) else {
                    return not_found();
                };
                let action = if verb == "approve" {
                    "admin.drafts.approve"
                } else {
                    "admin.drafts.reject"
                };
                let (Some(p), Some(s)) = (principal, session) else {
                    return Outcome {
                        action,
                        code: codes::ADMIN_UNAUTHORIZED,
                        draft_id: Some(id.to_string()),
                        response: login_page(401, "Your session has ended; sign in again."),
                    };
                };
                let fields = form();
                let csrf_ok = fields
                    .get("csrf")
                    .is_some_and(|t| bool::from(t.as_bytes().ct_eq(s.csrf.as_bytes())));
                if !csrf_ok {
                    return Outcome {
                        action,
                        code: codes::ADMIN_FORBIDDEN,
                        draft_id: Some(id.to_string()),
                        response: page(
                            403,
                            "Refused",
                            "<p>The form was not sent from this page. Reload and try again.</p>",
                            Vec::new(),
                        ),
                    };
                }
                let reviewer = Reviewer {
                    name: &p.name,
                    org_id: p.org_id.as_deref(),
                    request_id: &inbound.request_id,
                };
                let result = if verb == "approve" {
                    // Bound to the impact the reviewer was shown: a change since is refused.
                    review::approve(gw, &reviewer, id, fields.get("impactHash").map(String::as_str)).await
                } else {
                    review::reject(gw, &reviewer, id).await
                };
                let (code, notice) = match result {
                    Ok(data) => {
                        let outcome = if verb == "approve" {
                            format!(
                                "Approved {id}: execution {}",
                                data["execution"]["status"].as_str().unwrap_or("recorded")
                            )
                        } else {
                            format!("Rejected {id}")
                        };
                        (codes::SUCCESS, outcome)
                    }
                    Err(refused) => (
                        refused.failure.code,
                        format!(
                            "Not done for {id}: {} ({})",
                            refused.failure.message, refused.failure.code.name
                        ),
                    ),
                };
                let location = format!(
                    "{PATH}?{}",
                    form_urlencoded::Serializer::new(String::new())
                        .append_pair("notice", &notice)
                        .finish()
                );
                Outcome {
                    action,
                    code,
                    draft_id: Some(id.to_string()),
                    response: redirect(&location, Vec::new()),
                }
            }
            _ => not_found(),
        }
    }
}

fn not_found() -> Outcome {
    Outcome {
        action: "admin.review.page",
        code: codes::NOT_FOUND,
        draft_id: None,
        response: page(404, "Not found", "<p>No such page.</p>", Vec::new()),
    }
}

/// The value of one cookie.
fn cookie(header: Option<&str>, name: &str) -> Option<String> {
    header?
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// An `application/x-www-form-urlencoded` body.
fn form_fields(inbound: &Inbound) -> HashMap<String, String> {
    match &inbound.body {
        Ok(body) => form_urlencoded::parse(body).into_owned().collect(),
        Err(_) => HashMap::new(),
    }
}

/// Escapes text for HTML content and attribute values.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(status: u16, title: &str, body: &str, extra: Vec<(&'static str, String)>) -> Outbound {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title} · OpenPort review</title>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <style>body{{font:15px system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#1b1b1b}}\
         .draft{{border:1px solid #ccc;border-radius:6px;padding:1rem;margin:1rem 0}}\
         .risk-high,.risk-critical{{border-color:#b3261e}} pre{{background:#f5f5f5;padding:.5rem;overflow:auto}}\
         .notice{{background:#eef6ee;border:1px solid #9c9;padding:.5rem 1rem}} button{{margin-right:.5rem}}\
         dt{{font-weight:600}} dd{{margin:0 0 .4rem 0}}</style></head><body><h1>{title}</h1>{body}</body></html>",
        title = esc(title)
    );
    let mut headers = vec![
        ("Content-Type", "text/html; charset=utf-8".to_string()),
        ("Cache-Control", "no-store".to_string()),
        (
            "Content-Security-Policy",
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'".to_string(),
        ),
        ("X-Frame-Options", "DENY".to_string()),
        ("Referrer-Policy", "no-referrer".to_string()),
    ];
    headers.extend(extra);
    Outbound {
        status,
        headers,
        body: html.into_bytes(),
    }
}

fn redirect(location: &str, extra: Vec<(&'static str, String)>) -> Outbound {
    let mut response = page(303, "Redirecting", "", extra);
    response.headers.push(("Location", location.to_string()));
    response
}

/// A sign-in post comes from our own form: the form's token matches its cookie (a
/// `SameSite=Strict` cookie another site's page cannot send, and a token it cannot read),
/// and the `Origin`, when the browser names one, is ours. Our pages send `no-referrer`, so
/// the browser's own form posts say `Origin: null`: that names none.
fn login_form_is_ours(inbound: &Inbound, field: Option<&str>) -> bool {
    let named = inbound.mcp.origin.as_deref().filter(|origin| *origin != "null");
    let same_origin = named.is_none_or(|origin| {
        let authority = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .unwrap_or("");
        inbound
            .mcp
            .host
            .as_deref()
            .is_some_and(|host| host.eq_ignore_ascii_case(authority))
    });
    let cookie = cookie(inbound.cookie.as_deref(), LOGIN_COOKIE);
    let tokens_match = match (cookie.as_deref(), field) {
        (Some(cookie), Some(field)) if !cookie.is_empty() => bool::from(cookie.as_bytes().ct_eq(field.as_bytes())),
        _ => false,
    };
    same_origin && tokens_match
}

fn login_page(status: u16, error: &str) -> Outbound {
    let error = if error.is_empty() {
        String::new()
    } else {
        format!("<p class=\"notice\" id=\"error\">{}</p>", esc(error))
    };
    let csrf = auth::random_secret();
    let body = format!(
        "{error}<form method=\"post\" action=\"/review/login\" id=\"sign-in\">\
         <input type=\"hidden\" name=\"login_csrf\" value=\"{csrf}\">\
         <label>Reviewer credential <input type=\"password\" name=\"token\" autocomplete=\"off\" required></label> \
         <button type=\"submit\">Sign in</button></form>\
         <p>Use a credential with the <code>reviewer</code> role. It stays on the server; the browser gets a session.</p>"
    );
    let cookie = format!("{LOGIN_COOKIE}={csrf}; Path=/review; HttpOnly; SameSite=Strict; Max-Age=3600");
    page(status, "Sign in to review", &body, vec![("Set-Cookie", cookie)])
}

fn list_page(principal: &AdminPrincipal, csrf: &str, drafts: &[DraftRecord], notice: Option<&str>) -> Outbound {
    let mut body = String::new();
    body.push_str(&format!(
        "<p>Signed in as <strong>{}</strong>{}. <form method=\"post\" action=\"/review/logout\" style=\"display:inline\">\
         <button type=\"submit\">Sign out</button></form></p>",
        esc(&principal.name),
        principal.org_id.as_deref().map(|o| format!(" (tenant {})", esc(o))).unwrap_or_default()
    ));
    if let Some(notice) = notice {
        body.push_str(&format!("<p class=\"notice\" id=\"notice\">{}</p>", esc(notice)));
    }
    if drafts.is_empty() {
        body.push_str("<p id=\"empty\">No drafts are waiting for review.</p>");
    }
    for d in drafts {
        let summary = d
            .impact
            .as_ref()
            .and_then(|i| i["summary"].as_str())
            .unwrap_or("(no summary)");
        let impact = d
            .impact
            .as_ref()
            .map(|i| serde_json::to_string_pretty(i).unwrap_or_default())
            .unwrap_or_default();
        let payload = serde_json::to_string_pretty(&d.payload).unwrap_or_default();
        let hash = d.impact_hash.as_deref().unwrap_or("");
        let hidden = format!(
            "<input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"impactHash\" value=\"{}\">",
            esc(csrf),
            esc(hash)
        );
        body.push_str(&format!(
            "<section class=\"draft risk-{risk}\" id=\"{id}\"><h2>{summary}</h2><dl>\
             <dt>Action</dt><dd><code>{action}</code> · risk {risk}{confirm}</dd>\
             <dt>Draft</dt><dd><code>{id}</code> from app <code>{app}</code>, requested {created}, expires {expires}</dd>\
             <dt>Justification</dt><dd>{justification}</dd></dl>\
             <details open><summary>Impact (computed from live state)</summary><pre>{impact}</pre></details>\
             <details><summary>Payload</summary><pre>{payload}</pre></details>\
             <form method=\"post\" action=\"/review/drafts/{id}/approve\" style=\"display:inline\">{hidden}\
             <button type=\"submit\" name=\"decision\" value=\"approve\">Approve and execute</button></form>\
             <form method=\"post\" action=\"/review/drafts/{id}/reject\" style=\"display:inline\">{hidden}\
             <button type=\"submit\" name=\"decision\" value=\"reject\">Reject</button></form></section>",
            risk = esc(&d.risk),
            id = esc(&d.id),
            summary = esc(summary),
            action = esc(&d.action_type),
            confirm = if d.requires_confirmation { " · needs confirmation" } else { "" },
            app = esc(&d.app_id),
            created = esc(&d.created_at),
            expires = esc(&d.expires_at),
            justification = esc(d.justification.as_deref().unwrap_or("(none given)")),
            impact = esc(&impact),
            payload = esc(&payload),
        ));
    }
    page(200, "Drafts waiting for review", &body, Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            esc("<script>\"x\" & 'y'</script>"),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/script&gt;"
        );
    }

    #[test]
    fn cookies_are_found_by_name() {
        assert_eq!(
            cookie(Some("a=1; openport_review=abc; b=2"), COOKIE).as_deref(),
            Some("abc")
        );
        assert_eq!(cookie(Some("openport_reviewx=abc"), COOKIE), None);
        assert_eq!(cookie(None, COOKIE), None);
    }
}
