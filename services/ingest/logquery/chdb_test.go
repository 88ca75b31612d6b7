package logquery_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/sluicehq/sluice/pkg/testenv"
	"github.com/sluicehq/sluice/services/ingest/logquery"
	"github.com/sluicehq/sluice/services/logwriter/schema"
)

// recorder is the Reader's connection to ClickHouse 18.16 that keeps the
// SQL and the arguments of every query it is asked.
type recorder struct {
	driver.Conn
	calls []call
}

type call struct {
	sql  string
	args []any
}

func (r *recorder) Query(ctx context.Context, sql string, args ...any) (driver.Rows, error) {
	r.calls = append(r.calls, call{sql, args})
	return r.Conn.Query(ctx, sql, args...)
}

func (r *recorder) QueryRow(ctx context.Context, sql string, args ...any) driver.Row {
	r.calls = append(r.calls, call{sql, args})
	return r.Conn.QueryRow(ctx, sql, args...)
}

// bind writes args into sql's ? placeholders as clickhouse-go's positional
// binding does for the types the log API binds (strings quoted and
// escaped, integers, arrays of strings). The test checks it against
// clickhouse-go: both texts give the same rows on 18.16.
func bind(sql string, args []any) (string, error) {
	var b strings.Builder
	n := 0
	for _, c := range sql {
		if c != '?' {
			b.WriteRune(c)
			continue
		}
		if n == len(args) {
			return "", fmt.Errorf("more placeholders than the %d arguments", len(args))
		}
		switch args[n].(type) {
		case string, int, int64, uint16, uint32, []string:
			b.WriteString(testenv.SQLLiteral(args[n]))
		default:
			return "", fmt.Errorf("argument %d is a %T, which bind does not write", n, args[n])
		}
		n++
	}
	if n != len(args) {
		return "", fmt.Errorf("%d placeholders for %d arguments", n, len(args))
	}
	return b.String(), nil
}

func countRows(ctx context.Context, conn driver.Conn, sql string, args ...any) (int, error) {
	rows, err := conn.Query(ctx, sql, args...)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		n++
	}
	return n, rows.Err()
}

// TestQueriesOnCurrentClickHouse runs every query of the log API on chDB,
// today's ClickHouse engine, as well as on the dev stack's 18.16: each
// Reader method, with every optional filter, runs on 18.16 through a
// recorder that keeps each query and its arguments; the test binds the
// arguments into the text (checked to give the same rows on 18.16 as
// clickhouse-go's own binding) and runs that text on chDB, which holds the
// same schema and rows and must give as many rows as 18.16.
func TestQueriesOnCurrentClickHouse(t *testing.T) {
	ch := testenv.NewClickHouse(t)
	db := ch.Config.Database
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := schema.Migrate(ctx, ch.Conn, db); err != nil {
		t.Fatalf("migrating: %v", err)
	}
	base := time.Now().UTC().Truncate(time.Second).Add(-30 * time.Minute)
	var attempts, events [][]any
	for i := range 6 {
		at := base.Add(time.Duration(i) * time.Minute)
		outcome, status := "success", uint16(200)
		if i%2 == 1 {
			outcome, status = "http_error", 503
		}
		id := fmt.Sprintf("evt_%d", i/2)
		attempts = append(attempts, []any{at, at, at.UnixMicro(), fmt.Sprintf("a_%d", i), "d_" + id, "ten_a", "ep_1", id,
			"order.created", uint32(1 + i%2), outcome, status, int64(1000 * (i + 1)), "https://x.example/h",
			`it's "quoted"`, "", fmt.Sprintf("%032x", i), "router", int64(0)})
		events = append(events, []any{at, at, at.UnixMilli(), "ten_a", fmt.Sprintf("evt_%d", i), "order.created", "http",
			`{"n":1}`, uint32(1), []string{"ep_1"}})
	}
	const attemptCols = "day, started_at, started_at_us, attempt_id, delivery_id, tenant_id, endpoint_id, event_id, " +
		"event_type, attempt_number, outcome, status_code, latency_us, url, response_excerpt, error, trace_id, origin, next_attempt_at_ms"
	const eventCols = "day, received_at, received_at_ms, tenant_id, event_id, event_type, source, data, fanout_count, endpoint_ids"
	for _, tbl := range []struct {
		name, cols string
		rows       [][]any
	}{{"attempts", attemptCols, attempts}, {"events", eventCols, events}} {
		b, err := ch.Conn.PrepareBatch(ctx, "INSERT INTO "+db+"."+tbl.name+" ("+tbl.cols+")")
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range tbl.rows {
			if err := b.Append(r...); err != nil {
				t.Fatal(err)
			}
		}
		if err := b.Send(); err != nil {
			t.Fatal(err)
		}
	}

	rec := &recorder{Conn: ch.Conn}
	r := logquery.New(rec, db)
	since, until := base.Add(-time.Hour), base.Add(time.Hour)

	// Every method, and every optional filter of the list queries.
	evs, err := r.Events(ctx, logquery.EventQuery{Tenant: "ten_a", Since: since, Until: until, Limit: 3})
	if err != nil || len(evs) != 3 {
		t.Fatalf("Events over HTTP on 18.16: %d events, %v", len(evs), err)
	}
	last := evs[len(evs)-1]
	if _, err := r.Events(ctx, logquery.EventQuery{Tenant: "ten_a", Type: "order.created", Since: since, Until: until,
		Limit: 10, AfterMs: last.ReceivedAtMs, AfterID: last.ID}); err != nil {
		t.Fatalf("Events, next page: %v", err)
	}
	if _, ok, err := r.Event(ctx, "ten_a", "evt_1"); err != nil || !ok {
		t.Fatalf("Event: found %v, %v", ok, err)
	}
	if _, err := r.EventStatus(ctx, "ten_a", "evt_1", base.UnixMilli()); err != nil {
		t.Fatalf("EventStatus: %v", err)
	}
	as, err := r.Attempts(ctx, logquery.AttemptQuery{Tenant: "ten_a", Since: since, Until: until, Limit: 2})
	if err != nil || len(as) != 2 {
		t.Fatalf("Attempts: %d attempts, %v", len(as), err)
	}
	if _, err := r.Attempts(ctx, logquery.AttemptQuery{Tenant: "ten_a", Endpoint: "ep_1", Event: "evt_1",
		Outcome: "http_error", Status: 503, StatusFrom: 500, StatusTo: 599, Since: since, Until: until, Limit: 10,
		AfterUs: as[1].StartedAtUs, AfterID: as[1].ID}); err != nil {
		t.Fatalf("Attempts, every filter: %v", err)
	}
	if _, err := r.Stats(ctx, "ten_a", "ep_1", since, until); err != nil {
		t.Fatalf("Stats: %v", err)
	}

	// Events ×2, Event, EventStatus, Attempts ×2, Stats ×3.
	if len(rec.calls) != 9 {
		t.Fatalf("recorded %d log API queries, want 9", len(rec.calls))
	}
	sqls := make([]string, len(rec.calls))
	want := make([]int, len(rec.calls))
	for i, c := range rec.calls {
		if sqls[i], err = bind(c.sql, c.args); err != nil {
			t.Fatalf("query %d: binding: %v\n%s", i, err, c.sql)
		}
		if want[i], err = countRows(ctx, ch.Conn, c.sql, c.args...); err != nil {
			t.Fatalf("query %d on 18.16: %v", i, err)
		}
		bound, err := countRows(ctx, ch.Conn, sqls[i])
		if err != nil || bound != want[i] {
			t.Fatalf("query %d bound by the test gives %d rows (%v) on 18.16, bound by clickhouse-go %d\n%s", i, bound, err, want[i], sqls[i])
		}
	}

	ms, err := schema.Migrations(db)
	if err != nil {
		t.Fatal(err)
	}
	setup := append([]string{"SET session_timezone = 'UTC'"}, schema.Bootstrap(db)...)
	for _, m := range ms {
		setup = append(setup, m.Statements...)
	}
	setup = append(setup, testenv.ValuesInsert(db+".attempts", attemptCols, attempts),
		testenv.ValuesInsert(db+".events", eventCols, events))
	got := testenv.RunChDB(t, setup, sqls)
	t.Logf("%d log API queries on ClickHouse 18.16 and %s", len(sqls), got.Version)
	for i, res := range got.Results {
		switch {
		case res.Error != "":
			t.Errorf("query %d on ClickHouse %s: %s\n%s", i, got.Version, res.Error, sqls[i])
		case len(res.Rows) != want[i]:
			t.Errorf("query %d: %d rows on ClickHouse %s, %d on 18.16\n%s", i, len(res.Rows), got.Version, want[i], sqls[i])
		case want[i] == 0:
			t.Errorf("query %d found nothing on either engine; the sample should give it rows\n%s", i, sqls[i])
		}
	}
}
