//! The plugin runtime: the only module that imports wasmtime.
//!
//! Every plugin is treated as hostile. A component is compiled once per digest (and
//! cached on disk by wasmtime's cache), pre-linked once, and every call gets a fresh
//! `Store` with a memory limit, an epoch deadline and a cap on output bytes. WASI is
//! linked because guests built with Rust's std import it, but its context grants nothing:
//! no files, environment, arguments, stdio or sockets.

mod bindings;
mod budget;
mod host_impl;
pub mod interaction;
pub mod manifest;
pub mod prompt;
mod warm;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreLimitsBuilder, Trap,
    UpdateDeadline,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use self::bindings::adapter::openport::plugin::types as wit;
use self::bindings::adapter::{ToolAdapter, ToolAdapterPre};
use self::bindings::witness::{StateWitness, StateWitnessPre, Verdict as WitVerdict};
use self::interaction::{InputAsk, Interaction, Progress, Round, TaskSwitch};
use crate::clock::{SharedClock, monotonic_now};
use crate::hashing::sha256_hex;
use crate::protocol::strict_json;
use crate::protocol::trace::TraceContext;
use crate::store::Store as Db;
use crate::tool::{Descriptor, Effect, Risk};
pub use budget::{Budget, Budgets};
pub use manifest::{Grants, Isolation, Limits, PluginManifest, TaskSupport, World};
pub use warm::Reuse;

use self::budget::{CallLimiter, Slots};
use self::warm::{Domain, IdleCount, Warm, WarmPool};

/// How long a call that trapped, ran out of time or of memory keeps its plugin's slot.
const MISBEHAVIOUR_PENALTY: Duration = Duration::from_secs(1);
/// How often the epoch advances; deadlines are rounded up to it, and a running call
/// yields to the executor at each tick.
const EPOCH_TICK: Duration = Duration::from_millis(1);
/// How long past its deadline a call may take to stop by itself (the epoch) before the
/// host drops it: a guest blocked in a host call (a WASI sleep) runs no code to interrupt.
const DEADLINE_GRACE: Duration = Duration::from_millis(50);
/// Calls running longer than this are throttled ...
const LONG_CALL: Duration = Duration::from_millis(20);
/// ... sleeping this long after each epoch slice (about a tenth of a core).
const THROTTLE_SLEEP: Duration = Duration::from_millis(45);

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read component `{path}`: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("component digest {actual} does not match the manifest's sha256 {expected}")]
    DigestMismatch { expected: String, actual: String },
    #[error("component does not implement the manifest's world: {0}")]
    WorldMismatch(String),
    #[error("component failed to compile: {0}")]
    Compile(String),
    #[error("`describe` failed: {0}")]
    Describe(String),
    #[error("`describe` reported tool `{0}`, which the manifest does not list")]
    UndeclaredTool(String),
    #[error("`tasks` names `{0}`, which is not a read: writes run through drafts, never as tasks")]
    TaskForWrite(String),
    #[error("runtime setup failed: {0}")]
    Runtime(String),
}

/// Why a call into a plugin did not return a result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("plugin exceeded its time budget")]
    Timeout,
    #[error("plugin exceeded its memory budget")]
    OutOfMemory,
    #[error("plugin output exceeded {limit} bytes")]
    OutputTooLarge { limit: usize },
    #[error("plugin trapped: {0}")]
    Trap(String),
    #[error("plugin could not be instantiated: {0}")]
    Instantiate(String),
    #[error("plugin returned an error: {0:?}")]
    Guest(GuestError),
    /// Not started, or stopped before it could grow: a shared budget stayed exhausted.
    #[error("plugin call refused: the {} budget stayed exhausted", .0.name())]
    Busy(Budget),
}

/// The WIT `error` variant, as host data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestError {
    InvalidInput(String),
    NotFound(String),
    Conflict(String),
    UnknownTool(String),
    Unavailable(String),
    Internal(String),
}

impl From<wit::Error> for GuestError {
    fn from(e: wit::Error) -> Self {
        match e {
            wit::Error::InvalidInput(m) => GuestError::InvalidInput(m),
            wit::Error::NotFound(m) => GuestError::NotFound(m),
            wit::Error::Conflict(m) => GuestError::Conflict(m),
            wit::Error::UnknownTool(m) => GuestError::UnknownTool(m),
            wit::Error::Unavailable(m) => GuestError::Unavailable(m),
            wit::Error::Internal(m) => GuestError::Internal(m),
        }
    }
}

/// The server-verified context handed to a plugin: never from the agent.
#[derive(Debug, Clone)]
pub struct CallContext {
    pub tenant: String,
    pub integration: String,
    pub request_id: String,
    pub actor: String,
    /// The app's data policy allows sensitive fields (titles, notes) in results.
    pub allow_sensitive_fields: bool,
    /// The request's trace context, passed on (as a child) to the plugin's outbound calls.
    pub trace: Option<TraceContext>,
    /// The call may run in an instance that served an earlier call of the same tenant and
    /// app (see `warm`); `false` for `high` and `critical` tools.
    pub reuse_instance: bool,
    /// The execution a write's `invoke` performs (`host.execution-id`); `None` otherwise.
    pub execution_id: Option<String>,
}

/// One piece of a tool result (kept as JSON with a background task's result).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Content {
    Text(String),
    Json(String),
    Image {
        mime_type: String,
        data: Vec<u8>,
    },
    Audio {
        mime_type: String,
        data: Vec<u8>,
    },
    Resource {
        uri: String,
        mime_type: Option<String>,
        text: Option<String>,
        blob: Option<Vec<u8>>,
    },
}

/// What `invoke` returned.
#[derive(Debug, Clone)]
pub struct ToolOutput {
    /// The structured result: JSON text checked by [`strict_json::check`], not parsed (a
    /// read passes it on as written when it has nothing to redact).
    pub structured: Option<String>,
    /// How many elements the structured result's [`LISTING`] array has, counted in the
    /// same check.
    pub listed: Option<usize>,
    pub content: Vec<Content>,
    /// The plugin asked the client for input instead of answering (then the rest is empty).
    pub asked: Option<InputAsk>,
    /// What it reported along the way, when the client asked for progress.
    pub progress: Vec<Progress>,
}

/// The member of a structured result whose array is the list a read answers with: its
/// length is the audit event's `resultCount`.
pub const LISTING: &str = "items";

/// What `plan` returned.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedImpact {
    pub summary: String,
    pub detail: serde_json::Value,
}

/// Per-plugin state shared by all its calls.
struct PluginEnv {
    name: String,
    grants: Grants,
    store: Arc<Db>,
    clock: SharedClock,
}

/// Per-call state: a fresh one for every call.
pub struct CallState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: CallLimiter,
    env: Arc<PluginEnv>,
    tenant: String,
    request_id: String,
    /// What `host.execution-id` answers during this call.
    execution_id: Option<String>,
    log_lines: u32,
    /// When the call's time budget ends; host calls that wait (HTTP) stop there too.
    deadline: Arc<Deadline>,
    max_output_bytes: usize,
    /// Input and progress exchanged with the client during this call.
    interaction: Interaction,
    /// Sent with the plugin's outbound requests: the request's trace, the gateway's span.
    trace: Option<TraceContext>,
    /// The time budget of the call once it runs as a task.
    task_timeout: Duration,
    /// When the current call started (calls running long are throttled).
    started: Instant,
    /// A host call failed during this call: the instance is not kept for another.
    tainted: bool,
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A misbehaving call's slot stays taken [`MISBEHAVIOUR_PENALTY`] longer.
fn penalize(slot: tokio::sync::OwnedSemaphorePermit) {
    tokio::spawn(async move {
        tokio::time::sleep(MISBEHAVIOUR_PENALTY).await;
        drop(slot);
    });
}

/// When a call must stop. Shared by its store (the epoch callback, host calls that wait)
/// and the host's watch on the call ([`bounded`]); it moves when the call becomes a task or
/// its instance is reused.
#[derive(Debug)]
pub struct Deadline {
    base: Instant,
    after_nanos: AtomicU64,
}

impl Deadline {
    fn at(at: Instant) -> Arc<Deadline> {
        let base = monotonic_now();
        let deadline = Arc::new(Deadline {
            base,
            after_nanos: AtomicU64::new(0),
        });
        deadline.set(at);
        deadline
    }

    pub fn get(&self) -> Instant {
        self.base + Duration::from_nanos(self.after_nanos.load(Ordering::Relaxed))
    }

    pub fn set(&self, at: Instant) {
        let after = u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX);
        self.after_nanos.store(after, Ordering::Relaxed);
    }
}

/// Runs a call, but not past its deadline (and a short grace for the epoch to stop it
/// first); `None` when the host stopped it. The deadline may move while it runs.
async fn bounded<F: std::future::Future>(deadline: &Deadline, call: F) -> Option<F::Output> {
    tokio::pin!(call);
    loop {
        let until = deadline.get() + DEADLINE_GRACE;
        match tokio::time::timeout_at(tokio::time::Instant::from_std(until), &mut call).await {
            Ok(out) => return Some(out),
            Err(_) if monotonic_now() >= deadline.get() + DEADLINE_GRACE => return None,
            // The deadline moved on (the call became a task): keep watching.
            Err(_) => {}
        }
    }
}

/// A pre-linked component of either world.
enum Pre {
    Adapter(ToolAdapterPre<CallState>),
    Witness(StateWitnessPre<CallState>),
}

/// What a witness says of the state it captured earlier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Unchanged,
    /// What changed, for the audit trail.
    Changed(String),
}

/// A loaded plugin: its manifest, digest and pre-linked component.
pub struct Plugin {
    manifest: PluginManifest,
    digest: String,
    pre: Pre,
    env: Arc<PluginEnv>,
    engine: Engine,
    budgets: Arc<Budgets>,
    slots: Slots,
    /// Instances kept between calls, by isolation domain.
    warm: WarmPool,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.manifest.name)
            .field("digest", &self.digest)
            .finish()
    }
}

/// The compiled engine and linker shared by every plugin.
#[derive(Clone)]
pub struct PluginRuntime {
    engine: Engine,
    linker: Arc<Linker<CallState>>,
    store: Arc<Db>,
    clock: SharedClock,
    budgets: Arc<Budgets>,
    reuse: Reuse,
    idle: Arc<IdleCount>,
}

impl std::fmt::Debug for PluginRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRuntime").finish_non_exhaustive()
    }
}

/// How the engine is built: what it tells profilers and how many instances it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineSettings {
    pub profiler: Profiler,
    /// Plugin instances that may exist at once, warm ones included (`[plugin_runtime]
    /// instance_slots`). The pool reserves address space for each up front (two memories of
    /// 4 GiB each, mostly guard region): fewer slots fit an address-space limit (`ulimit -v`,
    /// valgrind).
    pub instance_slots: u32,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            profiler: Profiler::Off,
            instance_slots: DEFAULT_INSTANCE_SLOTS,
        }
    }
}

/// Room for the demo's plugins and a busy gateway's warm instances, in about 2 TiB of
/// reserved (not resident) address space.
pub const DEFAULT_INSTANCE_SLOTS: u32 = 256;

/// Whether the engine tells profilers the names of the plugins' compiled functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profiler {
    #[default]
    Off,
    /// `/tmp/perf-PID.map`, which `perf report` reads (`[plugin_runtime] perf_map`).
    PerfMap,
}

impl PluginRuntime {
    /// Builds the engine. `cache_dir` holds compiled code keyed by digest and settings.
    pub fn new(
        store: Arc<Db>,
        clock: SharedClock,
        cache_dir: Option<&Path>,
        budgets: Budgets,
        settings: EngineSettings,
    ) -> Result<PluginRuntime, LoadError> {
        let runtime = |e: wasmtime::Error| LoadError::Runtime(e.to_string());
        let mut config = Config::new();
        if settings.profiler == Profiler::PerfMap {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        // No plugin world uses the component model's async ABI (WASIp3, streams, futures):
        // without concurrency support, `call_async` runs the export on a fiber directly
        // instead of through the concurrent scheduler's task and channel machinery.
        config.concurrency_support(false);
        // A component instance holds a few core instances, memories and tables (its WASI
        // adapter's among them), and one fiber stack while it runs.
        let slots = settings.instance_slots;
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(slots)
            .total_core_instances(slots.saturating_mul(4))
            .total_memories(slots.saturating_mul(2))
            .total_tables(slots.saturating_mul(2))
            .total_stacks(slots)
            .max_memory_size(1 << 30)
            // A fresh instance per call must not pay a page-table flush (madvise, and its
            // cross-core TLB shootdown) every time: reset slots in place instead. The
            // PAGEMAP_SCAN ioctl (Linux 6.7+) finds the pages a call dirtied, so only those
            // are rewritten.
            .pagemap_scan(wasmtime::Enabled::Auto)
            // Instances are reused within their domain (`warm`), so fresh ones are rarer:
            // keep less of a freed slot resident, and fewer freed slots warm.
            .linear_memory_keep_resident(1 << 20)
            .table_keep_resident(1 << 16)
            .async_stack_keep_resident(128 << 10)
            // Decommit at once what a call grew past the resident part, and keep few idle
            // slots warm: after a memory-hungry plugin's calls, the memory goes back.
            .decommit_batch_size(1)
            .max_unused_warm_slots(4);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        if let Some(dir) = cache_dir {
            let mut cache = wasmtime::CacheConfig::new();
            cache.with_directory(dir);
            config.cache(Some(wasmtime::Cache::new(cache).map_err(runtime)?));
        }
        let engine = Engine::new(&config).map_err(runtime)?;
        let mut linker = Linker::<CallState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(runtime)?;
        ToolAdapter::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |s| s).map_err(runtime)?;
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(|e| LoadError::Runtime(e.to_string()))?;
        Ok(PluginRuntime {
            engine,
            linker: Arc::new(linker),
            store,
            clock,
            budgets: Arc::new(budgets),
            reuse: Reuse::default(),
            idle: Arc::default(),
        })
    }

    /// How instances are reused within an isolation domain (`[plugin_runtime]`).
    #[must_use]
    pub fn with_reuse(mut self, reuse: Reuse) -> PluginRuntime {
        self.reuse = reuse;
        self
    }

    /// Verifies, compiles and describes a plugin. Returns it with the tools it reported.
    pub async fn load(&self, manifest: PluginManifest) -> Result<Loaded, LoadError> {
        let bytes = std::fs::read(&manifest.component).map_err(|source| LoadError::Read {
            path: manifest.component.display().to_string(),
            source,
        })?;
        self.load_bytes(manifest, &bytes).await
    }

    /// As [`load`](Self::load), from bytes already in memory.
    pub async fn load_bytes(&self, manifest: PluginManifest, bytes: &[u8]) -> Result<Loaded, LoadError> {
        self.load_checked(manifest, bytes, Declared::Enforced).await
    }

    /// What a component is and serves, before it has a manifest (`openport plugin pack`):
    /// its world and the names of the tools it describes (or witnesses). It runs sandboxed,
    /// with nothing granted.
    pub async fn describe(&self, name: &str, bytes: &[u8]) -> Result<(World, Vec<String>), LoadError> {
        let mut mismatch = None;
        for world in [World::ToolAdapter, World::StateWitness] {
            let manifest = PluginManifest {
                name: name.to_string(),
                version: "0.0.0".into(),
                world,
                component: PathBuf::new(),
                sha256: sha256_hex(bytes),
                tools: Vec::new(),
                grants: Grants::default(),
                limits: Limits::default(),
                isolation: Isolation::default(),
                sensitive_fields: Vec::new(),
                prompts: Vec::new(),
                tasks: Default::default(),
                resumable: Vec::new(),
                risk: Default::default(),
                policies: Vec::new(),
                data_policy: Default::default(),
                policy_files: Vec::new(),
                text: String::new(),
            };
            match self.load_checked(manifest, bytes, Declared::Reported).await {
                Ok(loaded) => {
                    let tools = match world {
                        World::ToolAdapter => loaded.tools.into_iter().map(|t| t.name).collect(),
                        World::StateWitness => loaded.witnessed,
                    };
                    return Ok((world, tools));
                }
                Err(e @ LoadError::WorldMismatch(_)) => mismatch = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(mismatch.unwrap_or_else(|| LoadError::WorldMismatch("no OpenPort world".into())))
    }

    async fn load_checked(
        &self,
        manifest: PluginManifest,
        bytes: &[u8],
        declared: Declared,
    ) -> Result<Loaded, LoadError> {
        let digest = sha256_hex(bytes);
        if digest != manifest.sha256 {
            return Err(LoadError::DigestMismatch {
                expected: manifest.sha256.clone(),
                actual: digest,
            });
        }
        let engine = self.engine.clone();
        let owned = bytes.to_vec();
        // Compiling takes tens of milliseconds: keep it off the async workers.
        let component = tokio::task::spawn_blocking(move || Component::new(&engine, &owned))
            .await
            .map_err(|e| LoadError::Compile(e.to_string()))?
            .map_err(|e| LoadError::Compile(format!("{e:#}")))?;
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::WorldMismatch(format!("{e:#}")))?;
        let pre = match manifest.world {
            World::ToolAdapter => {
                Pre::Adapter(ToolAdapterPre::new(instance_pre).map_err(|e| LoadError::WorldMismatch(format!("{e:#}")))?)
            }
            World::StateWitness => Pre::Witness(
                StateWitnessPre::new(instance_pre).map_err(|e| LoadError::WorldMismatch(format!("{e:#}")))?,
            ),
        };
        let env = Arc::new(PluginEnv {
            name: manifest.name.clone(),
            grants: manifest.grants.clone(),
            store: self.store.clone(),
            clock: self.clock.clone(),
        });
        let manifest_concurrency = manifest.limits.concurrency as usize;
        let plugin = Arc::new(Plugin {
            slots: Slots::new(manifest.limits.concurrency),
            manifest,
            digest,
            pre,
            env,
            engine: self.engine.clone(),
            budgets: self.budgets.clone(),
            warm: WarmPool::new(self.reuse, manifest_concurrency, self.idle.clone()),
        });
        let ctx = CallContext {
            tenant: String::new(),
            integration: String::new(),
            request_id: "load".into(),
            actor: String::new(),
            allow_sensitive_fields: false,
            trace: None,
            reuse_instance: false,
            execution_id: None,
        };
        if manifest_world(&plugin) == World::StateWitness {
            let witnessed = plugin
                .call_witness(&ctx, |witness, store| {
                    Box::pin(async move { witness.call_witnessed_tools(store).await })
                })
                .await
                .map_err(|e| LoadError::Describe(e.to_string()))?;
            if let Some(undeclared) = witnessed
                .iter()
                .find(|t| declared == Declared::Enforced && !plugin.manifest.tools.contains(t))
            {
                return Err(LoadError::UndeclaredTool(undeclared.clone()));
            }
            return Ok(Loaded {
                plugin,
                tools: Vec::new(),
                witnessed,
            });
        }
        let described = plugin
            .call(&ctx, |adapter, store| {
                Box::pin(async move { adapter.call_describe(store).await })
            })
            .await
            .map_err(|e| LoadError::Describe(e.to_string()))?
            .map_err(|e| LoadError::Describe(format!("{:?}", GuestError::from(e))))?;
        let mut descriptors = Vec::with_capacity(described.len());
        for d in described {
            if declared == Declared::Enforced && !plugin.manifest.tools.contains(&d.name) {
                return Err(LoadError::UndeclaredTool(d.name));
            }
            // Writes have their own background path, the draft; only reads become tasks.
            if plugin.manifest.tasks.contains_key(&d.name) && d.effect != wit::Effect::Read {
                return Err(LoadError::TaskForWrite(d.name));
            }
            descriptors.push(Descriptor {
                name: d.name,
                description: d.description,
                input_schema: d.input_schema,
                output_schema: d.output_schema,
                effect: match d.effect {
                    wit::Effect::Read => Effect::Read,
                    wit::Effect::Write => Effect::Write,
                    wit::Effect::Delete => Effect::Delete,
                },
                risk: match d.risk {
                    wit::Risk::Low => Risk::Low,
                    wit::Risk::Medium => Risk::Medium,
                    wit::Risk::High => Risk::High,
                    wit::Risk::Critical => Risk::Critical,
                },
                required_scopes: d.required_scopes,
                requires_confirmation: d.requires_confirmation,
                http_path: d.http_path,
                idempotent: d.idempotent,
            });
        }
        Ok(Loaded {
            plugin,
            tools: descriptors,
            witnessed: Vec::new(),
        })
    }
}

/// Whether a load holds the plugin to the tools its manifest declares, or only reports
/// what it serves (before there is a manifest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Declared {
    Enforced,
    Reported,
}

fn manifest_world(plugin: &Plugin) -> World {
    plugin.world()
}

/// A plugin that passed its checks, with what it serves: tools (adapters) or the tools it
/// witnesses (state witnesses).
#[derive(Debug)]
pub struct Loaded {
    pub plugin: Arc<Plugin>,
    pub tools: Vec<Descriptor>,
    pub witnessed: Vec<String>,
}

type CallFuture<'a, R> = std::pin::Pin<Box<dyn std::future::Future<Output = wasmtime::Result<R>> + Send + 'a>>;

impl Plugin {
    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    pub fn version(&self) -> &str {
        &self.manifest.version
    }

    pub fn world(&self) -> World {
        self.manifest.world
    }

    /// Hex sha256 of the component.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    pub fn manifest(&self) -> &PluginManifest {
        &self.manifest
    }

    /// Runs `invoke` for a tool, with what the client brings to this round.
    pub async fn invoke(
        &self,
        ctx: &CallContext,
        tool: &str,
        payload: &str,
        round: Round,
    ) -> Result<ToolOutput, CallError> {
        let wctx = wit_context(ctx);
        let Pre::Adapter(pre) = &self.pre else {
            return Err(CallError::Instantiate("not a tool adapter".into()));
        };
        let reuse = ctx.reuse_instance && self.manifest.isolation == Isolation::PerDomain;
        let domain = Domain {
            tenant: ctx.tenant.clone(),
            app: ctx.integration.clone(),
        };
        let slot = self.slot().await?;
        let kept = if reuse { self.warm.take(&domain) } else { None };
        let mut instance = match kept {
            Some(mut warm) => {
                self.rearm(&mut warm.store, ctx);
                warm
            }
            None => {
                let mut store = self.fresh_store(ctx);
                match pre.instantiate_async(&mut store).await {
                    Ok(adapter) => Warm {
                        store,
                        adapter,
                        calls: 0,
                        born: monotonic_now(),
                    },
                    Err(e) => return Err(self.failure(store, &e, true, slot)),
                }
            }
        };
        let state = instance.store.data_mut();
        if matches!(round.task, TaskSwitch::Running) {
            state.deadline.set(monotonic_now() + state.task_timeout);
        }
        state.interaction = Interaction::new(round);
        let deadline = state.deadline.clone();
        let call = instance.adapter.call_invoke(&mut instance.store, &wctx, tool, payload);
        let result = match bounded(&deadline, call).await {
            Some(Ok(result)) => result,
            Some(Err(e)) => return Err(self.failure(instance.store, &e, false, slot)),
            None => return Err(self.timed_out(instance.store, slot)),
        };
        let interaction = std::mem::take(&mut instance.store.data_mut().interaction);
        let output = self.output(result, interaction);
        // Only a clean call leaves an instance fit for the next call of its domain: one
        // whose host calls all succeeded and whose output the host accepted.
        if reuse && output.is_ok() && !instance.store.data().tainted {
            instance.calls += 1;
            self.warm.keep(domain, instance);
        }
        drop(slot);
        output
    }

    /// What `invoke` returned, checked: the plugin's own error, or its input requests, or
    /// its result within the output cap (structured content must be JSON).
    fn output(
        &self,
        result: Result<wit::ToolResult, wit::Error>,
        interaction: Interaction,
    ) -> Result<ToolOutput, CallError> {
        let result = result.map_err(|e| CallError::Guest(e.into()))?;
        if let Some(ask) = interaction.asked {
            return Ok(ToolOutput {
                structured: None,
                listed: None,
                content: Vec::new(),
                asked: Some(ask),
                progress: interaction.progress,
            });
        }
        let limit = self.manifest.limits.max_output_bytes;
        let (structured, listed) = match result.structured {
            Some(text) => {
                check_size(text.len(), limit)?;
                // Passed on as written when nothing needs redacting: a key given twice
                // would reach clients that each read it differently.
                match strict_json::check(&text, LISTING) {
                    Ok(listed) => (Some(text), listed),
                    Err(e) => {
                        let problem = if strict_json::is_duplicate_key(&e) {
                            "repeats a key"
                        } else {
                            "is not JSON"
                        };
                        return Err(CallError::Guest(GuestError::Internal(format!(
                            "structured result {problem}"
                        ))));
                    }
                }
            }
            None => (None, None),
        };
        let mut total = 0;
        let mut content = Vec::with_capacity(result.content.len());
        for c in result.content {
            let item = match c {
                wit::Content::Text(t) => Content::Text(t),
                wit::Content::Json(t) => Content::Json(t),
                wit::Content::Image(m) => Content::Image {
                    mime_type: m.mime_type,
                    data: m.data,
                },
                wit::Content::Audio(m) => Content::Audio {
                    mime_type: m.mime_type,
                    data: m.data,
                },
                wit::Content::Embedded(r) => Content::Resource {
                    uri: r.uri,
                    mime_type: r.mime_type,
                    text: r.text,
                    blob: r.blob,
                },
            };
            total += content_size(&item);
            check_size(total, limit)?;
            content.push(item);
        }
        Ok(ToolOutput {
            structured,
            listed,
            content,
            asked: None,
            progress: interaction.progress,
        })
    }

    /// Drops this plugin's idle instances past their age.
    pub fn reap_idle(&self) {
        self.warm.reap();
    }

    /// Runs `plan` for a write.
    pub async fn plan(&self, ctx: &CallContext, tool: &str, payload: &str) -> Result<PlannedImpact, CallError> {
        let (wctx, tool, payload) = (wit_context(ctx), tool.to_string(), payload.to_string());
        let impact = self
            .call(ctx, |adapter, store| {
                Box::pin(async move { adapter.call_plan(store, &wctx, &tool, &payload).await })
            })
            .await?
            .map_err(|e| CallError::Guest(e.into()))?;
        check_size(
            impact.summary.len() + impact.detail.len(),
            self.manifest.limits.max_output_bytes,
        )?;
        let detail = serde_json::from_str(&impact.detail)
            .map_err(|_| CallError::Guest(GuestError::Internal("impact detail is not JSON".into())))?;
        Ok(PlannedImpact {
            summary: impact.summary,
            detail,
        })
    }

    /// A kept instance's store, ready for another call of its domain: this call's request
    /// id, trace, time budget and log allowance; nothing of the last call's exchange.
    fn rearm(&self, store: &mut Store<CallState>, ctx: &CallContext) {
        let state = store.data_mut();
        state.request_id = ctx.request_id.clone();
        state.execution_id = ctx.execution_id.clone();
        state.trace = ctx.trace.as_ref().map(TraceContext::child);
        state.log_lines = 0;
        state.started = monotonic_now();
        state
            .deadline
            .set(state.started + Duration::from_millis(self.manifest.limits.timeout_ms));
        state.interaction = Interaction::default();
        store.set_epoch_deadline(1);
    }

    /// A fresh store with this plugin's budgets: memory, an epoch deadline, throttling.
    fn fresh_store(&self, ctx: &CallContext) -> Store<CallState> {
        let limits = &self.manifest.limits;
        let memory = usize::try_from(limits.memory_mib)
            .unwrap_or(usize::MAX)
            .saturating_mul(1 << 20);
        let state = CallState {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            limiter: CallLimiter::new(
                StoreLimitsBuilder::new()
                    .memory_size(memory)
                    .instances(32)
                    .tables(64)
                    .trap_on_grow_failure(true)
                    .build(),
                self.budgets.clone(),
            ),
            env: self.env.clone(),
            tenant: ctx.tenant.clone(),
            request_id: ctx.request_id.clone(),
            execution_id: ctx.execution_id.clone(),
            log_lines: 0,
            deadline: Deadline::at(monotonic_now() + Duration::from_millis(limits.timeout_ms)),
            max_output_bytes: limits.max_output_bytes,
            interaction: Interaction::default(),
            trace: ctx.trace.as_ref().map(TraceContext::child),
            task_timeout: Duration::from_millis(limits.task_timeout_ms),
            started: monotonic_now(),
            tainted: false,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter_async(|s| &mut s.limiter);
        store.set_epoch_deadline(1);
        // Yield to the executor on every tick so a looping guest cannot starve other
        // requests, and stop it at its deadline (which grows once the call is a task).
        store.epoch_deadline_callback(move |store| {
            let now = monotonic_now();
            let call = store.data();
            if now >= call.deadline.get() {
                Ok(UpdateDeadline::Interrupt)
            } else if now.duration_since(call.started) > LONG_CALL {
                // A call this long is throttled: it sleeps between slices, so a looping
                // plugin gets a small share of a core and everyone else keeps theirs.
                Ok(UpdateDeadline::YieldCustom(
                    1,
                    Box::pin(tokio::time::sleep(THROTTLE_SLEEP)),
                ))
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store
    }

    /// Instantiates the tool adapter in a fresh store and runs `f`.
    async fn call<R>(
        &self,
        ctx: &CallContext,
        f: impl for<'a> FnOnce(&'a ToolAdapter, &'a mut Store<CallState>) -> CallFuture<'a, R>,
    ) -> Result<R, CallError> {
        let Pre::Adapter(pre) = &self.pre else {
            return Err(CallError::Instantiate("not a tool adapter".into()));
        };
        let slot = self.slot().await?;
        let mut store = self.fresh_store(ctx);
        let adapter = match pre.instantiate_async(&mut store).await {
            Ok(adapter) => adapter,
            Err(e) => return Err(self.failure(store, &e, true, slot)),
        };
        let deadline = store.data().deadline.clone();
        match bounded(&deadline, f(&adapter, &mut store)).await {
            Some(Ok(out)) => Ok(out),
            Some(Err(e)) => Err(self.failure(store, &e, false, slot)),
            None => Err(self.timed_out(store, slot)),
        }
    }

    /// Instantiates the state witness in a fresh store and runs `f`.
    async fn call_witness<R>(
        &self,
        ctx: &CallContext,
        f: impl for<'a> FnOnce(&'a StateWitness, &'a mut Store<CallState>) -> CallFuture<'a, R>,
    ) -> Result<R, CallError> {
        let Pre::Witness(pre) = &self.pre else {
            return Err(CallError::Instantiate("not a state witness".into()));
        };
        let slot = self.slot().await?;
        let mut store = self.fresh_store(ctx);
        let witness = match pre.instantiate_async(&mut store).await {
            Ok(witness) => witness,
            Err(e) => return Err(self.failure(store, &e, true, slot)),
        };
        let deadline = store.data().deadline.clone();
        match bounded(&deadline, f(&witness, &mut store)).await {
            Some(Ok(out)) => Ok(out),
            Some(Err(e)) => Err(self.failure(store, &e, false, slot)),
            None => Err(self.timed_out(store, slot)),
        }
    }

    /// One of this plugin's call slots. Calls queue for one up to the plugin's own time
    /// budget: under honest load they wait their turn; a hostile plugin's callers only
    /// queue behind each other.
    async fn slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, CallError> {
        self.slots
            .take(Duration::from_millis(self.manifest.limits.timeout_ms))
            .await
            .ok_or_else(|| self.budgets.refused(&self.manifest.name, Budget::Concurrency))
    }

    /// Why a call failed: the shared memory budget, or what the engine says (a trap, its
    /// deadline, its memory limit). Such a call misbehaved: its slot stays taken for
    /// [`MISBEHAVIOUR_PENALTY`] more, so a plugin whose calls keep failing gets a small
    /// share of the machine however hard it is called. Its store (and memory) go now.
    fn failure(
        &self,
        store: Store<CallState>,
        e: &wasmtime::Error,
        instantiating: bool,
        slot: tokio::sync::OwnedSemaphorePermit,
    ) -> CallError {
        let starved = store.data().limiter.starved;
        drop(store);
        penalize(slot);
        if starved {
            return self.budgets.refused(&self.manifest.name, Budget::Memory);
        }
        classify(e, instantiating)
    }

    /// A call the host stopped at its deadline (it was blocked in a host call): a timeout,
    /// with the misbehaving call's penalty.
    fn timed_out(&self, store: Store<CallState>, slot: tokio::sync::OwnedSemaphorePermit) -> CallError {
        drop(store);
        penalize(slot);
        CallError::Timeout
    }

    /// Captures the state a write depends on, as a JSON object.
    pub async fn capture(&self, ctx: &CallContext, tool: &str, payload: &str) -> Result<serde_json::Value, CallError> {
        let (wctx, tool, payload) = (wit_context(ctx), tool.to_string(), payload.to_string());
        let text = self
            .call_witness(ctx, |w, store| {
                Box::pin(async move { w.call_capture(store, &wctx, &tool, &payload).await })
            })
            .await?
            .map_err(|e| CallError::Guest(e.into()))?;
        check_size(text.len(), self.manifest.limits.max_output_bytes)?;
        serde_json::from_str(&text).map_err(|_| CallError::Guest(GuestError::Internal("witness is not JSON".into())))
    }

    /// Checks a captured witness against live state.
    pub async fn verify(
        &self,
        ctx: &CallContext,
        tool: &str,
        payload: &str,
        witness: &serde_json::Value,
    ) -> Result<Verdict, CallError> {
        let (wctx, tool, payload, witness) = (
            wit_context(ctx),
            tool.to_string(),
            payload.to_string(),
            witness.to_string(),
        );
        let verdict = self
            .call_witness(ctx, |w, store| {
                Box::pin(async move { w.call_verify(store, &wctx, &tool, &payload, &witness).await })
            })
            .await?
            .map_err(|e| CallError::Guest(e.into()))?;
        Ok(match verdict {
            WitVerdict::Unchanged => Verdict::Unchanged,
            WitVerdict::Changed(what) => Verdict::Changed(what),
        })
    }
}

fn wit_context(ctx: &CallContext) -> wit::CallContext {
    wit::CallContext {
        tenant: ctx.tenant.clone(),
        integration: ctx.integration.clone(),
        request_id: ctx.request_id.clone(),
        actor: ctx.actor.clone(),
        allow_sensitive_fields: ctx.allow_sensitive_fields,
    }
}

fn check_size(size: usize, limit: usize) -> Result<(), CallError> {
    if size > limit {
        Err(CallError::OutputTooLarge { limit })
    } else {
        Ok(())
    }
}

fn content_size(c: &Content) -> usize {
    match c {
        Content::Text(t) | Content::Json(t) => t.len(),
        Content::Image { mime_type, data } | Content::Audio { mime_type, data } => mime_type.len() + data.len(),
        Content::Resource {
            uri,
            mime_type,
            text,
            blob,
        } => {
            uri.len()
                + mime_type.as_ref().map_or(0, String::len)
                + text.as_ref().map_or(0, String::len)
                + blob.as_ref().map_or(0, Vec::len)
        }
    }
}

/// Maps a wasmtime error to why the call failed. Details stay in the log.
fn classify(e: &wasmtime::Error, instantiating: bool) -> CallError {
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => CallError::Timeout,
        Some(Trap::MemoryOutOfBounds) | Some(Trap::AllocationTooLarge) => CallError::OutOfMemory,
        Some(trap) => CallError::Trap(trap.to_string()),
        None if instantiating => CallError::Instantiate(format!("{e:#}")),
        None => {
            let text = format!("{e:#}");
            if text.contains("memory") && text.contains("limit") {
                CallError::OutOfMemory
            } else {
                CallError::Trap(text)
            }
        }
    }
}
