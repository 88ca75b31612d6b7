package app

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"
)

// The column lists name every column: clickhouse-go batch inserts must, so a
// column added by a later migration cannot shift values (DESIGN §7).
const (
	attemptColumns = "day, started_at, started_at_us, attempt_id, delivery_id, tenant_id, endpoint_id, " +
		"event_id, event_type, attempt_number, outcome, status_code, latency_us, url, response_excerpt, " +
		"error, trace_id, origin, next_attempt_at_ms"
	eventColumns = "day, received_at, received_at_ms, tenant_id, event_id, event_type, source, data, " +
		"fanout_count, endpoint_ids, trace_id"
)

// attemptRow decodes one sluice.attempts record into the values of
// attemptColumns, in order.
func attemptRow(value []byte) ([]any, error) {
	var a sluicev1.Attempt
	if err := proto.Unmarshal(value, &a); err != nil {
		return nil, fmt.Errorf("decoding attempt: %w", err)
	}
	if a.SchemaVersion != sluicev1.SchemaVersion {
		return nil, fmt.Errorf("attempt of unknown schema version %d", a.SchemaVersion)
	}
	started := time.UnixMicro(a.StartedAtUs).UTC()
	status := a.StatusCode
	if status > 999 {
		status = 0
	}
	return []any{
		started, started, a.StartedAtUs, a.AttemptId, a.DeliveryId, a.TenantId, a.EndpointId,
		a.EventId, a.EventType, a.AttemptNumber, a.Outcome.Label(), uint16(status), a.LatencyUs, a.Url,
		string(a.ResponseExcerpt), a.Error, a.TraceId, a.Origin.Label(), a.NextAttemptAtMs,
	}, nil
}

// eventRow decodes one sluice.eventlog record into the values of
// eventColumns, in order.
func eventRow(value []byte) ([]any, error) {
	var e sluicev1.EventLogEntry
	if err := proto.Unmarshal(value, &e); err != nil {
		return nil, fmt.Errorf("decoding event log entry: %w", err)
	}
	if e.SchemaVersion != sluicev1.SchemaVersion {
		return nil, fmt.Errorf("event log entry of unknown schema version %d", e.SchemaVersion)
	}
	received := time.UnixMilli(e.ReceivedAtMs).UTC()
	ids := e.EndpointIds
	if ids == nil {
		ids = []string{}
	}
	return []any{
		received, received, e.ReceivedAtMs, e.TenantId, e.EventId, e.Type, e.Source.Label(),
		string(e.Data), e.FanoutCount, ids, e.TraceId,
	}, nil
}
