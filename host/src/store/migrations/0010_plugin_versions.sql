-- Every plugin version ever added, kept in the store: it is the one source of truth for
-- what a plugin is, so a component rebuilt in place on disk changes nothing, a version can
-- be uploaded from anywhere, and any kept version can be rolled back to.
CREATE TABLE plugin_versions (
    id         TEXT PRIMARY KEY,   -- sha256 of the component's digest and the manifest text
    name       TEXT NOT NULL,
    version    TEXT NOT NULL,
    digest     TEXT NOT NULL,      -- sha256 of the component
    manifest   TEXT NOT NULL,      -- the manifest's TOML, as added
    policies   TEXT NOT NULL,      -- JSON [[file, text], ...]: the policy files it ships
    component  BLOB NOT NULL,
    added_at   TEXT NOT NULL,
    added_by   TEXT NOT NULL
);
CREATE INDEX plugin_versions_by_name ON plugin_versions (name, added_at);

-- The active version of each plugin (NULL: a row from before, loaded from its manifest path),
-- and whether the gateway is ready without it.
ALTER TABLE plugins ADD COLUMN version_id TEXT REFERENCES plugin_versions (id);
ALTER TABLE plugins ADD COLUMN optional INTEGER NOT NULL DEFAULT 0;
