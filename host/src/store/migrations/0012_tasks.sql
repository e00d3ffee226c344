-- Reads that finish in the background (MCP Tasks extension). A task belongs to the agent
-- key that started it; `payload` is kept to run the tool again once the client answers
-- the input it asked for. `outcome` is the result or the error, once terminal.
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
