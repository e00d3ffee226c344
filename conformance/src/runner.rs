//! Loads cases, sends their requests and checks the answers.
//!
//! A case is a sequence of steps. A step sends one request (or a burst of copies), checks
//! the answer, remembers values for later steps, and may check the audit events the request
//! left. Steps may also wait, or (when this runner started the gateway) change its config
//! and reload it. Cases run in file order and share captured values.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub id: String,
    #[allow(dead_code, reason = "documentation in the data file")]
    pub description: String,
    pub cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub id: String,
    #[serde(default)]
    #[allow(dead_code, reason = "documentation in the data file")]
    pub description: Option<String>,
    /// The case changes the gateway's config, so it needs a gateway this runner started.
    #[serde(default)]
    pub local: bool,
    #[serde(default)]
    pub steps: Vec<Step>,
    /// Shorthand for a last step: `request`, `expect`, `capture`, `audit` at the top level.
    #[serde(default)]
    pub request: Option<RequestSpec>,
    #[serde(default)]
    pub expect: Option<Expect>,
    #[serde(default)]
    pub capture: BTreeMap<String, String>,
    #[serde(default)]
    pub audit: Vec<AuditExpect>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    #[serde(default)]
    pub request: Option<RequestSpec>,
    /// TOML appended to the demo's config, then a reload through the admin plane.
    #[serde(default)]
    pub reconfigure: Option<String>,
    #[serde(default)]
    pub sleep_ms: Option<u64>,
    /// Bytes written on a raw connection, which must then be closed by the gateway
    /// within `closed_within_ms` (slow or malformed clients).
    #[serde(default)]
    pub raw_tcp: Option<RawTcp>,
    /// Copies a file of the demo's data directory with text replaced (an operator's edit).
    #[serde(default)]
    pub copy_file: Option<CopyFile>,
    /// Sends a request, kills the gateway with SIGKILL `after_ms` later, and starts it
    /// again on the same data directory and ports.
    #[serde(default)]
    pub crash_during: Option<CrashDuring>,
    #[serde(default)]
    pub expect: Option<Expect>,
    /// Values to remember: name → dotted path in the JSON body.
    #[serde(default)]
    pub capture: BTreeMap<String, String>,
    /// Values to remember: name → response header.
    #[serde(default)]
    pub capture_headers: BTreeMap<String, String>,
    /// Send up to this many times, until the answer meets `expect`.
    #[serde(default)]
    pub repeat: Option<u32>,
    /// Send this many copies at once; at least one answer must meet `expect`.
    #[serde(default)]
    pub parallel: Option<u32>,
    /// Send exactly this many times, one after another; every answer must meet `expect`.
    #[serde(default)]
    pub times: Option<u32>,
    /// Audit events the request must have left (looked up by its `X-Request-Id`).
    #[serde(default)]
    pub audit: Vec<AuditExpect>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    pub method: String,
    pub path: String,
    /// `agent` (default: the first demo app), `agent:<app name>`, `admin:<role>`,
    /// `bearer:<literal>`, `header:<raw Authorization value>` or `none`.
    #[serde(default)]
    pub auth: Option<String>,
    #[serde(default)]
    pub body: Option<Value>,
    #[serde(default)]
    pub raw: Option<String>,
    /// A body of `text` repeated `times` times (oversized bodies).
    #[serde(default)]
    pub pad: Option<Pad>,
    /// Overrides the `Content-Type` (`none` sends none).
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub admin: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pad {
    pub text: String,
    pub times: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyFile {
    pub from: String,
    pub to: String,
    #[serde(default)]
    pub replace: Vec<(String, String)>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrashDuring {
    pub request: RequestSpec,
    pub after_ms: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTcp {
    pub send: String,
    pub closed_within_ms: u64,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub status: u16,
    #[serde(default)]
    pub code: Option<String>,
    /// `success` or `error`: the OpenPort envelope's required fields.
    #[serde(default)]
    pub envelope: Option<String>,
    #[serde(default)]
    pub headers: Vec<String>,
    #[serde(default)]
    pub header_equals: BTreeMap<String, String>,
    #[serde(default)]
    pub header_contains: BTreeMap<String, String>,
    #[serde(default)]
    pub arrays: Vec<String>,
    #[serde(default)]
    pub strings: Vec<String>,
    #[serde(default)]
    pub present: Vec<String>,
    #[serde(default)]
    pub absent: Vec<String>,
    #[serde(default)]
    pub equals: BTreeMap<String, Value>,
    /// Texts the raw body must not contain (secrets, internals).
    #[serde(default)]
    pub body_excludes: Vec<String>,
    /// The body need not be JSON (e.g. `405` or `431` answers).
    #[serde(default)]
    pub any_body: bool,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditExpect {
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub tool: Option<String>,
    /// Exactly this many events for the request (default: at least one matches).
    #[serde(default)]
    pub count: Option<usize>,
    /// Texts no event of the request may contain.
    #[serde(default)]
    pub excludes: Vec<String>,
}

/// The gateway under test.
pub struct Target {
    pub url: String,
    pub admin_url: Option<String>,
    pub agent_tokens: BTreeMap<String, String>,
    pub default_token: String,
    pub admin_tokens: BTreeMap<String, String>,
    pub app_ids: BTreeMap<String, String>,
    /// The demo's config file, when this runner started the gateway.
    config_path: Option<PathBuf>,
    /// The config as the demo wrote it, before any `reconfigure`.
    original_config: std::sync::Mutex<Option<String>>,
    /// The gateway process and how to start it again, when this runner started it.
    child: std::sync::Mutex<Option<Child>>,
    launch: Option<Launch>,
    _dir: Option<TempDir>,
}

/// How the runner started the demo.
struct Launch {
    binary: PathBuf,
    data_dir: PathBuf,
    port: u16,
    admin_port: u16,
}

impl Launch {
    fn spawn(&self) -> Result<Child, String> {
        Command::new(&self.binary)
            .arg("demo")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args([
                "--listen",
                &format!("127.0.0.1:{}", self.port),
                "--admin-listen",
                &format!("127.0.0.1:{}", self.admin_port),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(child) = self.child.get_mut().ok().and_then(Option::as_mut) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Target {
    pub fn remote(
        url: String,
        token: String,
        admin_url: Option<String>,
        admin_tokens: BTreeMap<String, String>,
    ) -> Target {
        Target {
            url: url.trim_end_matches('/').to_string(),
            admin_url: admin_url.map(|u| u.trim_end_matches('/').to_string()),
            agent_tokens: BTreeMap::new(),
            default_token: token,
            admin_tokens,
            app_ids: BTreeMap::new(),
            config_path: None,
            original_config: std::sync::Mutex::new(None),
            child: std::sync::Mutex::new(None),
            launch: None,
            _dir: None,
        }
    }

    /// Starts `BINARY demo` on free loopback ports and waits for `/healthz`.
    pub fn start(binary: &Path) -> Result<Target, String> {
        let dir = std::env::temp_dir().join(format!("openport-conformance-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (port, admin_port) = (
            free_port().map_err(|e| e.to_string())?,
            free_port().map_err(|e| e.to_string())?,
        );
        let launch = Launch {
            binary: binary.to_path_buf(),
            data_dir: dir.join("data"),
            port,
            admin_port,
        };
        let child = launch.spawn()?;
        let mut target = Target {
            url: format!("http://127.0.0.1:{port}"),
            admin_url: Some(format!("http://127.0.0.1:{admin_port}")),
            agent_tokens: BTreeMap::new(),
            default_token: String::new(),
            admin_tokens: BTreeMap::new(),
            app_ids: BTreeMap::new(),
            config_path: Some(dir.join("data/openport.toml")),
            original_config: std::sync::Mutex::new(None),
            child: std::sync::Mutex::new(Some(child)),
            launch: Some(launch),
            _dir: Some(TempDir(dir.clone())),
        };
        target.wait_healthy()?;
        target.use_credentials(&dir.join("data/demo-credentials.json"))?;
        Ok(target)
    }

    /// Takes every token and app id of a demo's `demo-credentials.json` (`--credentials`,
    /// or the demo this runner started): the first agent token becomes the default.
    pub fn use_credentials(&mut self, path: &Path) -> Result<(), String> {
        let creds: Value = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| format!("no readable demo credentials at `{}`", path.display()))?;
        let map = |v: &Value| -> BTreeMap<String, String> {
            v.as_object().map_or_else(BTreeMap::new, |o| {
                o.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
        };
        self.agent_tokens = map(&creds["agent_tokens"]);
        self.admin_tokens = map(&creds["admin_tokens"]);
        self.app_ids = map(&creds["app_ids"]);
        self.default_token = self.agent_tokens.values().next().cloned().ok_or("no agent tokens")?;
        Ok(())
    }

    fn wait_healthy(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(sent) = send(&format!("{}/healthz", self.url), "GET", &BTreeMap::new(), None)
                && sent.status == 200
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("the demo did not answer /healthz within 120 s".into());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGKILL, then the same command again.
    fn crash_and_restart(&self) -> Result<(), String> {
        let launch = self.launch.as_ref().ok_or("crash_during needs --binary")?;
        let mut child = self.child.lock().map_err(|_| "child lock poisoned")?;
        if let Some(running) = child.as_mut() {
            running.kill().map_err(|e| e.to_string())?;
            running.wait().map_err(|e| e.to_string())?;
        }
        *child = Some(launch.spawn()?);
        drop(child);
        self.wait_healthy()
    }

    /// Values every case may use: `${token.NAME}`, `${forged.NAME}` (the real token's lookup
    /// prefix with a wrong secret), `${app.NAME}`, `${admin.ROLE}`, `${now}`, `${past}`,
    /// `${future}`, `${soon}` (RFC 3339, UTC; `soon` is two seconds ahead).
    fn builtins(&self) -> BTreeMap<String, String> {
        let mut vars = BTreeMap::new();
        for (name, token) in &self.agent_tokens {
            vars.insert(format!("token.{name}"), token.clone());
            let prefix: String = token.chars().take(12).collect();
            let forged = format!("{prefix}{}", "A".repeat(token.len().saturating_sub(12)));
            vars.insert(format!("forged.{name}"), forged);
        }
        for (name, id) in &self.app_ids {
            vars.insert(format!("app.{name}"), id.clone());
        }
        for (role, token) in &self.admin_tokens {
            vars.insert(format!("admin.{role}"), token.clone());
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        vars.insert("now".into(), rfc3339(now));
        vars.insert("past".into(), rfc3339(now.saturating_sub(3600)));
        vars.insert("future".into(), rfc3339(now + 3600));
        vars.insert("soon".into(), rfc3339(now + 2));
        if let Some(launch) = &self.launch {
            vars.insert("dataDir".into(), launch.data_dir.display().to_string());
        }
        vars
    }
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (days to civil date: H. Hinnant).
fn rfc3339(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

pub struct CaseResult {
    pub id: String,
    /// `None`: passed. `Some(Err)`: failed. `Some(Ok)`: skipped, with the reason.
    pub outcome: Outcome,
    /// `agent.*`/`common.*`/`admin.*` codes the case's answers carried.
    pub codes: Vec<String>,
    pub millis: u128,
}

pub enum Outcome {
    Passed,
    Failed(String),
    Skipped(String),
}

/// Runs every case of every profile in order; captures flow to later cases.
pub fn run(target: &Target, profiles: &[Profile]) -> Vec<CaseResult> {
    let mut vars = target.builtins();
    let mut results = Vec::new();
    for profile in profiles {
        for case in &profile.cases {
            let started = Instant::now();
            let mut codes = Vec::new();
            let outcome = if case.local && target.launch.is_none() {
                Outcome::Skipped("changes the gateway's config: needs --binary".into())
            } else {
                match run_case(target, case, &mut vars, &mut codes) {
                    Ok(()) => Outcome::Passed,
                    Err(e) => Outcome::Failed(e),
                }
            };
            codes.sort();
            codes.dedup();
            results.push(CaseResult {
                id: format!("{}/{}", profile.id, case.id),
                outcome,
                codes,
                millis: started.elapsed().as_millis(),
            });
        }
    }
    results
}

fn substitute(text: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = text.to_string();
    // Longest names first, so `${token.A B}` is not cut short by a shorter `${token.A}`.
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    for k in names {
        out = out.replace(&format!("${{{k}}}"), &vars[k]);
    }
    out
}

fn substitute_value(value: &Value, vars: &BTreeMap<String, String>) -> Value {
    match value {
        Value::String(s) => Value::String(substitute(s, vars)),
        Value::Array(a) => Value::Array(a.iter().map(|v| substitute_value(v, vars)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (substitute(k, vars), substitute_value(v, vars)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// `a.b.0.c` into a JSON value.
fn lookup<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(value, |v, part| match v {
        Value::Array(a) => a.get(part.parse::<usize>().ok()?),
        Value::Object(o) => o.get(part),
        _ => None,
    })
}

fn run_case(
    target: &Target,
    case: &Case,
    vars: &mut BTreeMap<String, String>,
    codes: &mut Vec<String>,
) -> Result<(), String> {
    let last = case.request.as_ref().map(|request| Step {
        request: Some(request.clone()),
        expect: case.expect.clone(),
        capture: case.capture.clone(),
        audit: case.audit.clone(),
        ..Step::default()
    });
    if case.steps.is_empty() && last.is_none() {
        return Err("a case needs `request` or `steps`".into());
    }
    for (index, step) in case.steps.iter().chain(last.as_ref()).enumerate() {
        run_step(target, step, vars, codes).map_err(|e| format!("step {}: {e}", index + 1))?;
    }
    Ok(())
}

fn run_step(
    target: &Target,
    step: &Step,
    vars: &mut BTreeMap<String, String>,
    codes: &mut Vec<String>,
) -> Result<(), String> {
    if let Some(ms) = step.sleep_ms {
        std::thread::sleep(Duration::from_millis(ms));
    }
    if let Some(toml) = &step.reconfigure {
        reconfigure(target, toml)?;
    }
    if let Some(raw) = &step.raw_tcp {
        raw_tcp(target, raw)?;
    }
    if let Some(copy) = &step.copy_file {
        let launch = target.launch.as_ref().ok_or("copy_file needs --binary")?;
        let mut text = std::fs::read_to_string(launch.data_dir.join(&copy.from)).map_err(|e| e.to_string())?;
        for (from, to) in &copy.replace {
            if !text.contains(from.as_str()) {
                return Err(format!("`{}` does not contain {from:?}", copy.from));
            }
            text = text.replace(from.as_str(), to);
        }
        std::fs::write(launch.data_dir.join(&copy.to), text).map_err(|e| e.to_string())?;
    }
    if let Some(crash) = &step.crash_during {
        let prepared = prepare(target, &crash.request, vars)?;
        std::thread::scope(|scope| {
            // The request's own answer is lost with the process; only the restart matters.
            scope.spawn(|| {
                let _ = prepared.send();
            });
            std::thread::sleep(Duration::from_millis(crash.after_ms));
            target.crash_and_restart()
        })?;
    }
    let Some(spec) = &step.request else {
        return Ok(());
    };
    let prepared = prepare(target, spec, vars)?;
    let expect = step.expect.clone().unwrap_or(Expect {
        status: 200,
        ..Expect::default()
    });
    let sent = if let Some(copies) = step.parallel {
        let answers: Vec<Result<Sent, String>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..copies).map(|_| scope.spawn(|| prepared.send())).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err("sender panicked".into())))
                .collect()
        });
        let mut failures = Vec::new();
        let mut matched = None;
        for answer in answers {
            let sent = answer?;
            codes.extend(sent.code());
            match check(&sent, &expect, vars) {
                Ok(()) if matched.is_none() => matched = Some(sent),
                Ok(()) => {}
                Err(e) => failures.push(e),
            }
        }
        matched.ok_or_else(|| format!("no parallel answer met the expectation: {}", failures.join("; ")))?
    } else if let Some(times) = step.times {
        let mut last = None;
        for attempt in 1..=times.max(1) {
            let sent = prepared.send()?;
            codes.extend(sent.code());
            check(&sent, &expect, vars).map_err(|e| format!("answer {attempt} of {times}: {e}"))?;
            last = Some(sent);
        }
        last.ok_or("nothing sent")?
    } else {
        let tries = step.repeat.unwrap_or(1).max(1);
        let mut outcome = Err("not sent".to_string());
        for _ in 0..tries {
            let sent = prepared.send()?;
            codes.extend(sent.code());
            match check(&sent, &expect, vars) {
                Ok(()) => {
                    outcome = Ok(sent);
                    break;
                }
                Err(e) => outcome = Err(e),
            }
        }
        if tries > 1 {
            outcome.map_err(|e| format!("after {tries} tries: {e}"))?
        } else {
            outcome?
        }
    };
    for (name, path) in &step.capture {
        let json = sent.json()?;
        let value = lookup(&json, path).ok_or(format!("cannot capture `{path}`"))?;
        vars.insert(
            name.clone(),
            value.as_str().map_or_else(|| value.to_string(), String::from),
        );
    }
    for (name, header) in &step.capture_headers {
        let value = sent
            .headers
            .get(&header.to_ascii_lowercase())
            .ok_or(format!("cannot capture header `{header}`"))?;
        vars.insert(name.clone(), value.clone());
    }
    if !step.audit.is_empty() {
        check_audit(target, &sent, &step.audit, vars)?;
    }
    Ok(())
}

/// A request ready to send (and to send again).
struct Prepared {
    url: String,
    method: String,
    headers: BTreeMap<String, String>,
    body: Option<Vec<u8>>,
    /// Oversized bodies go over a raw connection: the gateway answers and closes before
    /// reading them, which an HTTP client reports as a broken pipe instead of the answer.
    oversized: bool,
}

impl Prepared {
    fn send(&self) -> Result<Sent, String> {
        if self.oversized {
            return send_raw(
                &self.url,
                &self.method,
                &self.headers,
                self.body.as_deref().unwrap_or_default(),
            );
        }
        send(&self.url, &self.method, &self.headers, self.body.as_deref())
    }
}

/// HTTP/1.1 by hand: write everything (ignoring a peer that stops reading), then read the
/// answer until the connection closes.
fn send_raw(url: &str, method: &str, headers: &BTreeMap<String, String>, body: &[u8]) -> Result<Sent, String> {
    let rest = url.strip_prefix("http://").ok_or("raw requests need an http:// URL")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut stream = TcpStream::connect(authority).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or("no complete answer on the raw connection")?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or("no status line")?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Sent {
        status,
        headers,
        text: body.to_string(),
    })
}

fn prepare(target: &Target, spec: &RequestSpec, vars: &BTreeMap<String, String>) -> Result<Prepared, String> {
    let auth = match spec.auth.as_deref().map(|a| substitute(a, vars)) {
        None => Some(format!("Bearer {}", target.default_token)),
        Some(auth) if auth == "agent" => Some(format!("Bearer {}", target.default_token)),
        Some(auth) if auth == "none" => None,
        Some(other) => match other.split_once(':') {
            Some(("agent", name)) => Some(format!(
                "Bearer {}",
                target
                    .agent_tokens
                    .get(name)
                    .ok_or(format!("no agent token for `{name}`"))?
            )),
            Some(("admin", role)) => Some(format!(
                "Bearer {}",
                target
                    .admin_tokens
                    .get(role)
                    .ok_or(format!("no admin token for `{role}`"))?
            )),
            Some(("bearer", literal)) => Some(format!("Bearer {literal}")),
            Some(("header", raw)) => Some(raw.to_string()),
            _ => return Err(format!("unknown auth `{other}`")),
        },
    };
    let base = if spec.admin {
        target.admin_url.clone().ok_or("no admin URL for this target")?
    } else {
        target.url.clone()
    };
    let url = format!("{base}{}", substitute(&spec.path, vars));
    let body = match (&spec.body, &spec.raw, &spec.pad) {
        (Some(body), _, _) => Some(substitute_value(body, vars).to_string().into_bytes()),
        (None, Some(raw), _) => Some(substitute(raw, vars).into_bytes()),
        (None, None, Some(pad)) => Some(pad.text.repeat(pad.times).into_bytes()),
        (None, None, None) => None,
    };
    let mut headers = BTreeMap::new();
    if let Some(auth) = auth {
        headers.insert("authorization".to_string(), auth);
    }
    match spec.content_type.as_deref() {
        Some("none") => {}
        Some(ct) => {
            headers.insert("content-type".into(), ct.to_string());
        }
        None if body.is_some() => {
            headers.insert("content-type".into(), "application/json".into());
        }
        None => {}
    }
    for (name, value) in &spec.headers {
        headers.insert(name.to_ascii_lowercase(), substitute(value, vars));
    }
    Ok(Prepared {
        url,
        method: spec.method.clone(),
        headers,
        body,
        oversized: spec.pad.is_some(),
    })
}

fn check(sent: &Sent, e: &Expect, vars: &BTreeMap<String, String>) -> Result<(), String> {
    let excerpt = || sent.text.chars().take(300).collect::<String>();
    if sent.status != e.status {
        return Err(format!("status {}, want {}: {}", sent.status, e.status, excerpt()));
    }
    for h in &e.headers {
        if !sent.headers.contains_key(&h.to_ascii_lowercase()) {
            return Err(format!("header `{h}` missing"));
        }
    }
    for (h, want) in &e.header_equals {
        let want = substitute(want, vars);
        if sent.headers.get(&h.to_ascii_lowercase()) != Some(&want) {
            return Err(format!(
                "header `{h}` is {:?}, want {want:?}",
                sent.headers.get(&h.to_ascii_lowercase())
            ));
        }
    }
    for (h, want) in &e.header_contains {
        if !sent
            .headers
            .get(&h.to_ascii_lowercase())
            .is_some_and(|v| v.contains(want.as_str()))
        {
            return Err(format!("header `{h}` does not contain {want:?}"));
        }
    }
    for text in &e.body_excludes {
        let text = substitute(text, vars);
        if !text.is_empty() && sent.text.contains(&text) {
            return Err(format!("the body contains {text:?}"));
        }
    }
    if e.any_body {
        return Ok(());
    }
    let json = sent.json()?;
    if let Some(code) = &e.code
        && json["code"].as_str() != Some(code)
    {
        return Err(format!("code {}, want {code}: {}", json["code"], excerpt()));
    }
    match e.envelope.as_deref() {
        Some("success")
            if !(json["ok"] == Value::Bool(true) && json["code"].is_string() && json.get("data").is_some()) =>
        {
            return Err("not a success envelope {ok: true, code, data}".into());
        }
        Some("error")
            if !(json["ok"] == Value::Bool(false) && json["code"].is_string() && json["message"].is_string()) =>
        {
            return Err("not an error envelope {ok: false, code, message}".into());
        }
        _ => {}
    }
    for p in &e.arrays {
        if !lookup(&json, p).is_some_and(Value::is_array) {
            return Err(format!("`{p}` is not an array"));
        }
    }
    for p in &e.strings {
        if !lookup(&json, p).is_some_and(Value::is_string) {
            return Err(format!("`{p}` is not a string"));
        }
    }
    for p in &e.present {
        if lookup(&json, p).is_none() {
            return Err(format!("`{p}` is missing"));
        }
    }
    for p in &e.absent {
        if lookup(&json, p).is_some_and(|v| !v.is_null()) {
            return Err(format!("`{p}` is present"));
        }
    }
    for (p, want) in &e.equals {
        let want = substitute_value(want, vars);
        if lookup(&json, p) != Some(&want) {
            return Err(format!("`{p}` is {:?}, want {want}", lookup(&json, p)));
        }
    }
    Ok(())
}

/// The audit events of the request, read back on the admin plane with an auditor token.
fn check_audit(
    target: &Target,
    sent: &Sent,
    expected: &[AuditExpect],
    vars: &BTreeMap<String, String>,
) -> Result<(), String> {
    let request_id = sent
        .headers
        .get("x-request-id")
        .ok_or("the answer has no X-Request-Id to find its audit events by")?;
    let admin = target
        .admin_url
        .as_ref()
        .ok_or("no admin URL to read the audit trail")?;
    let token = target
        .admin_tokens
        .get("auditor")
        .ok_or("no auditor token to read the audit trail")?;
    let mut headers = BTreeMap::new();
    headers.insert("authorization".to_string(), format!("Bearer {token}"));
    let url = format!("{admin}/api/agent-admin/v1/audit?requestId={request_id}&limit=100");
    let answer = send(&url, "GET", &headers, None)?;
    let json = answer.json()?;
    let events = json["data"]["items"].as_array().ok_or_else(|| {
        format!(
            "audit query failed: {}",
            answer.text.chars().take(200).collect::<String>()
        )
    })?;
    for want in expected {
        if let Some(count) = want.count
            && events.len() != count
        {
            return Err(format!("{} audit events for the request, want {count}", events.len()));
        }
        let matches = |event: &Value| {
            let field = |name: &str, want: &Option<String>| {
                want.as_ref()
                    .is_none_or(|w| event[name].as_str() == Some(substitute(w, vars).as_str()))
            };
            field("action", &want.action)
                && field("code", &want.code)
                && field("status", &want.status)
                && field("tool", &want.tool)
        };
        if (want.action.is_some() || want.code.is_some() || want.status.is_some() || want.tool.is_some())
            && !events.iter().any(matches)
        {
            return Err(format!(
                "no audit event like {want:?}; the request left {}",
                Value::Array(events.clone())
            ));
        }
        let all = Value::Array(events.clone()).to_string();
        for text in &want.excludes {
            let text = substitute(text, vars);
            if !text.is_empty() && all.contains(&text) {
                return Err(format!("an audit event contains {text:?}"));
            }
        }
    }
    Ok(())
}

/// Appends TOML to the demo's own config (as the demo wrote it) and reloads it through
/// the admin plane.
fn reconfigure(target: &Target, toml: &str) -> Result<(), String> {
    let path = target.config_path.as_ref().ok_or("reconfigure needs --binary")?;
    let mut original = target.original_config.lock().map_err(|_| "config lock poisoned")?;
    if original.is_none() {
        *original = Some(std::fs::read_to_string(path).map_err(|e| e.to_string())?);
    }
    // Each reconfigure starts from the demo's own config; an empty one restores it.
    let mut text = original.clone().unwrap_or_default();
    text.push('\n');
    text.push_str(toml);
    text.push('\n');
    std::fs::write(path, text).map_err(|e| e.to_string())?;
    let admin = target.admin_url.as_ref().ok_or("no admin URL")?;
    let token = target.admin_tokens.get("operator").ok_or("no operator token")?;
    let mut headers = BTreeMap::new();
    headers.insert("authorization".to_string(), format!("Bearer {token}"));
    headers.insert("content-type".to_string(), "application/json".to_string());
    let answer = send(
        &format!("{admin}/api/agent-admin/v1/policies/reload"),
        "POST",
        &headers,
        Some(b"{}"),
    )?;
    if answer.status != 200 {
        return Err(format!("reload after reconfigure: {} {}", answer.status, answer.text));
    }
    Ok(())
}

/// Writes raw bytes and waits for the gateway to close the connection.
fn raw_tcp(target: &Target, raw: &RawTcp) -> Result<(), String> {
    let addr = target.url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream.write_all(raw.send.as_bytes()).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_millis(raw.closed_within_ms)))
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut buf = [0_u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            // A reset also ends the connection.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(()),
            Err(_) => {
                return Err(format!(
                    "the connection was still open after {} ms",
                    started.elapsed().as_millis()
                ));
            }
        }
    }
}

pub struct Sent {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub text: String,
}

impl Sent {
    fn json(&self) -> Result<Value, String> {
        serde_json::from_str(&self.text)
            .map_err(|_| format!("body is not JSON: {}", self.text.chars().take(200).collect::<String>()))
    }

    /// The reason code an envelope or a JSON-RPC error or tool result carried.
    fn code(&self) -> Option<String> {
        let json: Value = serde_json::from_str(&self.text).ok()?;
        [
            "code",
            "error.data.code",
            "result.structuredContent.code",
            "result._meta.openport.code",
        ]
        .iter()
        .find_map(|p| lookup(&json, p).and_then(Value::as_str))
        .filter(|c| c.contains('.'))
        .map(String::from)
    }
}

fn send(url: &str, method: &str, headers: &BTreeMap<String, String>, body: Option<&[u8]>) -> Result<Sent, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let mut request = ureq::http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let request = request
        .body(body.unwrap_or_default().to_vec())
        .map_err(|e| e.to_string())?;
    let mut response = agent.run(request).map_err(|e| e.to_string())?;
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_ascii_lowercase(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let text = response
        .body_mut()
        .with_config()
        .limit(16 * 1024 * 1024)
        .read_to_string()
        .map_err(|e| e.to_string())?;
    Ok(Sent {
        status: response.status().as_u16(),
        headers,
        text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_771_027_200), "2026-02-14T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn longer_names_are_substituted_first() {
        let mut vars = BTreeMap::new();
        vars.insert("token.A".to_string(), "short".to_string());
        vars.insert("token.A B".to_string(), "long".to_string());
        assert_eq!(substitute("${token.A B}/${token.A}", &vars), "long/short");
    }
}
