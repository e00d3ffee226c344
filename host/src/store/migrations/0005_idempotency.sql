-- Idempotency keys of /actions, per app and key: the request's fingerprint and the draft it
-- produced. `draft_id` is NULL while the first request still runs.
CREATE TABLE idempotency (
    app_id      TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    idem_key    TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    draft_id    TEXT,
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    PRIMARY KEY (app_id, key_id, idem_key)
) WITHOUT ROWID;
