//! The one registry of reason codes (SPEC section 3). Clients switch on these strings;
//! add codes, never rename one. `docs/reason-codes.md` is generated from [`ALL`].

/// A stable reason code with its HTTP status and whether a retry can succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Code {
    /// Which code this is, for exhaustive matches (the audit outcome class).
    pub reason: Reason,
    /// The wire string, e.g. `agent.scope_denied`.
    pub name: &'static str,
    /// The HTTP status the code is sent with.
    pub status: u16,
    /// Whether the same request may succeed later without change.
    pub retryable: bool,
    /// When the code is used, for the generated documentation.
    pub when: &'static str,
    /// `true` for codes of OpenPort v1; `false` for codes this project added.
    pub upstream: bool,
}

macro_rules! codes {
    ($($ident:ident / $reason:ident = ($name:literal, $status:literal, $retryable:literal, $upstream:literal, $when:literal);)*) => {
        /// Every reason code as an enum: a `match` over it without a wildcard arm must be
        /// revisited whenever a code is added.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            $(
                #[doc = $when]
                $reason,
            )*
        }

        $(
            #[doc = $when]
            pub const $ident: Code = Code {
                reason: Reason::$reason,
                name: $name,
                status: $status,
                retryable: $retryable,
                when: $when,
                upstream: $upstream,
            };
        )*
        /// Every code, in documentation order.
        pub const ALL: &[Code] = &[$($ident),*];
    };
}

codes! {
    SUCCESS / Success = ("common.success", 200, false, true, "every success");
    VALIDATION / Validation = ("common.validation", 400, false, true, "body or query fails validation (`details.issues`)");
    INTERNAL_ERROR / InternalError = ("common.internal_error", 500, true, true, "a bug; details go to the log and audit, never the client");
    TOKEN_INVALID / TokenInvalid = ("agent.token_invalid", 401, false, true, "missing, malformed, unknown or revoked token; app not active (one answer: no oracle)");
    TOKEN_EXPIRED / TokenExpired = ("agent.token_expired", 401, false, true, "key past `expires_at`");
    FORBIDDEN / Forbidden = ("agent.forbidden", 403, false, true, "app misconfigured (no actor or tenant)");
    SCOPE_DENIED / ScopeDenied = ("agent.scope_denied", 403, false, true, "a required scope is missing");
    POLICY_DENIED / PolicyDenied = ("agent.policy_denied", 403, false, true, "network policy, data policy, tenant boundary, or Cedar denied");
    ACTION_UNKNOWN / ActionUnknown = ("agent.action_unknown", 400, false, true, "unknown action name");
    ACTION_INVALID / ActionInvalid = ("agent.action_invalid", 400, false, true, "payload invalid for the action (also the auto-execute denial for a missing justification)");
    NOT_FOUND / NotFound = ("agent.not_found", 404, false, true, "a resource or route does not exist (or belongs to another tenant)");
    DRAFT_NOT_FOUND / DraftNotFound = ("agent.draft_not_found", 404, false, true, "unknown draft, or one of another app");
    DRAFT_ALREADY_FINAL / DraftAlreadyFinal = ("agent.draft_already_final", 400, false, true, "approve/reject/execute of a draft that is not pending");
    PREFLIGHT_REQUIRED / PreflightRequired = ("agent.preflight_required", 200, false, true, "high-risk auto-execute without `preflightHash` (falls back to a draft)");
    PREFLIGHT_MISMATCH / PreflightMismatch = ("agent.preflight_mismatch", 400, false, true, "`preflightId` for another action (400), or recomputed impact hash differs (draft fallback)");
    PREFLIGHT_NOT_FOUND / PreflightNotFound = ("agent.preflight_not_found", 400, false, true, "`preflightId` unknown, expired, or bound to another app, key or actor");
    PRECONDITION_FAILED / PreconditionFailed = ("agent.precondition_failed", 409, false, true, "State Witness mismatch (`details.reason`: `state_witness_mismatch` or `state_witness_unsupported`)");
    IDEMPOTENCY_REQUIRED / IdempotencyRequired = ("agent.idempotency_required", 200, false, true, "high-risk auto-execute without `idempotencyKey` (falls back to a draft)");
    IDEMPOTENCY_REPLAY / IdempotencyReplay = ("agent.idempotency_replay", 200, false, true, "repeat of an executed idempotency key: the stored execution, `replayed: true`");
    AUTO_EXECUTE_DISABLED / AutoExecuteDisabled = ("agent.auto_execute_disabled", 200, false, true, "auto-execute not enabled for this class (falls back to a draft)");
    AUTO_EXECUTE_DENIED / AutoExecuteDenied = ("agent.auto_execute_denied", 200, false, true, "action not in `allowed_actions`, or Cedar `auto_execute` denied (falls back to a draft)");
    AUTO_EXECUTE_EXPIRED / AutoExecuteExpired = ("agent.auto_execute_expired", 200, false, true, "the window's `expires_at` passed or is unparseable (falls back to a draft)");
    STEP_UP_REQUIRED / StepUpRequired = ("agent.step_up_required", 403, false, true, "high-risk auto-execute needs a step-up grant bound to the preflight");
    STEP_UP_INVALID / StepUpInvalid = ("agent.step_up_invalid", 403, false, true, "the step-up grant is unknown, expired, used, or bound to another preflight");
    RATE_LIMITED / RateLimited = ("agent.rate_limited", 429, true, true, "admission refused: a token bucket is empty (`Retry-After`)");
    IDEMPOTENCY_MISMATCH / IdempotencyMismatch = ("agent.idempotency_mismatch", 409, false, false, "same key reused with a different action or payload");
    IDEMPOTENCY_IN_PROGRESS / IdempotencyInProgress = ("agent.idempotency_in_progress", 409, true, false, "same key, first request still running (`Retry-After`)");
    EXECUTION_FAILED / ExecutionFailed = ("agent.execution_failed", 502, false, false, "the adapter failed; sanitized message, no internals");
    EXECUTION_INDETERMINATE / ExecutionIndeterminate = ("agent.execution_indeterminate", 500, false, false, "a crash left an execution's outcome unknown; never re-run automatically");
    QUOTA_EXCEEDED / QuotaExceeded = ("agent.quota_exceeded", 429, true, false, "a quota window is used up (`Retry-After` to its end)");
    CONCURRENCY_LIMITED / ConcurrencyLimited = ("agent.concurrency_limited", 429, true, false, "too many calls in flight for this key");
    OVERLOADED / Overloaded = ("agent.overloaded", 503, true, false, "the gateway sheds load (`Retry-After`)");
    REQUEST_TOO_LARGE / RequestTooLarge = ("agent.request_too_large", 413, false, false, "body or headers over the limit");
    PLUGIN_TIMEOUT / PluginTimeout = ("agent.plugin_timeout", 504, true, false, "an adapter or witness exceeded its time budget");
    PLUGIN_UNAVAILABLE / PluginUnavailable = ("agent.plugin_unavailable", 503, true, false, "no loaded plugin serves the tool");
    WITNESS_UNAVAILABLE / WitnessUnavailable = ("agent.witness_unavailable", 503, true, false, "a witness failed: fail closed, nothing executed");
    DRAFT_EXPIRED / DraftExpired = ("agent.draft_expired", 410, false, false, "a draft past its review window");
    INPUT_REQUIRED / InputRequired = ("agent.input_required", 400, false, false, "the tool asks the client for input it cannot give: the binding carries no input requests, or the client did not declare the capability (`details.missingCapabilities`)");
    REQUEST_STATE_INVALID / RequestStateInvalid = ("agent.request_state_invalid", 400, false, false, "an MCP `requestState` that was altered, expired, or issued to another credential, tool or arguments");
    ADMIN_UNAUTHORIZED / AdminUnauthorized = ("admin.unauthorized", 401, false, false, "admin plane credential missing or invalid");
    ADMIN_FORBIDDEN / AdminForbidden = ("admin.forbidden", 403, false, false, "admin credential's role lacks the right");
    ADMIN_CONFLICT / AdminConflict = ("admin.conflict", 409, false, false, "the change conflicts with what exists (an app name already used in the tenant)");
}

/// Looks a code up by its wire string.
pub fn by_name(name: &str) -> Option<Code> {
    ALL.iter().copied().find(|c| c.name == name)
}

/// Renders `docs/reason-codes.md`.
pub fn render_markdown() -> String {
    let mut out = String::from(
        "# Reason codes\n\n\
         Generated from `host/src/protocol/codes.rs` by `cargo test -p openport reason_codes_doc` \
         (set `BLESS=1` to rewrite). Do not edit by hand.\n\n\
         Clients switch on `code`; the message text is not part of the contract. A code that \
         falls back to a draft is sent inside a `200` response as `data.autoExecuteDeniedCode`.\n\n\
         | code | HTTP | retryable | origin | when |\n|---|---|---|---|---|\n",
    );
    for c in ALL {
        let origin = if c.upstream { "OpenPort v1" } else { "added" };
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} |\n",
            c.name,
            c.status,
            if c.retryable { "yes" } else { "no" },
            origin,
            c.when
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_namespaced() {
        let mut seen = std::collections::HashSet::new();
        for c in ALL {
            assert!(seen.insert(c.name), "duplicate code {}", c.name);
            assert!(
                c.name.starts_with("agent.") || c.name.starts_with("common.") || c.name.starts_with("admin."),
                "{} has no namespace",
                c.name
            );
            assert!((200..600).contains(&c.status));
        }
    }

    #[test]
    #[expect(clippy::disallowed_methods, reason = "BLESS=1 rewrites the generated document")]
    fn reason_codes_doc_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/reason-codes.md");
        let want = render_markdown();
        if std::env::var_os("BLESS").is_some() {
            std::fs::write(path, &want).expect("write docs/reason-codes.md");
        }
        let have = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            have == want,
            "docs/reason-codes.md is stale: run `BLESS=1 cargo test -p openport reason_codes_doc`"
        );
    }
}
