-- Versioned plugin key-value entries: every write takes the next value of one counter that
-- never goes back, so a compare-and-set cannot mistake a key deleted and written again for
-- the one it read. Entries written before this migration are at version 0.
ALTER TABLE plugin_kv ADD COLUMN version INTEGER NOT NULL DEFAULT 0;

CREATE TABLE kv_versions (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    last INTEGER NOT NULL
);
INSERT INTO kv_versions (id, last) VALUES (1, 0);
