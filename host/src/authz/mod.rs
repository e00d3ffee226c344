//! Cedar authorization (SPEC section 5): the only module that touches `cedar_policy`.
//!
//! A policy set is validated strictly against a schema generated from the loaded
//! plugins' tools (`schema`) before it is used; a set that fails is refused and the
//! previous one keeps serving. Any evaluation error denies. Nothing here knows a tool's
//! domain: the arguments a policy sees come typed from the tool's input schema
//! (`crate::attr`), and the app's data policy comes as a record from `app_policy`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use cedar_policy::{
    ActionConstraint, Authorizer as CedarAuthorizer, Context, Decision as CedarDecision, Entities, Entity, EntityId,
    EntityTypeName, EntityUid, Policy, PolicyId, PolicySet, PrincipalConstraint, Request, ResourceConstraint,
    RestrictedExpression, Schema, ValidationMode, Validator,
};
use serde_json::Value;
use time::OffsetDateTime;

use crate::attr::{self, Attr};
use crate::tool::{Effect, Risk, ToolFacts};

pub mod scenarios;
pub mod schema;

pub use schema::ToolVocabulary;

/// The default base schema and policies, compiled in so `openport demo` needs no files.
pub const DEFAULT_SCHEMA: &str = include_str!("../../../policies/schema.cedarschema");
pub const DEFAULT_POLICIES: &str = include_str!("../../../policies/base.cedar");

#[derive(Debug, thiserror::Error)]
pub enum AuthzError {
    #[error("cannot read `{path}`: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("schema is invalid: {0}")]
    Schema(String),
    #[error("policy file `{file}` does not parse:\n{message}")]
    Parse { file: String, message: String },
    #[error("policy set fails validation against the schema of the loaded tools:\n{0}")]
    Validation(String),
    #[error("policy id `{0}` is used twice")]
    DuplicateId(String),
}

/// The phases a request is decided in: the phase groups of the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Discover,
    Read,
    Propose,
    AutoExecute,
    Execute,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Discover => "discover",
            Action::Read => "read",
            Action::Propose => "propose",
            Action::AutoExecute => "auto_execute",
            Action::Execute => "execute",
        }
    }

    pub fn from_name(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.name() == name)
    }
}

/// The principal as Cedar sees it: an app of a tenant, with its data policy and tags.
#[derive(Debug, Clone)]
pub struct AppFacts<'a> {
    pub app_id: &'a str,
    pub app_name: &'a str,
    pub org_id: &'a str,
    pub key_id: &'a str,
    pub scopes: &'a [String],
    /// The app's data policy as the schema's `DataPolicy` record (see `app_policy`).
    pub data_policy: &'a Attr,
    /// Operator-set tags, Cedar entity tags of the app.
    pub tags: &'a BTreeMap<String, String>,
}

/// Facts about the request for the context.
#[derive(Debug, Clone)]
pub struct RequestFacts<'a> {
    pub client_ip: IpAddr,
    pub now: OffsetDateTime,
    /// `rest` or `mcp`.
    pub channel: &'a str,
    pub actor: &'a str,
    /// The tool's arguments, typed; `None` for discovery, which is decided without them.
    pub args: Option<&'a Attr>,
    pub has_idempotency_key: bool,
    pub has_preflight_hash: bool,
    pub has_justification: bool,
}

/// An app without tags.
pub fn no_tags() -> &'static BTreeMap<String, String> {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    &EMPTY
}

/// Our decision: no Cedar types escape this module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The policies that determined the decision.
    pub policy_ids: Vec<String>,
    /// Evaluation errors (each of which denies).
    pub errors: Vec<String>,
    /// What the set would decide with its shadow policies enforced, when that differs
    /// from the decision (in outcome or determining policies).
    pub shadow: Option<ShadowDecision>,
}

/// The decision of the enforced and shadow policies together: recorded, never enforced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowDecision {
    pub allowed: bool,
    pub policy_ids: Vec<String>,
}

impl Decision {
    /// The shadow policies that would have changed this decision, if any did.
    pub fn shadow_disagreement(&self, shadow_ids: &[String]) -> Option<Vec<String>> {
        let shadow = self.shadow.as_ref()?;
        if shadow.allowed == self.allowed {
            return None;
        }
        // A flipped outcome is always determined by a shadow policy: a shadow forbid that
        // denies, or a shadow permit that allows where no enforced permit did.
        Some(
            shadow
                .policy_ids
                .iter()
                .filter(|id| shadow_ids.contains(id))
                .cloned()
                .collect(),
        )
    }
}

/// The compiled-in default policy files: `base.cedar`.
pub fn default_sources() -> Vec<PolicySource> {
    vec![PolicySource::new("base.cedar", DEFAULT_POLICIES)]
}

/// One policy file: where it came from and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySource {
    /// A file name, or `plugin NAME: FILE` for policies a plugin ships.
    pub file: String,
    pub text: String,
}

impl PolicySource {
    pub fn new(file: impl Into<String>, text: impl Into<String>) -> PolicySource {
        PolicySource {
            file: file.into(),
            text: text.into(),
        }
    }
}

/// A validator warning an operator accepted for one policy, with the reason they gave
/// (`@allow_warning("...")` on the policy). Recorded in the audit trail at start and reload.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AllowedWarning {
    pub policy: String,
    pub warning: String,
    pub reason: String,
}

/// A validated policy set with its generated schema.
///
/// Requests are decided against the slice of the set whose scope can match the request's
/// app (or its tenant), action and tool, so cost grows with the policies that concern a
/// request, not with the whole set. A policy's scope is a necessary condition for it to
/// apply, so the slice decides exactly as the whole set would (tested by
/// `slices_decide_like_the_whole_set`).
#[derive(Debug)]
pub struct Authorizer {
    base_schema: String,
    sources: Vec<PolicySource>,
    schema: Schema,
    schema_json: Value,
    /// Enforced policies.
    policies: PolicySet,
    /// Enforced and shadow policies together: what the set would decide if the shadow
    /// policies were promoted.
    with_shadow: PolicySet,
    ids: Vec<String>,
    shadow_ids: Vec<String>,
    /// Validator warnings an operator downgraded with `@allow_warning("why")`.
    allowed_warnings: Vec<AllowedWarning>,
    authorizer: CedarAuthorizer,
    /// Every policy, whether it is a shadow policy, and the context attributes it reads.
    scoped: Vec<(Policy, bool, ContextReads)>,
    slices: BoundedCache<SliceKey, Arc<Slice>>,
    /// The tenant, app, action and tool entities of a request, built once per distinct
    /// set of their attributes: building them (and their ancestor closure) costs more
    /// than evaluating the policies.
    entities: BoundedCache<EntitiesKey, Arc<Entities>>,
    /// Decisions memoised on every input of the request (entities, action, context):
    /// Cedar is a pure function of the policy set and the request, and a reload builds a
    /// new `Authorizer`, so a hit is exactly the decision Cedar would make again.
    decisions: BoundedCache<DecisionKey, Decision>,
    /// `ip("..")`, `decimal("..")` and `datetime("..")` expressions by their text:
    /// building one runs Cedar's parser, which costs more than the decision.
    extension_values: BoundedCache<(ExtensionKind, String), RestrictedExpression>,
}

/// The policies of one slice: enforced, and with the shadow ones when any applies.
#[derive(Debug)]
struct Slice {
    enforced: PolicySet,
    with_shadow: Option<PolicySet>,
    /// The context attributes its policies read: the fast path builds only those.
    reads: ContextReads,
}

/// The context attributes a policy reads: named ones (`context.x`, `context has x`), or all
/// of them where it uses `context` as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ContextReads {
    All,
    Named(BTreeSet<String>),
}

impl ContextReads {
    fn of(policy: &Policy) -> ContextReads {
        let mut names = BTreeSet::new();
        match policy.to_json() {
            Ok(est) if reads_of(&est, &mut names) => ContextReads::Named(names),
            _ => ContextReads::All,
        }
    }

    fn add(&mut self, other: &ContextReads) {
        match (&mut *self, other) {
            (ContextReads::All, _) => {}
            (_, ContextReads::All) => *self = ContextReads::All,
            (ContextReads::Named(mine), ContextReads::Named(theirs)) => mine.extend(theirs.iter().cloned()),
        }
    }

    fn needs(&self, name: &str) -> bool {
        match self {
            ContextReads::All => true,
            ContextReads::Named(names) => names.contains(name),
        }
    }
}

/// Collects the `context` attributes an expression (Cedar's JSON policy format) reads;
/// `false` where `context` appears other than as `context.x` or `context has x`.
fn reads_of(est: &Value, names: &mut BTreeSet<String>) -> bool {
    match est {
        Value::Object(map) => {
            for operator in [".", "has"] {
                if let Some(access) = map.get(operator)
                    && access.get("left").and_then(|l| l.get("Var")).and_then(Value::as_str) == Some("context")
                {
                    // `context has a.b` names a path; its first step is the attribute.
                    let attr = match access.get("attr") {
                        Some(Value::String(attr)) => Some(attr.as_str()),
                        Some(Value::Array(path)) => path.first().and_then(Value::as_str),
                        _ => None,
                    };
                    let Some(attr) = attr else {
                        return false;
                    };
                    names.insert(attr.to_string());
                    return true;
                }
            }
            if map.get("Var").and_then(Value::as_str) == Some("context") {
                return false;
            }
            map.values().all(|v| reads_of(v, names))
        }
        Value::Array(items) => items.iter().all(|v| reads_of(v, names)),
        _ => true,
    }
}

/// Everything a memoised decision depends on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct DecisionKey {
    entities: EntitiesKey,
    context: ContextInputs,
}

impl DecisionKey {
    fn new(app: &AppFacts<'_>, action: Action, tool: &ToolFacts<'_>, facts: &RequestFacts<'_>) -> DecisionKey {
        DecisionQuery::new(app, action, tool, facts).to_key()
    }
}

/// A [`DecisionKey`] borrowed from the request: the memo is looked up with it, and the
/// owned key is built only on a miss. Its fields are the owned key's, in the same order
/// and hashed the same way (`&str` as `String`, `&[String]` as `Vec<String>`, `&Attr` as
/// `Attr`), so the two hash alike (a test holds it).
#[derive(Hash)]
struct DecisionQuery<'a> {
    // `EntitiesKey`'s fields.
    app_id: &'a str,
    app_name: &'a str,
    org_id: &'a str,
    scopes: &'a [String],
    data_policy: &'a Attr,
    tags: &'a BTreeMap<String, String>,
    action: Action,
    tool: &'a str,
    risk: Risk,
    effect: Effect,
    required_scopes: &'a [String],
    plugin: &'a str,
    // `ContextInputs`' fields.
    client_ip: IpAddr,
    hour: u8,
    weekday: u8,
    unix_seconds: i64,
    unix_millis: i64,
    channel: &'a str,
    tenant: &'a str,
    actor: &'a str,
    key_id: &'a str,
    has_payload: bool,
    args: Option<&'a Attr>,
    has_idempotency_key: bool,
    has_preflight_hash: bool,
    has_justification: bool,
}

/// The arguments of a phase that carries them when the request has none.
static NO_ARGS: Attr = Attr::Record(BTreeMap::new());

impl<'a> DecisionQuery<'a> {
    fn new(app: &'a AppFacts<'a>, action: Action, tool: &'a ToolFacts<'a>, facts: &'a RequestFacts<'a>) -> Self {
        DecisionQuery {
            app_id: app.app_id,
            app_name: app.app_name,
            org_id: app.org_id,
            scopes: app.scopes,
            data_policy: app.data_policy,
            tags: app.tags,
            action,
            tool: tool.name,
            risk: tool.risk,
            effect: tool.effect,
            required_scopes: tool.required_scopes,
            plugin: tool.plugin,
            client_ip: facts.client_ip,
            hour: facts.now.hour(),
            weekday: facts.now.weekday().number_from_monday(),
            unix_seconds: facts.now.unix_timestamp(),
            // `now` to the second, like `time`: a finer instant would make every request new
            // to the decision memo.
            unix_millis: facts.now.unix_timestamp().saturating_mul(1000),
            channel: facts.channel,
            tenant: app.org_id,
            actor: facts.actor,
            key_id: app.key_id,
            has_payload: facts.args.is_some(),
            args: match action {
                Action::Discover => None,
                // A phase with arguments always has a record, if an empty one.
                _ => Some(facts.args.unwrap_or(&NO_ARGS)),
            },
            has_idempotency_key: facts.has_idempotency_key,
            has_preflight_hash: facts.has_preflight_hash,
            has_justification: facts.has_justification,
        }
    }

    /// The owned key, for the memo and the caches behind it.
    fn to_key(&self) -> DecisionKey {
        DecisionKey {
            entities: EntitiesKey {
                app_id: self.app_id.to_string(),
                app_name: self.app_name.to_string(),
                org_id: self.org_id.to_string(),
                scopes: self.scopes.to_vec(),
                data_policy: self.data_policy.clone(),
                tags: self.tags.clone(),
                action: self.action,
                tool: self.tool.to_string(),
                risk: self.risk,
                effect: self.effect,
                required_scopes: self.required_scopes.to_vec(),
                plugin: self.plugin.to_string(),
            },
            context: ContextInputs {
                client_ip: self.client_ip,
                hour: self.hour,
                weekday: self.weekday,
                unix_seconds: self.unix_seconds,
                unix_millis: self.unix_millis,
                channel: self.channel.to_string(),
                tenant: self.tenant.to_string(),
                actor: self.actor.to_string(),
                key_id: self.key_id.to_string(),
                has_payload: self.has_payload,
                args: self.args.cloned(),
                has_idempotency_key: self.has_idempotency_key,
                has_preflight_hash: self.has_preflight_hash,
                has_justification: self.has_justification,
            },
        }
    }
}

impl hashbrown::Equivalent<DecisionKey> for DecisionQuery<'_> {
    fn equivalent(&self, key: &DecisionKey) -> bool {
        let (e, c) = (&key.entities, &key.context);
        self.app_id == e.app_id
            && self.app_name == e.app_name
            && self.org_id == e.org_id
            && self.scopes == e.scopes.as_slice()
            && *self.data_policy == e.data_policy
            && *self.tags == e.tags
            && self.action == e.action
            && self.tool == e.tool
            && self.risk == e.risk
            && self.effect == e.effect
            && self.required_scopes == e.required_scopes.as_slice()
            && self.plugin == e.plugin
            && self.client_ip == c.client_ip
            && self.hour == c.hour
            && self.weekday == c.weekday
            && self.unix_seconds == c.unix_seconds
            && self.unix_millis == c.unix_millis
            && self.channel == c.channel
            && self.tenant == c.tenant
            && self.actor == c.actor
            && self.key_id == c.key_id
            && self.has_payload == c.has_payload
            && self.args == c.args.as_ref()
            && self.has_idempotency_key == c.has_idempotency_key
            && self.has_preflight_hash == c.has_preflight_hash
            && self.has_justification == c.has_justification
    }
}

/// Entries each of the authorizer's caches keeps before it starts over.
const MAX_CACHED: usize = 10_000;

/// A map that empties itself when full: every value can be rebuilt, and starting over is
/// cheaper than tracking recency on the request path. A poisoned lock is just taken over.
/// Keys hold request input, so the hasher is randomly keyed (aHash): as resistant to
/// collision floods as the standard one, at a fraction of its cost on these large keys.
#[derive(Debug)]
struct BoundedCache<K, V>(Mutex<hashbrown::HashMap<K, V, ahash::RandomState>>);

impl<K: std::hash::Hash + Eq, V: Clone> BoundedCache<K, V> {
    fn new() -> Self {
        BoundedCache(Mutex::new(hashbrown::HashMap::with_hasher(ahash::RandomState::new())))
    }

    fn map(&self) -> std::sync::MutexGuard<'_, hashbrown::HashMap<K, V, ahash::RandomState>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The value under `key`, or under the owned key `key` stands for (a borrowed form
    /// that hashes alike, so a hit allocates nothing).
    fn get<Q: std::hash::Hash + hashbrown::Equivalent<K> + ?Sized>(&self, key: &Q) -> Option<V> {
        self.map().get(key).cloned()
    }

    fn insert(&self, key: K, value: V) {
        let mut map = self.map();
        if map.len() >= MAX_CACHED {
            map.clear();
        }
        map.insert(key, value);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ExtensionKind {
    Ip,
    Decimal,
    DateTime,
}

/// The request's context as plain data: what `context_pairs` turns into Cedar values.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ContextInputs {
    client_ip: IpAddr,
    hour: u8,
    weekday: u8,
    unix_seconds: i64,
    unix_millis: i64,
    channel: String,
    tenant: String,
    actor: String,
    key_id: String,
    has_payload: bool,
    /// Only on the phases that carry arguments (not discovery).
    args: Option<Attr>,
    has_idempotency_key: bool,
    has_preflight_hash: bool,
    has_justification: bool,
}

/// Everything the cached entities are built from, so a changed app or tool misses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct EntitiesKey {
    app_id: String,
    app_name: String,
    org_id: String,
    scopes: Vec<String>,
    data_policy: Attr,
    tags: BTreeMap<String, String>,
    action: Action,
    tool: String,
    risk: Risk,
    effect: Effect,
    required_scopes: Vec<String>,
    plugin: String,
}

/// App, tenant, tool and action: what a slice is cut for.
type SliceKey = (String, String, String, Action);

fn principal_matches(constraint: &PrincipalConstraint, app: &EntityUid, tenant: &EntityUid) -> bool {
    match constraint {
        PrincipalConstraint::Any => true,
        PrincipalConstraint::Eq(uid) => uid == app,
        PrincipalConstraint::In(uid) => uid == app || uid == tenant,
        PrincipalConstraint::Is(kind) => kind == app.type_name(),
        PrincipalConstraint::IsIn(kind, uid) => kind == app.type_name() && (uid == app || uid == tenant),
    }
}

/// The request's action is a tool phase, a member of its tool's group and its phase's
/// group, which have no parents: `in` matches any of the three.
fn action_matches(constraint: &ActionConstraint, action: &RequestAction) -> bool {
    let is_or_in = |uid: &EntityUid| uid == &action.uid || uid == &action.tool_group || uid == &action.phase_group;
    match constraint {
        ActionConstraint::Any => true,
        ActionConstraint::Eq(uid) => uid == &action.uid,
        ActionConstraint::In(uids) => uids.iter().any(is_or_in),
    }
}

fn resource_matches(constraint: &ResourceConstraint, tool: &EntityUid) -> bool {
    match constraint {
        ResourceConstraint::Any => true,
        ResourceConstraint::Eq(uid) | ResourceConstraint::In(uid) => uid == tool,
        ResourceConstraint::Is(kind) => kind == tool.type_name(),
        ResourceConstraint::IsIn(kind, uid) => kind == tool.type_name() && uid == tool,
    }
}

/// The action entity of a request and the two groups it belongs to.
struct RequestAction {
    uid: EntityUid,
    tool_group: EntityUid,
    phase_group: EntityUid,
}

impl RequestAction {
    fn new(tool: &str, phase: Action) -> RequestAction {
        let uid = |id: &str| EntityUid::from_type_name_and_id(entity_types().action.clone(), EntityId::new(id));
        RequestAction {
            uid: uid(&schema::action_id(tool, phase)),
            tool_group: uid(tool),
            phase_group: uid(phase.name()),
        }
    }

    fn entity(&self) -> Entity {
        Entity::new_no_attrs(
            self.uid.clone(),
            HashSet::from([self.tool_group.clone(), self.phase_group.clone()]),
        )
    }
}

/// For an "unrecognized action `X`" message, the schema's action closest to `X`, when one
/// is close (Cedar's own hint picks by a rule that often names an unrelated action).
fn closest_action(schema: &Schema, message: &str) -> Option<String> {
    let named = message.split("unrecognized action `").nth(1)?.rsplit_once('`')?.0;
    let wanted = named.rsplit_once("::").map_or(named, |(_, id)| id).trim_matches('"');
    let (distance, closest) = schema
        .actions()
        .map(|uid| {
            let id = uid.id().unescaped().to_string();
            (strsim::levenshtein(wanted, &id), uid.to_string())
        })
        .min()?;
    (distance <= (wanted.len() / 3).max(2)).then(|| format!("did you mean `{closest}`?"))
}

impl Authorizer {
    /// Generates the schema from `base` and the tools, parses every source and validates
    /// the set strictly. Errors name the file, line, column and policy.
    pub fn build(
        base: &str,
        tools: &[ToolVocabulary<'_>],
        sources: Vec<PolicySource>,
    ) -> Result<Authorizer, AuthzError> {
        let schema_json = schema::generate(base, tools)?;
        let schema = schema::compile(&schema_json)?;
        let mut policies = PolicySet::new();
        let mut with_shadow = PolicySet::new();
        let (mut ids, mut shadow_ids, mut scoped) = (Vec::new(), Vec::new(), Vec::new());
        let mut origin: HashMap<String, usize> = HashMap::new();
        for (n, source) in sources.iter().enumerate() {
            let parsed = PolicySet::from_str(&source.text).map_err(|e| AuthzError::Parse {
                file: source.file.clone(),
                message: located(&e, &source.text),
            })?;
            for (index, policy) in parsed.policies().enumerate() {
                let id = policy
                    .annotation("id")
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{}#{index}", source.file));
                let shadow = policy.annotation("mode") == Some("shadow");
                let renamed: Policy = policy.new_id(PolicyId::new(&id));
                with_shadow
                    .add(renamed.clone())
                    .map_err(|_| AuthzError::DuplicateId(id.clone()))?;
                if shadow {
                    shadow_ids.push(id.clone());
                } else {
                    policies
                        .add(renamed.clone())
                        .map_err(|_| AuthzError::DuplicateId(id.clone()))?;
                }
                let reads = ContextReads::of(&renamed);
                scoped.push((renamed, shadow, reads));
                origin.insert(id.clone(), n);
                ids.push(id);
            }
        }
        // Shadow policies are validated like the others: promoting one is a reload.
        let result = Validator::new(schema.clone()).validate(&with_shadow, ValidationMode::Strict);
        let mut messages = Vec::new();
        // Each message names the file, line and column, and Cedar's suggestion (the closest
        // attribute or type) or ours (the closest action).
        let mut describe = |id: &PolicyId, diagnostic: &dyn miette::Diagnostic, suggestion: Option<String>| {
            let source = origin.get(id.to_string().as_str()).map(|n| &sources[*n]);
            let place = match source {
                Some(s) => format!("`{}` {}", s.file, position(diagnostic, &s.text)),
                None => String::new(),
            };
            let help = suggestion
                .or_else(|| diagnostic.help().map(|h| h.to_string()))
                .map(|h| format!(" ({h})"))
                .unwrap_or_default();
            messages.push(format!("- {place}policy `{id}`: {diagnostic}{help}"));
        };
        // A policy scoped to phase groups that no loaded tool has (auto-execution with
        // only read tools, anything with no tool at all) cannot apply yet, and will once
        // such a tool loads: only that is forgiven. A policy naming a tool, or one whose
        // conditions can never hold for the tools in its scope, is refused.
        let waiting: HashSet<String> = result
            .validation_warnings()
            .filter(|w| matches!(w, cedar_policy::ValidationWarning::InvalidActionApplication(_)))
            .map(|w| w.policy_id().to_string())
            .filter(|id| {
                with_shadow
                    .policy(&PolicyId::new(id))
                    .is_some_and(|p| scoped_to_phases(&p.action_constraint()))
            })
            .collect();
        for error in result.validation_errors() {
            let suggestion = match error {
                cedar_policy::ValidationError::UnrecognizedActionId(_) => closest_action(&schema, &error.to_string()),
                _ => None,
            };
            describe(error.policy_id(), error, suggestion);
        }
        // A warning (a policy that can never apply, a confusable identifier) refuses the
        // set too: a policy that silently does nothing is a hole nobody sees. An operator
        // may accept one policy's warnings with `@allow_warning("why")`; errors never.
        let mut allowed_warnings = Vec::new();
        for warning in result.validation_warnings() {
            let id = warning.policy_id().to_string();
            let forgiven = matches!(
                warning,
                cedar_policy::ValidationWarning::ImpossiblePolicy(_)
                    | cedar_policy::ValidationWarning::InvalidActionApplication(_)
            ) && waiting.contains(&id);
            if forgiven {
                continue;
            }
            let reason = with_shadow
                .policy(warning.policy_id())
                .and_then(|p| p.annotation("allow_warning"))
                .map(str::trim);
            match reason {
                Some(reason) if !reason.is_empty() => allowed_warnings.push(AllowedWarning {
                    policy: id,
                    warning: warning.to_string(),
                    reason: reason.to_string(),
                }),
                Some(_) => describe(
                    warning.policy_id(),
                    warning,
                    Some("`@allow_warning` accepts it only with a reason: `@allow_warning(\"why\")`".into()),
                ),
                None => describe(warning.policy_id(), warning, None),
            }
        }
        if !messages.is_empty() {
            return Err(AuthzError::Validation(messages.join("\n")));
        }
        Ok(Authorizer {
            base_schema: base.to_string(),
            sources,
            schema,
            schema_json,
            policies,
            with_shadow,
            ids,
            shadow_ids,
            allowed_warnings,
            authorizer: CedarAuthorizer::new(),
            scoped,
            slices: BoundedCache::new(),
            entities: BoundedCache::new(),
            decisions: BoundedCache::new(),
            extension_values: BoundedCache::new(),
        })
    }

    /// The same policies against a new set of tools: what a plugin load or removal needs
    /// to keep (it fails when a policy names what the tools no longer offer).
    pub fn for_tools(&self, tools: &[ToolVocabulary<'_>]) -> Result<Authorizer, AuthzError> {
        Authorizer::build(&self.base_schema, tools, self.sources.clone())
    }

    /// The compiled-in default set, for the given tools.
    pub fn default_set(tools: &[ToolVocabulary<'_>]) -> Result<Authorizer, AuthzError> {
        Authorizer::build(DEFAULT_SCHEMA, tools, default_sources())
    }

    /// Reads the base schema (the first directory's `schema.cedarschema`, else the
    /// compiled-in one) and every `*.cedar` of the directories, in order, each directory's
    /// files sorted by name.
    pub fn read_dirs(dirs: &[std::path::PathBuf]) -> Result<(String, Vec<PolicySource>), AuthzError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| AuthzError::Read {
                path: path.display().to_string(),
                source,
            })
        };
        let schema_path = dirs.first().map(|d| d.join("schema.cedarschema"));
        let base = match schema_path {
            Some(path) if path.exists() => read(&path)?,
            _ => DEFAULT_SCHEMA.to_string(),
        };
        let mut files = Vec::new();
        for dir in dirs {
            let entries = std::fs::read_dir(dir).map_err(|source| AuthzError::Read {
                path: dir.display().to_string(),
                source,
            })?;
            let mut paths: Vec<_> = entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "cedar"))
                .collect();
            paths.sort();
            for path in paths {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                files.push(PolicySource::new(name, read(&path)?));
            }
        }
        Ok((base, files))
    }

    /// Policy ids in load order, shadow policies included.
    pub fn policy_ids(&self) -> &[String] {
        &self.ids
    }

    /// The validator warnings operators accepted, with their reasons.
    pub fn allowed_warnings(&self) -> &[AllowedWarning] {
        &self.allowed_warnings
    }

    /// The ids of the `@mode("shadow")` policies.
    pub fn shadow_ids(&self) -> &[String] {
        &self.shadow_ids
    }

    pub fn sources(&self) -> &[PolicySource] {
        &self.sources
    }

    pub fn base_schema(&self) -> &str {
        &self.base_schema
    }

    /// The generated schema in Cedar's JSON schema format.
    pub fn schema_json(&self) -> &Value {
        &self.schema_json
    }

    /// The generated schema in Cedar's human-readable format.
    pub fn schema_text(&self) -> Result<String, AuthzError> {
        schema::to_cedarschema(&self.schema_json)
    }

    /// The policies whose scope can match this app (or its tenant), action and tool.
    fn slice(&self, facts: &EntitiesKey) -> Result<Arc<Slice>, String> {
        let key = (
            facts.app_id.clone(),
            facts.org_id.clone(),
            facts.tool.clone(),
            facts.action,
        );
        if let Some(slice) = self.slices.get(&key) {
            return Ok(slice);
        }
        // Entity ids are built only to cut a new slice: a hit needs none.
        let types = entity_types();
        let app = &EntityUid::from_type_name_and_id(types.app.clone(), EntityId::new(&facts.app_id));
        let tenant = &EntityUid::from_type_name_and_id(types.tenant.clone(), EntityId::new(&facts.org_id));
        let tool = &EntityUid::from_type_name_and_id(types.tool.clone(), EntityId::new(&facts.tool));
        let action = (facts.action, &RequestAction::new(&facts.tool, facts.action));
        let (mut enforced, mut with_shadow, mut any_shadow) = (PolicySet::new(), PolicySet::new(), false);
        let mut reads = ContextReads::Named(BTreeSet::new());
        for (policy, shadow, policy_reads) in &self.scoped {
            if principal_matches(&policy.principal_constraint(), app, tenant)
                && action_matches(&policy.action_constraint(), action.1)
                && resource_matches(&policy.resource_constraint(), tool)
            {
                reads.add(policy_reads);
                with_shadow.add(policy.clone()).map_err(|e| e.to_string())?;
                if *shadow {
                    any_shadow = true;
                } else {
                    enforced.add(policy.clone()).map_err(|e| e.to_string())?;
                }
            }
        }
        let slice = Arc::new(Slice {
            enforced,
            with_shadow: any_shadow.then_some(with_shadow),
            reads,
        });
        self.slices.insert(key, slice.clone());
        Ok(slice)
    }

    /// Decides one request against the whole set, bypassing slices, with the entities,
    /// context and request checked against the schema: the reference path that
    /// `openport policy test` and the tests compare the fast path with.
    pub fn decide_unsliced(
        &self,
        app: &AppFacts<'_>,
        action: Action,
        tool: &ToolFacts<'_>,
        facts: &RequestFacts<'_>,
    ) -> Decision {
        deny_on_error(self.build_and_decide(&DecisionKey::new(app, action, tool, facts), false))
    }

    /// Decides one request. Errors anywhere (entities, context, evaluation) deny.
    pub fn decide(
        &self,
        app: &AppFacts<'_>,
        action: Action,
        tool: &ToolFacts<'_>,
        facts: &RequestFacts<'_>,
    ) -> Decision {
        let query = DecisionQuery::new(app, action, tool, facts);
        if let Some(decision) = self.decisions.get(&query) {
            return decision;
        }
        let key = query.to_key();
        let decision = deny_on_error(self.build_and_decide(&key, true));
        self.decisions.insert(key, decision.clone());
        decision
    }

    /// The request as Cedar receives it (principal, action, resource, and every context
    /// attribute), as JSON: what `openport policy test` shows for a failing scenario.
    pub fn request_json(app: &AppFacts<'_>, action: Action, tool: &ToolFacts<'_>, facts: &RequestFacts<'_>) -> Value {
        let inputs = DecisionQuery::new(app, action, tool, facts);
        let mut context = serde_json::json!({
            "client_ip": inputs.client_ip.to_string(),
            "time": {"hour": inputs.hour, "weekday": inputs.weekday, "unix_seconds": inputs.unix_seconds},
            "now": crate::attr::datetime_text(inputs.unix_millis),
            "channel": inputs.channel,
            "tenant": inputs.tenant,
            "actor": inputs.actor,
            "key_id": inputs.key_id,
            "has_payload": inputs.has_payload,
            "has_idempotency_key": inputs.has_idempotency_key,
            "has_preflight_hash": inputs.has_preflight_hash,
            "has_justification": inputs.has_justification,
        });
        if let Some(args) = &inputs.args {
            context["args"] = attr_json(args);
        }
        serde_json::json!({
            "principal": format!("OpenPort::App::{:?}", app.app_id),
            "principalTags": app.tags,
            "action": format!("OpenPort::Action::{:?}", schema::action_id(tool.name, action)),
            "resource": format!("OpenPort::Tool::{:?}", tool.name),
            "context": context,
        })
    }

    /// Every policy whose conditions hold for the request, each decided alone: what
    /// `openport policy explain` lists beside the decision.
    pub fn matching_policies(
        &self,
        app: &AppFacts<'_>,
        action: Action,
        tool: &ToolFacts<'_>,
        facts: &RequestFacts<'_>,
    ) -> Result<Vec<(String, bool)>, String> {
        let key = DecisionKey::new(app, action, tool, facts);
        let (request, entities) = self.request(&key, false, &ContextReads::All)?;
        let mut matched = Vec::new();
        for (policy, _, _) in &self.scoped {
            let mut alone = PolicySet::new();
            alone.add(policy.clone()).map_err(|e| e.to_string())?;
            let response = self.authorizer.is_authorized(&request, &alone, &entities);
            if response.diagnostics().reason().next().is_some() {
                let permit = policy.effect() == cedar_policy::Effect::Permit;
                matched.push((policy.id().to_string(), permit));
            }
        }
        Ok(matched)
    }

    /// The Cedar request and entities of a decision; checked against the schema unless
    /// `fast` (the gateway builds them the same way every time, policies were validated
    /// against the schema at load, and an evaluation error still denies).
    fn request(&self, key: &DecisionKey, fast: bool, reads: &ContextReads) -> Result<(Request, Arc<Entities>), String> {
        let facts = &key.entities;
        let types = entity_types();
        let tenant = EntityUid::from_type_name_and_id(types.tenant.clone(), EntityId::new(&facts.org_id));
        let principal = EntityUid::from_type_name_and_id(types.app.clone(), EntityId::new(&facts.app_id));
        let resource = EntityUid::from_type_name_and_id(types.tool.clone(), EntityId::new(&facts.tool));
        let action = RequestAction::new(&facts.tool, facts.action);
        let schema = (!fast).then_some(&self.schema);
        let build = || -> Result<Entities, String> {
            // With a schema, Cedar supplies the action entities from it.
            let action_entity = fast.then(|| action.entity());
            entities_for(facts, (&principal, &tenant, &resource), action_entity, schema)
        };
        let entities = if fast {
            match self.entities.get(facts) {
                Some(entities) => entities,
                None => {
                    let built = Arc::new(build()?);
                    self.entities.insert(facts.clone(), built.clone());
                    built
                }
            }
        } else {
            Arc::new(build()?)
        };
        let context =
            Context::from_pairs(self.context_pairs(&key.context, reads)?).map_err(|e| format!("context: {e}"))?;
        let request =
            Request::new(principal, action.uid, resource, context, schema).map_err(|e| format!("request: {e}"))?;
        Ok((request, entities))
    }

    fn build_and_decide(&self, key: &DecisionKey, fast: bool) -> Result<Decision, String> {
        let slice;
        let (enforced, with_shadow, reads) = if fast {
            slice = self.slice(&key.entities)?;
            (&slice.enforced, slice.with_shadow.as_ref(), &slice.reads)
        } else {
            (
                &self.policies,
                (!self.shadow_ids.is_empty()).then_some(&self.with_shadow),
                &ContextReads::All,
            )
        };
        if enforced.is_empty() && with_shadow.is_none() {
            // No policy can apply: denied by default, as Cedar would, without building the
            // request.
            return Ok(Decision {
                allowed: false,
                policy_ids: Vec::new(),
                errors: Vec::new(),
                shadow: None,
            });
        }
        let (request, entities) = self.request(key, fast, reads)?;
        let decide = |policies: &PolicySet| {
            let response = self.authorizer.is_authorized(&request, policies, entities.as_ref());
            let errors: Vec<String> = response.diagnostics().errors().map(|e| e.to_string()).collect();
            let mut policy_ids: Vec<String> = response.diagnostics().reason().map(|id| id.to_string()).collect();
            policy_ids.sort();
            let allowed = response.decision() == CedarDecision::Allow && errors.is_empty();
            (allowed, policy_ids, errors)
        };
        let (allowed, policy_ids, errors) = decide(enforced);
        // Recorded only where the shadow policies changed something: the outcome or the
        // policies that determined it.
        let shadow = with_shadow
            .map(|set| {
                let (allowed, policy_ids, _) = decide(set);
                ShadowDecision { allowed, policy_ids }
            })
            .filter(|s| (s.allowed, &s.policy_ids) != (allowed, &policy_ids));
        Ok(Decision {
            allowed,
            policy_ids,
            errors,
            shadow,
        })
    }
}

/// Whether a policy's action scope is every action or phase groups only: no tool named.
fn scoped_to_phases(constraint: &ActionConstraint) -> bool {
    let is_phase = |uid: &EntityUid| Action::from_name(uid.id().unescaped()).is_some();
    match constraint {
        ActionConstraint::Any => true,
        ActionConstraint::Eq(uid) => is_phase(uid),
        ActionConstraint::In(uids) => uids.iter().all(is_phase),
    }
}

/// `line L, column C: ` of a diagnostic's first label in `text`, or nothing.
fn position(diagnostic: &dyn miette::Diagnostic, text: &str) -> String {
    let Some(offset) = diagnostic.labels().and_then(|mut l| l.next()).map(|l| l.offset()) else {
        return String::new();
    };
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    format!("line {line}, column {column}: ")
}

/// Every diagnostic of a parse failure with its line and column.
fn located(errors: &cedar_policy::ParseErrors, text: &str) -> String {
    errors
        .iter()
        .map(|e| format!("- {}{e}", position(e, text)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The tenant, the app (a member of it), the tool and, on the fast path, the action.
fn entities_for(
    facts: &EntitiesKey,
    (principal, tenant, resource): (&EntityUid, &EntityUid, &EntityUid),
    action: Option<Entity>,
    schema: Option<&Schema>,
) -> Result<Entities, String> {
    let app_entity = Entity::new_with_tags(
        principal.clone(),
        [
            (
                "name".to_string(),
                RestrictedExpression::new_string(facts.app_name.clone()),
            ),
            (
                "org_id".to_string(),
                RestrictedExpression::new_string(facts.org_id.clone()),
            ),
            (
                "scopes".to_string(),
                string_set(facts.scopes.iter().map(String::as_str)),
            ),
            ("data_policy".to_string(), attr_expression(&facts.data_policy, None)?),
        ],
        [tenant.clone()],
        facts
            .tags
            .iter()
            .map(|(k, v)| (k.clone(), RestrictedExpression::new_string(v.clone()))),
    )
    .map_err(|e| e.to_string())?;
    let tool_entity = Entity::new(
        resource.clone(),
        HashMap::from([
            ("name".to_string(), RestrictedExpression::new_string(facts.tool.clone())),
            (
                "risk".to_string(),
                RestrictedExpression::new_string(facts.risk.as_str().to_string()),
            ),
            (
                "risk_level".to_string(),
                RestrictedExpression::new_long(facts.risk.level()),
            ),
            (
                "effect".to_string(),
                RestrictedExpression::new_string(facts.effect.as_str().to_string()),
            ),
            (
                "required_scopes".to_string(),
                string_set(facts.required_scopes.iter().map(String::as_str)),
            ),
            (
                "plugin".to_string(),
                RestrictedExpression::new_string(facts.plugin.clone()),
            ),
        ]),
        HashSet::new(),
    )
    .map_err(|e| e.to_string())?;
    let tenant_entity = Entity::new_no_attrs(tenant.clone(), HashSet::new());
    let mut all = vec![app_entity, tool_entity, tenant_entity];
    all.extend(action);
    Entities::from_entities(all, schema).map_err(|e| format!("entities: {e}"))
}

/// An error anywhere on the way to a decision is a denial that says why.
fn deny_on_error(result: Result<Decision, String>) -> Decision {
    result.unwrap_or_else(|error| Decision {
        allowed: false,
        policy_ids: Vec::new(),
        errors: vec![error],
        shadow: None,
    })
}

/// The schema's entity type names, parsed once: parsing a name runs Cedar's parser.
struct EntityTypes {
    tenant: EntityTypeName,
    app: EntityTypeName,
    tool: EntityTypeName,
    action: EntityTypeName,
}

fn entity_types() -> &'static EntityTypes {
    static TYPES: std::sync::OnceLock<EntityTypes> = std::sync::OnceLock::new();
    TYPES.get_or_init(|| {
        // These literals are valid names; a parse failure would be a bug caught by every test.
        let name = |n: &str| EntityTypeName::from_str(n).unwrap_or_else(|_| unreachable!("`{n}` is a valid name"));
        EntityTypes {
            tenant: name("OpenPort::Tenant"),
            app: name("OpenPort::App"),
            tool: name("OpenPort::Tool"),
            action: name("OpenPort::Action"),
        }
    })
}

fn string_set<'a>(items: impl Iterator<Item = &'a str>) -> RestrictedExpression {
    RestrictedExpression::new_set(items.map(|s| RestrictedExpression::new_string(s.to_string())))
}

/// A typed value as a Cedar expression; `cache` reuses extension values.
fn attr_expression(
    value: &Attr,
    cache: Option<&BoundedCache<(ExtensionKind, String), RestrictedExpression>>,
) -> Result<RestrictedExpression, String> {
    Ok(match value {
        Attr::String(s) => RestrictedExpression::new_string(s.clone()),
        Attr::Long(n) => RestrictedExpression::new_long(*n),
        Attr::Bool(b) => RestrictedExpression::new_bool(*b),
        // Amounts are mostly distinct: keeping each would only churn the cache.
        Attr::Decimal(scaled) => extension(ExtensionKind::Decimal, &attr::decimal_text(*scaled), None),
        Attr::DateTime(millis) => {
            let text = attr::datetime_text(*millis).ok_or_else(|| format!("datetime {millis} ms is out of range"))?;
            extension(ExtensionKind::DateTime, &text, cache)
        }
        Attr::Set(items) => RestrictedExpression::new_set(
            items
                .iter()
                .map(|item| attr_expression(item, cache))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Attr::Record(fields) => RestrictedExpression::new_record(
            fields
                .iter()
                .map(|(k, v)| Ok((k.clone(), attr_expression(v, cache)?)))
                .collect::<Result<Vec<_>, String>>()?,
        )
        .map_err(|e| e.to_string())?,
    })
}

/// An `ip(..)`, `decimal(..)` or `datetime(..)` expression, built once per distinct text.
fn extension(
    kind: ExtensionKind,
    text: &str,
    cache: Option<&BoundedCache<(ExtensionKind, String), RestrictedExpression>>,
) -> RestrictedExpression {
    let key = (kind, text.to_string());
    if let Some(value) = cache.and_then(|c| c.get(&key)) {
        return value;
    }
    let value = match kind {
        ExtensionKind::Ip => RestrictedExpression::new_ip(text),
        ExtensionKind::Decimal => RestrictedExpression::new_decimal(text),
        ExtensionKind::DateTime => RestrictedExpression::new_datetime(text),
    };
    if let Some(cache) = cache {
        cache.insert(key, value.clone());
    }
    value
}

/// A typed argument as JSON, with extension values in Cedar's own text
/// (`decimal("12.5000")`, `datetime("2026-01-05T00:00:00.000Z")`).
fn attr_json(attr: &Attr) -> Value {
    match attr {
        Attr::String(s) => Value::String(s.clone()),
        Attr::Long(n) => Value::from(*n),
        Attr::Decimal(scaled) => Value::String(format!("decimal(\"{}\")", crate::attr::decimal_text(*scaled))),
        Attr::Bool(b) => Value::Bool(*b),
        Attr::DateTime(millis) => Value::String(format!(
            "datetime(\"{}\")",
            crate::attr::datetime_text(*millis).unwrap_or_default()
        )),
        Attr::Set(items) => Value::Array(items.iter().map(attr_json).collect()),
        Attr::Record(fields) => Value::Object(fields.iter().map(|(k, v)| (k.clone(), attr_json(v))).collect()),
    }
}

/// Builds one context attribute's value, when a policy reads it.
type Build<'a> = dyn Fn() -> Result<RestrictedExpression, String> + 'a;

impl Authorizer {
    /// The request's context as Cedar values: the attributes `reads` names.
    fn context_pairs(
        &self,
        inputs: &ContextInputs,
        reads: &ContextReads,
    ) -> Result<Vec<(String, RestrictedExpression)>, String> {
        let cache = Some(&self.extension_values);
        let string = |s: &str| Ok(RestrictedExpression::new_string(s.to_string()));
        let flag = |b: bool| Ok(RestrictedExpression::new_bool(b));
        let attributes: [(&str, &Build<'_>); 11] = [
            ("client_ip", &|| {
                Ok(extension(ExtensionKind::Ip, &inputs.client_ip.to_string(), cache))
            }),
            ("time", &|| {
                RestrictedExpression::new_record([
                    (
                        "hour".to_string(),
                        RestrictedExpression::new_long(i64::from(inputs.hour)),
                    ),
                    (
                        "weekday".to_string(),
                        RestrictedExpression::new_long(i64::from(inputs.weekday)),
                    ),
                    (
                        "unix_seconds".to_string(),
                        RestrictedExpression::new_long(inputs.unix_seconds),
                    ),
                ])
                .map_err(|e| e.to_string())
            }),
            ("now", &|| attr_expression(&Attr::DateTime(inputs.unix_millis), cache)),
            ("channel", &|| string(&inputs.channel)),
            ("tenant", &|| string(&inputs.tenant)),
            ("actor", &|| string(&inputs.actor)),
            ("key_id", &|| string(&inputs.key_id)),
            ("has_payload", &|| flag(inputs.has_payload)),
            ("has_idempotency_key", &|| flag(inputs.has_idempotency_key)),
            ("has_preflight_hash", &|| flag(inputs.has_preflight_hash)),
            ("has_justification", &|| flag(inputs.has_justification)),
        ];
        let mut pairs = Vec::with_capacity(attributes.len() + 1);
        for (name, build) in attributes {
            if reads.needs(name) {
                pairs.push((name.to_string(), build()?));
            }
        }
        if let Some(args) = &inputs.args
            && reads.needs("args")
        {
            pairs.push(("args".to_string(), attr_expression(args, cache)?));
        }
        Ok(pairs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::ArgType;
    use serde_json::json;

    /// Tools named `t.0`..: even ones read, odd ones write, each with `n: integer`,
    /// `tag: string` and `amount: number` arguments.
    fn arg_type() -> ArgType {
        ArgType::of_input_schema(&json!({
            "type": "object",
            "properties": {"n": {"type": "integer"}, "tag": {"type": "string"}, "amount": {"type": "number"}}
        }))
        .0
    }

    fn tools<'a>(names: &'a [String], args: &'a ArgType) -> Vec<ToolVocabulary<'a>> {
        names
            .iter()
            .enumerate()
            .map(|(i, name)| ToolVocabulary {
                name,
                is_read: i % 2 == 0,
                args,
            })
            .collect()
    }

    fn build(names: &[String], text: &str) -> Result<Authorizer, AuthzError> {
        let args = arg_type();
        Authorizer::build(
            DEFAULT_SCHEMA,
            &tools(names, &args),
            vec![PolicySource::new("t.cedar", text)],
        )
    }

    #[test]
    fn an_operator_accepts_a_policys_warning_only_with_a_reason_and_it_is_kept() {
        let impossible = |annotation: &str| {
            format!(
                "{DEFAULT_POLICIES}\n{annotation}\n@id(\"never\")\nforbid (principal, action, resource) when {{ false }};\n"
            )
        };
        let Err(refused) = build(&names(2), &impossible("")) else {
            panic!("a warning refuses the set")
        };
        assert!(refused.to_string().contains("policy `never`"), "{refused}");
        let Err(unexplained) = build(&names(2), &impossible("@allow_warning(\"\")")) else {
            panic!("no reason, no pass")
        };
        assert!(unexplained.to_string().contains("only with a reason"), "{unexplained}");
        let accepted = build(
            &names(2),
            &impossible("@allow_warning(\"kept off until the Q3 review\")"),
        )
        .expect("an accepted warning");
        let allowed = accepted.allowed_warnings();
        assert_eq!(allowed.len(), 1, "{allowed:?}");
        assert_eq!(allowed[0].policy, "never");
        assert_eq!(allowed[0].reason, "kept off until the Q3 review");
    }

    #[test]
    fn an_unknown_action_suggests_the_closest_one() {
        let text = format!("{DEFAULT_POLICIES}\nforbid (principal, action in OpenPort::Action::\"t.O\", resource);\n");
        let Err(refused) = build(&names(2), &text) else {
            panic!("an unknown action refuses the set")
        };
        assert!(
            refused
                .to_string()
                .contains("did you mean `OpenPort::Action::\"t.0\"`?"),
            "{refused}"
        );
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("t.{i}")).collect()
    }

    fn facts(args: Option<&Attr>) -> RequestFacts<'_> {
        RequestFacts {
            client_ip: IpAddr::from([127, 0, 0, 1]),
            now: OffsetDateTime::UNIX_EPOCH,
            channel: "rest",
            actor: "user_1",
            args,
            has_idempotency_key: false,
            has_preflight_hash: false,
            has_justification: false,
        }
    }

    /// The default app policy's data policy, as the pipeline builds it for Cedar.
    fn default_data_policy() -> &'static Attr {
        static POLICY: std::sync::LazyLock<Attr> =
            std::sync::LazyLock::new(|| crate::app_policy::AppPolicy::default().cedar_data_policy());
        &POLICY
    }

    fn app<'a>(app_id: &'a str, org_id: &'a str, key_id: &'a str, scopes: &'a [String]) -> AppFacts<'a> {
        AppFacts {
            app_id,
            app_name: "a",
            org_id,
            key_id,
            scopes,
            data_policy: default_data_policy(),
            tags: no_tags(),
        }
    }

    /// The memo is looked up by a borrowed query: it must hash like the owned key it
    /// stands for, and match that key and no other, for every phase.
    #[test]
    fn a_borrowed_decision_query_finds_exactly_its_own_key() {
        let hasher = ahash::RandomState::new();
        let scopes = vec!["s.read".to_string(), "s.write".to_string()];
        let required = vec!["s.read".to_string()];
        let tool = ToolFacts {
            name: "t.0",
            risk: Risk::Low,
            effect: Effect::Read,
            required_scopes: &required,
            plugin: "p",
        };
        let args = Attr::Record(BTreeMap::from([("n".to_string(), Attr::Long(3))]));
        let app = app("app_1", "org_1", "key_1", &scopes);
        for action in Action::ALL {
            for args in [None, Some(&args)] {
                let request = facts(args);
                let owned = DecisionKey::new(&app, action, &tool, &request);
                let query = DecisionQuery::new(&app, action, &tool, &request);
                assert_eq!(hasher.hash_one(&query), hasher.hash_one(&owned), "{action:?} {args:?}");
                assert!(hashbrown::Equivalent::equivalent(&query, &owned));
                // Any other request is another key.
                let other_actor = RequestFacts {
                    actor: "user_2",
                    ..facts(args)
                };
                let other = DecisionKey::new(&app, action, &tool, &other_actor);
                assert!(!hashbrown::Equivalent::equivalent(&query, &other));
            }
        }
    }

    #[test]
    fn the_shipped_set_validates() {
        let authz = build(&names(2), DEFAULT_POLICIES).expect("default set validates");
        assert!(authz.policy_ids().iter().any(|id| id == "base.scoped-tools"));
    }

    #[test]
    fn a_set_that_fails_validation_is_refused_naming_file_line_policy_and_field() {
        let bad = "@id(\"typo\")\nforbid (principal, action in OpenPort::Action::\"t.1\", resource)\n\
                   when { context has args && context.args.nn == 1 };";
        let err = build(&names(2), bad).expect_err("refused").to_string();
        for needle in ["t.cedar", "line 3", "`typo`", "nn"] {
            assert!(err.contains(needle), "`{needle}` in {err}");
        }
        let unknown_tool = r#"forbid (principal, action in OpenPort::Action::"t.9", resource);"#;
        let err = build(&names(2), unknown_tool).expect_err("unknown tool").to_string();
        assert!(err.contains("t.9"), "{err}");
    }

    #[test]
    fn a_tool_group_matches_every_phase_of_its_tool_and_phase_groups_every_tool() {
        let text = r#"
            @id("all") permit (principal, action, resource);
            @id("no-big-t1") forbid (principal, action in OpenPort::Action::"t.1", resource)
            when { context has args && context.args has n && context.args.n > 10 };
            @id("no-auto") forbid (principal, action in OpenPort::Action::"auto_execute", resource);
        "#;
        let authz = build(&names(2), text).expect("valid");
        let scopes = vec!["s".to_string()];
        let a = app("a", "o", "k", &scopes);
        let tool = |name| ToolFacts {
            name,
            risk: Risk::Low,
            effect: Effect::Write,
            required_scopes: &scopes,
            plugin: "p",
        };
        let value = |n: i64| ArgType::value_of(&arg_type(), &json!({"n": n})).expect("typed");
        let (big, small) = (value(11), value(3));
        for decide in [Authorizer::decide, Authorizer::decide_unsliced] {
            let d = |name, action, args| decide(&authz, &a, action, &tool(name), &facts(args));
            assert!(!d("t.1", Action::Propose, Some(&big)).allowed);
            assert_eq!(d("t.1", Action::Propose, Some(&big)).policy_ids, ["no-big-t1"]);
            assert!(d("t.1", Action::Propose, Some(&small)).allowed);
            assert!(d("t.1", Action::Discover, None).allowed, "discovery has no args");
            assert!(!d("t.1", Action::AutoExecute, Some(&small)).allowed);
            assert!(d("t.0", Action::Read, Some(&big)).allowed, "another tool's group");
        }
    }

    #[test]
    fn a_policy_reads_the_context_attributes_it_names_or_all_when_it_uses_context_whole() {
        let reads = |text: &str| {
            let set = PolicySet::from_str(text).expect("parses");
            ContextReads::of(set.policies().next().expect("one policy"))
        };
        let named = |names: &[&str]| ContextReads::Named(names.iter().map(|n| n.to_string()).collect());
        assert_eq!(reads("permit (principal, action, resource);"), named(&[]));
        assert_eq!(
            reads(r#"permit (principal, action, resource) when { context.channel == "mcp" && context has args };"#),
            named(&["args", "channel"])
        );
        assert_eq!(
            reads(r#"permit (principal, action, resource) when { context has args.n && context.args.n > 1 };"#),
            named(&["args"])
        );
        assert_eq!(
            reads("permit (principal, action, resource) when { context == context };"),
            ContextReads::All
        );
    }

    #[test]
    fn shadow_policies_are_evaluated_and_never_enforced() {
        let text = r#"
            @id("all") permit (principal, action, resource);
            @id("would-block") @mode("shadow") forbid (principal, action in OpenPort::Action::"t.0", resource);
        "#;
        let authz = build(&names(2), text).expect("valid");
        assert_eq!(authz.shadow_ids(), ["would-block"]);
        let scopes = vec!["s".to_string()];
        let a = app("a", "o", "k", &scopes);
        let tool = ToolFacts {
            name: "t.0",
            risk: Risk::Low,
            effect: Effect::Read,
            required_scopes: &scopes,
            plugin: "p",
        };
        let empty = Attr::Record(BTreeMap::new());
        for decision in [
            authz.decide(&a, Action::Read, &tool, &facts(Some(&empty))),
            authz.decide_unsliced(&a, Action::Read, &tool, &facts(Some(&empty))),
        ] {
            assert!(decision.allowed, "a shadow forbid does not deny");
            let shadow = decision.shadow.clone().expect("a shadow decision");
            assert!(!shadow.allowed);
            assert_eq!(
                decision.shadow_disagreement(authz.shadow_ids()),
                Some(vec!["would-block".to_string()])
            );
        }
    }

    #[test]
    fn slices_decide_like_the_whole_set() {
        // Policies scoped every way the slicer distinguishes, then requests across apps,
        // tenants, actions and tools: the slice and the whole set must agree every time.
        let mut text = String::new();
        let groups = [
            "discover",
            "read",
            "propose",
            "auto_execute",
            "execute",
            "t.0",
            "t.1",
            "t.2/read",
        ];
        for i in 0..60 {
            let principal = match i % 5 {
                0 => "principal".to_string(),
                1 => format!("principal == OpenPort::App::\"app_{}\"", i % 4),
                2 => format!("principal in OpenPort::Tenant::\"org_{}\"", i % 2),
                3 => "principal is OpenPort::App".to_string(),
                _ => format!("principal is OpenPort::App in OpenPort::Tenant::\"org_{}\"", i % 2),
            };
            let action = match i % 3 {
                0 => "action".to_string(),
                1 => "action == OpenPort::Action::\"t.2/read\"".to_string(),
                _ => format!(
                    "action in [OpenPort::Action::\"{}\", OpenPort::Action::\"read\"]",
                    groups[i % groups.len()]
                ),
            };
            let resource = match i % 4 {
                0 => "resource".to_string(),
                1 => format!("resource == OpenPort::Tool::\"t.{}\"", i % 3),
                2 => "resource is OpenPort::Tool".to_string(),
                _ => format!("resource in OpenPort::Tool::\"t.{}\"", i % 3),
            };
            let effect = if i % 7 == 0 { "forbid" } else { "permit" };
            let mode = if i % 11 == 0 { "@mode(\"shadow\")\n" } else { "" };
            // Conditions over the context too: the fast path builds only what a slice reads.
            let context = match i % 6 {
                0 => " && context has args && context.args has n && context.args.n > 0",
                1 => " && context.channel == \"rest\"",
                2 => " && context.time.hour < 12",
                _ => "",
            };
            text.push_str(&format!(
                "@id(\"p{i}\")\n{mode}{effect} ({principal}, {action}, {resource}) when {{ resource.risk_level <= {}{context} }};\n",
                1 + i % 4
            ));
        }
        let tool_names = names(4);
        let authz = build(&tool_names, &text).expect("valid");
        let scopes = vec!["s".to_string()];
        let args = ArgType::value_of(&arg_type(), &json!({"n": 1, "tag": "x"})).expect("typed");
        for n in 0..400 {
            let app_id = format!("app_{}", n % 5);
            let org_id = format!("org_{}", n % 3);
            let tool_index = n % 4;
            let phases = Action::phases(tool_index % 2 == 0);
            let action = phases[(n / 4) % phases.len()];
            let risk = [Risk::Low, Risk::Medium, Risk::High, Risk::Critical][n % 4];
            let a = app(&app_id, &org_id, "k", &scopes);
            let tool = ToolFacts {
                name: &tool_names[tool_index],
                risk,
                effect: Effect::Write,
                required_scopes: &scopes,
                plugin: "p",
            };
            let request = facts((action != Action::Discover).then_some(&args));
            let sliced = authz.decide(&a, action, &tool, &request);
            let whole = authz.decide_unsliced(&a, action, &tool, &request);
            assert_eq!(sliced, whole, "request {n}");
            assert_eq!(
                authz.decide(&a, action, &tool, &request),
                sliced,
                "memoised request {n}"
            );
        }
    }

    #[test]
    fn a_memoised_decision_is_only_reused_for_the_same_inputs() {
        // Each input of the context changes the decision once; a memo keyed on less than
        // all of them would answer one of these requests with another's decision.
        let text = r#"
            permit (principal, action, resource);
            forbid (principal, action, resource) when { context.client_ip.isInRange(ip("10.0.0.0/8")) };
            forbid (principal, action, resource) when { context.key_id == "stolen" };
            forbid (principal, action, resource) when { context.time.unix_seconds == 7 };
            forbid (principal, action, resource) when { context.channel == "mcp" };
            forbid (principal, action in OpenPort::Action::"t.0", resource) when {
                context has args && context.args has amount && context.args.amount.greaterThan(decimal("100.0"))
            };
            forbid (principal, action in OpenPort::Action::"t.0", resource) when {
                context has args && context.args has tag && context.args.tag == "l2"
            };
            forbid (principal, action, resource) when { context.has_idempotency_key };
        "#;
        let authz = build(&names(1), text).expect("valid");
        let scopes = vec!["s".to_string()];
        let tool = ToolFacts {
            name: "t.0",
            risk: Risk::Low,
            effect: Effect::Read,
            required_scopes: &scopes,
            plugin: "p",
        };
        let typed = |v| ArgType::value_of(&arg_type(), &v).expect("typed");
        let base = typed(json!({"tag": "l1", "amount": 5}));
        let allowed = |app: &AppFacts<'_>, facts: &RequestFacts<'_>| {
            // Twice: the second answer comes from the memo.
            let first = authz.decide(app, Action::Read, &tool, facts);
            assert_eq!(authz.decide(app, Action::Read, &tool, facts), first);
            first.allowed
        };
        let a = app("a", "o", "k", &scopes);
        assert!(allowed(&a, &facts(Some(&base))));
        assert!(!allowed(&app("a", "o", "stolen", &scopes), &facts(Some(&base))));
        let from_ten = RequestFacts {
            client_ip: IpAddr::from([10, 1, 2, 3]),
            ..facts(Some(&base))
        };
        assert!(!allowed(&a, &from_ten));
        let later = RequestFacts {
            now: OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(7),
            ..facts(Some(&base))
        };
        assert!(!allowed(&a, &later));
        let over_mcp = RequestFacts {
            channel: "mcp",
            ..facts(Some(&base))
        };
        assert!(!allowed(&a, &over_mcp));
        let (large, other_tag) = (
            typed(json!({"tag": "l1", "amount": 500})),
            typed(json!({"tag": "l2", "amount": 5})),
        );
        assert!(!allowed(&a, &facts(Some(&large))));
        assert!(!allowed(&a, &facts(Some(&other_tag))));
        let keyed = RequestFacts {
            has_idempotency_key: true,
            ..facts(Some(&base))
        };
        assert!(!allowed(&a, &keyed));
        assert!(allowed(&a, &facts(Some(&base))), "the first request is still allowed");
    }
}
