-- The W3C trace id (32 lowercase hex) of each event's trace, as attempts
-- already have it: an event's row and its attempts' rows share it, and the
-- receiver's traces join on it. '' for events without a trace, and for the
-- rows written before this column. ClickHouse 18.16 has no ADD COLUMN IF
-- NOT EXISTS, so Migrate skips this statement when the column is there.
ALTER TABLE {db}.events ADD COLUMN trace_id String DEFAULT '';
