package logquery_test

import (
	"cmp"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/testenv"
	"github.com/sluicehq/sluice/services/ingest/logquery"
	"github.com/sluicehq/sluice/services/logwriter/schema"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// logDB is a migrated delivery-log database of the test's own.
func logDB(t *testing.T) (*testenv.ClickHouse, *logquery.Reader) {
	t.Helper()
	ch := testenv.NewClickHouse(t)
	if _, err := schema.Migrate(context.Background(), ch.Conn, ch.Config.Database); err != nil {
		t.Fatalf("migrating: %v", err)
	}
	return ch, logquery.New(ch.Conn, ch.Config.Database)
}

type attempt struct {
	tenant, endpoint, event, id, outcome string
	trace                                string // "trace" when empty
	status                               uint16
	at                                   time.Time
	latency                              time.Duration
}

func insertAttempts(t *testing.T, ch *testenv.ClickHouse, rows ...attempt) {
	t.Helper()
	ctx := context.Background()
	b, err := ch.Conn.PrepareBatch(ctx, "INSERT INTO "+ch.Config.Database+".attempts (day, started_at, started_at_us, "+
		"attempt_id, delivery_id, tenant_id, endpoint_id, event_id, event_type, attempt_number, outcome, status_code, "+
		"latency_us, url, response_excerpt, error, trace_id, origin, next_attempt_at_ms)")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		if err := b.Append(r.at.UTC(), r.at.UTC(), r.at.UnixMicro(), r.id, "dlv_"+r.id, r.tenant, r.endpoint, r.event,
			"order.created", uint32(1), r.outcome, r.status, r.latency.Microseconds(), "https://x.example/h", "ok", "",
			cmp.Or(r.trace, "trace"), "router", int64(0)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
}

type event struct {
	tenant, id, typ, data string
	at                    time.Time
	endpoints             []string
}

func insertEvents(t *testing.T, ch *testenv.ClickHouse, rows ...event) {
	t.Helper()
	b, err := ch.Conn.PrepareBatch(context.Background(), "INSERT INTO "+ch.Config.Database+".events (day, received_at, "+
		"received_at_ms, tenant_id, event_id, event_type, source, data, fanout_count, endpoint_ids)")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		eps := r.endpoints
		if eps == nil {
			eps = []string{}
		}
		if err := b.Append(r.at.UTC(), r.at.UTC(), r.at.UnixMilli(), r.tenant, r.id, r.typ, "http", r.data,
			uint32(len(eps)), eps); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
}

// hostile are values a caller might send to break out of a string literal
// or a query; bound as parameters they only ever match nothing.
var hostile = []string{
	`' OR 1=1 --`, `ten_a' OR tenant_id != '`, `"; DROP TABLE attempts; --`, `\' OR \'1\'=\'1`,
	"ten_a\x00", `%`, `_`, `ten_a) OR (1=1`, `?`, `{db}`,
}

func TestEventsPagesAndFiltersWithinATenant(t *testing.T) {
	ch, r := logDB(t)
	base := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	var rows []event
	for i := range 30 {
		typ := "order.created"
		if i%3 == 0 {
			typ = "invoice.paid"
		}
		rows = append(rows, event{tenant: "ten_a", id: fmt.Sprintf("evt_%02d", i), typ: typ,
			data: fmt.Sprintf(`{"n":%d}`, i), at: base.Add(time.Duration(i) * time.Second), endpoints: []string{"ep_1"}})
	}
	// Another tenant's event at the same times, and a copy inserted twice.
	rows = append(rows, event{tenant: "ten_b", id: "evt_b", typ: "order.created", data: `{}`, at: base})
	insertEvents(t, ch, rows...)
	insertEvents(t, ch, rows[5])
	ctx := context.Background()
	q := logquery.EventQuery{Tenant: "ten_a", Since: base.Add(-time.Minute), Until: time.Now(), Limit: 7}

	// Pages of 7, newest first, each event once, none of tenant b's.
	var seen []string
	for page := 0; ; page++ {
		got, err := r.Events(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range got {
			seen = append(seen, e.ID)
		}
		if len(got) < q.Limit {
			break
		}
		last := got[len(got)-1]
		q.AfterMs, q.AfterID = last.ReceivedAtMs, last.ID
		if page == 0 {
			// Rows arriving between pages (newer) do not shift the next one.
			insertEvents(t, ch, event{tenant: "ten_a", id: "evt_new", typ: "order.created", data: `{}`, at: time.Now().Add(-time.Second)})
		}
	}
	if len(seen) != 30 {
		t.Fatalf("paged through %d events, want 30: %v", len(seen), seen)
	}
	for i, id := range seen {
		if want := fmt.Sprintf("evt_%02d", 29-i); id != want {
			t.Fatalf("event %d is %s, want %s (newest first, no repeats)", i, id, want)
		}
	}

	q = logquery.EventQuery{Tenant: "ten_a", Type: "invoice.paid", Since: base.Add(-time.Minute), Until: time.Now(), Limit: 100}
	if got, _ := r.Events(ctx, q); len(got) != 10 {
		t.Fatalf("%d invoice.paid events, want 10", len(got))
	}
	q.Type, q.Since, q.Until = "", base.Add(10*time.Second), base.Add(20*time.Second)
	if got, _ := r.Events(ctx, q); len(got) != 10 || got[0].ID != "evt_19" || got[9].ID != "evt_10" {
		t.Fatalf("time range [10 s, 20 s): %v", got)
	}

	e, ok, err := r.Event(ctx, "ten_a", "evt_07")
	if err != nil || !ok || string(e.Data) != `{"n":7}` || e.Type != "order.created" || len(e.EndpointIDs) != 1 {
		t.Fatalf("Event = %+v, %v, %v", e, ok, err)
	}
	if _, ok, _ := r.Event(ctx, "ten_b", "evt_07"); ok {
		t.Fatal("tenant b read tenant a's event")
	}
	for _, h := range hostile {
		if _, ok, err := r.Event(ctx, h, "evt_07"); ok || err != nil {
			t.Errorf("tenant %q: found %v, err %v", h, ok, err)
		}
		q := logquery.EventQuery{Tenant: "ten_a", Type: h, Since: base.Add(-time.Minute), Until: time.Now(), Limit: 100}
		if got, err := r.Events(ctx, q); len(got) != 0 || err != nil {
			t.Errorf("type %q: %d events, err %v", h, len(got), err)
		}
		q = logquery.EventQuery{Tenant: h, Since: base.Add(-time.Minute), Until: time.Now(), Limit: 100}
		if got, err := r.Events(ctx, q); len(got) != 0 || err != nil {
			t.Errorf("tenant %q: %d events, err %v", h, len(got), err)
		}
	}
}

func TestAttemptsFiltersStatusAndStats(t *testing.T) {
	ch, r := logDB(t)
	now := time.Now().Truncate(time.Minute).Add(-10 * time.Minute)
	var rows []attempt
	for i := range 40 {
		a := attempt{tenant: "ten_a", endpoint: "ep_1", event: fmt.Sprintf("evt_%02d", i%10), id: fmt.Sprintf("att_%02d", i),
			outcome: "success", status: 200, at: now.Add(time.Duration(i) * 15 * time.Second), latency: time.Duration(i+1) * time.Millisecond}
		switch {
		case i%4 == 1:
			a.outcome, a.status = "http_error", 503
		case i%4 == 2:
			a.outcome, a.status = "http_error", 404
		case i == 39:
			a.outcome, a.status, a.latency = "circuit_open", 0, 0
		}
		rows = append(rows, a)
	}
	const traced = "4bf92f3577b34da6a3ce929d0e0e4736"
	rows[7].trace = traced
	rows = append(rows, attempt{tenant: "ten_b", endpoint: "ep_1", event: "evt_00", id: "att_b", outcome: "success", status: 200, at: now,
		trace: traced})
	insertAttempts(t, ch, rows...)
	insertAttempts(t, ch, rows[3]) // a redelivered record
	ctx := context.Background()
	all := logquery.AttemptQuery{Tenant: "ten_a", Since: now.Add(-time.Hour), Until: time.Now().Add(time.Hour), Limit: 1000}
	count := func(q logquery.AttemptQuery) int {
		t.Helper()
		got, err := r.Attempts(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		return len(got)
	}
	for desc, tc := range map[string]struct {
		q    func(q logquery.AttemptQuery) logquery.AttemptQuery
		want int
	}{
		"all of the tenant, the duplicate once": {func(q logquery.AttemptQuery) logquery.AttemptQuery { return q }, 40},
		"by endpoint":                           {func(q logquery.AttemptQuery) logquery.AttemptQuery { q.Endpoint = "ep_1"; return q }, 40},
		"by event":                              {func(q logquery.AttemptQuery) logquery.AttemptQuery { q.Event = "evt_03"; return q }, 4},
		"by outcome":                            {func(q logquery.AttemptQuery) logquery.AttemptQuery { q.Outcome = "http_error"; return q }, 20},
		"by status":                             {func(q logquery.AttemptQuery) logquery.AttemptQuery { q.Status = 503; return q }, 10},
		"by class 4xx": {func(q logquery.AttemptQuery) logquery.AttemptQuery {
			q.StatusFrom, q.StatusTo = 400, 499
			return q
		}, 10},
		"by time": {func(q logquery.AttemptQuery) logquery.AttemptQuery {
			q.Since, q.Until = now, now.Add(time.Minute)
			return q
		}, 4},
		"another endpoint":            {func(q logquery.AttemptQuery) logquery.AttemptQuery { q.Endpoint = "ep_2"; return q }, 0},
		"by trace, within the tenant": {func(q logquery.AttemptQuery) logquery.AttemptQuery { q.Trace = traced; return q }, 1},
	} {
		if got := count(tc.q(all)); got != tc.want {
			t.Errorf("%s: %d attempts, want %d", desc, got, tc.want)
		}
	}
	// Pagination: pages of 6 cover the 40 once, newest first.
	q := all
	q.Limit = 6
	var ids []string
	for {
		got, err := r.Attempts(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range got {
			ids = append(ids, a.ID)
		}
		if len(got) < q.Limit {
			break
		}
		q.AfterUs, q.AfterID = got[len(got)-1].StartedAtUs, got[len(got)-1].ID
	}
	if len(ids) != 40 || ids[0] != "att_39" || ids[39] != "att_00" {
		t.Fatalf("paged %d attempts: %v", len(ids), ids)
	}
	for _, h := range hostile {
		for _, q := range []logquery.AttemptQuery{
			{Tenant: h, Since: all.Since, Until: all.Until, Limit: 10},
			{Tenant: "ten_a", Endpoint: h, Since: all.Since, Until: all.Until, Limit: 10},
			{Tenant: "ten_a", Event: h, Since: all.Since, Until: all.Until, Limit: 10},
			{Tenant: "ten_a", Outcome: h, Since: all.Since, Until: all.Until, Limit: 10},
			{Tenant: "ten_a", Trace: h, Since: all.Since, Until: all.Until, Limit: 10},
		} {
			if n := count(q); n != 0 {
				t.Errorf("%q matched %d attempts", h, n)
			}
		}
	}

	st, err := r.Stats(ctx, "ten_a", "ep_1", now.Add(-time.Minute), time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if st.Attempts != 40 || st.Successes != 19 || st.ByOutcome["http_error"] != 20 || st.ByOutcome["circuit_open"] != 1 {
		t.Fatalf("stats %+v", st)
	}
	// Latencies 1..39 ms over the requests made (the circuit_open one made
	// none): p50 about 20 ms.
	if p50 := st.LatencyUs[0]; p50 < 15000 || p50 > 25000 || st.LatencyUs[2] < st.LatencyUs[1] || st.LatencyUs[1] < p50 {
		t.Fatalf("latency percentiles %v", st.LatencyUs)
	}
	// 40 attempts 15 s apart: 10 minutes of 4.
	if len(st.Minutes) != 10 {
		t.Fatalf("%d minutes in the series, want 10: %+v", len(st.Minutes), st.Minutes)
	}
	for _, m := range st.Minutes {
		if m.Attempts != 4 || m.StartUs%60_000_000 != 0 {
			t.Errorf("minute %+v", m)
		}
	}
	if other, _ := r.Stats(ctx, "ten_b", "ep_1", now.Add(-time.Minute), time.Now().Add(time.Hour)); other.Attempts != 1 {
		t.Fatalf("tenant b's stats count %d attempts, want its 1", other.Attempts)
	}

	status, err := r.EventStatus(ctx, "ten_a", "evt_03", now.Add(-time.Minute).UnixMilli())
	if err != nil || len(status) != 1 || status[0].Attempts != 4 || status[0].EndpointID != "ep_1" {
		t.Fatalf("event status %+v, %v", status, err)
	}
}

// TestEventReusedIDIsTheNewest: an event id reused after the dedup window
// has a row each time it was accepted. Event must return the newest,
// whichever was inserted last, so GET and replay agree (review B7). On
// different days the rows are in different partitions; on one day FINAL
// collapses them into the one inserted last, which may be the older copy
// (a logwriter re-inserting a batch after a crash).
func TestEventReusedIDIsTheNewest(t *testing.T) {
	ch, r := logDB(t)
	today := time.Now().UTC().Truncate(24 * time.Hour)
	ctx := context.Background()
	for _, tc := range []struct {
		desc         string
		older, newer time.Time
	}{
		{"on different days", today.Add(-72 * time.Hour), today.Add(time.Hour)},
		{"on one day", today.Add(time.Hour), today.Add(2 * time.Hour)},
	} {
		older := event{tenant: "ten_a", id: "evt_reused", typ: "order.created", data: `{"copy":"old"}`,
			at: tc.older, endpoints: []string{"ep_old"}}
		newer := event{tenant: "ten_a", id: "evt_reused", typ: "order.paid", data: `{"copy":"new"}`,
			at: tc.newer, endpoints: []string{"ep_new"}}
		for _, order := range [][]event{{older, newer}, {newer, older}} {
			t.Run(tc.desc+", "+order[0].data+" inserted first", func(t *testing.T) {
				if err := ch.Conn.Exec(ctx, "TRUNCATE TABLE "+ch.Config.Database+".events"); err != nil {
					t.Fatal(err)
				}
				for _, e := range order {
					insertEvents(t, ch, e) // one insert each: one part each
				}
				e, ok, err := r.Event(ctx, "ten_a", "evt_reused")
				if err != nil || !ok {
					t.Fatalf("Event: %v, %v", ok, err)
				}
				if string(e.Data) != newer.data || e.Type != newer.typ || e.ReceivedAtMs != newer.at.UnixMilli() ||
					len(e.EndpointIDs) != 1 || e.EndpointIDs[0] != "ep_new" {
					t.Fatalf("Event returned %+v (data %s), want the copy received at %v", e, e.Data, newer.at)
				}
			})
		}
	}
}
