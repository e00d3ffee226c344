//! Loads cases, sends their requests and checks the answers.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
    pub request: RequestSpec,
    pub expect: Expect,
    /// Values to remember for later cases: name → dotted path in the response.
    #[serde(default)]
    pub capture: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    pub method: String,
    pub path: String,
    /// `agent` (default: the first demo app), `agent:<app name>`, `admin:<role>`,
    /// `bearer:<literal>` or `none`.
    #[serde(default)]
    pub auth: Option<String>,
    #[serde(default)]
    pub body: Option<Value>,
    #[serde(default)]
    pub raw: Option<String>,
    #[serde(default)]
    pub admin: bool,
}

#[derive(Debug, Default, Deserialize)]
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
    pub arrays: Vec<String>,
    #[serde(default)]
    pub strings: Vec<String>,
    #[serde(default)]
    pub present: Vec<String>,
    #[serde(default)]
    pub equals: BTreeMap<String, Value>,
}

/// The gateway under test.
pub struct Target {
    pub url: String,
    pub admin_url: Option<String>,
    pub agent_tokens: BTreeMap<String, String>,
    pub default_token: String,
    pub admin_tokens: BTreeMap<String, String>,
    child: Option<Child>,
    _dir: Option<TempDir>,
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A directory removed on drop.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Target {
    pub fn remote(url: String, token: String) -> Target {
        Target {
            url: url.trim_end_matches('/').to_string(),
            admin_url: None,
            agent_tokens: BTreeMap::new(),
            default_token: token,
            admin_tokens: BTreeMap::new(),
            child: None,
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
        let child = Command::new(binary)
            .arg("demo")
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--admin-listen",
                &format!("127.0.0.1:{admin_port}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        let mut target = Target {
            url: format!("http://127.0.0.1:{port}"),
            admin_url: Some(format!("http://127.0.0.1:{admin_port}")),
            agent_tokens: BTreeMap::new(),
            default_token: String::new(),
            admin_tokens: BTreeMap::new(),
            child: Some(child),
            _dir: Some(TempDir(dir.clone())),
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok((200, _, _)) = send(&format!("{}/healthz", target.url), "GET", None, None) {
                break;
            }
            if Instant::now() > deadline {
                return Err("the demo did not answer /healthz within 120 s".into());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let creds: Value = std::fs::read(dir.join("data/demo-credentials.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or("the demo wrote no demo-credentials.json")?;
        let map = |v: &Value| -> BTreeMap<String, String> {
            v.as_object().map_or_else(BTreeMap::new, |o| {
                o.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
        };
        target.agent_tokens = map(&creds["agent_tokens"]);
        target.admin_tokens = map(&creds["admin_tokens"]);
        target.default_token = target.agent_tokens.values().next().cloned().ok_or("no agent tokens")?;
        Ok(target)
    }
}

pub struct CaseResult {
    pub id: String,
    pub error: Option<String>,
}

/// Runs every case of every profile in order; captures flow to later cases.
pub fn run(target: &Target, profiles: &[Profile]) -> Vec<CaseResult> {
    let mut vars = BTreeMap::new();
    let mut results = Vec::new();
    for profile in profiles {
        for case in &profile.cases {
            let error = run_case(target, case, &mut vars).err();
            results.push(CaseResult {
                id: format!("{}/{}", profile.id, case.id),
                error,
            });
        }
    }
    results
}

fn substitute(text: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = text.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("${{{k}}}"), v);
    }
    out
}

fn substitute_value(value: &Value, vars: &BTreeMap<String, String>) -> Value {
    match value {
        Value::String(s) => Value::String(substitute(s, vars)),
        Value::Array(a) => Value::Array(a.iter().map(|v| substitute_value(v, vars)).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), substitute_value(v, vars))).collect()),
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

fn run_case(target: &Target, case: &Case, vars: &mut BTreeMap<String, String>) -> Result<(), String> {
    let req = &case.request;
    let token = match req.auth.as_deref() {
        None | Some("agent") => Some(target.default_token.clone()),
        Some("none") => None,
        Some(other) => match other.split_once(':') {
            Some(("agent", name)) => Some(
                target
                    .agent_tokens
                    .get(name)
                    .cloned()
                    .ok_or(format!("no agent token for `{name}`"))?,
            ),
            Some(("admin", role)) => Some(
                target
                    .admin_tokens
                    .get(role)
                    .cloned()
                    .ok_or(format!("no admin token for `{role}`"))?,
            ),
            Some(("bearer", literal)) => Some(literal.to_string()),
            _ => return Err(format!("unknown auth `{other}`")),
        },
    };
    let base = if req.admin {
        target.admin_url.clone().ok_or("no admin URL for this target")?
    } else {
        target.url.clone()
    };
    let url = format!("{base}{}", substitute(&req.path, vars));
    let body = match (&req.body, &req.raw) {
        (Some(body), _) => Some(substitute_value(body, vars).to_string()),
        (None, Some(raw)) => Some(raw.clone()),
        (None, None) => None,
    };
    let (status, headers, text) = send(&url, &req.method, token.as_deref(), body.as_deref())?;
    let json: Value = serde_json::from_str(&text)
        .map_err(|_| format!("body is not JSON: {}", text.chars().take(200).collect::<String>()))?;
    let e = &case.expect;
    if status != e.status {
        return Err(format!(
            "status {status}, want {}: {}",
            e.status,
            text.chars().take(300).collect::<String>()
        ));
    }
    if let Some(code) = &e.code
        && json["code"].as_str() != Some(code)
    {
        return Err(format!("code {}, want {code}", json["code"]));
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
    for h in &e.headers {
        if !headers.contains_key(&h.to_ascii_lowercase()) {
            return Err(format!("header `{h}` missing"));
        }
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
    for (p, want) in &e.equals {
        let want = substitute_value(want, vars);
        if lookup(&json, p) != Some(&want) {
            return Err(format!("`{p}` is {:?}, want {want}", lookup(&json, p)));
        }
    }
    for (name, path) in &case.capture {
        let value = lookup(&json, path).ok_or(format!("cannot capture `{path}`"))?;
        vars.insert(
            name.clone(),
            value.as_str().map_or_else(|| value.to_string(), String::from),
        );
    }
    Ok(())
}

type Sent = (u16, BTreeMap<String, String>, String);

fn send(url: &str, method: &str, token: Option<&str>, body: Option<&str>) -> Result<Sent, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let mut request = ureq::http::Request::builder().method(method).uri(url);
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    if body.is_some() {
        request = request.header("Content-Type", "application/json");
    }
    let request = request
        .body(body.unwrap_or("").as_bytes().to_vec())
        .map_err(|e| e.to_string())?;
    let mut response = agent.run(request).map_err(|e| e.to_string())?;
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_ascii_lowercase(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let text = response.body_mut().read_to_string().map_err(|e| e.to_string())?;
    Ok((response.status().as_u16(), headers, text))
}
