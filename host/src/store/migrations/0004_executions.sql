-- Runs of a draft's action: at most one successful execution per draft. A run is recorded
-- as `running` before the plugin is called; a gateway that finds `running` rows of another
-- instance at start marks them `indeterminate`, never re-running them.
CREATE TABLE executions (
    id              TEXT PRIMARY KEY,
    draft_id        TEXT NOT NULL REFERENCES drafts(id),
    app_id          TEXT NOT NULL,
    idempotency_key TEXT,
    status          TEXT NOT NULL CHECK (status IN ('running', 'success', 'failed', 'indeterminate')),
    result          TEXT,              -- JSON
    error           TEXT,
    instance_id     TEXT NOT NULL,     -- the gateway process that ran it
    created_at      TEXT NOT NULL
);
CREATE INDEX executions_by_draft ON executions(draft_id, created_at);
CREATE INDEX executions_running ON executions(status) WHERE status = 'running';
