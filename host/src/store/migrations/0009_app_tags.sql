-- Operator-set app tags (`department`, `environment`, ...), a JSON object of strings,
-- which Cedar policies see as the app's entity tags.
ALTER TABLE apps ADD COLUMN tags TEXT NOT NULL DEFAULT '{}';
