//! Cedar authorization (SPEC section 5): the only module that touches `cedar_policy`.
//!
//! A policy set is a schema plus `.cedar` files, validated strictly before it is used;
//! a set that fails is refused and the previous one keeps serving. Any evaluation error
//! denies.

use std::collections::{HashMap, HashSet};
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

use crate::app_policy::AppPolicy;
use crate::tool::{Effect, Risk, ToolFacts};

pub mod scenarios;

/// The default schema and policies, compiled in so `openport demo` needs no files.
pub const DEFAULT_SCHEMA: &str = include_str!("../../../policies/schema.cedarschema");
pub const DEFAULT_POLICIES: &str = include_str!("../../../policies/base.cedar");

#[derive(Debug, thiserror::Error)]
pub enum AuthzError {
    #[error("cannot read `{path}`: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("schema is invalid: {0}")]
    Schema(String),
    #[error("policy file `{file}` does not parse: {message}")]
    Parse { file: String, message: String },
    #[error("policy set fails validation:\n{0}")]
    Validation(String),
    #[error("policy id `{0}` is used twice")]
    DuplicateId(String),
}

/// The actions of the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Discover,
    Read,
    Propose,
    AutoExecute,
    Execute,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Discover => "discover",
            Action::Read => "read",
            Action::Propose => "propose",
            Action::AutoExecute => "auto_execute",
            Action::Execute => "execute",
        }
    }
}

/// The principal as Cedar sees it: an app of a tenant, with its data policy.
#[derive(Debug, Clone)]
pub struct AppFacts<'a> {
    pub app_id: &'a str,
    pub app_name: &'a str,
    pub org_id: &'a str,
    pub key_id: &'a str,
    pub scopes: &'a [String],
    /// The app's data policy.
    pub policy: &'a AppPolicy,
}

/// Facts about the request for the context.
#[derive(Debug, Clone)]
pub struct RequestFacts<'a> {
    pub client_ip: IpAddr,
    pub now: OffsetDateTime,
    /// `None` for discovery, which is decided without arguments.
    pub payload: Option<&'a Value>,
    pub has_idempotency_key: bool,
    pub has_preflight_hash: bool,
    pub has_justification: bool,
}

/// Our decision: no Cedar types escape this module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The policies that determined the decision.
    pub policy_ids: Vec<String>,
    /// Evaluation errors (each of which denies).
    pub errors: Vec<String>,
}

/// A validated policy set with its schema.
///
/// Requests are decided against the slice of the set whose scope can match the request's
/// app (or its tenant) and tool, so cost grows with the policies that concern a request,
/// not with the whole set. A policy's scope is a necessary condition for it to apply,
/// so the slice decides exactly as the whole set would (tested by
/// `slices_decide_like_the_whole_set`).
#[derive(Debug)]
pub struct Authorizer {
    schema: Schema,
    policies: PolicySet,
    ids: Vec<String>,
    authorizer: CedarAuthorizer,
    scoped: Vec<Policy>,
    slices: BoundedCache<SliceKey, Arc<PolicySet>>,
    /// The tenant, app and tool entities of a request, built once per distinct set of
    /// their attributes: building them (and their ancestor closure) costs more than
    /// evaluating the policies.
    entities: BoundedCache<EntitiesKey, Arc<Entities>>,
    /// Decisions memoised on every input of the request (entities, action, context):
    /// Cedar is a pure function of the policy set and the request, and a reload builds a
    /// new `Authorizer`, so a hit is exactly the decision Cedar would make again.
    decisions: BoundedCache<DecisionKey, Decision>,
    /// `ip("..")` and `decimal("..")` expressions by their text: building one parses the
    /// extension's name with Cedar's parser, which costs more than the decision.
    extension_values: BoundedCache<(ExtensionKind, String), RestrictedExpression>,
}

/// Everything a memoised decision depends on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct DecisionKey {
    entities: EntitiesKey,
    action: Action,
    context: ContextInputs,
}

impl DecisionKey {
    fn new(app: &AppFacts<'_>, action: Action, tool: &ToolFacts<'_>, facts: &RequestFacts<'_>) -> DecisionKey {
        DecisionKey {
            entities: EntitiesKey::new(app, tool),
            action,
            context: ContextInputs::new(app, facts),
        }
    }
}

/// Entries each of the authorizer's caches keeps before it starts over.
const MAX_CACHED: usize = 10_000;

/// A map that empties itself when full: every value can be rebuilt, and starting over is
/// cheaper than tracking recency on the request path. A poisoned lock is just taken over.
#[derive(Debug)]
struct BoundedCache<K, V>(Mutex<HashMap<K, V>>);

impl<K: std::hash::Hash + Eq, V: Clone> BoundedCache<K, V> {
    fn new() -> Self {
        BoundedCache(Mutex::new(HashMap::new()))
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<K, V>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, key: &K) -> Option<V> {
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
}

/// The request's context as plain data: what `context_pairs` turns into Cedar values.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ContextInputs {
    client_ip: IpAddr,
    hour: u8,
    weekday: u8,
    unix_seconds: i64,
    key_id: String,
    has_payload: bool,
    /// The `PAYLOAD_STRINGS` fields present, in that order.
    payload_strings: Vec<(&'static str, String)>,
    /// `amount_home` as Cedar decimal text.
    amount_home: Option<String>,
    range_days: Option<i64>,
    has_idempotency_key: bool,
    has_preflight_hash: bool,
    has_justification: bool,
}

impl ContextInputs {
    fn new(app: &AppFacts<'_>, facts: &RequestFacts<'_>) -> ContextInputs {
        let mut payload_strings = Vec::new();
        let mut amount_home = None;
        let mut range_days = None;
        if let Some(Value::Object(map)) = facts.payload {
            for field in PAYLOAD_STRINGS {
                if let Some(Value::String(s)) = map.get(*field) {
                    payload_strings.push((*field, s.clone()));
                }
            }
            amount_home = map.get("amount_home").and_then(Value::as_f64).map(decimal_text);
            range_days = date_range_days(map.get("startDate"), map.get("endDate"));
        }
        ContextInputs {
            client_ip: facts.client_ip,
            hour: facts.now.hour(),
            weekday: facts.now.weekday().number_from_monday(),
            unix_seconds: facts.now.unix_timestamp(),
            key_id: app.key_id.to_string(),
            has_payload: facts.payload.is_some(),
            payload_strings,
            amount_home,
            range_days,
            has_idempotency_key: facts.has_idempotency_key,
            has_preflight_hash: facts.has_preflight_hash,
            has_justification: facts.has_justification,
        }
    }
}

/// Everything the cached entities are built from, so a changed app or tool misses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct EntitiesKey {
    app_id: String,
    app_name: String,
    org_id: String,
    scopes: Vec<String>,
    data_policy: DataPolicyFacts,
    tool: String,
    risk: Risk,
    effect: Effect,
    required_scopes: Vec<String>,
    plugin: String,
}

impl EntitiesKey {
    fn new(app: &AppFacts<'_>, tool: &ToolFacts<'_>) -> EntitiesKey {
        EntitiesKey {
            app_id: app.app_id.to_string(),
            app_name: app.app_name.to_string(),
            org_id: app.org_id.to_string(),
            scopes: app.scopes.to_vec(),
            data_policy: data_policy_facts(app.policy),
            tool: tool.name.to_string(),
            risk: tool.risk,
            effect: tool.effect,
            required_scopes: tool.required_scopes.to_vec(),
            plugin: tool.plugin.to_string(),
        }
    }
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

/// Our schema has no action groups, so `in [..]` is membership in the list.
fn action_matches(constraint: &ActionConstraint, action: &EntityUid) -> bool {
    match constraint {
        ActionConstraint::Any => true,
        ActionConstraint::Eq(uid) => uid == action,
        ActionConstraint::In(uids) => uids.contains(action),
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

impl Authorizer {
    /// Builds from source text: `(file name, text)` pairs. Validates strictly.
    pub fn from_sources(schema_text: &str, files: &[(String, String)]) -> Result<Authorizer, AuthzError> {
        let (schema, _warnings) =
            Schema::from_cedarschema_str(schema_text).map_err(|e| AuthzError::Schema(format!("{e:?}")))?;
        let mut policies = PolicySet::new();
        let mut ids = Vec::new();
        for (file, text) in files {
            let parsed = PolicySet::from_str(text).map_err(|e| AuthzError::Parse {
                file: file.clone(),
                message: format!("{e}"),
            })?;
            for (index, policy) in parsed.policies().enumerate() {
                let id = policy
                    .annotation("id")
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{file}#{index}"));
                let renamed: Policy = policy.new_id(PolicyId::new(&id));
                policies.add(renamed).map_err(|_| AuthzError::DuplicateId(id.clone()))?;
                ids.push(id);
            }
        }
        let result = Validator::new(schema.clone()).validate(&policies, ValidationMode::Strict);
        if !result.validation_passed() {
            let messages: Vec<String> = result.validation_errors().map(|e| format!("- {e}")).collect();
            return Err(AuthzError::Validation(messages.join("\n")));
        }
        let scoped = policies.policies().cloned().collect();
        Ok(Authorizer {
            schema,
            policies,
            ids,
            authorizer: CedarAuthorizer::new(),
            scoped,
            slices: BoundedCache::new(),
            entities: BoundedCache::new(),
            decisions: BoundedCache::new(),
            extension_values: BoundedCache::new(),
        })
    }

    /// The compiled-in default set.
    pub fn default_set() -> Result<Authorizer, AuthzError> {
        Authorizer::from_sources(DEFAULT_SCHEMA, &[("base.cedar".into(), DEFAULT_POLICIES.into())])
    }

    /// Loads `schema.cedarschema` and every `*.cedar` file of a directory (sorted by name).
    pub fn from_dir(dir: &Path) -> Result<Authorizer, AuthzError> {
        Authorizer::from_dirs(&[dir.to_path_buf()])
    }

    /// Loads the schema of the first directory and every `*.cedar` of all of them, in
    /// order (a base set, then an example that extends it).
    pub fn from_dirs(dirs: &[std::path::PathBuf]) -> Result<Authorizer, AuthzError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| AuthzError::Read {
                path: path.display().to_string(),
                source,
            })
        };
        let first = dirs
            .first()
            .ok_or_else(|| AuthzError::Schema("no policy directory given".into()))?;
        let schema = read(&first.join("schema.cedarschema"))?;
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
                files.push((name, read(&path)?));
            }
        }
        Authorizer::from_sources(&schema, &files)
    }

    /// Policy ids in load order.
    pub fn policy_ids(&self) -> &[String] {
        &self.ids
    }

    /// The policies whose scope can match this app (or its tenant), action and tool.
    fn slice(
        &self,
        app: &EntityUid,
        tenant: &EntityUid,
        action: (Action, &EntityUid),
        tool: &EntityUid,
    ) -> Result<Arc<PolicySet>, String> {
        let key = (
            app.id().unescaped().to_string(),
            tenant.id().unescaped().to_string(),
            tool.id().unescaped().to_string(),
            action.0,
        );
        if let Some(slice) = self.slices.get(&key) {
            return Ok(slice);
        }
        let mut set = PolicySet::new();
        for policy in &self.scoped {
            if principal_matches(&policy.principal_constraint(), app, tenant)
                && action_matches(&policy.action_constraint(), action.1)
                && resource_matches(&policy.resource_constraint(), tool)
            {
                set.add(policy.clone()).map_err(|e| e.to_string())?;
            }
        }
        let set = Arc::new(set);
        self.slices.insert(key, set.clone());
        Ok(set)
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
        let key = DecisionKey::new(app, action, tool, facts);
        if let Some(decision) = self.decisions.get(&key) {
            return decision;
        }
        let decision = deny_on_error(self.build_and_decide(&key, true));
        self.decisions.insert(key, decision.clone());
        decision
    }

    fn build_and_decide(&self, key: &DecisionKey, sliced: bool) -> Result<Decision, String> {
        let (facts, action) = (&key.entities, key.action);
        let types = entity_types();
        let tenant = EntityUid::from_type_name_and_id(types.tenant.clone(), EntityId::new(&facts.org_id));
        let principal = EntityUid::from_type_name_and_id(types.app.clone(), EntityId::new(&facts.app_id));
        let resource = EntityUid::from_type_name_and_id(types.tool.clone(), EntityId::new(&facts.tool));
        let action_uid = EntityUid::from_type_name_and_id(types.action.clone(), EntityId::new(action.name()));
        // Request-time schema checks are for the reference path (`decide_unsliced`, which
        // scenarios and tests use): the gateway builds entities and context the same way
        // every time, policies were validated against the schema at load, and an
        // evaluation error still denies.
        let schema = (!sliced).then_some(&self.schema);
        let build = || -> Result<Entities, String> { entities_for(facts, (&principal, &tenant, &resource), schema) };
        let entities = if sliced {
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
        let (principal_for_slice, tenant_for_slice, resource_for_slice, action_for_slice) =
            (principal.clone(), tenant.clone(), resource.clone(), action_uid.clone());
        let context = Context::from_pairs(self.context_pairs(&key.context)).map_err(|e| format!("context: {e}"))?;
        let request =
            Request::new(principal, action_uid, resource, context, schema).map_err(|e| format!("request: {e}"))?;
        let slice;
        let policies = if sliced {
            slice = self.slice(
                &principal_for_slice,
                &tenant_for_slice,
                (action, &action_for_slice),
                &resource_for_slice,
            )?;
            slice.as_ref()
        } else {
            &self.policies
        };
        let response = self.authorizer.is_authorized(&request, policies, entities.as_ref());
        let errors: Vec<String> = response.diagnostics().errors().map(|e| e.to_string()).collect();
        let mut policy_ids: Vec<String> = response.diagnostics().reason().map(|id| id.to_string()).collect();
        policy_ids.sort();
        let allowed = response.decision() == CedarDecision::Allow && errors.is_empty();
        Ok(Decision {
            allowed,
            policy_ids,
            errors,
        })
    }
}

/// The tenant, the app (a member of it) and the tool, as Cedar entities.
fn entities_for(
    facts: &EntitiesKey,
    (principal, tenant, resource): (&EntityUid, &EntityUid, &EntityUid),
    schema: Option<&Schema>,
) -> Result<Entities, String> {
    let app_entity = Entity::new(
        principal.clone(),
        HashMap::from([
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
            ("data_policy".to_string(), self::data_policy(&facts.data_policy)),
        ]),
        HashSet::from([tenant.clone()]),
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
    Entities::from_entities([app_entity, tool_entity, tenant_entity], schema).map_err(|e| format!("entities: {e}"))
}

/// An error anywhere on the way to a decision is a denial that says why.
fn deny_on_error(result: Result<Decision, String>) -> Decision {
    result.unwrap_or_else(|error| Decision {
        allowed: false,
        policy_ids: Vec::new(),
        errors: vec![error],
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

/// The app's data policy as Cedar's `data_policy` attribute holds it: (restrict ledgers,
/// allowed ledgers, restrict orgs, allowed orgs, max days, allow sensitive fields).
type DataPolicyFacts = (bool, Vec<String>, bool, Vec<String>, i64, bool);

fn data_policy_facts(policy: &AppPolicy) -> DataPolicyFacts {
    let (ledgers, orgs) = (policy.allowed_ledger_ids(), policy.allowed_org_ids());
    (
        !ledgers.is_empty(),
        ledgers.to_vec(),
        !orgs.is_empty(),
        orgs.to_vec(),
        policy.max_days(),
        policy.allows_sensitive_fields(),
    )
}

fn data_policy(facts: &DataPolicyFacts) -> RestrictedExpression {
    let (restrict_ledgers, ledgers, restrict_orgs, orgs, max_days, sensitive) = facts;
    let record = [
        (
            "restrict_ledgers".to_string(),
            RestrictedExpression::new_bool(*restrict_ledgers),
        ),
        (
            "allowed_ledger_ids".to_string(),
            string_set(ledgers.iter().map(String::as_str)),
        ),
        (
            "restrict_orgs".to_string(),
            RestrictedExpression::new_bool(*restrict_orgs),
        ),
        (
            "allowed_org_ids".to_string(),
            string_set(orgs.iter().map(String::as_str)),
        ),
        ("max_days".to_string(), RestrictedExpression::new_long(*max_days)),
        (
            "allow_sensitive_fields".to_string(),
            RestrictedExpression::new_bool(*sensitive),
        ),
    ];
    // Only fixed keys: building this record cannot fail.
    RestrictedExpression::new_record(record).unwrap_or_else(|_| RestrictedExpression::new_bool(false))
}

/// String fields of the payload that the schema's `Payload` type declares.
const PAYLOAD_STRINGS: &[&str] = &[
    "ledgerId",
    "transactionId",
    "kind",
    "title",
    "currency_home",
    "startDate",
    "endDate",
];

impl Authorizer {
    /// The request's context as Cedar values.
    fn context_pairs(&self, inputs: &ContextInputs) -> Vec<(String, RestrictedExpression)> {
        let time = RestrictedExpression::new_record([
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
        .unwrap_or_else(|_| RestrictedExpression::new_bool(false));
        let mut payload: Vec<(String, RestrictedExpression)> = inputs
            .payload_strings
            .iter()
            .map(|(field, value)| (field.to_string(), RestrictedExpression::new_string(value.clone())))
            .collect();
        if let Some(amount) = &inputs.amount_home {
            // Cedar decimals hold four fractional digits and |x| < 9.2e14; outside that the
            // request is given an unparseable decimal, which errors, which denies.
            payload.push((
                "amount_home".to_string(),
                self.extension_value(ExtensionKind::Decimal, amount),
            ));
        }
        let mut pairs = vec![
            (
                "client_ip".to_string(),
                self.extension_value(ExtensionKind::Ip, &inputs.client_ip.to_string()),
            ),
            ("time".to_string(), time),
            (
                "key_id".to_string(),
                RestrictedExpression::new_string(inputs.key_id.clone()),
            ),
            (
                "has_payload".to_string(),
                RestrictedExpression::new_bool(inputs.has_payload),
            ),
            (
                "payload".to_string(),
                RestrictedExpression::new_record(payload).unwrap_or_else(|_| RestrictedExpression::new_bool(false)),
            ),
            (
                "has_idempotency_key".to_string(),
                RestrictedExpression::new_bool(inputs.has_idempotency_key),
            ),
            (
                "has_preflight_hash".to_string(),
                RestrictedExpression::new_bool(inputs.has_preflight_hash),
            ),
            (
                "has_justification".to_string(),
                RestrictedExpression::new_bool(inputs.has_justification),
            ),
        ];
        if let Some(days) = inputs.range_days {
            pairs.push(("range_days".to_string(), RestrictedExpression::new_long(days)));
        }
        pairs
    }

    /// An `ip(..)` or `decimal(..)` expression, built once per distinct text.
    fn extension_value(&self, kind: ExtensionKind, text: &str) -> RestrictedExpression {
        let key = (kind, text.to_string());
        if let Some(value) = self.extension_values.get(&key) {
            return value;
        }
        let value = match kind {
            ExtensionKind::Ip => RestrictedExpression::new_ip(text),
            ExtensionKind::Decimal => RestrictedExpression::new_decimal(text),
        };
        self.extension_values.insert(key, value.clone());
        value
    }
}

fn decimal_text(x: f64) -> String {
    if x.is_finite() && x.abs() < 9.0e14 {
        format!("{x:.4}")
    } else {
        "out-of-range".to_string()
    }
}

/// Whole days from `startDate` to `endDate` (`YYYY-MM-DD` prefixes), inclusive of both.
fn date_range_days(start: Option<&Value>, end: Option<&Value>) -> Option<i64> {
    let parse = |v: Option<&Value>| {
        let text = v?.as_str()?.get(..10)?;
        let format = time::macros::format_description!("[year]-[month]-[day]");
        time::Date::parse(text, &format).ok()
    };
    let (start, end) = (parse(start)?, parse(end)?);
    Some((end - start).whole_days() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_shipped_set_validates() {
        let authz = Authorizer::default_set().expect("default set validates");
        assert!(authz.policy_ids().iter().any(|id| id == "base.scoped-tools"));
    }

    #[test]
    fn a_set_that_fails_validation_is_refused_with_the_validator_message() {
        let bad = r#"permit (principal is OpenPort::App, action, resource) when { principal.no_such_attr };"#;
        let err = Authorizer::from_sources(DEFAULT_SCHEMA, &[("bad.cedar".into(), bad.into())]).expect_err("refused");
        assert!(err.to_string().contains("no_such_attr"), "{err}");
    }

    #[test]
    fn slices_decide_like_the_whole_set() {
        // Policies scoped every way the slicer distinguishes, then requests across apps,
        // tenants, actions and tools: the slice and the whole set must agree every time.
        let mut text = String::new();
        let actions = ["discover", "read", "propose", "auto_execute", "execute"];
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
                1 => format!("action == OpenPort::Action::\"{}\"", actions[i % 5]),
                _ => format!(
                    "action in [OpenPort::Action::\"{}\", OpenPort::Action::\"read\"]",
                    actions[(i + 2) % 5]
                ),
            };
            let resource = match i % 4 {
                0 => "resource".to_string(),
                1 => format!("resource == OpenPort::Tool::\"t.{}\"", i % 3),
                2 => "resource is OpenPort::Tool".to_string(),
                _ => format!("resource in OpenPort::Tool::\"t.{}\"", i % 3),
            };
            let effect = if i % 7 == 0 { "forbid" } else { "permit" };
            text.push_str(&format!(
                "@id(\"p{i}\")\n{effect} ({principal}, {action}, {resource}) when {{ resource.risk_level <= {} }};\n",
                1 + i % 4
            ));
        }
        let authz = Authorizer::from_sources(DEFAULT_SCHEMA, &[("gen.cedar".into(), text)]).expect("valid");
        let scopes = vec!["s".to_string()];
        let policy = AppPolicy::default();
        let payload = serde_json::json!({"ledgerId": "l"});
        for n in 0..400 {
            let app_id = format!("app_{}", n % 5);
            let org_id = format!("org_{}", n % 3);
            let tool_name = format!("t.{}", n % 4);
            let action = [
                Action::Discover,
                Action::Read,
                Action::Propose,
                Action::AutoExecute,
                Action::Execute,
            ][n % 5];
            let risk = [Risk::Low, Risk::Medium, Risk::High, Risk::Critical][n % 4];
            let app = AppFacts {
                app_id: &app_id,
                app_name: "a",
                org_id: &org_id,
                key_id: "k",
                scopes: &scopes,
                policy: &policy,
            };
            let tool = ToolFacts {
                name: &tool_name,
                risk,
                effect: Effect::Write,
                required_scopes: &scopes,
                plugin: "p",
            };
            let facts = RequestFacts {
                client_ip: IpAddr::from([127, 0, 0, 1]),
                now: OffsetDateTime::UNIX_EPOCH,
                payload: Some(&payload),
                has_idempotency_key: false,
                has_preflight_hash: false,
                has_justification: false,
            };
            let sliced = authz.decide(&app, action, &tool, &facts);
            let whole = authz.decide_unsliced(&app, action, &tool, &facts);
            assert_eq!(sliced, whole, "request {n}");
            assert_eq!(
                authz.decide(&app, action, &tool, &facts),
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
            forbid (principal, action, resource) when {
                context.payload has amount_home && context.payload.amount_home.greaterThan(decimal("100.0"))
            };
            forbid (principal, action, resource) when { context.payload has ledgerId && context.payload.ledgerId == "l2" };
            forbid (principal, action, resource) when { context.has_idempotency_key };
        "#;
        let authz = Authorizer::from_sources(DEFAULT_SCHEMA, &[("t.cedar".into(), text.into())]).expect("valid");
        let (scopes, policy) = (vec!["s".to_string()], AppPolicy::default());
        let app = |key_id| AppFacts {
            app_id: "a",
            app_name: "a",
            org_id: "o",
            key_id,
            scopes: &scopes,
            policy: &policy,
        };
        let tool = ToolFacts {
            name: "t.read",
            risk: Risk::Low,
            effect: Effect::Read,
            required_scopes: &scopes,
            plugin: "p",
        };
        let base = json!({"ledgerId": "l1", "amount_home": 5});
        let facts = |payload| RequestFacts {
            client_ip: IpAddr::from([127, 0, 0, 1]),
            now: OffsetDateTime::UNIX_EPOCH,
            payload: Some(payload),
            has_idempotency_key: false,
            has_preflight_hash: false,
            has_justification: false,
        };
        let allowed = |app: &AppFacts<'_>, facts: &RequestFacts<'_>| {
            // Twice: the second answer comes from the memo.
            let first = authz.decide(app, Action::Read, &tool, facts);
            assert_eq!(authz.decide(app, Action::Read, &tool, facts), first);
            first.allowed
        };
        assert!(allowed(&app("k"), &facts(&base)));
        assert!(!allowed(&app("stolen"), &facts(&base)));
        let from_ten = RequestFacts {
            client_ip: IpAddr::from([10, 1, 2, 3]),
            ..facts(&base)
        };
        assert!(!allowed(&app("k"), &from_ten));
        let later = RequestFacts {
            now: OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(7),
            ..facts(&base)
        };
        assert!(!allowed(&app("k"), &later));
        let (large, other_ledger) = (
            json!({"ledgerId": "l1", "amount_home": 500}),
            json!({"ledgerId": "l2", "amount_home": 5}),
        );
        assert!(!allowed(&app("k"), &facts(&large)));
        assert!(!allowed(&app("k"), &facts(&other_ledger)));
        let keyed = RequestFacts {
            has_idempotency_key: true,
            ..facts(&base)
        };
        assert!(!allowed(&app("k"), &keyed));
        assert!(allowed(&app("k"), &facts(&base)), "the first request is still allowed");
    }

    #[test]
    fn date_ranges_count_both_ends() {
        let d = |s: &str| Value::String(s.into());
        assert_eq!(
            date_range_days(Some(&d("2026-01-01")), Some(&d("2026-01-31"))),
            Some(31)
        );
        assert_eq!(date_range_days(Some(&d("2026-01-01")), None), None);
    }
}
