-- Signed checkpoints of the audit chain's head (position, head hash, time). They are also
-- appended to a log file outside the database; `openport audit verify` checks the chain
-- against both, so a truncation or a rehashed rewrite cannot go unnoticed.
CREATE TABLE audit_signed_checkpoints (
    seq         INTEGER PRIMARY KEY,
    head_hash   TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    signature   TEXT NOT NULL
);
