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

/// The system's CA bundle (Debian and its derivatives), trusted for an `https` admin URL
/// when no `--admin-ca` is given.
const SYSTEM_CAS: &str = "/etc/ssl/certs/ca-certificates.crt";

impl AdminClient {
    /// A client of the admin plane at `base`; for `https`, the server's certificate must
    /// chain to a CA in `ca` (a PEM bundle), else to one in the system's bundle.
    pub fn new(base: &str, token: &str, ca: Option<&std::path::Path>) -> Result<Self, String> {
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(30)));
        if base.starts_with("https://") {
            let path = ca.unwrap_or(std::path::Path::new(SYSTEM_CAS));
            let pem =
                std::fs::read(path).map_err(|e| format!("cannot read the CA bundle `{}`: {e}", path.display()))?;
            let roots: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(cert)) => Some(cert),
                    _ => None,
                })
                .collect();
            if roots.is_empty() {
                return Err(format!("`{}` holds no CA certificate", path.display()));
            }
            let tls = ureq::tls::TlsConfig::builder()
                .provider(ureq::tls::TlsProvider::Rustls)
                .root_certs(ureq::tls::RootCerts::new_with_certs(&roots))
                .unversioned_rustls_crypto_provider(std::sync::Arc::new(
                    tokio_rustls::rustls::crypto::ring::default_provider(),
                ))
                .build();
            config = config.tls_config(tls);
        }
        Ok(AdminClient {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            agent: config.build().into(),
        })
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
