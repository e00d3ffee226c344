-- One hash chain per gateway node (several nodes share a PostgreSQL store; the embedded
-- store has one process, whose node is '').
ALTER TABLE audit_events ADD COLUMN node TEXT NOT NULL DEFAULT '';
ALTER TABLE audit_checkpoints ADD COLUMN node TEXT NOT NULL DEFAULT '';
ALTER TABLE audit_signed_checkpoints ADD COLUMN node TEXT NOT NULL DEFAULT '';

-- Gateway processes sharing the store, and when each was last seen alive: recovery takes
-- over only what a process that stopped beating left behind.
CREATE TABLE nodes (
    instance_id TEXT PRIMARY KEY,
    node        TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    seen_at     TEXT NOT NULL
);

-- Sessions (MCP sessions, reviewer sign-ins) when several nodes share the store, so any
-- node continues a session another began. Ids are kept as their sha256 only.
CREATE TABLE sessions (
    kind         TEXT NOT NULL,
    id_hash      TEXT NOT NULL,
    value        TEXT NOT NULL,
    opened_ms    INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    PRIMARY KEY (kind, id_hash)
);
