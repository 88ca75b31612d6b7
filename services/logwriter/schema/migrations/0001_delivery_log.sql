-- The delivery log (DESIGN §7). Portable to ClickHouse 18.16 and current
-- releases: no TTL, DateTime64, LowCardinality, Map or toStartOfInterval.
-- Sub-second times are integer microseconds/milliseconds beside a DateTime.
-- Partitioned by day so retention drops whole partitions.

-- One row per HTTP attempt or non-HTTP outcome. attempt_id is made once per
-- attempt by the sender, so a record the logwriter inserts twice (after a
-- crash before its commit) has the same sorting key and collapses.
CREATE TABLE IF NOT EXISTS {db}.attempts (
    day Date,
    started_at DateTime,
    started_at_us Int64,
    attempt_id String,
    delivery_id String,
    tenant_id String,
    endpoint_id String,
    event_id String,
    event_type String,
    attempt_number UInt32,
    outcome String,
    status_code UInt16,
    latency_us Int64,
    url String,
    response_excerpt String,
    error String,
    trace_id String,
    origin String,
    next_attempt_at_ms Int64
) ENGINE = ReplacingMergeTree()
PARTITION BY day
ORDER BY (tenant_id, endpoint_id, started_at, attempt_id);

-- One row per accepted event, payload included for replay. Event ids are
-- time-ordered, so (tenant_id, event_id) serves lookups by id and, with the
-- day partitions, scans by time.
CREATE TABLE IF NOT EXISTS {db}.events (
    day Date,
    received_at DateTime,
    received_at_ms Int64,
    tenant_id String,
    event_id String,
    event_type String,
    source String,
    data String,
    fanout_count UInt32,
    endpoint_ids Array(String)
) ENGINE = ReplacingMergeTree()
PARTITION BY day
ORDER BY (tenant_id, event_id);
