-- Who canceled a draft: the reviewer who rejected it, or `agent` when the agent that
-- proposed it withdrew it (MCP tasks/cancel). NULL for drafts canceled before this column.
ALTER TABLE drafts ADD COLUMN canceled_by TEXT;
