-- The W3C trace id (32 lowercase hex) of each event's trace, as attempts
-- already have it: an event's row and its attempts' rows share it, and the
-- receiver's traces join on it. '' for events without a trace, and for the
-- rows written before this column. Plain ADD COLUMN, which ClickHouse 18.16
-- (the dev stack) and current releases both run.
ALTER TABLE {db}.events ADD COLUMN IF NOT EXISTS trace_id String DEFAULT '';
