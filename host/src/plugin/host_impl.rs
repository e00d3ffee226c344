//! The host capabilities of `wit/plugin.wit`. Each checks its grant before it touches a
//! backend; a missing grant is `error.unavailable`, never a trap.

use super::CallState;
use super::bindings::openport::plugin::host::{Host, Level};
use super::bindings::openport::plugin::types::{self, Error};

/// Longest key and value a plugin may store, and most keys one `kv-list` returns.
const MAX_KV_KEY: usize = 512;
const MAX_KV_VALUE: usize = 256 * 1024;
const MAX_KV_LIST: usize = 10_000;
/// Log lines one call may write; the rest are dropped.
const MAX_LOG_LINES: u32 = 100;

fn denied(capability: &str) -> Error {
    Error::Unavailable(format!("capability `{capability}` is not granted to this plugin"))
}

fn backend(e: impl std::fmt::Display) -> Error {
    tracing::warn!(error = %e, "plugin kv backend failed");
    Error::Unavailable("key-value store unavailable".into())
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
        if !self.env.grants.clock {
            return Err(denied("clock"));
        }
        Ok(u64::try_from(self.env.clock.now_ms()).unwrap_or(0))
    }

    fn kv_get(&mut self, key: String) -> Result<Option<String>, Error> {
        let store = self.kv("get")?;
        store.kv_get(&self.env.name, &self.tenant, &key).map_err(backend)
    }

    fn kv_set(&mut self, key: String, value: String) -> Result<(), Error> {
        if key.len() > MAX_KV_KEY || value.len() > MAX_KV_VALUE {
            return Err(Error::InvalidInput(format!(
                "kv keys are at most {MAX_KV_KEY} bytes and values at most {MAX_KV_VALUE}"
            )));
        }
        let store = self.kv("set")?;
        store
            .kv_set(&self.env.name, &self.tenant, &key, &value)
            .map_err(backend)
    }

    fn kv_delete(&mut self, key: String) -> Result<(), Error> {
        let store = self.kv("delete")?;
        store.kv_delete(&self.env.name, &self.tenant, &key).map_err(backend)
    }

    fn kv_list(&mut self, prefix: String) -> Result<Vec<String>, Error> {
        let store = self.kv("list")?;
        store
            .kv_list(&self.env.name, &self.tenant, &prefix, MAX_KV_LIST)
            .map_err(backend)
    }

    fn config_get(&mut self, key: String) -> Result<Option<String>, Error> {
        // Only keys the operator wrote into the manifest exist; there is nothing ambient.
        Ok(self.env.grants.config.get(&key).cloned())
    }
}

impl CallState {
    fn kv(&self, _op: &str) -> Result<std::sync::Arc<crate::store::Store>, Error> {
        if !self.env.grants.kv {
            return Err(denied("kv"));
        }
        Ok(self.env.store.clone())
    }
}
