//! The process's log: JSON lines on standard error, filtered by `OPENPORT_LOG` at start
//! and changeable while running (`PUT /api/agent-admin/v1/log-level`).

use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Registry, reload};

static FILTER: OnceLock<(reload::Handle<EnvFilter, Registry>, std::sync::Mutex<String>)> = OnceLock::new();

/// Installs the log once per process with a starting filter (`OPENPORT_LOG`, read by the
/// config module); later calls do nothing. A filter that does not parse falls back to `info`.
pub fn init(text: &str) {
    let text = if EnvFilter::try_new(text).is_ok() { text } else { "info" };
    let filter = EnvFilter::new(text);
    let (layer, handle) = reload::Layer::new(filter);
    let installed = tracing_subscriber::registry()
        .with(layer)
        .with(tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr))
        .try_init();
    if installed.is_ok() {
        let _ = FILTER.set((handle, std::sync::Mutex::new(text.to_string())));
    }
}

/// The filter in force, when this process installed the log.
pub fn filter() -> Option<String> {
    FILTER
        .get()
        .map(|(_, text)| text.lock().unwrap_or_else(|p| p.into_inner()).clone())
}

/// Replaces the filter (`tracing` directives, e.g. `info,openport::access=off`).
pub fn set_filter(text: &str) -> Result<(), String> {
    let filter = EnvFilter::try_new(text).map_err(|e| format!("`{text}` is not a log filter: {e}"))?;
    let (handle, current) = FILTER
        .get()
        .ok_or("this process did not install the log (an embedding application owns it)")?;
    handle.reload(filter).map_err(|e| e.to_string())?;
    *current.lock().unwrap_or_else(|p| p.into_inner()) = text.to_string();
    Ok(())
}
