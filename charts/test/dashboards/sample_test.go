package dashboardtest

import (
	"context"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/sluicehq/sluice/pkg/testenv"
)

// The sample covers the dashboards' fixed range, one hour, with data in
// every panel: a healthy endpoint, a failing one whose deliveries retry and
// die, attempts that made no request, a second tenant, and two event types.
var (
	rangeTo   = time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	rangeFrom = rangeTo.Add(-time.Hour)
)

// The logwriter's column lists (services/logwriter/app/rows.go): the
// sample is inserted as it inserts, naming every column.
const (
	attemptColumns = "day, started_at, started_at_us, attempt_id, delivery_id, tenant_id, endpoint_id, " +
		"event_id, event_type, attempt_number, outcome, status_code, latency_us, url, response_excerpt, " +
		"error, trace_id, origin, next_attempt_at_ms"
	eventColumns = "day, received_at, received_at_ms, tenant_id, event_id, event_type, source, data, " +
		"fanout_count, endpoint_ids"
)

func attempt(at time.Time, tenant, endpoint, delivery string, n uint32, outcome string, status uint16,
	latency time.Duration, excerpt, errText string, next time.Time) []any {
	var nextMs int64
	if !next.IsZero() {
		nextMs = next.UnixMilli()
	}
	return []any{at, at, at.UnixMicro(), fmt.Sprintf("%s/%d", delivery, n), delivery, tenant, endpoint,
		"evt_" + delivery, "order.created", n, outcome, status, latency.Microseconds(),
		"https://receiver.example/" + endpoint, excerpt, errText, fmt.Sprintf("%032x", at.UnixNano()), "router", nextMs}
}

func sampleAttempts() [][]any {
	var rows [][]any
	t0 := rangeFrom.Add(5 * time.Minute)
	for i := range 10 {
		at := t0.Add(time.Duration(i) * 3 * time.Minute)
		rows = append(rows, attempt(at, "acme", "ep_ok", fmt.Sprintf("d_ok_%d", i), 1, "success", 200, 20*time.Millisecond, "ok", "", time.Time{}))
		rows = append(rows, attempt(at, "globex", "ep_other", fmt.Sprintf("d_gl_%d", i), 1, "success", 204, 35*time.Millisecond, "", "", time.Time{}))
	}
	for i := range 8 {
		at := t0.Add(time.Duration(i) * 4 * time.Minute)
		d := fmt.Sprintf("d_fail_%d", i)
		rows = append(rows,
			attempt(at, "acme", "ep_failing", d, 1, "http_error", 503, 80*time.Millisecond, "upstream unavailable", "HTTP 503", at.Add(5*time.Second)),
			attempt(at.Add(5*time.Second), "acme", "ep_failing", d, 2, "timeout", 0, 10*time.Second, "", "timeout after 10s", at.Add(time.Minute)),
			attempt(at.Add(time.Minute), "acme", "ep_failing", d, 3, "http_error", 500, 90*time.Millisecond, `{"error":"it's broken"}`, "HTTP 500", time.Time{}))
	}
	rows = append(rows,
		attempt(t0, "acme", "ep_failing", "d_open", 1, "circuit_open", 0, 0, "", "circuit open", t0.Add(time.Minute)),
		attempt(t0, "acme", "ep_failing", "d_parked", 4, "endpoint_disabled", 0, 0, "", "endpoint disabled", time.Time{}),
		// Outside the range: the filters must leave it out.
		attempt(rangeFrom.Add(-2*time.Hour), "initech", "ep_old", "d_old", 1, "http_error", 500, time.Millisecond, "", "", time.Time{}))
	return rows
}

func sampleEvents() [][]any {
	var rows [][]any
	for i := range 20 {
		at := rangeFrom.Add(time.Duration(2+i*2) * time.Minute)
		typ := "order.created"
		if i%3 == 0 {
			typ = "order.paid"
		}
		rows = append(rows, []any{at, at, at.UnixMilli(), "acme", fmt.Sprintf("evt_%03d", i), typ, "http",
			`{"n":` + fmt.Sprint(i) + `}`, uint32(2), []string{"ep_ok", "ep_failing"}})
	}
	return rows
}

// typed gives the values the ClickHouse column types clickhouse-go expects.
func typedAttempt(r []any) []any {
	out := append([]any(nil), r...)
	out[9] = r[9].(uint32)
	out[11] = r[11].(uint16)
	return out
}

// insertNative inserts the sample into ClickHouse 18.16 as the logwriter
// does: a batch per table over the native protocol.
func insertNative(ctx context.Context, conn driver.Conn, db string) error {
	for _, tbl := range []struct {
		name, cols string
		rows       [][]any
	}{{"attempts", attemptColumns, sampleAttempts()}, {"events", eventColumns, sampleEvents()}} {
		b, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+"."+tbl.name+" ("+tbl.cols+")")
		if err != nil {
			return fmt.Errorf("preparing the %s batch: %w", tbl.name, err)
		}
		for _, r := range tbl.rows {
			if tbl.name == "attempts" {
				r = typedAttempt(r)
			}
			if err := b.Append(r...); err != nil {
				_ = b.Abort()
				return fmt.Errorf("appending to %s: %w", tbl.name, err)
			}
		}
		if err := b.Send(); err != nil {
			return fmt.Errorf("inserting into %s: %w", tbl.name, err)
		}
	}
	return nil
}

// insertStatements is the same sample as INSERT … VALUES text, for chDB.
func insertStatements(db string) []string {
	return []string{
		testenv.ValuesInsert(db+".attempts", attemptColumns, sampleAttempts()),
		testenv.ValuesInsert(db+".events", eventColumns, sampleEvents()),
	}
}
