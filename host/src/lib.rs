//! OpenPort: a gateway that lets AI agents use an application's tools safely.
//!
//! The library holds everything; the `openport` binary only parses the command line.
//! Tests start the same [`Server`] that production does. See `docs/architecture.md` for
//! the module map and the dependency rules between modules.

pub mod admin;
pub mod admin_client;
pub mod admission;
pub mod app_policy;
pub mod apps;
pub mod attr;
pub mod audit;
pub mod auth;
pub mod authoring;
pub mod authz;
pub mod catalog;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod disk;
pub mod gateway;
pub mod hashing;
pub mod http;
pub mod logging;
pub mod mcp;
pub mod metrics;
pub mod outcome;
pub mod pipeline;
pub mod plugin;
pub mod protocol;
pub mod rest;
pub mod sessions;
pub mod store;
pub mod tasks;
pub mod tls;
pub mod tool;
pub mod writes;

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod layering;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::Config;
pub use gateway::{Gateway, StartError};

/// A running gateway: both listeners bound and serving.
#[derive(Debug)]
pub struct Server {
    pub gateway: Arc<Gateway>,
    pub agent_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("settling executions a stopped process left running: {0}")]
    Recovery(#[from] writes::recovery::RecoveryError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

impl Server {
    /// Starts the gateway (store, policies, plugins), then binds both listeners.
    pub async fn start(config: Config, clock: clock::SharedClock) -> Result<Server, RunError> {
        let (agent_cfg, admin_cfg) = (config.listen, config.admin_listen);
        let gateway = Gateway::start(config, clock).await?;
        // Executions a previous process left running, resumed or left to an operator before
        // requests are served (they need the plugins, loaded now). A resumed call that takes
        // longer goes on in the background: a retry meanwhile is told it is in progress.
        let settling = tokio::spawn({
            let gateway = gateway.clone();
            async move {
                let settled = settle_executions(&gateway).await;
                if let Err(e) = &settled {
                    tracing::error!(error = %e, "settling executions a stopped process left running failed");
                }
                settled
            }
        });
        match tokio::time::timeout(SETTLE_BEFORE_SERVING, settling).await {
            Ok(Ok(settled)) => settled?,
            Ok(Err(e)) => tracing::error!(error = %e, "settling executions failed"),
            Err(_) => tracing::warn!("resumed executions are still running; serving meanwhile"),
        }
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| RunError::Bind { addr, source })
        };
        let agent = bind(agent_cfg).await?;
        let admin = bind(admin_cfg).await?;
        let agent_addr = agent.local_addr().map_err(|source| RunError::Bind {
            addr: agent_cfg,
            source,
        })?;
        let admin_addr = admin.local_addr().map_err(|source| RunError::Bind {
            addr: admin_cfg,
            source,
        })?;
        let (shutdown, watch) = watch::channel(false);
        let sessions = Arc::new(http::Sessions::new(&gateway).map_err(|source| StartError::Store {
            path: gateway.config.store_location().to_string(),
            source,
        })?);
        let serve = |listener, plane| {
            tokio::spawn(http::serve(
                gateway.clone(),
                sessions.clone(),
                listener,
                plane,
                watch.clone(),
            ))
        };
        let mut tasks = vec![serve(agent, http::Plane::Agent), serve(admin, http::Plane::Admin)];
        if gateway.config.path.is_some() {
            tasks.push(tokio::spawn(watch_files(gateway.clone(), watch.clone())));
        }
        tasks.push(tokio::spawn(refusal_summaries(gateway.clone(), watch.clone())));
        tasks.push(tokio::spawn(reap_instances(gateway.clone(), watch.clone())));
        tasks.push(tokio::spawn(disk_budget(gateway.clone(), watch.clone())));
        if gateway.store.is_shared() {
            tasks.push(tokio::spawn(heartbeat(gateway.clone(), watch.clone())));
            tasks.push(tokio::spawn(follow_cluster(gateway.clone(), watch.clone())));
        }
        if let Some(days) = gateway.config.audit_retention_days {
            tasks.push(tokio::spawn(retention(gateway.clone(), days, watch)));
        }
        Ok(Server {
            gateway,
            agent_addr,
            admin_addr,
            shutdown,
            tasks,
        })
    }

    /// Stops accepting connections, waits for the accept loops to end, and signs a last
    /// checkpoint of the audit chain.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        write_refusal_summaries(&self.gateway).await;
        if let Err(e) = self.gateway.audit.seal().await {
            tracing::error!(error = %e, "the last audit checkpoint was not signed");
        }
    }
}

/// How long a start waits for resumed executions before it serves.
const SETTLE_BEFORE_SERVING: std::time::Duration = std::time::Duration::from_secs(5);

/// Settles the executions dead processes left running (`writes::recovery`), and says what
/// it did.
async fn settle_executions(gateway: &Gateway) -> Result<(), writes::recovery::RecoveryError> {
    let settled = writes::recovery::settle_orphaned_executions(gateway).await?;
    if settled != writes::recovery::Settled::default() {
        tracing::warn!(
            resumed = settled.resumed,
            interrupted = settled.interrupted,
            indeterminate = settled.indeterminate,
            "settled executions a stopped process left running"
        );
    }
    Ok(())
}

/// Follows the other nodes' plugin and policy changes until `shutdown` (`cluster`).
async fn follow_cluster(gateway: Arc<Gateway>, mut shutdown: watch::Receiver<bool>) {
    let mut applied = gateway.cluster_version_at_start.clone();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(cluster::FOLLOW_EVERY) => {}
            _ = shutdown.changed() => return,
        }
        let current = match gateway.store.meta.get(cluster::CONFIG_VERSION) {
            Ok(current) => current,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the cluster's config version; retrying");
                continue;
            }
        };
        if current == applied {
            continue;
        }
        // Whatever fails is kept as unavailable (and retried on the next change); the
        // version is applied as far as it goes.
        gateway.sync_from_store().await;
        gateway.metrics.cluster_synced(gateway.unavailable_plugins().len());
        applied = current;
    }
}

/// Tells the other nodes of a shared store that this one is alive, every 2 s (its lease is
/// `NODE_LEASE_SECONDS`), settles dead nodes' work every 10 s, and leaves on stop so its
/// work is not waited for.
async fn heartbeat(gateway: Arc<Gateway>, mut shutdown: watch::Receiver<bool>) {
    // Beats in a row that reached the database: after an outage every node's last beat
    // looks old, so nothing is taken over until a whole lease (5 beats) has passed since.
    let mut recorded_in_a_row: u64 = 0;
    let mut beats: u64 = 0;
    // One settling pass at a time; a resumed execution runs as long as its plugin call,
    // so not on the beat.
    let mut settling: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        beats += 1;
        // Every 10 s: settle what nodes that died (and stayed dead) left half-done.
        if beats.is_multiple_of(5) && recorded_in_a_row >= 5 {
            match gateway.recover().await {
                Ok(()) if settling.as_ref().is_none_or(tokio::task::JoinHandle::is_finished) => {
                    let gateway = gateway.clone();
                    settling = Some(tokio::spawn(async move {
                        if let Err(e) = settle_executions(&gateway).await {
                            tracing::warn!(error = %e, "settling a dead node's executions failed; retrying");
                        }
                    }));
                }
                Ok(()) => {}
                Err(e) => tracing::warn!(error = %e, "settling a dead node's work failed; retrying"),
            }
        }
        let beating = gateway.clone();
        match tokio::task::spawn_blocking(move || beating.heartbeat()).await {
            Ok(Ok(())) => recorded_in_a_row += 1,
            Ok(Err(e)) => {
                recorded_in_a_row = 0;
                tracing::warn!(error = %e, "heartbeat not recorded");
            }
            Err(e) => {
                recorded_in_a_row = 0;
                tracing::warn!(error = %e, "heartbeat task failed");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
            _ = shutdown.changed() => {
                // A resumed call stopped here stays `running` under this process, which
                // leaves the node list next: another node takes it over at once.
                if let Some(settling) = settling.take() {
                    settling.abort();
                    let _ = settling.await;
                }
                if let Err(e) = gateway.store.nodes.leave(&gateway.instance_id) {
                    tracing::warn!(error = %e, "could not leave the node list");
                }
                return;
            }
        }
    }
}

/// Drops idle plugin instances past their age every 5 s (see `plugin::warm`).
async fn reap_instances(gateway: Arc<Gateway>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
            _ = shutdown.changed() => return,
        }
        for plugin in gateway.catalog().plugins() {
            plugin.reap_idle();
        }
    }
}

/// Writes the coalesced refusals' summary events once a second (and once more on stop).
async fn refusal_summaries(gateway: Arc<Gateway>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            _ = shutdown.changed() => return,
        }
        write_refusal_summaries(&gateway).await;
    }
}

async fn write_refusal_summaries(gateway: &Gateway) {
    for summary in gateway.refusals.drain(gateway.clock.now_ms()) {
        let count = summary.count;
        if let Err(e) = gateway.audit.record(summary.into_event(gateway.now_iso())).await {
            tracing::error!(error = %e, count, "a summary of coalesced refusals was not recorded");
        }
    }
}

/// Measures the data directory every 2 s against its disk budget.
async fn disk_budget(gateway: Arc<Gateway>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let guard = gateway.clone();
        if let Ok(Some((usage, change))) = tokio::task::spawn_blocking(move || guard.disk.check()).await {
            gateway.metrics.data_dir(usage.used, gateway.disk.exceeded());
            match change {
                disk::Change::Exceeded => tracing::error!(
                    used_bytes = usage.used,
                    free_bytes = usage.free,
                    "the data directory is near its disk budget: agent requests are refused with 503 until it is not"
                ),
                disk::Change::Recovered => tracing::warn!(
                    used_bytes = usage.used,
                    "the data directory is back under its disk budget: agent requests are admitted again"
                ),
                disk::Change::Same => {}
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Applies the audit retention horizon at start and then hourly.
async fn retention(gateway: Arc<Gateway>, days: u32, mut shutdown: watch::Receiver<bool>) {
    loop {
        let now = gateway.clock.now();
        let before = clock::iso(now - time::Duration::days(i64::from(days)));
        match gateway.audit.prune(before, clock::iso(now)).await {
            Ok(report) if report.removed > 0 => tracing::info!(removed = report.removed, "audit retention applied"),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "audit retention failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Reloads when the config file or a policy file changed since the last reload (polled
/// every 2 s); a change an operator already reloaded is not reloaded again.
async fn watch_files(gateway: Arc<Gateway>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
            _ = shutdown.changed() => return,
        }
        match gateway.reload_changed_files("file-watch").await {
            None => {}
            Some(Ok(summary)) => tracing::info!(%summary, "reloaded after a file change"),
            Some(Err(e)) => tracing::warn!(error = %e, "a changed config or policy set was refused; the old one stays"),
        }
    }
}
