-- Step-up grants (SPEC 6): a reviewer's short-lived, single-use permission for one
-- high-risk auto-execution, bound to one preflight of one app. Only the token's sha256 is
-- stored.
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
