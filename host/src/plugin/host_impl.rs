//! The host capabilities of `wit/plugin.wit`. Each checks its grant before it touches a
//! backend; a missing grant is `error.unavailable`, never a trap.

use super::CallState;
use super::bindings::adapter::openport::plugin::host::{
    Host, HttpRequest, HttpResponse, KvCondition, KvWrite, Level, Versioned,
};
use super::bindings::adapter::openport::plugin::types::{self, Error};
use super::interaction::{InputAsk, Progress, TaskSwitch};
use crate::store::{self as kv, IncrementError};

/// Longest key and value a plugin may store, and most keys one `kv-list` returns.
const MAX_KV_KEY: usize = 512;
const MAX_KV_VALUE: usize = 256 * 1024;
const MAX_KV_LIST: usize = 10_000;
/// Most bytes of keys and values one `kv-scan` returns: the answer is copied into the
/// guest's memory, which is bounded too.
const MAX_KV_SCAN_BYTES: usize = 8 * 1024 * 1024;
/// Most conditions, and most writes, in one `kv-batch`.
const MAX_KV_BATCH: usize = 64;
/// Log lines one call may write; the rest are dropped.
const MAX_LOG_LINES: u32 = 100;

fn denied(capability: &str) -> Error {
    Error::Unavailable(format!("capability `{capability}` is not granted to this plugin"))
}

fn backend(e: impl std::fmt::Display) -> Error {
    tracing::warn!(error = %e, "plugin kv backend failed");
    Error::Unavailable("key-value store unavailable".into())
}

/// Keys and values a plugin may store.
fn check_entry(key: &str, value: &str) -> Result<(), Error> {
    if key.len() > MAX_KV_KEY || value.len() > MAX_KV_VALUE {
        return Err(Error::InvalidInput(format!(
            "kv keys are at most {MAX_KV_KEY} bytes and values at most {MAX_KV_VALUE}"
        )));
    }
    Ok(())
}

impl types::Host for CallState {}

impl Host for CallState {
    fn log(&mut self, level: Level, message: String) {
        if !self.env.grants.log || self.log_lines >= MAX_LOG_LINES {
            return;
        }
        self.log_lines += 1;
        let message: String = message.chars().take(2_000).collect();
        let plugin = self.env.name.as_str();
        let request_id = self.request_id.as_str();
        match level {
            Level::Debug => tracing::debug!(plugin, request_id, "{message}"),
            Level::Info => tracing::info!(plugin, request_id, "{message}"),
            Level::Warn => tracing::warn!(plugin, request_id, "{message}"),
            Level::Error => tracing::error!(plugin, request_id, "{message}"),
        }
    }

    fn now_ms(&mut self) -> Result<u64, Error> {
        let result = (|| -> Result<u64, Error> {
            if !self.env.grants.clock {
                return Err(denied("clock"));
            }
            Ok(u64::try_from(self.env.clock.now_ms()).unwrap_or(0))
        })();
        self.note(result)
    }

    fn kv_get(&mut self, key: String) -> Result<Option<String>, Error> {
        let result = (|| -> Result<Option<String>, Error> {
            let store = self.kv("get")?;
            store.kv.get(self.namespace(), &self.tenant, &key).map_err(backend)
        })();
        self.note(result)
    }

    fn kv_set(&mut self, key: String, value: String) -> Result<(), Error> {
        let result = (|| -> Result<(), Error> {
            check_entry(&key, &value)?;
            let store = self.kv("set")?;
            store
                .kv
                .set(&self.env.name, &self.tenant, &key, &value)
                .map(|_| ())
                .map_err(backend)
        })();
        self.note(result)
    }

    fn kv_delete(&mut self, key: String) -> Result<(), Error> {
        let result = (|| -> Result<(), Error> {
            let store = self.kv("delete")?;
            // Writes go to the plugin's own namespace only: a witness granted another
            // plugin's namespace reads it, and never deletes from it.
            store.kv.delete(&self.env.name, &self.tenant, &key).map_err(backend)
        })();
        self.note(result)
    }

    fn kv_list(&mut self, prefix: String) -> Result<Vec<String>, Error> {
        let result = (|| -> Result<Vec<String>, Error> {
            let store = self.kv("list")?;
            store
                .kv
                .list(&self.env.name, &self.tenant, &prefix, MAX_KV_LIST)
                .map_err(backend)
        })();
        self.note(result)
    }

    fn kv_scan(&mut self, prefix: String) -> Result<Vec<(String, String)>, Error> {
        let result = (|| -> Result<Vec<(String, String)>, Error> {
            let store = self.kv("scan")?;
            // A read, so it reads the namespace `kv-get` reads.
            store
                .kv
                .scan(self.namespace(), &self.tenant, &prefix, MAX_KV_LIST, MAX_KV_SCAN_BYTES)
                .map_err(backend)?
                .ok_or_else(|| {
                    Error::InvalidInput(format!(
                        "the entries under `{prefix}` pass {MAX_KV_SCAN_BYTES} bytes: read them with kv-list and kv-get"
                    ))
                })
        })();
        self.note(result)
    }

    fn kv_get_versioned(&mut self, key: String) -> Result<Option<Versioned>, Error> {
        let result = (|| -> Result<Option<Versioned>, Error> {
            let store = self.kv("get")?;
            let found = store
                .kv
                .get_versioned(self.namespace(), &self.tenant, &key)
                .map_err(backend)?;
            Ok(found.map(|v| Versioned {
                value: v.value,
                version: v.version,
            }))
        })();
        self.note(result)
    }

    fn kv_compare_and_set(&mut self, key: String, expected: Option<u64>, value: String) -> Result<Option<u64>, Error> {
        let result = (|| -> Result<Option<u64>, Error> {
            check_entry(&key, &value)?;
            let store = self.kv("compare-and-set")?;
            store
                .kv
                .compare_and_set(&self.env.name, &self.tenant, &key, expected, &value)
                .map_err(backend)
        })();
        self.note(result)
    }

    fn kv_increment(&mut self, key: String, delta: i64) -> Result<i64, Error> {
        let result = (|| -> Result<i64, Error> {
            check_entry(&key, "")?;
            let store = self.kv("increment")?;
            store
                .kv
                .increment(&self.env.name, &self.tenant, &key, delta)
                .map_err(|e| match e {
                    IncrementError::Store(e) => backend(e),
                    refused => Error::InvalidInput(refused.to_string()),
                })
        })();
        self.note(result)
    }

    fn kv_batch(&mut self, conditions: Vec<KvCondition>, writes: Vec<KvWrite>) -> Result<bool, Error> {
        let result = (|| -> Result<bool, Error> {
            if conditions.len() > MAX_KV_BATCH || writes.len() > MAX_KV_BATCH {
                return Err(Error::InvalidInput(format!(
                    "a kv batch takes at most {MAX_KV_BATCH} conditions and {MAX_KV_BATCH} writes"
                )));
            }
            let conditions: Vec<kv::KvCondition> = conditions
                .into_iter()
                .map(|c| {
                    check_entry(&c.key, "")?;
                    Ok(kv::KvCondition {
                        key: c.key,
                        version: c.version,
                    })
                })
                .collect::<Result<_, Error>>()?;
            let writes: Vec<kv::KvWrite> = writes
                .into_iter()
                .map(|w| match w {
                    KvWrite::Set((key, value)) => {
                        check_entry(&key, &value)?;
                        Ok(kv::KvWrite::Set { key, value })
                    }
                    KvWrite::Delete(key) => {
                        check_entry(&key, "")?;
                        Ok(kv::KvWrite::Delete { key })
                    }
                })
                .collect::<Result<_, Error>>()?;
            let store = self.kv("batch")?;
            store
                .kv
                .batch(&self.env.name, &self.tenant, &conditions, &writes)
                .map_err(backend)
        })();
        self.note(result)
    }

    fn execution_id(&mut self) -> Option<String> {
        self.execution_id.clone()
    }

    fn config_get(&mut self, key: String) -> Result<Option<String>, Error> {
        // Only keys the operator wrote into the manifest exist; there is nothing ambient.
        Ok(self.env.grants.config.get(&key).cloned())
    }

    async fn http_fetch(&mut self, request: HttpRequest) -> Result<HttpResponse, Error> {
        let result = self.fetch(request).await;
        self.note(result)
    }

    fn input_responses(&mut self) -> Option<String> {
        self.interaction.round.responses.as_ref().map(|v| v.to_string())
    }

    fn input_state(&mut self) -> Option<String> {
        self.interaction.round.state.clone()
    }

    fn client_capabilities(&mut self) -> Option<String> {
        self.interaction
            .round
            .client_capabilities
            .as_ref()
            .map(|v| v.to_string())
    }

    fn require_input(&mut self, requests: String, state: Option<String>) -> Result<(), Error> {
        let ask = InputAsk::parse(&requests, state).map_err(Error::InvalidInput);
        let result = ask.map(|ask| self.interaction.asked = Some(ask));
        self.note(result)
    }

    fn progress(&mut self, progress: f64, total: Option<f64>, message: Option<String>) {
        let message = message.map(|m| m.chars().take(500).collect());
        self.interaction.report(Progress {
            progress,
            total,
            message,
        });
    }

    async fn run_as_task(&mut self) -> bool {
        match std::mem::take(&mut self.interaction.round.task) {
            TaskSwitch::Unavailable => false,
            TaskSwitch::Running => {
                self.interaction.round.task = TaskSwitch::Running;
                true
            }
            TaskSwitch::Offered(offer) => {
                let (answer, answered) = tokio::sync::oneshot::channel();
                if offer.send(answer).is_err() || answered.await != Ok(true) {
                    return false;
                }
                self.interaction.round.task = TaskSwitch::Running;
                self.deadline.set(crate::clock::monotonic_now() + self.task_timeout);
                true
            }
        }
    }
}

/// Whether `host:port` matches an allow-list entry (`host` or `host:port`).
fn host_granted(list: &[String], host: &str, port: u16) -> bool {
    list.iter().any(|entry| {
        let entry = entry.trim().to_ascii_lowercase();
        match entry.rsplit_once(':') {
            Some((h, p)) if p.parse::<u16>().is_ok() => h == host && p.parse::<u16>() == Ok(port),
            _ => entry == host,
        }
    })
}

fn send(request: HttpRequest, timeout: std::time::Duration, limit: usize) -> Result<HttpResponse, Error> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        // Redirects could leave the allow-list: the plugin sees them and decides.
        .max_redirects(0)
        .build()
        .into();
    let mut builder = ureq::http::Request::builder()
        .method(request.method.as_str())
        .uri(&request.url);
    for (name, value) in &request.headers {
        builder = builder.header(name, value);
    }
    let req = builder
        .body(request.body.unwrap_or_default())
        .map_err(|e| Error::InvalidInput(format!("bad request: {e}")))?;
    let mut response = agent
        .run(req)
        .map_err(|e| Error::Unavailable(format!("request failed: {e}")))?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let body = response
        .body_mut()
        .with_config()
        .limit(u64::try_from(limit).unwrap_or(u64::MAX))
        .read_to_vec()
        .map_err(|e| Error::Unavailable(format!("response unreadable or over {limit} bytes: {e}")))?;
    Ok(HttpResponse { status, headers, body })
}

impl CallState {
    /// A host call that failed leaves the instance unfit for another call (see
    /// `Plugin::call`): the guest may have kept state the error left half-done.
    fn note<T>(&mut self, result: Result<T, Error>) -> Result<T, Error> {
        if result.is_err() {
            self.tainted = true;
        }
        result
    }

    async fn fetch(&mut self, mut request: HttpRequest) -> Result<HttpResponse, Error> {
        let uri: ureq::http::Uri = request
            .url
            .parse()
            .map_err(|_| Error::InvalidInput(format!("`{}` is not a URL", request.url)))?;
        let scheme = uri.scheme_str().unwrap_or("");
        if scheme != "http" && scheme != "https" {
            return Err(Error::InvalidInput("only http and https URLs are allowed".into()));
        }
        let host = uri.host().unwrap_or("").to_ascii_lowercase();
        let port = uri.port_u16().unwrap_or(if scheme == "https" { 443 } else { 80 });
        if !host_granted(&self.env.grants.http, &host, port) {
            tracing::warn!(plugin = %self.env.name, request_id = %self.request_id, %host, port, "outbound request to an ungranted host refused");
            return Err(Error::Unavailable(format!(
                "host `{host}:{port}` is not granted to this plugin"
            )));
        }
        let remaining = self
            .deadline
            .get()
            .saturating_duration_since(crate::clock::monotonic_now());
        if remaining.is_zero() {
            return Err(Error::Unavailable("the call's time budget is spent".into()));
        }
        let limit = self.max_output_bytes;
        // The request's trace continues into the application, unless the plugin set its own.
        if let Some(trace) = &self.trace
            && !request
                .headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("traceparent"))
        {
            request.headers.push(("traceparent".into(), trace.traceparent.clone()));
            if let Some(state) = &trace.tracestate {
                request.headers.push(("tracestate".into(), state.clone()));
            }
        }
        // ureq blocks: run it on the blocking pool so the async workers stay free.
        let result = tokio::task::spawn_blocking(move || send(request, remaining, limit)).await;
        result.unwrap_or_else(|_| Err(Error::Internal("outbound request task failed".into())))
    }

    /// The key-value namespace: the plugin's own, or the one the operator granted.
    fn namespace(&self) -> &str {
        self.env.grants.kv_namespace.as_deref().unwrap_or(&self.env.name)
    }

    fn kv(&self, _op: &str) -> Result<std::sync::Arc<crate::store::Store>, Error> {
        if !self.env.grants.kv {
            return Err(denied("kv"));
        }
        Ok(self.env.store.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::host_granted;

    #[test]
    fn the_http_allow_list_matches_host_and_port() {
        let list = vec!["127.0.0.1:8090".to_string(), "api.example.com".to_string()];
        assert!(host_granted(&list, "127.0.0.1", 8090));
        assert!(!host_granted(&list, "127.0.0.1", 8091));
        assert!(host_granted(&list, "api.example.com", 443));
        assert!(!host_granted(&list, "169.254.169.254", 80));
        assert!(!host_granted(&list, "api.example.com.evil.test", 443));
        assert!(!host_granted(&[], "127.0.0.1", 80));
    }
}
