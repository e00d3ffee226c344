-- How many times an execution's plugin call was started. A write whose plugin records its
-- effects under the execution id (`resumable` in its manifest) is run again with the same id
-- when the process running it died; the count bounds those attempts.
ALTER TABLE executions ADD COLUMN attempts INTEGER NOT NULL DEFAULT 1;
