//! Prometheus metrics, served on the admin plane (`GET /api/agent-admin/v1/metrics`).

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    plane: &'static str,
    tool: String,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PlaneLabels {
    plane: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabels {
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolLabels {
    tool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppLabels {
    app: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppCodeLabels {
    app: String,
    code: &'static str,
}

/// A pipeline stage, timed into `openport_stage_seconds{stage=...}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Authenticate,
    Admission,
    Cedar,
    Validate,
    Plugin,
    Audit,
}

impl Stage {
    const ALL: [Stage; 6] = [
        Stage::Authenticate,
        Stage::Admission,
        Stage::Cedar,
        Stage::Validate,
        Stage::Plugin,
        Stage::Audit,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Authenticate => "authenticate",
            Stage::Admission => "admission",
            Stage::Cedar => "cedar",
            Stage::Validate => "validate",
            Stage::Plugin => "plugin",
            Stage::Audit => "audit",
        }
    }
}

/// Distinct app ids that get series of their own; requests of any later app are counted
/// under `app="other"`, so a gateway with many apps keeps a bounded number of series.
pub const MAX_APP_LABELS: usize = 200;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabels {
    policy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

/// The series of one tool's or one app's successful answers, resolved at its first one: a
/// family lookup hashes its labels, allocates them and locks the family, and a governed read
/// made five of them (plugin, tool and app series). Other codes are counted through the
/// families.
#[derive(Debug)]
struct Answers {
    seconds: Histogram,
    succeeded: Counter,
}

impl Answers {
    /// One answer: its latency, and its code here if a success, else by `other_code`.
    fn record(&self, seconds: f64, code: &str, other_code: impl FnOnce()) {
        self.seconds.observe(seconds);
        if code == SUCCESS {
            self.succeeded.inc();
        } else {
            other_code();
        }
    }
}

/// Series kept by the name they were resolved for, so that a request finds them without
/// allocating a label.
#[derive(Debug)]
struct ByName<T>(RwLock<HashMap<String, T>>);

impl<T> Default for ByName<T> {
    fn default() -> Self {
        ByName(RwLock::new(HashMap::new()))
    }
}

impl<T> ByName<T> {
    /// Runs `record` on the series of `name` if they were resolved; whether they were.
    fn find(&self, name: &str, record: impl FnOnce(&T)) -> bool {
        let known = self.0.read().unwrap_or_else(PoisonError::into_inner);
        known.get(name).map(record).is_some()
    }

    /// Runs `record` on the series of `name`, resolving them first with `resolve`.
    fn with(&self, name: &str, resolve: impl FnOnce() -> T, record: impl FnOnce(&T)) {
        if let Some(series) = self.0.read().unwrap_or_else(PoisonError::into_inner).get(name) {
            return record(series);
        }
        let mut known = self.0.write().unwrap_or_else(PoisonError::into_inner);
        record(known.entry(name.to_string()).or_insert_with(resolve));
    }
}

/// The code a successful answer is counted under (`codes::SUCCESS`, named here: metrics
/// sits in protocol's layer, not above it).
const SUCCESS: &str = "common.success";

fn latency_buckets() -> Histogram {
    // 10 µs to ~10 s.
    Histogram::new(exponential_buckets(0.000_01, 2.0, 20))
}

/// The audit writer's own figures: how many events each commit carried, and how long the
/// commit took. Cloning shares the histograms.
#[derive(Debug, Clone)]
pub struct AuditWriterMetrics {
    pub batch_events: Histogram,
    pub commit_seconds: Histogram,
}

impl Default for AuditWriterMetrics {
    fn default() -> Self {
        AuditWriterMetrics {
            // 1 to 512 events, the writer's largest batch.
            batch_events: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            commit_seconds: latency_buckets(),
        }
    }
}

/// The plugin runtime's budgets: refusals by plugin and budget, and the memory reserved.
/// Cloning shares them.
#[derive(Debug, Clone, Default)]
pub struct PluginBudgetMetrics {
    refusals: Family<BudgetLabels, Counter>,
    reserved: Gauge,
}

impl PluginBudgetMetrics {
    pub fn refused(&self, plugin: &str, budget: &'static str) {
        self.refusals
            .get_or_create(&BudgetLabels {
                plugin: plugin.to_string(),
                budget,
            })
            .inc();
    }

    pub fn reserved(&self, bytes: usize) {
        self.reserved.set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
}

/// The gateway's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    tool_seconds: Family<ToolLabels, Histogram, fn() -> Histogram>,
    app_requests: Family<AppCodeLabels, Counter>,
    app_seconds: Family<AppLabels, Histogram, fn() -> Histogram>,
    /// The app ids that have series of their own (at most [`MAX_APP_LABELS`]).
    labelled_apps: std::sync::Mutex<std::collections::HashSet<String>>,
    /// `request_seconds{plane="agent"}`, resolved once.
    agent_seconds: Histogram,
    tool_answers: ByName<Answers>,
    /// Only apps with series of their own, so this stays bounded as `labelled_apps` is.
    app_answers: ByName<Answers>,
    plugin_series: ByName<Histogram>,
    /// `stage_seconds`' series, one a [`Stage`] in `Stage::ALL`'s order, resolved once: a
    /// request times several stages, and a lookup by label hashes and locks each time.
    stage_seconds: [Histogram; Stage::ALL.len()],
    plugin_seconds: Family<PluginLabels, Histogram, fn() -> Histogram>,
    refusals: Family<LimitLabels, Counter>,
    shadow_disagreements: Family<PolicyLabels, Counter>,
    drafts: Family<StateLabels, Gauge>,
    in_flight: Gauge,
    audit_writer: AuditWriterMetrics,
    coalesced_refusals: Counter,
    data_dir_bytes: Gauge,
    disk_budget_exceeded: Gauge,
    plugin_budget: PluginBudgetMetrics,
    plugin_info: Family<PluginInfoLabels, Gauge>,
    reload_failures: Counter,
    cluster_unapplied: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginInfoLabels {
    plugin: String,
    version: String,
    sha256: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BudgetLabels {
    plugin: String,
    budget: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("openport");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by plane, tool and reason code",
            requests.clone(),
        );
        let request_seconds = Family::<PlaneLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_buckets as fn() -> Histogram,
        );
        registry.register(
            "request_seconds",
            "Time from a parsed request to its answer",
            request_seconds.clone(),
        );
        let tool_seconds = Family::<ToolLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_buckets as fn() -> Histogram,
        );
        registry.register(
            "tool_request_seconds",
            "Time from a parsed request to its answer, by tool (the loaded tools only)",
            tool_seconds.clone(),
        );
        let app_requests = Family::<AppCodeLabels, Counter>::default();
        registry.register(
            "app_requests",
            "Agent requests by authenticated app and reason code (the first 200 apps seen by id, the rest as app=\"other\")",
            app_requests.clone(),
        );
        let app_seconds = Family::<AppLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_buckets as fn() -> Histogram,
        );
        registry.register(
            "app_request_seconds",
            "Time from a parsed request to its answer, by authenticated app (bounded as app_requests)",
            app_seconds.clone(),
        );
        let stage_seconds = Family::<StageLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_buckets as fn() -> Histogram,
        );
        registry.register(
            "stage_seconds",
            "Time spent in each pipeline stage",
            stage_seconds.clone(),
        );
        let stage_seconds = Stage::ALL.map(|stage| {
            stage_seconds
                .get_or_create(&StageLabels { stage: stage.name() })
                .clone()
        });
        let plugin_seconds = Family::<PluginLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_buckets as fn() -> Histogram,
        );
        registry.register(
            "plugin_seconds",
            "Time spent in plugin calls, by plugin",
            plugin_seconds.clone(),
        );
        let refusals = Family::<LimitLabels, Counter>::default();
        registry.register(
            "admission_refusals",
            "Calls refused by admission control, by limit",
            refusals.clone(),
        );
        let shadow_disagreements = Family::<PolicyLabels, Counter>::default();
        registry.register(
            "policy_shadow_disagreements",
            "Decisions a shadow policy would have changed, by shadow policy",
            shadow_disagreements.clone(),
        );
        let drafts = Family::<StateLabels, Gauge>::default();
        registry.register("drafts", "Drafts by state", drafts.clone());
        let in_flight = Gauge::default();
        registry.register("in_flight", "Agent calls in flight", in_flight.clone());
        let audit_writer = AuditWriterMetrics::default();
        registry.register(
            "audit_batch_events",
            "Audit events written per commit",
            audit_writer.batch_events.clone(),
        );
        registry.register(
            "audit_commit_seconds",
            "Time the audit writer spends storing and committing one batch",
            audit_writer.commit_seconds.clone(),
        );
        let coalesced_refusals = Counter::default();
        registry.register(
            "coalesced_refusals",
            "Refusals counted in a summary audit event instead of one event each",
            coalesced_refusals.clone(),
        );
        let data_dir_bytes = Gauge::default();
        registry.register(
            "data_dir_bytes",
            "Bytes held by the data directory, measured every 2 s",
            data_dir_bytes.clone(),
        );
        let disk_budget_exceeded = Gauge::default();
        registry.register(
            "disk_budget_exceeded",
            "1 while agent requests are refused because the data directory is near its disk budget",
            disk_budget_exceeded.clone(),
        );
        let plugin_budget = PluginBudgetMetrics::default();
        registry.register(
            "plugin_budget_refusals",
            "Plugin calls refused because a budget stayed exhausted (memory or concurrency)",
            plugin_budget.refusals.clone(),
        );
        registry.register(
            "plugin_memory_reserved_bytes",
            "Linear memory reserved by plugin calls in flight, against the process-wide budget",
            plugin_budget.reserved.clone(),
        );
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("build_info", "The running build (always 1)", build_info);
        let plugin_info = Family::<PluginInfoLabels, Gauge>::default();
        registry.register(
            "plugin_info",
            "Loaded plugins, one series each with its version and digest (always 1)",
            plugin_info.clone(),
        );
        let reload_failures = Counter::default();
        registry.register(
            "reload_failures",
            "Config and policy reloads refused (the running set stayed)",
            reload_failures.clone(),
        );
        let cluster_unapplied = Gauge::default();
        registry.register(
            "cluster_unapplied",
            "Plugins and policy sets another node activated that this node could not apply (it serves its own)",
            cluster_unapplied.clone(),
        );
        let agent_seconds = request_seconds.get_or_create(&PlaneLabels { plane: "agent" }).clone();
        Metrics {
            registry,
            plugin_info,
            reload_failures,
            cluster_unapplied,
            coalesced_refusals,
            data_dir_bytes,
            disk_budget_exceeded,
            plugin_budget,
            requests,
            tool_seconds,
            app_requests,
            app_seconds,
            labelled_apps: std::sync::Mutex::new(std::collections::HashSet::new()),
            agent_seconds,
            tool_answers: ByName::default(),
            app_answers: ByName::default(),
            plugin_series: ByName::default(),
            stage_seconds,
            plugin_seconds,
            refusals,
            shadow_disagreements,
            drafts,
            in_flight,
            audit_writer,
        }
    }

    /// The histograms the audit writer records into.
    pub fn audit_writer(&self) -> AuditWriterMetrics {
        self.audit_writer.clone()
    }

    /// An agent-plane request: by tool and code, and, once authenticated, by app.
    pub fn request(&self, tool: Option<&str>, app: Option<&str>, code: &'static str, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        self.agent_seconds.observe(seconds);
        match tool {
            Some(tool) => self.tool_answers.with(
                tool,
                || Answers {
                    seconds: self
                        .tool_seconds
                        .get_or_create(&ToolLabels { tool: tool.to_string() })
                        .clone(),
                    succeeded: self.request_counter(tool, SUCCESS),
                },
                |answers| {
                    answers.record(seconds, code, || {
                        self.request_counter(tool, code).inc();
                    });
                },
            ),
            None => {
                self.request_counter("", code).inc();
            }
        }
        let Some(app) = app else { return };
        let count = |answers: &Answers| {
            answers.record(seconds, code, || {
                self.app_counter(app, code).inc();
            });
        };
        if self.app_answers.find(app, count) {
            return;
        }
        let label = self.app_label(app);
        if label == app {
            let resolve = || Answers {
                seconds: self
                    .app_seconds
                    .get_or_create(&AppLabels { app: label.clone() })
                    .clone(),
                succeeded: self.app_counter(&label, SUCCESS),
            };
            self.app_answers.with(app, resolve, count);
        } else {
            // Past the label budget: `other`'s series, looked up each time, so that
            // `app_answers` holds no more apps than have series of their own.
            self.app_counter(&label, code).inc();
            self.app_seconds
                .get_or_create(&AppLabels { app: label })
                .observe(seconds);
        }
    }

    fn request_counter(&self, tool: &str, code: &'static str) -> Counter {
        self.requests
            .get_or_create(&RequestLabels {
                plane: "agent",
                tool: tool.to_string(),
                code,
            })
            .clone()
    }

    fn app_counter(&self, app: &str, code: &'static str) -> Counter {
        self.app_requests
            .get_or_create(&AppCodeLabels {
                app: app.to_string(),
                code,
            })
            .clone()
    }

    /// The label an app's series use: its id while fewer than [`MAX_APP_LABELS`] apps
    /// have their own, else `other`.
    fn app_label(&self, app: &str) -> String {
        let mut labelled = self
            .labelled_apps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if labelled.contains(app) || labelled.len() < MAX_APP_LABELS && labelled.insert(app.to_string()) {
            app.to_string()
        } else {
            "other".into()
        }
    }

    /// An admin-plane request, counted by its code.
    pub fn admin_request(&self, code: &'static str) {
        self.requests
            .get_or_create(&RequestLabels {
                plane: "admin",
                tool: String::new(),
                code,
            })
            .inc();
    }

    /// Creates the series whose labels are known in advance, so that every counter a
    /// dashboard or alert reads exists, at zero, from the start: requests by plane and
    /// code (without a tool), and refusals by limit.
    pub fn start_at_zero(&self, limits: &[&'static str], codes: &[&'static str]) {
        for &limit in limits {
            let _created = self.refusals.get_or_create(&LimitLabels { limit });
        }
        for plane in ["agent", "admin"] {
            for &code in codes {
                let _created = self.requests.get_or_create(&RequestLabels {
                    plane,
                    tool: String::new(),
                    code,
                });
            }
        }
    }

    pub fn stage(&self, stage: Stage, elapsed: Duration) {
        self.stage_seconds[stage as usize].observe(elapsed.as_secs_f64());
    }

    pub fn plugin(&self, plugin: &str, elapsed: Duration) {
        let resolve = || {
            self.plugin_seconds
                .get_or_create(&PluginLabels {
                    plugin: plugin.to_string(),
                })
                .clone()
        };
        self.plugin_series
            .with(plugin, resolve, |seconds| seconds.observe(elapsed.as_secs_f64()));
    }

    pub fn policy_shadow_disagreement(&self, policy: &str) {
        self.shadow_disagreements
            .get_or_create(&PolicyLabels {
                policy: policy.to_string(),
            })
            .inc();
    }

    pub fn refusal(&self, limit: &'static str) {
        self.refusals.get_or_create(&LimitLabels { limit }).inc();
    }

    pub fn coalesced_refusal(&self) {
        self.coalesced_refusals.inc();
    }

    pub fn data_dir(&self, bytes: u64, exceeded: bool) {
        self.data_dir_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
        self.disk_budget_exceeded.set(i64::from(exceeded));
    }

    /// The plugin runtime's budget figures.
    pub fn plugin_budget(&self) -> PluginBudgetMetrics {
        self.plugin_budget.clone()
    }

    pub fn reload_failed(&self) {
        self.reload_failures.inc();
    }

    /// After a node applied the other nodes' changes: how many it could not.
    pub fn cluster_synced(&self, unapplied: usize) {
        self.cluster_unapplied.set(i64::try_from(unapplied).unwrap_or(i64::MAX));
    }

    /// Renders the text exposition format, with gauges read now: drafts by state, calls
    /// in flight, and the loaded plugins as (name, version, digest).
    pub fn render(
        &self,
        drafts_by_state: &[(String, i64)],
        in_flight: usize,
        plugins: &[(String, String, String)],
    ) -> String {
        self.plugin_info.clear();
        for (plugin, version, sha256) in plugins {
            self.plugin_info
                .get_or_create(&PluginInfoLabels {
                    plugin: plugin.clone(),
                    version: version.clone(),
                    sha256: sha256.clone(),
                })
                .set(1);
        }
        for (state, count) in drafts_by_state {
            self.drafts
                .get_or_create(&StateLabels { state: state.clone() })
                .set(*count);
        }
        self.in_flight.set(i64::try_from(in_flight).unwrap_or(i64::MAX));
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_every_family() {
        let m = Metrics::new();
        m.start_at_zero(&["quota"], &["agent.overloaded"]);
        m.request(
            Some("ledger.list"),
            Some("app_1"),
            "common.success",
            Duration::from_micros(120),
        );
        m.stage(Stage::Cedar, Duration::from_micros(5));
        m.plugin("ledger", Duration::from_micros(40));
        m.refusal("per-key");
        m.audit_writer().batch_events.observe(3.0);
        let text = m.render(
            &[("draft".into(), 3)],
            2,
            &[("ledger".into(), "1.0.0".into(), "ab".into())],
        );
        for needle in [
            "# TYPE openport_requests counter",
            "openport_requests_total{plane=\"agent\",tool=\"ledger.list\",code=\"common.success\"} 1",
            "openport_stage_seconds_count{stage=\"cedar\"} 1",
            "openport_stage_seconds_count{stage=\"audit\"} 0",
            "openport_plugin_seconds_count{plugin=\"ledger\"} 1",
            "openport_admission_refusals_total{limit=\"per-key\"} 1",
            "openport_drafts{state=\"draft\"} 3",
            "openport_in_flight 2",
            "openport_audit_batch_events_count 1",
            "openport_audit_commit_seconds_bucket{le=",
            "openport_build_info{version=",
            "openport_plugin_info{plugin=\"ledger\",version=\"1.0.0\",sha256=\"ab\"} 1",
            "openport_reload_failures_total 0",
            "openport_coalesced_refusals_total 0",
            "openport_admission_refusals_total{limit=\"quota\"} 0",
            "openport_requests_total{plane=\"admin\",tool=\"\",code=\"agent.overloaded\"} 0",
            "openport_tool_request_seconds_count{tool=\"ledger.list\"} 1",
            "openport_app_requests_total{app=\"app_1\",code=\"common.success\"} 1",
            "openport_app_request_seconds_count{app=\"app_1\"} 1",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }

    #[test]
    fn every_answer_of_a_tool_and_an_app_counts_under_its_own_code() {
        assert_eq!(SUCCESS, crate::protocol::codes::SUCCESS.name);
        let m = Metrics::new();
        for code in ["common.success", "common.success", "agent.policy_denied"] {
            m.request(Some("ledger.list"), Some("app_1"), code, Duration::from_micros(50));
        }
        m.plugin("ledger", Duration::from_micros(40));
        m.plugin("ledger", Duration::from_micros(40));
        let text = m.render(&[], 0, &[]);
        for needle in [
            "openport_requests_total{plane=\"agent\",tool=\"ledger.list\",code=\"common.success\"} 2",
            "openport_requests_total{plane=\"agent\",tool=\"ledger.list\",code=\"agent.policy_denied\"} 1",
            "openport_app_requests_total{app=\"app_1\",code=\"common.success\"} 2",
            "openport_app_requests_total{app=\"app_1\",code=\"agent.policy_denied\"} 1",
            "openport_request_seconds_count{plane=\"agent\"} 3",
            "openport_tool_request_seconds_count{tool=\"ledger.list\"} 3",
            "openport_app_request_seconds_count{app=\"app_1\"} 3",
            "openport_plugin_seconds_count{plugin=\"ledger\"} 2",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }

    #[test]
    fn apps_past_the_label_budget_share_one_series() {
        let m = Metrics::new();
        for i in 0..MAX_APP_LABELS + 5 {
            m.request(None, Some(&format!("app_{i}")), "common.success", Duration::ZERO);
        }
        m.request(None, Some("app_0"), "common.success", Duration::ZERO);
        let text = m.render(&[], 0, &[]);
        assert!(
            text.contains("openport_app_requests_total{app=\"app_0\",code=\"common.success\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("openport_app_requests_total{app=\"other\",code=\"common.success\"} 5"),
            "{text}"
        );
        assert_eq!(
            text.matches("openport_app_request_seconds_count{").count(),
            MAX_APP_LABELS + 1
        );
    }
}
