-- How many times an execution's plugin call was started (SQLite migration 0014): a resumable
-- write a dead node left running is run again with the same execution id, a bounded number of
-- times.
ALTER TABLE executions ADD COLUMN attempts BIGINT NOT NULL DEFAULT 1;
