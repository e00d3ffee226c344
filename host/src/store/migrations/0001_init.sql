-- Apps (integrations), their keys, and the admin plane's credentials.
CREATE TABLE apps (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    description     TEXT,
    scope           TEXT NOT NULL CHECK (scope IN ('personal', 'workspace')),
    org_id          TEXT,
    user_id         TEXT,
    service_user_id TEXT,
    scopes          TEXT NOT NULL,              -- JSON array of strings
    status          TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
    policy          TEXT NOT NULL DEFAULT '{}', -- JSON: {network, data}
    auto_execute    TEXT NOT NULL DEFAULT '{}', -- JSON: {writes, high_risk}
    created_by      TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);

CREATE TABLE keys (
    id           TEXT PRIMARY KEY,
    app_id       TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    token_prefix TEXT NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,          -- hex sha256 of the token; the token is never stored
    last_used_at TEXT,
    expires_at   TEXT,
    revoked_at   TEXT,
    created_by   TEXT,
    created_at   TEXT NOT NULL
);
CREATE INDEX keys_by_prefix ON keys(token_prefix);

CREATE TABLE admin_tokens (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    role         TEXT NOT NULL CHECK (role IN ('operator', 'reviewer', 'auditor')),
    org_id       TEXT,                          -- NULL: every tenant
    token_prefix TEXT NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,
    revoked_at   TEXT,
    created_at   TEXT NOT NULL
);
CREATE INDEX admin_tokens_by_prefix ON admin_tokens(token_prefix);

-- The key-value namespace plugins get through the `kv` capability, per plugin and tenant.
CREATE TABLE plugin_kv (
    plugin TEXT NOT NULL,
    tenant TEXT NOT NULL,
    key    TEXT NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (plugin, tenant, key)
) WITHOUT ROWID;

-- Proposed writes.
CREATE TABLE drafts (
    id                    TEXT PRIMARY KEY,
    app_id                TEXT NOT NULL,
    key_id                TEXT NOT NULL,
    org_id                TEXT NOT NULL,
    actor_user_id         TEXT NOT NULL,
    action_type           TEXT NOT NULL,
    payload               TEXT NOT NULL,        -- JSON object
    status                TEXT NOT NULL CHECK (status IN ('draft', 'confirmed', 'canceled', 'failed', 'expired', 'stale')),
    risk                  TEXT NOT NULL,
    requires_confirmation INTEGER NOT NULL,
    auto_execute_requested INTEGER NOT NULL,
    justification         TEXT,
    idempotency_key       TEXT,
    request_id            TEXT NOT NULL,
    impact                TEXT,                 -- JSON object from the adapter's plan
    impact_hash           TEXT,
    preflight_hash        TEXT,
    preflight_state_witness_hash TEXT,
    plugin                TEXT NOT NULL,
    plugin_digest         TEXT NOT NULL,
    created_at            TEXT NOT NULL,
    updated_at            TEXT NOT NULL,
    expires_at            TEXT NOT NULL,
    confirmed_at          TEXT,
    canceled_at           TEXT,
    confirmed_by_user_id  TEXT
);
CREATE INDEX drafts_by_app ON drafts(app_id, status);

-- Impact computations bound to app, key and actor (10-minute TTL).
CREATE TABLE preflights (
    id                 TEXT PRIMARY KEY,
    app_id             TEXT NOT NULL,
    key_id             TEXT NOT NULL,
    actor_user_id      TEXT NOT NULL,
    action             TEXT NOT NULL,
    payload            TEXT NOT NULL,           -- JSON object
    impact             TEXT NOT NULL,           -- JSON object
    impact_hash        TEXT NOT NULL,
    state_witness      TEXT,
    state_witness_hash TEXT,
    plugin_digest      TEXT NOT NULL,
    created_at         TEXT NOT NULL,
    expires_at         TEXT NOT NULL
);

-- The audit trail: append-only, hash-chained (SPEC section 8).
CREATE TABLE audit_events (
    seq                  INTEGER PRIMARY KEY,
    id                   TEXT NOT NULL,          -- a ULID: unique by construction
    org_id               TEXT,
    app_id               TEXT,
    key_id               TEXT,
    actor_user_id        TEXT,
    performed_by_user_id TEXT,
    action               TEXT NOT NULL,
    status               TEXT NOT NULL CHECK (status IN ('success', 'failed', 'denied')),
    code                 TEXT NOT NULL,
    request_id           TEXT,
    draft_id             TEXT,
    execution_id         TEXT,
    ip                   TEXT,
    user_agent           TEXT,
    details              TEXT NOT NULL,         -- JSON object
    tool                 TEXT,
    risk                 TEXT,
    policy_ids           TEXT NOT NULL,         -- JSON array
    plugin               TEXT,
    plugin_digest        TEXT,
    latency_us           INTEGER,
    created_at           TEXT NOT NULL,
    prev_event_hash      TEXT NOT NULL,
    event_hash           TEXT NOT NULL
);
CREATE INDEX audit_by_time ON audit_events(created_at);

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
