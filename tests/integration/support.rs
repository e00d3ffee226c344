//! A real gateway on loopback port 0 per test, built from the demo's files in a temp
//! directory, and a small blocking HTTP client.

use std::collections::BTreeMap;
use std::sync::Arc;

use openport::clock::{SharedClock, SystemClock};
use openport::demo::{self, Credentials};
use openport::store::{AuditFilter, AuditRow};
use openport::{Config, Server};
use serde_json::Value;

/// Runs `future` to its end on a runtime of its own: a test thread awaiting the gateway
/// (a reload) or a client of its own.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}

pub struct TestGateway {
    pub dir: tempfile::TempDir,
    pub agent: String,
    pub admin: String,
    pub creds: Credentials,
    pub server: Server,
    /// Keeps the server's tasks alive for the test's lifetime.
    _runtime: tokio::runtime::Runtime,
    client: ureq::Agent,
}

/// One response: status, headers (lowercase names) and the parsed body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: Value,
}

impl Reply {
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }

    pub fn data(&self) -> &Value {
        &self.body["data"]
    }

    pub fn request_id(&self) -> String {
        self.headers.get("x-request-id").cloned().unwrap_or_default()
    }

    /// Asserts the status and code, and that the envelope carries the request id.
    pub fn expect(&self, status: u16, code: &str) -> &Self {
        assert_eq!(
            (self.status, self.code()),
            (status, code),
            "unexpected reply: {:#}",
            self.body
        );
        assert_eq!(
            self.body["request_id"].as_str(),
            Some(self.request_id().as_str()),
            "request_id in envelope and header"
        );
        assert_eq!(self.body["ok"], Value::Bool(status == 200), "ok flag: {:#}", self.body);
        if status != 200 {
            assert!(
                self.body["message"].is_string(),
                "error without message: {:#}",
                self.body
            );
        }
        self
    }
}

/// Options for a test gateway.
#[derive(Default)]
pub struct Builder {
    extra_config: String,
    server_config: String,
    store_config: String,
    audit_config: String,
    anonymous_mcp: bool,
    clock: Option<SharedClock>,
    one_worker: bool,
}

impl Builder {
    /// Appends TOML to the demo config (e.g. an `[admission]` table).
    pub fn config(mut self, toml: &str) -> Self {
        self.extra_config.push_str(toml);
        self
    }

    /// Adds a line to the config's `[audit]` table.
    pub fn audit_config(mut self, line: &str) -> Self {
        self.audit_config.push_str(line);
        self.audit_config.push('\n');
        self
    }

    /// Adds a line to the config's `[server]` table.
    pub fn server_config(mut self, line: &str) -> Self {
        self.server_config.push_str(line);
        self.server_config.push('\n');
        self
    }

    /// Adds a line to the config's `[store]` table.
    pub fn store_config(mut self, line: &str) -> Self {
        self.store_config.push_str(line);
        self.store_config.push('\n');
        self
    }

    /// Serves on one runtime worker instead of two: whatever blocks it holds up every request.
    pub fn one_worker(mut self) -> Self {
        self.one_worker = true;
        self
    }

    /// Runs the gateway on this clock instead of the system's (e.g. a `ManualClock`).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Turns on the loopback-only anonymous MCP integration, as the demo does.
    pub fn anonymous_mcp(mut self) -> Self {
        self.anonymous_mcp = true;
        self
    }

    pub fn start(self) -> TestGateway {
        let dir = tempfile::tempdir().expect("temp dir");
        let any = "127.0.0.1:0".parse().expect("addr");
        let desk = demo::desk::start().expect("desk");
        let mut path = demo::write_files(dir.path(), any, any, None, desk).expect("demo files");
        let clock: SharedClock = self.clock.clone().unwrap_or_else(|| Arc::new(SystemClock));
        let creds = demo::seed(&Config::load(&path).expect("valid config"), dir.path(), &clock).expect("seed");
        if self.anonymous_mcp {
            let app = creds.app_ids.get(demo::MCP_LOCAL_APP).expect("the local MCP app");
            path = demo::write_config(dir.path(), any, any, None, Some(app)).expect("config");
        }
        if !self.extra_config.is_empty()
            || !self.server_config.is_empty()
            || !self.audit_config.is_empty()
            || !self.store_config.is_empty()
        {
            let mut text = std::fs::read_to_string(&path).expect("config");
            text = text.replace("[server]\n", &format!("[server]\n{}", self.server_config));
            text = text.replace("[store]\n", &format!("[store]\n{}", self.store_config));
            text = text.replace("[audit]\n", &format!("[audit]\n{}", self.audit_config));
            text.push_str(&self.extra_config);
            std::fs::write(&path, text).expect("config");
        }
        let config = Config::load(&path).expect("valid config");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(if self.one_worker { 1 } else { 2 })
            .enable_all()
            .build()
            .expect("runtime");
        let server = runtime.block_on(Server::start(config, clock)).expect("gateway starts");
        let client: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        TestGateway {
            agent: format!("http://{}", server.agent_addr),
            admin: format!("http://{}", server.admin_addr),
            dir,
            creds,
            server,
            _runtime: runtime,
            client,
        }
    }
}

impl TestGateway {
    pub fn start() -> TestGateway {
        Builder::default().start()
    }

    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The token of a demo app by name.
    pub fn token(&self, app: &str) -> String {
        self.creds
            .agent_tokens
            .get(app)
            .cloned()
            .unwrap_or_else(|| panic!("no demo app `{app}`"))
    }

    pub fn full(&self) -> String {
        self.token("Demo Integration")
    }

    pub fn admin_token(&self, role: &str) -> String {
        self.creds
            .admin_tokens
            .get(role)
            .cloned()
            .unwrap_or_else(|| panic!("no admin role `{role}`"))
    }

    pub fn app_id(&self, app: &str) -> String {
        self.creds
            .app_ids
            .get(app)
            .cloned()
            .unwrap_or_else(|| panic!("no demo app `{app}`"))
    }

    fn finish(&self, result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Reply {
        let (status, headers, text) = read_response(result.expect("request reaches the gateway"));
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("body is not JSON: {text}"))
        };
        Reply { status, headers, body }
    }

    /// `GET` on a full URL.
    pub fn get_url(&self, url: &str, token: Option<&str>) -> Reply {
        let mut request = self.client.get(url);
        if let Some(token) = token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        self.finish(request.call())
    }

    /// `GET` on the agent plane.
    pub fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.get_url(&format!("{}{path}", self.agent), token)
    }

    /// `GET` on the agent plane with extra headers.
    pub fn get_with(&self, path: &str, token: &str, headers: &[(&str, &str)]) -> Reply {
        let mut request = self
            .client
            .get(&format!("{}{path}", self.agent))
            .header("Authorization", &format!("Bearer {token}"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.finish(request.call())
    }

    /// A request with a raw body on a full URL.
    pub fn send_url(
        &self,
        method: &str,
        url: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Reply {
        let mut request = ureq::http::Request::builder().method(method).uri(url);
        if let Some(token) = token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        if let Some(ct) = content_type {
            request = request.header("Content-Type", ct);
        }
        let request = request.body(body.to_vec()).expect("request");
        self.finish(self.client.run(request))
    }

    /// A request on the agent plane with any headers and a raw body.
    /// Any request to a full URL, for pages that are not JSON: status, headers (lowercase
    /// names) and the body as text. Redirects are not followed.
    pub fn send_url_text(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, BTreeMap<String, String>, String) {
        let mut request = ureq::http::Request::builder().method(method).uri(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(body.to_vec()).expect("request");
        let client: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        read_response(client.run(request).expect("request reaches the gateway"))
    }

    pub fn send_with(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.agent));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(body.to_vec()).expect("request");
        self.finish(self.client.run(request))
    }

    /// `POST` JSON on the agent plane.
    pub fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Reply {
        self.send_url(
            "POST",
            &format!("{}{path}", self.agent),
            token,
            Some("application/json"),
            body.to_string().as_bytes(),
        )
    }

    /// `POST` JSON on the admin plane.
    pub fn admin_post(&self, path: &str, token: Option<&str>, body: &Value) -> Reply {
        self.send_url(
            "POST",
            &format!("{}{path}", self.admin),
            token,
            Some("application/json"),
            body.to_string().as_bytes(),
        )
    }

    pub fn admin_get(&self, path: &str, token: Option<&str>) -> Reply {
        self.get_url(&format!("{}{path}", self.admin), token)
    }

    pub fn admin_delete(&self, path: &str, token: Option<&str>) -> Reply {
        self.send_url("DELETE", &format!("{}{path}", self.admin), token, None, b"")
    }

    /// Replaces sections of the demo app's auto-execute policy, as an operator.
    /// Writes `policies/FILE` into the demo's policy directory and reloads the gateway
    /// through the admin plane; the reload's answer.
    pub fn reload_with_policy(&self, file: &str, text: &str) -> Reply {
        std::fs::write(self.dir.path().join("policies").join(file), text).expect("policy file");
        self.admin_post(
            "/api/agent-admin/v1/policies/reload",
            Some(&self.admin_token("operator")),
            &serde_json::json!({}),
        )
    }

    pub fn set_auto_execute(&self, body: serde_json::Value) -> Reply {
        let app = self.app_id("Demo Integration");
        self.send_url(
            "PATCH",
            &format!("{}/api/agent-admin/v1/apps/{app}/auto-execute", self.admin),
            Some(&self.admin_token("operator")),
            Some("application/json"),
            body.to_string().as_bytes(),
        )
    }

    /// A plain-text admin response body (metrics).
    pub fn admin_text(&self, path: &str, token: &str) -> String {
        let mut response = self
            .client
            .get(&format!("{}{path}", self.admin))
            .header("Authorization", &format!("Bearer {token}"))
            .call()
            .expect("request");
        assert_eq!(response.status().as_u16(), 200);
        response.body_mut().read_to_string().expect("body")
    }

    /// A copy of the data directory as it is now, for a second gateway (see
    /// [`copy_data_dir`]). Two live gateways on one directory are refused (each would
    /// continue one audit chain).
    pub fn copy_of_data_dir(&self) -> tempfile::TempDir {
        let copy = tempfile::tempdir().expect("temp dir");
        copy_data_dir(self.dir.path(), copy.path());
        copy
    }

    /// Every audit event, oldest first.
    pub fn audit(&self) -> Vec<AuditRow> {
        self.server
            .gateway
            .store
            .audit
            .query(&AuditFilter {
                limit: 100_000,
                ascending: true,
                ..AuditFilter::default()
            })
            .expect("audit rows")
    }

    /// The audit events of one request.
    pub fn audit_of(&self, reply: &Reply) -> Vec<AuditRow> {
        let id = reply.request_id();
        self.audit()
            .into_iter()
            .filter(|e| e.request_id.as_deref() == Some(id.as_str()))
            .collect()
    }
}

/// A response's status, headers (lowercase names) and body text.
fn read_response(mut response: ureq::http::Response<ureq::Body>) -> (u16, BTreeMap<String, String>, String) {
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_ascii_lowercase(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let text = response.body_mut().read_to_string().expect("body");
    (response.status().as_u16(), headers, text)
}

/// Copies a live gateway's data directory: the database by SQLite's `VACUUM INTO`
/// (consistent while the gateway runs; the table only, not its audit journal), every other
/// file as it is.
pub fn copy_data_dir(from: &std::path::Path, to: &std::path::Path) {
    fn copy_files(from: &std::path::Path, to: &std::path::Path) {
        std::fs::create_dir_all(to).expect("mkdir");
        for entry in std::fs::read_dir(from).expect("read dir").flatten() {
            let (path, name) = (entry.path(), entry.file_name());
            if name.to_string_lossy().starts_with("openport.db") {
                continue;
            }
            if path.is_dir() {
                copy_files(&path, &to.join(&name));
            } else {
                std::fs::copy(&path, to.join(&name)).expect("copy");
            }
        }
    }
    copy_files(from, to);
    let db = openport::store::connect(&from.join("openport.db")).expect("connect");
    db.execute("VACUUM INTO ?1", [to.join("openport.db").to_string_lossy()])
        .expect("vacuum into");
}
