//! The running gateway's shared state, and how it starts.

use crate::tasks::{OrphanError, TaskRunner};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use crate::admission::Admission;
use crate::audit::coalesce::Coalescer;
use crate::audit::{AuditError, AuditEvent, AuditLog, Signing, checkpoint};
use crate::authz::{Authorizer, AuthzError, PolicySource, ToolVocabulary};
use crate::catalog::{Catalog, Tool};
use crate::clock::{self, SharedClock};
use crate::config::{Config, ConfigError, TlsFiles};
use crate::disk::DiskGuard;
use crate::metrics::Metrics;
use crate::plugin::manifest::ManifestError;
use crate::plugin::{Budgets, LoadError, PluginManifest, PluginRuntime};
use crate::protocol::codes;
use crate::store::{PluginVersion, Remembered, Store, StoreError, StoredPlugin};
use crate::tls::{Built, Tls, TlsError};

/// The reviewer page's path on the admin listener.
pub const REVIEW_PATH: &str = "/review";

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("store `{path}`: {source}")]
    Store { path: String, source: StoreError },
    #[error("cannot create `{path}`: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("audit: {0}")]
    Audit(#[from] AuditError),
    #[error("audit signing key: {0}")]
    AuditKey(#[from] crate::audit::checkpoint::KeyError),
    #[error("policies: {0}")]
    Policies(#[from] AuthzError),
    #[error("plugin `{name}` would break the active policy set (the plugin was not changed): {source}")]
    BreaksPolicies { name: String, source: AuthzError },
    #[error("plugin manifest: {0}")]
    Manifest(#[from] ManifestError),
    #[error("plugin `{name}`: {source}")]
    Plugin { name: String, source: LoadError },
    #[error("plugin `{name}`: {message}")]
    Catalog { name: String, message: String },
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("the gateway is stopping")]
    Stopping,
}

/// Everything a request needs. Shared behind an `Arc`.
#[derive(Debug)]
pub struct Gateway {
    pub config: Config,
    pub store: Arc<Store>,
    pub audit: AuditLog,
    pub clock: SharedClock,
    pub admission: Admission,
    pub runtime: PluginRuntime,
    pub metrics: Metrics,
    /// Refusals before authentication or admission, coalesced under floods.
    pub refusals: Coalescer,
    /// Refuses agent requests while the data directory is near its disk budget.
    pub disk: DiskGuard,
    /// The listeners' TLS settings, when `[server.tls]` is set; a reload re-reads them.
    pub tls: Option<Tls>,
    /// This process's id, recorded on executions it starts (see `writes::review`).
    pub instance_id: String,
    /// The node whose audit chain this process continues: empty on the embedded store,
    /// kept in the data directory on a shared one (`node-id`).
    pub node: String,
    /// Reads running in the background as tasks.
    pub tasks: TaskRunner,
    /// The cluster's config version read before this node loaded plugins and policies.
    pub cluster_version_at_start: Option<String>,
    /// A checking gateway's scratch audit trail, removed with it.
    _scratch: Option<ScratchDir>,
    /// This process's claim on its node name (a shared store), held while it lives.
    _node_claim: Option<crate::store::NodeClaim>,
    /// Keeps the background WAL checkpointer (SQLite) running while the gateway lives.
    _checkpointer: Option<Arc<()>>,
    catalog: RwLock<Arc<Catalog>>,
    authz: RwLock<Arc<Authorizer>>,
    /// Remembered plugins that did not load at start: the gateway is not ready.
    unavailable: RwLock<std::collections::BTreeMap<String, String>>,
    /// The operator's base schema and policy files: with the loaded plugins' tools and
    /// shipped policies, they make the active set. Held while the catalog or the policy
    /// set changes, so the two change together.
    operator_policies: tokio::sync::Mutex<OperatorPolicies>,
    /// [`Config::files_changed_at`] when the files were last read (at start or by a
    /// reload, applied or refused). Changed under `operator_policies`.
    files_read_at: Mutex<Option<std::time::SystemTime>>,
}

/// The configured signing key; on a store with no audit events yet, a missing key file is
/// created (0600, with its public half beside it) and announced in the log.
fn load_or_create_signing_key(path: &Path, store: &Store) -> Result<ed25519_dalek::SigningKey, StartError> {
    let fresh = store
        .audit
        .query(&crate::store::AuditFilter {
            limit: 1,
            ..crate::store::AuditFilter::default()
        })
        .map_err(|source| StartError::Store {
            path: path.display().to_string(),
            source,
        })?
        .is_empty();
    if fresh && !path.exists() {
        checkpoint::generate_key(path)?;
        tracing::warn!(
            key = %path.display(),
            public = %checkpoint::public_key_path(path).display(),
            "created the audit signing key for this new store: keep a copy of its public half where the database's operators cannot change it"
        );
    }
    Ok(checkpoint::load_signing_key(path)?)
}

/// Why a rollback did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("store: {0}")]
    Store(String),
}

/// A kept version's identity: its component and manifest (the same component with other
/// limits or grants is another version).
fn version_id(manifest: &PluginManifest) -> String {
    let policies = serde_json::to_string(&manifest.policy_files).unwrap_or_default();
    crate::hashing::sha256_hex(format!("{}\n{}\n{policies}", manifest.sha256, manifest.text).as_bytes())
}

/// A kept version's manifest, with the policy files kept beside it.
fn stored_manifest(name: &str, stored: &StoredPlugin) -> Result<PluginManifest, ManifestError> {
    PluginManifest::parse(&stored.manifest, &format!("store:{name}@{}", stored.id))?
        .with_policy_files(stored.policies.clone())
}

/// The plugin runtime's shared budgets, as configured.
fn budgets(config: &Config, metrics: &Metrics) -> Budgets {
    Budgets::new(
        config.plugin_memory_budget_bytes,
        config.plugin_wait,
        metrics.plugin_budget(),
    )
}

/// The policies an operator configured: the base schema and the policy directory's files.
#[derive(Debug, Clone)]
struct OperatorPolicies {
    base: String,
    sources: Vec<PolicySource>,
}

impl OperatorPolicies {
    fn read(config: &Config) -> Result<OperatorPolicies, AuthzError> {
        let (base, sources) = match &config.policies_dir {
            Some(dir) => Authorizer::read_dirs(std::slice::from_ref(dir))?,
            None => (
                crate::authz::DEFAULT_SCHEMA.to_string(),
                crate::authz::default_sources(),
            ),
        };
        Ok(OperatorPolicies { base, sources })
    }

    /// The active set for a catalog: its tools, the operator's files, then the files each
    /// plugin ships.
    fn compile(&self, catalog: &Catalog) -> Result<Authorizer, AuthzError> {
        let tools: Vec<ToolVocabulary<'_>> = catalog.tools().map(|t| t.vocabulary()).collect();
        let mut sources = self.sources.clone();
        for plugin in catalog.plugins() {
            for (file, text) in &plugin.manifest().policy_files {
                sources.push(PolicySource::new(
                    format!("plugin {}: {file}", plugin.name()),
                    text.clone(),
                ));
            }
        }
        Authorizer::build(&self.base, &tools, sources)
    }
}

/// How long a node may go unseen before what it left running is taken over.
pub const NODE_LEASE_SECONDS: i64 = 10;
/// How old a half-done approval, reservation or task must be before a starting node on a
/// shared store settles it: older than any request a live node could still be serving.
const RECOVERY_GRACE_SECONDS: i64 = 120;

/// A directory of this process's own, removed when dropped.
#[derive(Debug)]
struct ScratchDir(std::path::PathBuf);

impl ScratchDir {
    fn new(prefix: &str) -> Result<ScratchDir, StartError> {
        let dir = std::env::temp_dir().join(format!("{prefix}-{}", ulid::Ulid::new()));
        std::fs::create_dir_all(&dir).map_err(|source| StartError::DataDir {
            path: dir.display().to_string(),
            source,
        })?;
        Ok(ScratchDir(dir))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The node's name for its audit chain. The embedded store has one process: ''. On a
/// shared store each node keeps its name in its data directory, so a restarted node
/// continues its own chain.
fn node_name(config: &Config, store: &Store) -> Result<String, StartError> {
    if !store.is_shared() {
        return Ok(String::new());
    }
    let dir = config.data_dir().unwrap_or(Path::new("."));
    let path = dir.join("node-id");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let name = text.trim();
        if !name.is_empty() {
            return Ok(name.to_string());
        }
    }
    let name = format!("node_{}", ulid::Ulid::new().to_string().to_lowercase());
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&path, format!("{name}\n")))
        .map_err(|source| StartError::DataDir {
            path: path.display().to_string(),
            source,
        })?;
    Ok(name)
}

impl Gateway {
    fn store_failure(&self, source: StoreError) -> StartError {
        StartError::Store {
            path: self.config.store_location().to_string(),
            source,
        }
    }

    /// The moment before which what a process left half-done may be taken over: `None` on
    /// the embedded store (this process is its only one), a grace period ago on a shared
    /// store, where another node may be in the middle of it now.
    fn recovery_cutoff(&self) -> Option<String> {
        self.store
            .is_shared()
            .then(|| clock::iso(self.clock.now() - time::Duration::seconds(RECOVERY_GRACE_SECONDS)))
    }

    /// The processes known to be alive: this one and, on a shared store, every other
    /// node seen within its lease. An earlier process of this node is not alive, however
    /// recently it was seen: this process holds the node's claim.
    pub fn live_instances(&self) -> Result<Vec<String>, StoreError> {
        let mut live = vec![self.instance_id.clone()];
        if self.store.is_shared() {
            let now = self.clock.now();
            let since = clock::iso(now - time::Duration::seconds(NODE_LEASE_SECONDS));
            let forget = clock::iso(now - time::Duration::days(1));
            live.extend(
                self.store
                    .nodes
                    .alive_since(&since, &forget)?
                    .into_iter()
                    .filter(|(_, node)| *node != self.node)
                    .map(|(instance, _)| instance),
            );
        }
        Ok(live)
    }

    /// Records that this process is alive (a shared store's other nodes read it), and
    /// splits the admission limits between the nodes alive now.
    pub fn heartbeat(&self) -> Result<(), StoreError> {
        self.store.nodes.beat(&self.instance_id, &self.node, &self.now_iso())?;
        let mut live = self.live_instances()?;
        live.sort();
        live.dedup();
        self.admission.set_nodes(live.len());
        Ok(())
    }

    /// Opens the store, settles what a previous process left half-done, loads policies and
    /// plugins. Nothing listens yet.
    pub async fn start(config: Config, clock: SharedClock) -> Result<Arc<Gateway>, StartError> {
        Gateway::open(config, clock, true).await
    }

    /// As [`start`](Self::start), but changes nothing a running gateway on the same store
    /// owns (`openport check`): no recovery of executions, approvals or tasks.
    pub async fn start_to_check(config: Config, clock: SharedClock) -> Result<Arc<Gateway>, StartError> {
        Gateway::open(config, clock, false).await
    }

    /// Settles what a previous process left half-done: approvals that never started, open
    /// idempotency reservations, running tasks. On a shared store every node also runs it
    /// every few seconds, for nodes that died and did not come back. Executions a dead
    /// process left running need the plugins and the write lifecycle: `writes::recovery`
    /// settles them, after this.
    pub async fn recover(&self) -> Result<(), StartError> {
        // Seen alive first, so a node starting now does not take this one's work over.
        self.heartbeat().map_err(|source| self.store_failure(source))?;
        // Background reads a previous process left running: failed, never run again.
        self.tasks.fail_orphans().await.map_err(|e| match e {
            OrphanError::Store(source) => self.store_failure(source),
            OrphanError::Audit(e) => StartError::Audit(e),
        })?;
        // Approvals a crash left before their write started: failed, nothing ran.
        let unstarted = self
            .store
            .drafts
            .fail_unstarted_approvals(
                &self.instance_id,
                &self.now_iso(),
                self.recovery_cutoff().as_deref(),
                || crate::protocol::ids::new_id(crate::protocol::ids::Kind::Execution),
            )
            .map_err(|source| self.store_failure(source))?;
        for (draft_id, execution_id) in unstarted {
            let mut event = AuditEvent::new("agent.execution.interrupted", codes::EXECUTION_FAILED, self.now_iso());
            event.execution_id = Some(execution_id);
            event.draft_id = Some(draft_id);
            event.details.insert(
                "reason".into(),
                "stopped after approval, before the write started".into(),
            );
            self.audit.record(event).await?;
        }
        // Idempotency reservations a crash left open: linked to their draft, or freed.
        let (linked, freed) = self
            .store
            .idempotency
            .settle_orphans(self.recovery_cutoff().as_deref())
            .map_err(|source| self.store_failure(source))?;
        if linked + freed > 0 {
            tracing::warn!(
                linked,
                freed,
                "settled idempotency reservations left by a previous process"
            );
        }
        Ok(())
    }

    async fn open(config: Config, clock: SharedClock, recover: bool) -> Result<Arc<Gateway>, StartError> {
        let store_err = |source| StartError::Store {
            path: config.store_location().to_string(),
            source,
        };
        if let Some(dir) = config.store_path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| StartError::DataDir {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let store = Arc::new(Store::open_at(&config.store_location()).map_err(store_err)?);
        let node = node_name(&config, &store)?;
        // Read before the registry and the policy set are: a change made while this node
        // starts is then one it has not applied yet (`follow_cluster` applies it).
        let cluster_version = if store.is_shared() {
            store.meta.get(crate::cluster::CONFIG_VERSION).map_err(store_err)?
        } else {
            None
        };
        // A gateway opened only to check a config claims nothing a live one holds.
        let node_claim = if recover {
            store.claim_node(&node).map_err(store_err)?
        } else {
            None
        };
        let metrics = Metrics::new();
        metrics.start_at_zero(
            &crate::admission::Limit::ALL.map(crate::admission::Limit::name),
            &codes::ALL.iter().map(|c| c.name).collect::<Vec<_>>(),
        );
        let signing = match &config.audit_signing_key {
            Some(path) => Some(Signing {
                // A new deployment's first start makes its key; once the trail has events a
                // missing key is an error (fail closed: it may have been removed).
                signer: checkpoint::Signer::new(
                    load_or_create_signing_key(path, &store)?,
                    config.audit_checkpoint_log.clone(),
                ),
                clock: clock.clone(),
            }),
            None => {
                tracing::warn!(
                    "audit checkpoints are not signed: a truncated or rewritten audit trail cannot be detected \
                     (set [audit] signing_key; docs/operations.md)"
                );
                None
            }
        };
        // A gateway opened only to check a config (beside a live one, perhaps) writes its
        // events (plugin loads) to a scratch trail, unsigned: appending to the chain a live
        // process continues would fork it.
        let (chain, signing, scratch) = if recover {
            (store.chain_writer(&node).map_err(store_err)?, signing, None)
        } else {
            let scratch = ScratchDir::new("openport-check")?;
            let chain = Store::open(&scratch.0.join("check-audit.db"))
                .and_then(|s| s.chain_writer(""))
                .map_err(|source| StartError::Store {
                    path: scratch.0.display().to_string(),
                    source,
                })?;
            (chain, None, Some(scratch))
        };
        let admission = Admission::new(config.admission.clone());
        let audit =
            AuditLog::start(chain, metrics.audit_writer(), signing)?.with_in_flight(admission.in_flight_counter());
        let checkpointer = match config.store_location() {
            crate::store::Location::File(path) => Some(crate::store::start_checkpointer(&path).map_err(store_err)?),
            crate::store::Location::Postgres(_) => None,
        };
        // The operator's policies are read now (a bad file stops the start early) and
        // applied once the plugins, whose tools they name, are loaded.
        let operator = OperatorPolicies::read(&config)?;
        let before_plugins = OperatorPolicies {
            base: operator.base.clone(),
            sources: Vec::new(),
        };
        let authz = before_plugins.compile(&Catalog::default())?;
        let runtime = PluginRuntime::new(
            store.clone(),
            clock.clone(),
            config.cache_dir.as_deref(),
            budgets(&config, &metrics),
            config.plugin_engine,
        )
        .map_err(|source| StartError::Plugin {
            name: "runtime".into(),
            source,
        })?
        .with_reuse(config.plugin_reuse);
        let tls = config.tls.as_ref().map(Tls::load).transpose()?;
        let gateway = Arc::new(Gateway {
            tls,
            admission,
            refusals: Coalescer::new(config.audit_coalesce_per_second),
            disk: DiskGuard::new(config.store_path.parent().map(Path::to_path_buf), config.disk),
            metrics,
            instance_id: ulid::Ulid::new().to_string(),
            node,
            _node_claim: node_claim,
            _scratch: scratch,
            cluster_version_at_start: cluster_version,
            tasks: TaskRunner::new(store.clone(), audit.clone(), clock.clone()),
            _checkpointer: checkpointer,
            catalog: RwLock::new(Arc::new(Catalog::default())),
            unavailable: RwLock::new(std::collections::BTreeMap::new()),
            authz: RwLock::new(Arc::new(authz)),
            operator_policies: tokio::sync::Mutex::new(before_plugins),
            files_read_at: Mutex::new(config.files_changed_at()),
            store,
            audit,
            clock,
            runtime,
            config,
        });
        // What a previous process left half-done, settled: never by a gateway opened only
        // to check a config, which may share the store with a running one.
        if recover {
            gateway.recover().await?;
        }
        for path in gateway.config.plugin_manifests.clone() {
            let manifest = PluginManifest::load(&path)?;
            gateway.load_plugin(manifest, "config").await?;
        }
        // Plugins loaded through the admin plane come back after a restart. One that no
        // longer loads is refused (and audited) without stopping the gateway.
        let remembered = gateway
            .store
            .plugins
            .remembered()
            .map_err(|source| gateway.store_failure(source))?;
        for plugin in remembered {
            if let Err(e) = gateway.load_remembered(&plugin).await {
                tracing::error!(plugin = %plugin.name, optional = plugin.optional, error = %e, "a remembered plugin did not load");
                if !plugin.optional {
                    gateway
                        .unavailable
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(plugin.name.clone(), e);
                }
            }
        }
        // On a shared store the set every node applies is the store's: the first node's
        // files, or the last reload's. A node whose files differ says so.
        let operator = gateway.shared_policies(operator).await;
        {
            let mut current = gateway.operator_policies.lock().await;
            let authz = operator.compile(&gateway.catalog())?;
            // Warnings an operator accepted are on the record from the moment they apply.
            if !authz.allowed_warnings().is_empty() {
                let mut event = AuditEvent::new("policy.warnings_allowed", codes::SUCCESS, gateway.now_iso());
                event
                    .details
                    .insert("allowedWarnings".into(), serde_json::json!(authz.allowed_warnings()));
                event.performed_by_user_id = Some("start".into());
                gateway.audit.record(event).await?;
            }
            *gateway.authz.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(authz);
            *current = operator;
        }
        Ok(gateway)
    }

    /// The policy set to start with on a shared store: the store's, or (the first node)
    /// this node's files, kept for the others.
    async fn shared_policies(&self, files: OperatorPolicies) -> OperatorPolicies {
        if !self.store.is_shared() {
            return files;
        }
        let stored = self
            .store
            .meta
            .get(crate::cluster::POLICY_SET)
            .ok()
            .flatten()
            .and_then(|text| serde_json::from_str::<crate::cluster::StoredPolicies>(&text).ok());
        match stored {
            Some(stored) => {
                if crate::cluster::StoredPolicies::new(&files.base, &files.sources) != stored {
                    tracing::warn!(
                        "this node's policy files differ from the cluster's set, which applies; `reload` publishes this node's files"
                    );
                }
                OperatorPolicies {
                    base: stored.base.clone(),
                    sources: stored.sources(),
                }
            }
            None => {
                self.publish_policies(&files);
                files
            }
        }
    }

    /// A remembered plugin: its active version from the store, or (a plugin remembered
    /// before versions were kept) its manifest path, then kept in the store.
    pub(crate) async fn load_remembered(&self, plugin: &Remembered) -> Result<(), String> {
        let Some(id) = &plugin.version_id else {
            let manifest =
                PluginManifest::load(std::path::Path::new(&plugin.manifest_path)).map_err(|e| e.to_string())?;
            let component = std::fs::read(&manifest.component).map_err(|e| e.to_string())?;
            return self
                .add_plugin(manifest, &component, &plugin.manifest_path, plugin.optional, "restart")
                .await
                .map_err(|e| e.to_string());
        };
        let stored = self
            .store
            .plugins
            .content(id)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("its active version {id} is not in the store"))?;
        let manifest = stored_manifest(&plugin.name, &stored).map_err(|e| e.to_string())?;
        self.load_plugin_bytes(manifest, &stored.component, "restart")
            .await
            .map_err(|e| e.to_string())
    }

    /// The current catalog snapshot.
    pub fn catalog(&self) -> Arc<Catalog> {
        match self.catalog.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Changes the catalog: `next` builds the new one from the current one, the operator's
    /// policies are compiled against it (they must still validate: refused as
    /// `BreaksPolicies` of `plugin` if not), both on a blocking thread, and then the two
    /// are swapped in, so requests only wait for two pointer swaps. The caller holds
    /// `operator_policies`, as every catalog writer does: the catalog `next` starts from is
    /// still the current one at the swap. Returns the new catalog.
    async fn change_catalog(
        &self,
        operator: &OperatorPolicies,
        plugin: &str,
        next: impl FnOnce(&Catalog) -> Result<Catalog, StartError> + Send + 'static,
    ) -> Result<Arc<Catalog>, StartError> {
        let (current, policies, plugin) = (self.catalog(), operator.clone(), plugin.to_string());
        let (catalog, authz) = off_workers(move || {
            let catalog = next(&current)?;
            let authz = policies
                .compile(&catalog)
                .map_err(|source| StartError::BreaksPolicies { name: plugin, source })?;
            Ok::<_, StartError>((Arc::new(catalog), authz))
        })
        .await
        .ok_or(StartError::Stopping)??;
        *self.catalog.write().unwrap_or_else(|p| p.into_inner()) = catalog.clone();
        *self.authz.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(authz);
        Ok(catalog)
    }

    /// The current policy set.
    pub fn authorizer(&self) -> Arc<Authorizer> {
        match self.authz.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Where a reviewer decides drafts: the review page on the admin listener.
    pub fn review_url(&self) -> String {
        format!("{}://{}{REVIEW_PATH}", self.scheme(), self.config.admin_listen)
    }

    /// `https` when the listeners serve TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    pub fn now_iso(&self) -> String {
        clock::iso(self.clock.now())
    }

    /// Loads (or replaces) a plugin. On any failure the current catalog keeps serving.
    /// A replacement is atomic: new calls go to the new version, calls in flight hold
    /// their `Arc` of the old one and finish on it. Every load, replace and refusal is an
    /// audit event; `by` names who asked.
    pub async fn load_plugin(&self, manifest: PluginManifest, by: &str) -> Result<(), StartError> {
        let bytes = std::fs::read(&manifest.component).map_err(|source| StartError::Plugin {
            name: manifest.name.clone(),
            source: LoadError::Read {
                path: manifest.component.display().to_string(),
                source,
            },
        })?;
        self.load_plugin_bytes(manifest, &bytes, by).await
    }

    /// As [`load_plugin`](Self::load_plugin), with the component's bytes at hand.
    async fn load_plugin_bytes(&self, manifest: PluginManifest, bytes: &[u8], by: &str) -> Result<(), StartError> {
        let name = manifest.name.clone();
        let overrides = manifest.risk.clone();
        let operator = self.operator_policies.lock().await;
        // Under the lock: of two loads of one name at once, the second replaces the first.
        let replaces = self.catalog().plugins().any(|p| p.name() == name);
        let result = async {
            let loaded = self
                .runtime
                .load_bytes(manifest, bytes)
                .await
                .map_err(|source| StartError::Plugin {
                    name: name.clone(),
                    source,
                })?;
            let plugin = loaded.plugin.clone();
            // The active policies must still hold against the new tools' vocabulary.
            let next = self
                .change_catalog(&operator, &name, move |current| {
                    with_loaded(current, loaded, &overrides)
                })
                .await?;
            for tool in next.tools().filter(|t| t.plugin.name() == name) {
                for omitted in &tool.args_omitted {
                    tracing::warn!(
                        plugin = %name,
                        tool = %tool.name,
                        field = %omitted.path.join("."),
                        "policies cannot see this argument: {}",
                        omitted.reason
                    );
                }
            }
            Ok::<_, StartError>(plugin)
        }
        .await;
        drop(operator);
        let mut event = match &result {
            Ok(plugin) => {
                let action = if replaces { "plugin.replace" } else { "plugin.load" };
                tracing::info!(plugin = %name, version = %plugin.version(), digest = %plugin.digest(), by, action, "plugin loaded");
                let mut e = AuditEvent::new(action, codes::SUCCESS, self.now_iso());
                e.plugin_digest = Some(plugin.digest().to_string());
                e.details.insert("version".into(), plugin.version().into());
                e
            }
            Err(err) => {
                tracing::warn!(plugin = %name, by, error = %err, "plugin refused; the loaded version (if any) keeps serving");
                let mut e = AuditEvent::new("plugin.refused", codes::VALIDATION, self.now_iso());
                e.details.insert("error".into(), err.to_string().into());
                e
            }
        };
        event.plugin = Some(name);
        event.performed_by_user_id = Some(by.to_string());
        self.audit.record(event).await?;
        result.map(|_| ())
    }

    /// Loads a plugin version and keeps it in the store as the plugin's active version:
    /// after a restart it comes back from the store alone, whatever happened to the files
    /// it came from. `source` says where it came from (a path, `upload`).
    pub async fn add_plugin(
        &self,
        manifest: PluginManifest,
        component: &[u8],
        source: &str,
        optional: bool,
        by: &str,
    ) -> Result<(), StartError> {
        let kept = (manifest.clone(), component.to_vec());
        self.load_plugin_bytes(manifest, component, by).await?;
        self.keep_active(&kept.0, &kept.1, source, optional, by)
    }

    fn keep_active(
        &self,
        manifest: &PluginManifest,
        component: &[u8],
        source: &str,
        optional: bool,
        by: &str,
    ) -> Result<(), StartError> {
        let id = version_id(manifest);
        self.store
            .plugins
            .activate(
                crate::store::NewVersion {
                    id: &id,
                    name: &manifest.name,
                    version: &manifest.version,
                    digest: &manifest.sha256,
                    manifest: &manifest.text,
                    policies: &manifest.policy_files,
                    component,
                },
                source,
                optional,
                by,
                &self.now_iso(),
            )
            .map_err(|e| self.store_failure(e))?;
        self.unavailable
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&manifest.name);
        self.publish_change();
        Ok(())
    }

    /// On a shared store: tells the other nodes that the plugin registry or the policy set
    /// changed (`cluster::follow` applies it there).
    pub fn publish_change(&self) {
        if self.store.is_shared()
            && let Err(e) = self.store.meta.bump(crate::cluster::CONFIG_VERSION)
        {
            tracing::error!(error = %e, "the other nodes were not told of a plugin or policy change; they apply it at their next change");
        }
    }

    /// On a shared store: keeps the operator's policy set for every node.
    fn publish_policies(&self, operator: &OperatorPolicies) {
        if !self.store.is_shared() {
            return;
        }
        let stored = crate::cluster::StoredPolicies::new(&operator.base, &operator.sources);
        let kept = serde_json::to_string(&stored)
            .map_err(|e| e.to_string())
            .and_then(|text| {
                self.store
                    .meta
                    .set(crate::cluster::POLICY_SET, &text)
                    .map_err(|e| e.to_string())
            });
        match kept {
            Ok(()) => self.publish_change(),
            Err(e) => tracing::error!(error = %e, "the policy set was not kept for the other nodes"),
        }
    }

    /// Applies what another node changed: the store's active plugin versions, then its
    /// policy set. What does not apply stays as it is here, listed as unavailable (so
    /// `/readyz` says so) until a later change applies.
    pub async fn sync_from_store(&self) {
        let remembered = match self.store.plugins.remembered() {
            Ok(remembered) => remembered,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the plugin registry; retrying at the next change");
                return;
            }
        };
        for plugin in &remembered {
            let Some(id) = &plugin.version_id else { continue };
            let current = self
                .catalog()
                .plugins()
                .find(|p| p.name() == plugin.name)
                .map(|p| version_id(p.manifest()));
            let outcome = if current.as_deref() == Some(id.as_str()) {
                Ok(())
            } else {
                self.load_remembered(plugin).await
            };
            match outcome {
                // As at start: an optional plugin that does not load does not make the node
                // unready.
                Err(e) if plugin.optional => {
                    tracing::warn!(plugin = %plugin.name, error = %e, "an optional plugin another node activated did not load here");
                }
                outcome => self.set_unavailable(&plugin.name, outcome.err()),
            }
        }
        // Removed on another node: loaded from the registry here, and no longer in it.
        let configured: Vec<String> = self
            .config
            .plugin_manifests
            .iter()
            .filter_map(|path| PluginManifest::load(path).ok().map(|m| m.name))
            .collect();
        let loaded: Vec<String> = self.catalog().plugins().map(|p| p.name().to_string()).collect();
        for name in loaded {
            if !configured.contains(&name) && !remembered.iter().any(|r| r.name == name) {
                let removed = self.remove_plugin(&name, "cluster").await;
                self.set_unavailable(&name, removed.err().map(|e| e.to_string()));
            }
        }
        let stored = match self.store.meta.get(crate::cluster::POLICY_SET) {
            Ok(Some(text)) => serde_json::from_str::<crate::cluster::StoredPolicies>(&text).map_err(|e| e.to_string()),
            Ok(None) => return,
            Err(e) => Err(e.to_string()),
        };
        let applied = match stored {
            Ok(stored) => self.apply_policies(&stored, "cluster").await,
            Err(e) => Err(e),
        };
        self.set_unavailable(crate::cluster::POLICIES_UNAVAILABLE, applied.err());
    }

    /// Makes `stored` the operator's policy set, unless it already is; on failure the
    /// current set stays.
    async fn apply_policies(&self, stored: &crate::cluster::StoredPolicies, by: &str) -> Result<(), String> {
        let mut operator = self.operator_policies.lock().await;
        if crate::cluster::StoredPolicies::new(&operator.base, &operator.sources) == *stored {
            return Ok(());
        }
        let next = OperatorPolicies {
            base: stored.base.clone(),
            sources: stored.sources(),
        };
        let (compiling, catalog) = (next.clone(), self.catalog());
        let authz = off_workers(move || compiling.compile(&catalog))
            .await
            .ok_or_else(|| ReloadError::Stopping.to_string())?
            .map_err(|e| e.to_string())?;
        let mut event = AuditEvent::new("policy.sync", codes::SUCCESS, self.now_iso());
        event.policy_ids = authz.policy_ids().to_vec();
        event.performed_by_user_id = Some(by.to_string());
        self.audit.record(event).await.map_err(|e| e.to_string())?;
        *self.authz.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(authz);
        *operator = next;
        tracing::info!(by, "policy set applied from the store");
        Ok(())
    }

    fn set_unavailable(&self, name: &str, why: Option<String>) {
        let mut unavailable = self.unavailable.write().unwrap_or_else(|p| p.into_inner());
        match why {
            Some(why) => {
                tracing::error!(plugin = %name, error = %why, "another node's change did not apply here; the current version keeps serving");
                unavailable.insert(name.to_string(), why);
            }
            None => {
                unavailable.remove(name);
            }
        }
    }

    /// Makes a kept version active again: the one named by `to` (a version string or the
    /// start of a version id), or else the version added before the active one. It is
    /// loaded and checked like any new version; on failure the current one keeps serving.
    pub async fn rollback_plugin(
        &self,
        name: &str,
        to: Option<&str>,
        by: &str,
    ) -> Result<PluginVersion, RollbackError> {
        let versions = self
            .store
            .plugins
            .versions(name)
            .map_err(|e| RollbackError::Store(e.to_string()))?;
        if versions.is_empty() {
            return Err(RollbackError::NotFound(format!("no kept versions of plugin `{name}`")));
        }
        let target = match to {
            Some(to) => versions
                .iter()
                .rev()
                .find(|v| v.version == to || (to.len() >= 8 && v.id.starts_with(to)))
                .ok_or_else(|| RollbackError::NotFound(format!("plugin `{name}` has no kept version `{to}`")))?,
            None => {
                let active = versions.iter().position(|v| v.active).unwrap_or(versions.len());
                active.checked_sub(1).and_then(|i| versions.get(i)).ok_or_else(|| {
                    RollbackError::Invalid(format!("plugin `{name}` has no version before the active one"))
                })?
            }
        };
        let stored = self
            .store
            .plugins
            .content(&target.id)
            .map_err(|e| RollbackError::Store(e.to_string()))?
            .ok_or_else(|| RollbackError::NotFound(format!("version {} is gone", target.id)))?;
        let manifest = stored_manifest(name, &stored).map_err(|e| RollbackError::Invalid(e.to_string()))?;
        self.load_plugin_bytes(manifest.clone(), &stored.component, by)
            .await
            .map_err(|e| RollbackError::Invalid(e.to_string()))?;
        let optional = self
            .store
            .plugins
            .remembered()
            .map_err(|e| RollbackError::Store(e.to_string()))?
            .iter()
            .any(|r| r.name == name && r.optional);
        self.keep_active(&manifest, &stored.component, "rollback", optional, by)
            .map_err(|e| RollbackError::Store(e.to_string()))?;
        let mut event = AuditEvent::new("plugin.rollback", codes::SUCCESS, self.now_iso());
        event.plugin = Some(name.to_string());
        event.plugin_digest = Some(target.digest.clone());
        event.details.insert("version".into(), target.version.clone().into());
        event.details.insert("versionId".into(), target.id.clone().into());
        event.performed_by_user_id = Some(by.to_string());
        self.audit
            .record(event)
            .await
            .map_err(|e| RollbackError::Store(e.to_string()))?;
        tracing::info!(plugin = %name, version = %target.version, by, "plugin rolled back");
        let mut active = target.clone();
        active.active = true;
        Ok(active)
    }

    /// Remembered plugins that did not load at start (name → why), the optional ones
    /// left out: while any is here the gateway is not ready.
    pub fn unavailable_plugins(&self) -> std::collections::BTreeMap<String, String> {
        self.unavailable.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Removes a plugin and its tools; calls in flight finish on it. `false` when no
    /// plugin has that name.
    pub async fn remove_plugin(&self, name: &str, by: &str) -> Result<bool, StartError> {
        let operator = self.operator_policies.lock().await;
        let removed = self.catalog().plugins().any(|p| p.name() == name);
        if removed {
            // A policy naming one of its tools would no longer validate: refused.
            let removing = name.to_string();
            self.change_catalog(&operator, name, move |current| Ok(current.without_plugin(&removing)))
                .await?;
        }
        drop(operator);
        // A remembered plugin that did not load can be removed too (the gateway is ready
        // again without it).
        let was_unavailable = self
            .unavailable
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name)
            .is_some();
        let removed = removed || was_unavailable;
        if removed {
            tracing::info!(plugin = %name, by, "plugin removed");
            let mut event = AuditEvent::new("plugin.remove", codes::SUCCESS, self.now_iso());
            event.plugin = Some(name.to_string());
            event.performed_by_user_id = Some(by.to_string());
            self.audit.record(event).await?;
        }
        Ok(removed)
    }
}

/// The catalog with a loaded plugin added (or replaced): its descriptors checked.
fn with_loaded(
    catalog: &Catalog,
    loaded: crate::plugin::Loaded,
    overrides: &std::collections::BTreeMap<String, crate::tool::Risk>,
) -> Result<Catalog, StartError> {
    let plugin = loaded.plugin;
    let name = plugin.name().to_string();
    let mut tools = Vec::with_capacity(loaded.tools.len());
    for d in loaded.tools {
        let floor = overrides.get(&d.name).copied();
        let tool = Tool::new(d, floor, plugin.clone()).map_err(|message| StartError::Catalog {
            name: name.clone(),
            message,
        })?;
        tools.push(tool);
    }
    match plugin.world() {
        crate::plugin::World::ToolAdapter => catalog.with_plugin(plugin.clone(), tools),
        crate::plugin::World::StateWitness => catalog.with_witness(plugin.clone(), loaded.witnessed),
    }
    .map_err(|message| StartError::Catalog { name, message })
}

/// The tools and policy set a config makes, from its plugin manifests and policy
/// directory, without opening its store, writing audit events or listening: what
/// `openport policy schema|check|explain --config` look at. Plugins added over the admin
/// API live in the running gateway's store and are not included.
pub async fn offline_policies(config: &Config) -> Result<(Arc<Catalog>, Authorizer), StartError> {
    let scratch = ScratchDir::new("openport-offline")?;
    let result = async {
        let store_path = scratch.0.join("scratch.db");
        let store = Arc::new(Store::open(&store_path).map_err(|source| StartError::Store {
            path: store_path.display().to_string(),
            source,
        })?);
        let clock: SharedClock = Arc::new(clock::SystemClock);
        let runtime = PluginRuntime::new(
            store,
            clock,
            config.cache_dir.as_deref(),
            budgets(config, &Metrics::new()),
            crate::plugin::EngineSettings::default(),
        )
        .map_err(|source| StartError::Plugin {
            name: "runtime".into(),
            source,
        })?
        .with_reuse(config.plugin_reuse);
        let mut catalog = Catalog::default();
        for path in &config.plugin_manifests {
            let manifest = PluginManifest::load(path)?;
            let (name, overrides) = (manifest.name.clone(), manifest.risk.clone());
            let loaded = runtime
                .load(manifest)
                .await
                .map_err(|source| StartError::Plugin { name, source })?;
            catalog = with_loaded(&catalog, loaded, &overrides)?;
        }
        let authz = OperatorPolicies::read(config)?.compile(&catalog)?;
        Ok((Arc::new(catalog), authz))
    }
    .await;
    // The scratch directory goes with `scratch`, once the result is out of it.
    result
}

/// Why a reload was refused; the running settings stay.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("no config file to reload from")]
    NoConfigFile,
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Policies(#[from] AuthzError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("turning TLS on or off needs a restart (the listeners are bound with or without it)")]
    TlsToggled,
    #[error("the gateway is stopping")]
    Stopping,
}

/// A reload checked in full and not yet applied: the config, the operator's policies, the
/// policy set they make, and the listeners' TLS settings.
type Prepared = (Config, OperatorPolicies, Authorizer, Option<(TlsFiles, Built)>);

impl Gateway {
    /// Re-reads the config file and applies what can change while serving: admission
    /// limits and the policy set. All or nothing: a file or policy set that fails
    /// validation changes nothing. Each reload and refusal is an audit event.
    pub async fn reload(&self, by: &str) -> Result<String, ReloadError> {
        let operator = self.operator_policies.lock().await;
        self.reload_locked(operator, self.config.files_changed_at(), by).await
    }

    /// [`reload`](Self::reload), if the config file or a policy file changed since the
    /// files were last read; `None` if none did (an operator's reload already read them).
    pub async fn reload_changed_files(&self, by: &str) -> Option<Result<String, ReloadError>> {
        let operator = self.operator_policies.lock().await;
        let changed_at = self.config.files_changed_at();
        if changed_at == *self.files_read_at.lock().unwrap_or_else(|p| p.into_inner()) {
            return None;
        }
        Some(self.reload_locked(operator, changed_at, by).await)
    }

    /// `changed_at`: [`Config::files_changed_at`] taken before the files are read, so a
    /// change while they are read shows as newer.
    async fn reload_locked(
        &self,
        mut operator: tokio::sync::MutexGuard<'_, OperatorPolicies>,
        changed_at: Option<std::time::SystemTime>,
        by: &str,
    ) -> Result<String, ReloadError> {
        *self.files_read_at.lock().unwrap_or_else(|p| p.into_inner()) = changed_at;
        let result = match self.config.path.clone() {
            None => Err(ReloadError::NoConfigFile),
            Some(path) => {
                let (serving_tls, catalog) = (self.tls.is_some(), self.catalog());
                off_workers(move || prepare_reload(&path, serving_tls, &catalog))
                    .await
                    .unwrap_or(Err(ReloadError::Stopping))
            }
        };
        let mut event = match &result {
            Ok((_, _, authz, _)) => {
                let mut e = AuditEvent::new("gateway.reload", codes::SUCCESS, self.now_iso());
                e.policy_ids = authz.policy_ids().to_vec();
                if !authz.allowed_warnings().is_empty() {
                    e.details
                        .insert("allowedWarnings".into(), serde_json::json!(authz.allowed_warnings()));
                }
                e
            }
            Err(err) => {
                let mut e = AuditEvent::new("gateway.reload", codes::VALIDATION, self.now_iso());
                e.details.insert("error".into(), err.to_string().into());
                e
            }
        };
        event.performed_by_user_id = Some(by.to_string());
        self.audit.record(event).await?;
        if let Err(e) = &result {
            self.metrics.reload_failed();
            tracing::warn!(by, error = %e, "reload refused; the running config and policies stay");
        }
        let (config, next_operator, authz, tls) = result?;
        if let (Some(current), Some(prepared)) = (&self.tls, tls) {
            current.apply(prepared);
        }
        let summary = format!(
            "{} policies; default rate {} per {} s",
            authz.policy_ids().len(),
            config.admission.default.per_key.requests,
            config.admission.default.per_key.window_seconds
        );
        self.admission.set_limits(config.admission);
        *self.authz.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(authz);
        *operator = next_operator;
        self.publish_policies(&operator);
        tracing::info!(by, %summary, "config and policies reloaded");
        Ok(summary)
    }
}

/// Reads the config file at `path` and checks all of it against `catalog`: its policy set
/// compiled, its certificates loaded (if the listeners serve TLS).
fn prepare_reload(path: &Path, serving_tls: bool, catalog: &Catalog) -> Result<Prepared, ReloadError> {
    let config = Config::load(path)?;
    // New certificate files (or the same paths, renewed) take effect for new
    // connections; a file that does not load refuses the reload, and the old stay.
    let tls = match (serving_tls, &config.tls) {
        (true, Some(files)) => Some(Tls::prepare(files)?),
        (false, None) => None,
        _ => return Err(ReloadError::TlsToggled),
    };
    let operator = OperatorPolicies::read(&config)?;
    let authz = operator.compile(catalog)?;
    Ok((config, operator, authz, tls))
}

/// Runs `work` on a blocking thread, not on a request worker: compiling a policy set of
/// 1,000 policies takes about 280 ms, and every agent request queued on the worker that
/// compiled it waited as long (BENCHMARKS.md, session 29). `None` if the runtime stopped
/// first; a panic in `work` goes on in the caller.
async fn off_workers<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(done) => Some(done),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => None,
    }
}
