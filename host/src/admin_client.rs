//! The admin plane's HTTP client, for the `openport app|key|policy|drafts` commands. The
//! CLI changes state only through the running gateway, so every change is authorized,
//! audited and chained like any other admin request.

use serde_json::Value;

/// Where the admin plane is and who is calling.
#[derive(Debug, Clone)]
pub struct AdminClient {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl AdminClient {
    pub fn new(base: &str, token: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(30)))
            .build()
            .into();
        AdminClient {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            agent,
        }
    }

    /// Sends a request to `/api/agent-admin/v1/<path>` and returns the envelope's `data`,
    /// or the error envelope's code and message.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let url = format!("{}/api/agent-admin/v1/{path}", self.base);
        let request = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("Authorization", format!("Bearer {}", self.token))
            .header("Content-Type", "application/json")
            .body(body.map(Value::to_string).unwrap_or_default().into_bytes())
            .map_err(|e| e.to_string())?;
        let mut response = self
            .agent
            .run(request)
            .map_err(|e| format!("cannot reach {url}: {e}"))?;
        let text = response.body_mut().read_to_string().map_err(|e| e.to_string())?;
        let envelope: Value = serde_json::from_str(&text).map_err(|_| format!("not an OpenPort answer: {text}"))?;
        if envelope["ok"] == Value::Bool(true) {
            Ok(envelope["data"].clone())
        } else {
            let issues = envelope["details"]["issues"]
                .as_array()
                .map(|i| {
                    i.iter()
                        .filter_map(|i| i["message"].as_str())
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .unwrap_or_default();
            Err(format!(
                "{}: {} {issues}",
                envelope["code"].as_str().unwrap_or("?"),
                envelope["message"].as_str().unwrap_or("")
            ))
        }
    }
}
