-- The PostgreSQL schema: the SQLite migrations 0001 - 0012 in one, in PostgreSQL's types.
-- Integers are BIGINT (the store binds i64), flags BOOLEAN, JSON stays TEXT as in SQLite
-- (the store parses it; the database never looks inside), the component BYTEA.

CREATE TABLE apps (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    description     TEXT,
    scope           TEXT NOT NULL CHECK (scope IN ('personal', 'workspace')),
    org_id          TEXT,
    user_id         TEXT,
    service_user_id TEXT,
    scopes          TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
    policy          TEXT NOT NULL DEFAULT '{}',
    auto_execute    TEXT NOT NULL DEFAULT '{}',
    created_by      TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    tags            TEXT NOT NULL DEFAULT '{}'
);

CREATE TABLE keys (
    id           TEXT PRIMARY KEY,
    app_id       TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    token_prefix TEXT NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,
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
    org_id       TEXT,
    token_prefix TEXT NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,
    revoked_at   TEXT,
    created_at   TEXT NOT NULL
);
CREATE INDEX admin_tokens_by_prefix ON admin_tokens(token_prefix);

-- Keys compare bytewise ("C"), as SQLite's BINARY collation does: prefix ranges depend on it.
CREATE TABLE plugin_kv (
    plugin  TEXT NOT NULL,
    tenant  TEXT NOT NULL,
    key     TEXT COLLATE "C" NOT NULL,
    value   TEXT NOT NULL,
    version BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (plugin, tenant, key)
);

CREATE TABLE kv_versions (
    id   BIGINT PRIMARY KEY CHECK (id = 1),
    last BIGINT NOT NULL
);
INSERT INTO kv_versions (id, last) VALUES (1, 0);

CREATE TABLE drafts (
    id                    TEXT PRIMARY KEY,
    app_id                TEXT NOT NULL,
    key_id                TEXT NOT NULL,
    org_id                TEXT NOT NULL,
    actor_user_id         TEXT NOT NULL,
    action_type           TEXT NOT NULL,
    payload               TEXT NOT NULL,
    status                TEXT NOT NULL CHECK (status IN ('draft', 'confirmed', 'canceled', 'failed', 'expired', 'stale')),
    risk                  TEXT NOT NULL,
    requires_confirmation BOOLEAN NOT NULL,
    auto_execute_requested BOOLEAN NOT NULL,
    justification         TEXT,
    idempotency_key       TEXT,
    request_id            TEXT NOT NULL,
    impact                TEXT,
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
    confirmed_by_user_id  TEXT,
    canceled_by           TEXT
);
CREATE INDEX drafts_by_app ON drafts(app_id, status);

CREATE TABLE preflights (
    id                 TEXT PRIMARY KEY,
    app_id             TEXT NOT NULL,
    key_id             TEXT NOT NULL,
    actor_user_id      TEXT NOT NULL,
    action             TEXT NOT NULL,
    payload            TEXT NOT NULL,
    impact             TEXT NOT NULL,
    impact_hash        TEXT NOT NULL,
    state_witness      TEXT,
    state_witness_hash TEXT,
    plugin_digest      TEXT NOT NULL,
    created_at         TEXT NOT NULL,
    expires_at         TEXT NOT NULL
);

-- One hash chain per node: `node` names the gateway process that wrote the event, and
-- each node's events chain in `seq` order.
CREATE TABLE audit_events (
    seq                  BIGSERIAL PRIMARY KEY,
    node                 TEXT NOT NULL DEFAULT '',
    id                   TEXT NOT NULL,
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
    details              TEXT NOT NULL,
    tool                 TEXT,
    risk                 TEXT,
    policy_ids           TEXT NOT NULL,
    plugin               TEXT,
    plugin_digest        TEXT,
    latency_us           BIGINT,
    created_at           TEXT NOT NULL,
    prev_event_hash      TEXT NOT NULL,
    event_hash           TEXT NOT NULL
);
CREATE INDEX audit_by_time ON audit_events(created_at);
CREATE INDEX audit_by_node ON audit_events(node, seq);

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE audit_checkpoints (
    upto_seq   BIGINT PRIMARY KEY,
    node       TEXT NOT NULL DEFAULT '',
    upto_hash  TEXT NOT NULL,
    removed    BIGINT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE audit_signed_checkpoints (
    seq         BIGINT PRIMARY KEY,
    node        TEXT NOT NULL DEFAULT '',
    head_hash   TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    signature   TEXT NOT NULL
);

CREATE TABLE plugin_versions (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    version    TEXT NOT NULL,
    digest     TEXT NOT NULL,
    manifest   TEXT NOT NULL,
    policies   TEXT NOT NULL,
    component  BYTEA NOT NULL,
    added_at   TEXT NOT NULL,
    added_by   TEXT NOT NULL,
    added_seq  BIGSERIAL
);
CREATE INDEX plugin_versions_by_name ON plugin_versions (name, added_at);

CREATE TABLE plugins (
    name       TEXT PRIMARY KEY,
    manifest   TEXT NOT NULL,
    loaded_at  TEXT NOT NULL,
    version_id TEXT REFERENCES plugin_versions (id),
    optional   BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE TABLE executions (
    id              TEXT PRIMARY KEY,
    draft_id        TEXT NOT NULL REFERENCES drafts(id),
    app_id          TEXT NOT NULL,
    idempotency_key TEXT,
    status          TEXT NOT NULL CHECK (status IN ('running', 'success', 'failed', 'indeterminate')),
    result          TEXT,
    error           TEXT,
    instance_id     TEXT NOT NULL,
    created_at      TEXT NOT NULL
);
CREATE INDEX executions_by_draft ON executions(draft_id, created_at);
CREATE INDEX executions_running ON executions(status) WHERE status = 'running';

CREATE TABLE idempotency (
    app_id      TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    idem_key    TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    draft_id    TEXT,
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    PRIMARY KEY (app_id, key_id, idem_key)
);

CREATE TABLE step_up_grants (
    id           TEXT PRIMARY KEY,
    token_hash   TEXT NOT NULL UNIQUE,
    preflight_id TEXT NOT NULL,
    app_id       TEXT NOT NULL,
    issued_by    TEXT NOT NULL,
    note         TEXT,
    created_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    used_at      TEXT
);

CREATE TABLE tasks (
    id TEXT PRIMARY KEY,
    org_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    actor_user_id TEXT NOT NULL,
    tool TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('working', 'input_required', 'completed', 'failed', 'cancelled')),
    input_requests TEXT,
    input_responses TEXT,
    input_state TEXT,
    outcome TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE INDEX tasks_expires_at ON tasks (expires_at);

CREATE TABLE nodes (
    instance_id TEXT PRIMARY KEY,
    node        TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    seen_at     TEXT NOT NULL
);

CREATE TABLE sessions (
    kind         TEXT NOT NULL,
    id_hash      TEXT NOT NULL,
    value        TEXT NOT NULL,
    opened_ms    BIGINT NOT NULL,
    last_seen_ms BIGINT NOT NULL,
    PRIMARY KEY (kind, id_hash)
);
