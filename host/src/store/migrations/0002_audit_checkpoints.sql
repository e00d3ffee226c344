-- Retention: where the chain was cut. The first remaining event links to `upto_hash`, and a
-- chained `audit.retention.checkpoint` event attests each cut.
CREATE TABLE audit_checkpoints (
    upto_seq   INTEGER PRIMARY KEY,
    upto_hash  TEXT NOT NULL,
    removed    INTEGER NOT NULL,
    created_at TEXT NOT NULL
);
