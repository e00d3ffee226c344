-- Runs of a draft's action: at most one successful execution per draft.
CREATE TABLE executions (
    id              TEXT PRIMARY KEY,
    draft_id        TEXT NOT NULL REFERENCES drafts(id),
    app_id          TEXT NOT NULL,
    idempotency_key TEXT,
    status          TEXT NOT NULL CHECK (status IN ('success', 'failed')),
    result          TEXT,              -- JSON
    error           TEXT,
    created_at      TEXT NOT NULL
);
CREATE INDEX executions_by_draft ON executions(draft_id, created_at);
