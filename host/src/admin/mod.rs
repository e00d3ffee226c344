//! The admin plane (SPEC section 10): its own listener and bearer credentials with roles.
//! A missing or wrong credential is `admin.unauthorized` (401), a role without the right
//! is `admin.forbidden` (403); every request gets one audit event.
//!
//! Two surfaces share the plane's scaffolding ([`authenticate`] and [`record`]): the JSON
//! API here and the reviewer's page in [`review`].

pub mod review;

use serde_json::{Map, Value, json};

use crate::apps::{self, AppError, NewApp, NewKey};
use crate::audit::{self, AuditError, AuditEvent};
use crate::auth::{self, AdminPrincipal, Role};
use crate::gateway::Gateway;
use crate::pipeline::{BodyError, Inbound, Outbound};
use crate::protocol::codes::{self, Code};
use crate::protocol::{Envelope, Failure, strict_json};
use crate::store::{AuditFilter, DraftStatus, ExecutionStatus, StoreError};

/// An admin credential (`Bearer opa_...`): `None` when it is missing, unknown or revoked.
/// Every request authenticates again, so a revocation ends access at once.
pub fn authenticate(gw: &Gateway, authorization: Option<&str>) -> Result<Option<AdminPrincipal>, StoreError> {
    auth::authenticate_admin(&gw.store, authorization)
}

/// What an admin-plane request's audit event records beyond the request itself.
#[derive(Debug, Default)]
pub struct AdminRecord {
    pub admin: Option<AdminPrincipal>,
    pub app_id: Option<String>,
    pub key_id: Option<String>,
    pub draft_id: Option<String>,
    pub details: Map<String, Value>,
}

/// Writes the terminal audit event of an admin-plane request, on either surface. The
/// caller answers only once it is durable.
pub async fn record(
    gw: &Gateway,
    inbound: &Inbound,
    action: &str,
    code: Code,
    record: AdminRecord,
) -> Result<(), AuditError> {
    let mut event = AuditEvent::for_request(action, code, gw.now_iso(), &inbound.audit_facts(inbound.peer));
    if let Some(admin) = &record.admin {
        event.performed_by_user_id = Some(admin.name.clone());
        event.org_id = admin.org_id.clone();
        event.details.insert("role".into(), admin.role.as_str().into());
    }
    event.app_id = record.app_id;
    event.key_id = record.key_id;
    event.draft_id = record.draft_id;
    event.details.extend(record.details);
    gw.metrics.admin_request(code.name);
    tracing::info!(
        target: "openport::admin_access",
        request_id = %inbound.request_id,
        method = %inbound.method,
        path = %inbound.path,
        action,
        status = code.status,
        code = code.name,
        admin = event.performed_by_user_id.as_deref().unwrap_or(""),
        client = %inbound.peer,
    );
    gw.audit.record(event).await.map(|_| ())
}

/// An envelope response.
fn respond(status: u16, envelope: Envelope, request_id: &str) -> Outbound {
    Outbound::json(status, envelope.to_bytes(), Vec::new(), request_id)
}

/// An admin route, parsed.
#[derive(Debug)]
enum Route {
    ListApps,
    CreateApp,
    CreateKey(String),
    RevokeApp(String),
    RevokeKey(String),
    ListKeys(String),
    RotateKey(String),
    ListPlugins,
    Audit,
    VerifyAudit,
    Metrics,
    Reload,
    ExportAudit,
    PruneAudit,
    RestoreApp(String),
    DeleteApp(String),
    PatchPolicy(String),
    UpdateApp(String),
    SetTags(String),
    AppTools(String),
    Policies,
    ValidatePolicies,
    AddPlugin,
    RemovePlugin(String),
    PluginVersions(String),
    RollbackPlugin(String),
    LogLevel,
    SetLogLevel,
    AutoExecute(String),
    ResolveExecution(String),
    ListDrafts,
    Draft(String),
    ApproveDraft(String),
    RejectDraft(String),
    StepUp(String),
}

impl Route {
    fn parse(method: &str, path: &str) -> Option<Route> {
        let rest = path.strip_prefix("/api/agent-admin/v1/")?;
        let segments: Vec<&str> = rest.split('/').collect();
        Some(match (method, segments.as_slice()) {
            ("GET", ["apps"]) => Route::ListApps,
            ("POST", ["apps"]) => Route::CreateApp,
            ("POST", ["apps", id, "keys"]) => Route::CreateKey((*id).into()),
            ("POST", ["apps", id, "revoke"]) => Route::RevokeApp((*id).into()),
            ("POST", ["keys", id, "revoke"]) => Route::RevokeKey((*id).into()),
            ("GET", ["apps", id, "keys"]) => Route::ListKeys((*id).into()),
            ("POST", ["keys", id, "rotate"]) => Route::RotateKey((*id).into()),
            ("GET", ["plugins"]) => Route::ListPlugins,
            ("POST", ["plugins"]) => Route::AddPlugin,
            ("PATCH", ["apps", id, "auto-execute"]) => Route::AutoExecute((*id).into()),
            ("GET", ["drafts"]) => Route::ListDrafts,
            ("POST", ["executions", id, "resolve"]) => Route::ResolveExecution((*id).into()),
            ("GET", ["drafts", id]) => Route::Draft((*id).into()),
            ("POST", ["drafts", id, "approve"]) => Route::ApproveDraft((*id).into()),
            ("POST", ["drafts", id, "reject"]) => Route::RejectDraft((*id).into()),
            ("POST", ["preflights", id, "step-up"]) => Route::StepUp((*id).into()),
            ("DELETE", ["plugins", name]) => Route::RemovePlugin((*name).into()),
            ("GET", ["plugins", name, "versions"]) => Route::PluginVersions((*name).into()),
            ("POST", ["plugins", name, "rollback"]) => Route::RollbackPlugin((*name).into()),
            ("GET", ["log-level"]) => Route::LogLevel,
            ("PUT", ["log-level"]) => Route::SetLogLevel,
            ("GET", ["audit"]) => Route::Audit,
            ("POST", ["audit", "verify"]) => Route::VerifyAudit,
            ("GET", ["metrics"]) => Route::Metrics,
            ("POST", ["apps", id, "restore"]) => Route::RestoreApp((*id).into()),
            ("DELETE", ["apps", id]) => Route::DeleteApp((*id).into()),
            ("PATCH", ["apps", id, "policy"]) => Route::PatchPolicy((*id).into()),
            ("PATCH", ["apps", id]) => Route::UpdateApp((*id).into()),
            ("PUT", ["apps", id, "tags"]) => Route::SetTags((*id).into()),
            ("GET", ["apps", id, "tools"]) => Route::AppTools((*id).into()),
            ("GET", ["policies"]) => Route::Policies,
            ("POST", ["policies", "validate"]) => Route::ValidatePolicies,
            ("GET", ["audit", "export"]) => Route::ExportAudit,
            ("POST", ["audit", "prune"]) => Route::PruneAudit,
            ("POST", ["policies", "reload"]) => Route::Reload,
            _ => return None,
        })
    }

    fn audit_action(&self) -> &'static str {
        match self {
            Route::ListApps => "admin.apps.list",
            Route::CreateApp => "agent_app.create",
            Route::CreateKey(_) => "agent_key.create",
            Route::RevokeApp(_) => "agent_app.revoke",
            Route::RevokeKey(_) => "agent_key.revoke",
            Route::ListKeys(_) => "agent_key.list",
            Route::RotateKey(_) => "agent_key.rotate",
            Route::ListPlugins => "admin.plugins.list",
            Route::Audit => "admin.audit.read",
            Route::VerifyAudit => "admin.audit.verify",
            Route::Metrics => "admin.metrics.read",
            Route::Reload => "admin.reload",
            Route::ExportAudit => "admin.audit.export",
            Route::RestoreApp(_) => "agent_app.restore",
            Route::DeleteApp(_) => "agent_app.delete",
            Route::PatchPolicy(_) => "agent_app.policy.update",
            Route::UpdateApp(_) => "agent_app.update",
            Route::SetTags(_) => "agent_app.tags.update",
            Route::AppTools(_) => "admin.apps.tools",
            Route::Policies => "admin.policies.read",
            Route::ValidatePolicies => "admin.policies.validate",
            Route::AddPlugin => "admin.plugins.add",
            Route::AutoExecute(_) => "agent_app.auto_execute.update",
            Route::ResolveExecution(_) => "agent.execution.resolve",
            Route::ListDrafts => "admin.drafts.list",
            Route::Draft(_) => "admin.drafts.read",
            Route::ApproveDraft(_) => "admin.drafts.approve",
            Route::RejectDraft(_) => "admin.drafts.reject",
            Route::StepUp(_) => "admin.step_up.issue",
            Route::RemovePlugin(_) => "admin.plugins.remove",
            Route::PluginVersions(_) => "admin.plugins.versions",
            Route::RollbackPlugin(_) => "admin.plugins.rollback",
            Route::LogLevel => "admin.log_level.read",
            Route::SetLogLevel => "admin.log_level.update",
            Route::PruneAudit => "admin.audit.prune",
        }
    }

    /// Roles allowed on the route.
    fn roles(&self) -> &'static [Role] {
        match self {
            Route::CreateApp
            | Route::CreateKey(_)
            | Route::RevokeApp(_)
            | Route::RevokeKey(_)
            | Route::RotateKey(_) => &[Role::Operator],
            Route::ListKeys(_) => &[Role::Operator, Role::Auditor],
            Route::ListApps | Route::ListPlugins | Route::PluginVersions(_) | Route::LogLevel => {
                &[Role::Operator, Role::Auditor]
            }
            Route::Audit | Route::VerifyAudit | Route::Metrics => &[Role::Auditor, Role::Operator],
            // Removing evidence is the auditors' call, not the operators' they audit.
            Route::PruneAudit => &[Role::Auditor],
            Route::Reload
            | Route::RestoreApp(_)
            | Route::DeleteApp(_)
            | Route::PatchPolicy(_)
            | Route::UpdateApp(_)
            | Route::SetTags(_)
            | Route::ValidatePolicies
            | Route::AddPlugin
            | Route::RemovePlugin(_)
            | Route::RollbackPlugin(_)
            | Route::SetLogLevel
            | Route::AutoExecute(_)
            | Route::ResolveExecution(_) => &[Role::Operator],
            Route::AppTools(_) | Route::Policies => &[Role::Operator, Role::Auditor],
            Route::ListDrafts | Route::Draft(_) => &[Role::Reviewer, Role::Operator, Role::Auditor],
            Route::ApproveDraft(_) | Route::RejectDraft(_) | Route::StepUp(_) => &[Role::Reviewer],
            Route::ExportAudit => &[Role::Auditor, Role::Operator],
        }
    }
}

struct Done {
    data: Value,
    details: Map<String, Value>,
    app_id: Option<String>,
    key_id: Option<String>,
    /// A plain body and its media type instead of the envelope (metrics, exports).
    text: Option<(&'static str, String)>,
}

impl Done {
    fn data(data: Value) -> Self {
        Done {
            data,
            details: Map::new(),
            app_id: None,
            key_id: None,
            text: None,
        }
    }
}

/// Answers one admin-plane request.
pub async fn handle(gw: &Gateway, inbound: Inbound) -> Outbound {
    let route = Route::parse(&inbound.method, &inbound.path);
    let action = route.as_ref().map_or("admin.request", Route::audit_action);
    let mut admin: Option<AdminPrincipal> = None;
    let outcome = run(gw, &inbound, route, &mut admin).await;
    let code = match &outcome {
        Ok(_) => codes::SUCCESS,
        Err(f) => f.code,
    };
    let mut trail = AdminRecord {
        admin,
        ..AdminRecord::default()
    };
    if let Ok(done) = &outcome {
        trail.app_id = done.app_id.clone();
        trail.key_id = done.key_id.clone();
        trail.details = done.details.clone();
    }
    if let Err(e) = record(gw, &inbound, action, code, trail).await {
        tracing::error!(error = %e, "admin audit event not durable");
        return respond(
            500,
            Envelope::failure(Failure::internal(), &inbound.request_id),
            &inbound.request_id,
        );
    }
    match outcome {
        Ok(Done {
            text: Some((media_type, text)),
            ..
        }) => Outbound {
            status: 200,
            headers: vec![
                ("Content-Type", media_type.to_string()),
                ("X-Request-Id", inbound.request_id.clone()),
            ],
            body: text.into_bytes(),
        },
        Ok(done) => respond(
            200,
            Envelope::success(done.data, &inbound.request_id),
            &inbound.request_id,
        ),
        Err(f) => respond(
            f.code.status,
            Envelope::failure(f, &inbound.request_id),
            &inbound.request_id,
        ),
    }
}

async fn run(
    gw: &Gateway,
    inbound: &Inbound,
    route: Option<Route>,
    admin: &mut Option<AdminPrincipal>,
) -> Result<Done, Failure> {
    let internal = |e: &dyn std::fmt::Display| {
        tracing::error!(request_id = %inbound.request_id, error = %e, "admin request failed");
        Failure::internal()
    };
    if inbound.head_too_large {
        return Err(Failure::new(codes::REQUEST_TOO_LARGE, "Request headers too large"));
    }
    let principal = authenticate(gw, inbound.authorization.as_deref())
        .map_err(|e| internal(&e))?
        .ok_or_else(|| Failure::new(codes::ADMIN_UNAUTHORIZED, "Missing or invalid admin credential"))?;
    *admin = Some(principal.clone());
    let Some(route) = route else {
        return Err(Failure::new(codes::NOT_FOUND, "Route not found"));
    };
    if !route.roles().contains(&principal.role) {
        return Err(Failure::new(
            codes::ADMIN_FORBIDDEN,
            format!("role `{}` may not do this", principal.role.as_str()),
        ));
    }
    let now = gw.now_iso();
    let by = principal.name.as_str();
    let app_error = |e: AppError| match e {
        AppError::Invalid(message) => Failure::validation(&[], message),
        AppError::NotFound(_) => Failure::new(codes::NOT_FOUND, "Agent app not found"),
        AppError::NameTaken(name) => Failure::new(
            codes::ADMIN_CONFLICT,
            "An agent app of that name already exists in this tenant",
        )
        .with("name", name),
        AppError::Store(e) => internal(&e),
    };
    // A tenant-scoped admin sees and changes only its tenant's apps.
    let in_scope = |org: Option<&str>| principal.org_id.as_deref().is_none_or(|own| org == Some(own));
    let scoped_app = |id: &str| -> Result<crate::store::AppRecord, Failure> {
        gw.store
            .apps
            .get(id)
            .map_err(|e| internal(&e))?
            .filter(|a| in_scope(a.org_id.as_deref()))
            .ok_or_else(|| Failure::new(codes::NOT_FOUND, "Agent app not found"))
    };
    // A key, when its app is in the caller's tenant scope.
    let scoped_key = |id: &str| -> Result<crate::store::KeyRecord, Failure> {
        let key = gw
            .store
            .apps
            .key(id)
            .map_err(|e| internal(&e))?
            .ok_or_else(|| Failure::new(codes::NOT_FOUND, "Key not found"))?;
        scoped_app(&key.app_id)?;
        Ok(key)
    };
    match route {
        Route::ListApps => {
            let mut items = Vec::new();
            for app in gw.store.apps.list().map_err(|e| internal(&e))? {
                if in_scope(app.org_id.as_deref()) {
                    items.push(apps::app_json(&gw.store, &app).map_err(|e| internal(&e))?);
                }
            }
            Ok(Done::data(json!({"items": items})))
        }
        Route::CreateApp => {
            let mut new: NewApp = json_body(inbound)?;
            if let Some(own) = &principal.org_id {
                if new.org_id.as_deref().is_some_and(|o| o != own) {
                    return Err(Failure::new(
                        codes::ADMIN_FORBIDDEN,
                        "admin credential is scoped to another tenant",
                    ));
                }
                new.org_id = Some(own.clone());
            }
            let created = apps::create_app(&gw.store, new, by, &now).map_err(app_error)?;
            let mut done = Done::data(json!({
                "app": created.app,
                "key": {"id": created.key.id, "name": created.key.name, "token_prefix": created.key.token_prefix, "created_at": created.key.created_at},
                "token": created.token,
            }));
            done.app_id = Some(created.app.id.clone());
            done.key_id = Some(created.key.id.clone());
            Ok(done)
        }
        Route::CreateKey(app_id) => {
            scoped_app(&app_id)?;
            let new: NewKey = if matches!(&inbound.body, Ok(b) if b.is_empty()) {
                NewKey::default()
            } else {
                json_body(inbound)?
            };
            let (key, token) = apps::create_key(&gw.store, &app_id, new, by, &now).map_err(app_error)?;
            let mut done = Done::data(json!({
                "key": new_key_json(&key),
                "token": token,
            }));
            done.app_id = Some(app_id);
            done.key_id = Some(key.id);
            Ok(done)
        }
        Route::RevokeApp(app_id) => {
            scoped_app(&app_id)?;
            let app = apps::revoke_app(&gw.store, &app_id, &now).map_err(app_error)?;
            tracing::info!(app_id = %app_id, by, "app and all its keys revoked");
            let mut done = Done::data(json!({"ok": true, "app": app}));
            done.app_id = Some(app_id);
            Ok(done)
        }
        Route::RevokeKey(key_id) => {
            let key = scoped_key(&key_id)?;
            gw.store.apps.revoke_key(&key_id, &now).map_err(|e| internal(&e))?;
            tracing::info!(key_id = %key_id, app_id = %key.app_id, by, "key revoked");
            let mut done = Done::data(json!({"ok": true, "key": {"id": key.id, "revoked_at": now}}));
            done.app_id = Some(key.app_id);
            done.key_id = Some(key_id);
            Ok(done)
        }
        Route::ListKeys(app_id) => {
            scoped_app(&app_id)?;
            let keys = gw.store.apps.keys_of_app(&app_id).map_err(|e| internal(&e))?;
            let mut done = Done::data(json!({"items": keys}));
            done.app_id = Some(app_id);
            Ok(done)
        }
        Route::RotateKey(key_id) => {
            let old = scoped_key(&key_id)?;
            let (key, token) = apps::rotate_key(&gw.store, &old, by, &now).map_err(app_error)?;
            tracing::info!(old_key_id = %old.id, key_id = %key.id, app_id = %old.app_id, by, "key rotated");
            let mut done = Done::data(json!({
                "key": new_key_json(&key),
                "token": token,
                "revoked": {"id": old.id, "revoked_at": now},
            }));
            done.details.insert("replaces".into(), old.id.clone().into());
            done.app_id = Some(old.app_id);
            done.key_id = Some(key.id);
            Ok(done)
        }
        Route::ListPlugins => {
            let catalog = gw.catalog();
            let items: Vec<Value> = catalog.plugins().map(|p| plugin_json(&catalog, p)).collect();
            Ok(Done::data(json!({"items": items})))
        }
        Route::RestoreApp(app_id) => {
            scoped_app(&app_id)?;
            let app = apps::restore_app(&gw.store, &app_id, &now).map_err(app_error)?;
            let mut done = Done::data(json!({"ok": true, "app": app}));
            done.app_id = Some(app_id);
            Ok(done)
        }
        Route::DeleteApp(app_id) => {
            scoped_app(&app_id)?;
            apps::delete_app(&gw.store, &app_id).map_err(app_error)?;
            let mut done = Done::data(json!({"ok": true, "app": {"id": app_id, "deleted": true}}));
            done.app_id = Some(app_id);
            Ok(done)
        }
        Route::SetTags(app_id) => {
            scoped_app(&app_id)?;
            let body: Value = json_body(inbound)?;
            let tags = apps::validate_tags(&body).map_err(app_error)?;
            let found = gw.store.apps.set_tags(&app_id, &tags, &now).map_err(|e| internal(&e))?;
            if !found {
                return Err(app_error(apps::AppError::NotFound(app_id)));
            }
            let mut done = Done::data(json!({"ok": true, "tags": tags}));
            done.details.insert("tags".into(), json!(tags));
            done.app_id = Some(app_id);
            Ok(done)
        }
        Route::UpdateApp(app_id) => {
            scoped_app(&app_id)?;
            let update: apps::AppUpdate = json_body(inbound)?;
            let fields = update.fields();
            let app = apps::update_app(&gw.store, &app_id, update, &now).map_err(app_error)?;
            let mut done = Done::data(apps::app_json(&gw.store, &app).map_err(|e| internal(&e))?);
            done.details.insert("fields".into(), json!(fields));
            done.details.insert("scopes".into(), json!(app.scopes));
            done.app_id = Some(app_id);
            Ok(done)
        }
        Route::PatchPolicy(app_id) => {
            scoped_app(&app_id)?;
            let body: Value = json_body(inbound)?;
            let policy = apps::validate_policy(&body).map_err(app_error)?;
            gw.store
                .apps
                .set_policy(&app_id, &policy, &now)
                .map_err(|e| internal(&e))?;
            let policy = serde_json::to_value(&policy).map_err(|e| internal(&e))?;
            let mut done = Done::data(json!({"ok": true, "policy": policy}));
            done.details.insert("policy".into(), policy);
            done.app_id = Some(app_id);
            Ok(done)
        }
        Route::AppTools(app_id) => {
            let app = scoped_app(&app_id)?;
            let items = crate::pipeline::visible_tools(
                gw,
                &app,
                crate::pipeline::Viewer {
                    key_id: "",
                    client_ip: inbound.peer,
                    channel: "rest",
                    actor: app.service_user_id.as_deref().unwrap_or(""),
                },
            );
            let mut done = Done::data(json!({"items": items}));
            done.app_id = Some(app_id);
            Ok(done)
        }
        Route::Policies => {
            let authz = gw.authorizer();
            Ok(Done::data(json!({
                "dir": gw.config.policies_dir.as_ref().map(|d| d.display().to_string()),
                "ids": authz.policy_ids(),
            })))
        }
        Route::ValidatePolicies => {
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Candidate {
                #[serde(default)]
                schema: Option<String>,
                policies: std::collections::BTreeMap<String, String>,
            }
            let body: Candidate = json_body(inbound)?;
            let schema = body.schema.unwrap_or_else(|| crate::authz::DEFAULT_SCHEMA.to_string());
            let files = body
                .policies
                .into_iter()
                .map(|(file, text)| crate::authz::PolicySource::new(file, text))
                .collect();
            // Against the tools loaded now: a candidate must name what the gateway serves.
            let catalog = gw.catalog();
            let tools: Vec<_> = catalog.tools().map(|t| t.vocabulary()).collect();
            match crate::authz::Authorizer::build(&schema, &tools, files) {
                Ok(authz) => Ok(Done::data(json!({"valid": true, "ids": authz.policy_ids()}))),
                Err(e) => Ok(Done::data(json!({"valid": false, "errors": e.to_string()}))),
            }
        }
        Route::AddPlugin => {
            let body: AddPlugin = json_body(inbound)?;
            let (manifest, component, source) = body.read()?;
            let name = manifest.name.clone();
            gw.add_plugin(manifest, &component, &source, body.optional, by)
                .await
                .map_err(|e| match e {
                    crate::gateway::StartError::Audit(e) => internal(&e),
                    crate::gateway::StartError::Store { .. } | crate::gateway::StartError::Stopping => internal(&e),
                    other => Failure::validation(&["manifest"], other.to_string()),
                })?;
            let catalog = gw.catalog();
            let plugin = catalog
                .plugins()
                .find(|p| p.name() == name)
                .map(|p| plugin_json(&catalog, p));
            Ok(Done::data(json!({"plugin": plugin})))
        }
        Route::LogLevel => Ok(Done::data(json!({"filter": crate::logging::filter()}))),
        Route::SetLogLevel => {
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct SetLevel {
                /// `tracing` directives, e.g. `info,openport::access=off` or `debug`.
                filter: String,
            }
            let body: SetLevel = json_body(inbound)?;
            crate::logging::set_filter(&body.filter).map_err(|m| Failure::validation(&["filter"], m))?;
            tracing::warn!(filter = %body.filter, by, "log filter changed");
            let mut done = Done::data(json!({"filter": body.filter}));
            done.details.insert("filter".into(), body.filter.into());
            Ok(done)
        }
        Route::PluginVersions(name) => {
            let versions = gw.store.plugins.versions(&name).map_err(|e| internal(&e))?;
            if versions.is_empty() {
                let message = if gw.catalog().plugins().any(|p| p.name() == name) {
                    "Plugin has no versions in the store: it is loaded from the config file's [[plugin]] list"
                } else {
                    "Plugin not found"
                };
                return Err(Failure::new(codes::NOT_FOUND, message));
            }
            Ok(Done::data(json!({"items": versions})))
        }
        Route::RollbackPlugin(name) => {
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Rollback {
                /// A version string or the start of a version id; default: the previous one.
                #[serde(default)]
                to: Option<String>,
            }
            let body: Rollback = if matches!(&inbound.body, Ok(b) if b.is_empty()) {
                Rollback { to: None }
            } else {
                json_body(inbound)?
            };
            let active = gw
                .rollback_plugin(&name, body.to.as_deref(), by)
                .await
                .map_err(|e| match e {
                    crate::gateway::RollbackError::NotFound(m) => Failure::new(codes::NOT_FOUND, m),
                    crate::gateway::RollbackError::Invalid(m) => Failure::validation(&["to"], m),
                    crate::gateway::RollbackError::Store(m) => internal(&m),
                })?;
            let mut done = Done::data(json!({"active": active}));
            done.details.insert("version".into(), active.version.clone().into());
            Ok(done)
        }
        Route::RemovePlugin(name) => {
            let removed = gw.remove_plugin(&name, by).await.map_err(|e| match e {
                // A policy names one of its tools: remove the policy first.
                e @ crate::gateway::StartError::BreaksPolicies { .. } => Failure::validation(&["name"], e.to_string()),
                other => internal(&other),
            })?;
            if !removed {
                return Err(Failure::new(codes::NOT_FOUND, "Plugin not found"));
            }
            gw.store.plugins.forget(&name).map_err(|e| internal(&e))?;
            gw.publish_change();
            Ok(Done::data(
                json!({"ok": true, "plugin": {"name": name, "removed": true}}),
            ))
        }
        Route::AutoExecute(app_id) => {
            let app = scoped_app(&app_id)?;
            let body: Value = json_body(inbound)?;
            let merged = apps::merge_auto_execute(&app.auto_execute, &body).map_err(app_error)?;
            gw.store
                .apps
                .set_auto_execute(&app_id, &merged, &now)
                .map_err(|e| internal(&e))?;
            let merged = serde_json::to_value(&merged).map_err(|e| internal(&e))?;
            let mut done = Done::data(json!({"ok": true, "auto_execute": merged}));
            done.details.insert("auto_execute".into(), merged);
            done.app_id = Some(app_id);
            Ok(done)
        }
        Route::ResolveExecution(id) => {
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Resolve {
                /// What the operator found: `success` or `failed`.
                outcome: String,
                note: String,
            }
            let body: Resolve = json_body(inbound)?;
            let outcome = match body.outcome.as_str() {
                "success" => ExecutionStatus::Success,
                "failed" => ExecutionStatus::Failed,
                _ => {
                    return Err(Failure::validation(
                        &["outcome"],
                        "`outcome` must be `success` or `failed`",
                    ));
                }
            };
            if body.note.trim().is_empty() {
                return Err(Failure::validation(&["note"], "say what you checked in `note`"));
            }
            let resolved = gw
                .store
                .drafts
                .resolve_execution(&id, outcome, &format!("resolved by {by}: {}", body.note))
                .map_err(|e| internal(&e))?
                .ok_or_else(|| Failure::new(codes::NOT_FOUND, "No indeterminate execution with this id"))?;
            if outcome == ExecutionStatus::Failed {
                let _ = gw.store.drafts.transition(
                    &resolved.draft_id,
                    DraftStatus::Confirmed,
                    DraftStatus::Failed,
                    None,
                    &now,
                );
            }
            let mut done = Done::data(json!({"ok": true, "execution": resolved}));
            done.details.insert("outcome".into(), body.outcome.into());
            done.app_id = Some(resolved.app_id.clone());
            Ok(done)
        }
        Route::ListDrafts => {
            let query = query_map(inbound.query.as_deref());
            // `minAgeSeconds` / `maxAgeSeconds`: drafts at least / at most that old.
            let age = |key: &str| -> Result<Option<String>, Failure> {
                query
                    .get(key)
                    .map(|v| {
                        v.parse::<i64>()
                            .ok()
                            .filter(|s| (0..=10 * 365 * 86_400).contains(s))
                            .map(|s| crate::clock::iso(gw.clock.now() - time::Duration::seconds(s)))
                            .ok_or_else(|| Failure::validation(&[key], format!("`{key}` must be whole seconds")))
                    })
                    .transpose()
            };
            let filter = crate::store::DraftFilter {
                org_id: principal.org_id.as_deref(),
                app_id: query.get("appId").map(String::as_str),
                status: query
                    .get("status")
                    .map(|s| {
                        s.parse::<DraftStatus>().map_err(|()| {
                            Failure::validation(
                                &["status"],
                                "`status` must be draft, confirmed, canceled, expired, stale or failed",
                            )
                        })
                    })
                    .transpose()?,
                risk: query.get("risk").map(String::as_str),
                created_before: age("minAgeSeconds")?,
                created_after: age("maxAgeSeconds")?,
                limit: query.get("limit").and_then(|l| l.parse().ok()).unwrap_or(100).min(1000),
            };
            let drafts = gw.store.drafts.list(&filter).map_err(|e| internal(&e))?;
            let items: Vec<Value> = drafts.iter().map(crate::writes::public_draft).collect();
            Ok(Done::data(json!({"items": items})))
        }
        Route::Draft(id) => {
            let reviewer = reviewer(&principal, &inbound.request_id);
            let draft = crate::writes::review::visible_draft(gw, &reviewer, &id).map_err(|r| r.failure)?;
            let execution = gw.store.drafts.latest_execution(&id).map_err(|e| internal(&e))?;
            let mut done = Done::data(json!({"draft": crate::writes::public_draft(&draft), "execution": execution}));
            done.app_id = Some(draft.app_id);
            Ok(done)
        }
        Route::ApproveDraft(ref id) | Route::RejectDraft(ref id) => {
            let id = id.clone();
            #[derive(serde::Deserialize, Default)]
            #[serde(deny_unknown_fields)]
            struct Review {
                #[serde(default)]
                note: Option<String>,
                #[serde(default, rename = "impactHash")]
                impact_hash: Option<String>,
            }
            let body: Review = if matches!(&inbound.body, Ok(b) if b.is_empty()) {
                Review::default()
            } else {
                json_body(inbound)?
            };
            let reviewer = reviewer(&principal, &inbound.request_id);
            let approving = matches!(route, Route::ApproveDraft(_));
            let result = if approving {
                crate::writes::review::approve(gw, &reviewer, &id, body.impact_hash.as_deref()).await
            } else {
                crate::writes::review::reject(gw, &reviewer, &id).await
            };
            match result {
                Ok(data) => {
                    let mut done = Done::data(data);
                    if let Some(note) = body.note {
                        done.details
                            .insert("note".into(), note.chars().take(2000).collect::<String>().into());
                    }
                    Ok(done)
                }
                Err(refused) => {
                    if let Some(detail) = &refused.internal {
                        tracing::warn!(request_id = %inbound.request_id, error = %detail, "review failed");
                    }
                    Err(refused.failure)
                }
            }
        }
        Route::StepUp(preflight_id) => {
            let request: crate::writes::step_up::StepUpRequest = if matches!(&inbound.body, Ok(b) if b.is_empty()) {
                Default::default()
            } else {
                json_body(inbound)?
            };
            let (data, app_id) =
                crate::writes::step_up::issue(gw, &preflight_id, request, by, principal.org_id.as_deref())?;
            let mut done = Done::data(data);
            done.details.insert("preflightId".into(), preflight_id.into());
            done.app_id = Some(app_id);
            Ok(done)
        }
        Route::ExportAudit => {
            let query = query_map(inbound.query.as_deref());
            let mut filter = audit_filter(&principal, &query, gw.clock.now())?;
            filter.ascending = true;
            filter.limit = 5_000;
            let mut lines = String::new();
            let mut count = 0_u64;
            // Bounded: one export answers at most 100,000 events; `since` pages further.
            while count < 100_000 {
                let rows = gw.store.audit.query(&filter).map_err(|e| internal(&e))?;
                let Some(last) = rows.last() else { break };
                filter.after_seq = Some(last.seq);
                for row in &rows {
                    lines.push_str(&serde_json::to_string(row).unwrap_or_default());
                    lines.push('\n');
                    count += 1;
                }
            }
            let mut done = Done {
                text: Some(("application/x-ndjson", lines)),
                ..Done::data(Value::Null)
            };
            done.details.insert("exported".into(), count.into());
            Ok(done)
        }
        Route::PruneAudit => {
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Prune {
                before: String,
            }
            let body: Prune = json_body(inbound)?;
            let Some(before) = crate::clock::parse_iso(&body.before) else {
                return Err(Failure::validation(
                    &["before"],
                    "`before` must be an RFC 3339 timestamp",
                ));
            };
            let days = gw.config.audit_min_retention_days;
            let newest_allowed = gw.clock.now() - time::Duration::days(i64::from(days));
            if before > newest_allowed {
                return Err(Failure::validation(
                    &["before"],
                    format!(
                        "`before` must be at least {days} days ago (audit.min_retention_days): events younger than that are never pruned"
                    ),
                ));
            }
            let report = gw
                .audit
                .prune(body.before, now.clone())
                .await
                .map_err(|e| internal(&e))?;
            Ok(Done::data(serde_json::to_value(report).unwrap_or(Value::Null)))
        }
        Route::Audit => {
            let query = query_map(inbound.query.as_deref());
            let filter = audit_filter(&principal, &query, gw.clock.now())?;
            let items = gw.store.audit.query(&filter).map_err(|e| internal(&e))?;
            Ok(Done::data(json!({"items": items})))
        }
        Route::Metrics => {
            let drafts = gw.store.drafts.count_by_status().map_err(|e| internal(&e))?;
            let plugins: Vec<(String, String, String)> = gw
                .catalog()
                .plugins()
                .map(|p| (p.name().to_string(), p.version().to_string(), p.digest().to_string()))
                .collect();
            let text = gw.metrics.render(&drafts, gw.admission.in_flight(), &plugins);
            Ok(Done {
                text: Some(("text/plain; version=0.0.4; charset=utf-8", text)),
                ..Done::data(Value::Null)
            })
        }
        Route::Reload => match gw.reload(by).await {
            Ok(summary) => Ok(Done::data(json!({"reloaded": true, "summary": summary}))),
            Err(e) => Err(Failure::validation(&[], e.to_string())),
        },
        Route::VerifyAudit => {
            let logs: Vec<_> = gw.config.audit_checkpoint_log.iter().cloned().collect();
            let (intact, report) = audit::verify_store(&gw.store, gw.config.audit_signing_key.as_deref(), &logs)
                .map_err(|e| internal(&e))?;
            let mut done = Done::data(report);
            done.details.insert("intact".into(), intact.into());
            Ok(done)
        }
    }
}

fn json_body<T: for<'de> serde::Deserialize<'de>>(inbound: &Inbound) -> Result<T, Failure> {
    let body = match &inbound.body {
        Ok(b) => b,
        Err(BodyError::TooLarge) => return Err(Failure::new(codes::REQUEST_TOO_LARGE, "Request body too large")),
        Err(BodyError::Unreadable) => return Err(Failure::validation(&[], "request body could not be read")),
    };
    let value = strict_json::parse(body).map_err(|e| Failure::validation(&[], format!("body is invalid: {e}")))?;
    serde_json::from_value(value).map_err(|e| Failure::validation(&[], format!("body is invalid: {e}")))
}

fn query_map(query: Option<&str>) -> std::collections::HashMap<String, String> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The audit filter of a query string; a tenant-scoped admin sees only its tenant.
/// `since` and `until` are RFC 3339 or relative (`-1h`), `code` a known reason code:
/// anything else is `400`, never a silently empty answer.
fn audit_filter(
    principal: &AdminPrincipal,
    query: &std::collections::HashMap<String, String>,
    now: time::OffsetDateTime,
) -> Result<AuditFilter, Failure> {
    let bound = |name: &str| {
        query
            .get(name)
            .map(|t| crate::clock::parse_time_bound(t, now))
            .transpose()
            .map_err(|message| Failure::validation(&[], message))
    };
    if let Some(code) = query.get("code")
        && codes::by_name(code).is_none()
    {
        return Err(Failure::validation(
            &[],
            format!("no reason code `{code}` (docs/reason-codes.md)"),
        ));
    }
    Ok(AuditFilter {
        org_id: principal.org_id.clone().or_else(|| query.get("orgId").cloned()),
        app_id: query.get("appId").cloned(),
        tool: query.get("tool").cloned(),
        code: query.get("code").cloned(),
        request_id: query.get("requestId").cloned(),
        since: bound("since")?,
        until: bound("until")?,
        after_seq: None,
        limit: query.get("limit").and_then(|l| l.parse().ok()).unwrap_or(100).min(1000),
        ascending: false,
    })
}

/// `POST /plugins`: a manifest on the gateway's host (the component beside it), or an
/// upload of the manifest's text, the component (base64) and the policy files it names.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AddPlugin {
    /// Absolute path of a plugin manifest on the gateway's host.
    #[serde(default)]
    manifest: Option<String>,
    #[serde(default)]
    upload: Option<Upload>,
    /// The gateway is ready without this plugin when it fails to load at start.
    #[serde(default)]
    optional: bool,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Upload {
    /// The manifest's TOML text.
    manifest: String,
    /// The component, base64.
    component: String,
    /// The policy files the manifest names: file name → text.
    #[serde(default)]
    policies: std::collections::BTreeMap<String, String>,
}

impl AddPlugin {
    /// The manifest, the component's bytes, and where they came from.
    fn read(&self) -> Result<(crate::plugin::PluginManifest, Vec<u8>, String), Failure> {
        let invalid = |m: String| Failure::validation(&["manifest"], m);
        match (&self.manifest, &self.upload) {
            (Some(path), None) => {
                let path = std::path::PathBuf::from(path);
                if !path.is_absolute() {
                    return Err(invalid(
                        "`manifest` must be an absolute path on the gateway's host".into(),
                    ));
                }
                let manifest = crate::plugin::PluginManifest::load(&path).map_err(|e| invalid(e.to_string()))?;
                let component = std::fs::read(&manifest.component)
                    .map_err(|e| invalid(format!("cannot read `{}`: {e}", manifest.component.display())))?;
                Ok((manifest, component, path.display().to_string()))
            }
            (None, Some(upload)) => {
                use base64::Engine as _;
                let component = base64::engine::general_purpose::STANDARD
                    .decode(&upload.component)
                    .map_err(|e| Failure::validation(&["upload", "component"], format!("not base64: {e}")))?;
                let manifest = crate::plugin::PluginManifest::parse(&upload.manifest, "upload")
                    .and_then(|m| m.with_policy_files(upload.policies.clone().into_iter().collect()))
                    .map_err(|e| invalid(e.to_string()))?;
                Ok((manifest, component, "upload".into()))
            }
            _ => Err(invalid(
                "give either `manifest` (a path on the gateway's host) or `upload`".into(),
            )),
        }
    }
}

/// A key just made, as its answer shows it (beside the token, shown once).
fn new_key_json(key: &crate::store::KeyRecord) -> Value {
    json!({"id": key.id, "name": key.name, "token_prefix": key.token_prefix, "created_at": key.created_at, "expires_at": key.expires_at})
}

/// A loaded plugin as the admin plane shows it.
fn plugin_json(catalog: &crate::catalog::Catalog, plugin: &crate::plugin::Plugin) -> Value {
    let tools: Vec<&str> = catalog
        .tools()
        .filter(|t| t.plugin.name() == plugin.name())
        .map(|t| t.name.as_str())
        .collect();
    let m = plugin.manifest();
    let world = m.world.as_str();
    json!({
        "name": plugin.name(),
        "version": plugin.version(),
        "world": world,
        "sha256": plugin.digest(),
        "tools": tools,
        // Every capability it holds; config values may be secrets, so only their names.
        "grants": {
            "log": m.grants.log,
            "clock": m.grants.clock,
            "kv": m.grants.kv,
            "kv_namespace": m.grants.kv_namespace,
            "http": m.grants.http,
            "config": m.grants.config.keys().collect::<Vec<_>>(),
        },
        "limits": {
            "timeout_ms": m.limits.timeout_ms,
            "memory_mib": m.limits.memory_mib,
            "max_output_bytes": m.limits.max_output_bytes,
            "concurrency": m.limits.concurrency,
        },
    })
}

fn reviewer<'a>(principal: &'a AdminPrincipal, request_id: &'a str) -> crate::writes::review::Reviewer<'a> {
    crate::writes::review::Reviewer {
        name: &principal.name,
        org_id: principal.org_id.as_deref(),
        request_id,
    }
}
