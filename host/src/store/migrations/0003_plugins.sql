-- Plugins loaded through the admin plane, reloaded at start (after the config's own).
CREATE TABLE plugins (
    name       TEXT PRIMARY KEY,
    manifest   TEXT NOT NULL,     -- absolute path of the plugin manifest
    loaded_at  TEXT NOT NULL
);
