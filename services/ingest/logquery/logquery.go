// Package logquery reads the delivery log the logwriter keeps in ClickHouse
// (DESIGN §7) for the API: events, attempts and per-endpoint stats, always
// of one tenant. Every value reaches ClickHouse as a bound parameter, never
// concatenated into the SQL; only the database name, a validated
// identifier, is written into the text.
//
// Queries read with FINAL, so rows the logwriter inserted twice (after a
// crash before its commit) count once; Event, which reads one row, says
// why it does not. They run unchanged on ClickHouse
// 18.16 and current releases: minutes are integer divisions of microsecond
// columns rather than toStartOfInterval, and lists of values are bound as
// arrays tested with has().
package logquery

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Reader runs the queries on one database.
type Reader struct {
	conn driver.Conn
	db   string
}

// New returns a Reader of database db (a name clickhousex validated).
func New(conn driver.Conn, db string) *Reader { return &Reader{conn: conn, db: db} }

// Ping checks that ClickHouse answers, for readiness.
func (r *Reader) Ping(ctx context.Context) error { return r.conn.Ping(ctx) }

// sql writes the database name into q's {db}.
func (r *Reader) sql(q string) string { return strings.ReplaceAll(q, "{db}", r.db) }

// day is the date of t, for the day partition bounds, as ClickHouse reads
// a Date literal.
func day(t time.Time) string { return t.UTC().Format("2006-01-02") }

// Event is one accepted event.
type Event struct {
	ID           string
	Type         string
	Source       string
	ReceivedAtMs int64
	FanoutCount  uint32
	EndpointIDs  []string
	// Data is the payload; only Event (one) fills it.
	Data []byte
}

// EventQuery selects a tenant's events, newest first.
type EventQuery struct {
	Tenant       string
	Type         string // "" for every type
	Since, Until time.Time
	Limit        int
	// After is the last event of the previous page (zero for the first):
	// the page continues strictly before it in (received_at_ms, id) order,
	// so events arriving meanwhile never shift a page.
	AfterMs int64
	AfterID string
}

// Events lists events, newest first.
func (r *Reader) Events(ctx context.Context, q EventQuery) ([]Event, error) {
	where := []string{"tenant_id = ?", "day >= toDate(?)", "day <= toDate(?)", "received_at_ms >= ?", "received_at_ms < ?"}
	args := []any{q.Tenant, day(q.Since), day(q.Until), q.Since.UnixMilli(), q.Until.UnixMilli()}
	if q.Type != "" {
		where = append(where, "event_type = ?")
		args = append(args, q.Type)
	}
	if q.AfterID != "" {
		where = append(where, "(received_at_ms < ? OR (received_at_ms = ? AND event_id < ?))")
		args = append(args, q.AfterMs, q.AfterMs, q.AfterID)
	}
	args = append(args, q.Limit)
	rows, err := r.conn.Query(ctx, r.sql(`SELECT event_id, event_type, source, received_at_ms, fanout_count, endpoint_ids
		FROM {db}.events FINAL WHERE `+strings.Join(where, " AND ")+`
		ORDER BY received_at_ms DESC, event_id DESC LIMIT ?`), args...)
	if err != nil {
		return nil, fmt.Errorf("querying events: %w", err)
	}
	defer rows.Close()
	var out []Event
	for rows.Next() {
		var e Event
		if err := rows.Scan(&e.ID, &e.Type, &e.Source, &e.ReceivedAtMs, &e.FanoutCount, &e.EndpointIDs); err != nil {
			return nil, fmt.Errorf("reading events: %w", err)
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// Event returns one event with its payload: of the rows of an id reused
// after the dedup window, the one received last.
//
// It reads without FINAL, unlike the other queries. FINAL collapses the
// rows of one key (even across day partitions, on 18.16) into the one
// inserted last, which is not the newest when the logwriter re-inserts an
// older batch after a crash. Without FINAL every row is there: copies of
// one acceptance are identical, copies of a reuse differ in
// received_at_ms, so the newest first is one well-defined event however
// the rows were inserted or merged.
func (r *Reader) Event(ctx context.Context, tenant, id string) (Event, bool, error) {
	rows, err := r.conn.Query(ctx, r.sql(`SELECT event_id, event_type, source, received_at_ms, fanout_count, endpoint_ids, data
		FROM {db}.events WHERE tenant_id = ? AND event_id = ? ORDER BY received_at_ms DESC LIMIT 1`), tenant, id)
	if err != nil {
		return Event{}, false, fmt.Errorf("querying event %s: %w", id, err)
	}
	defer rows.Close()
	if !rows.Next() {
		return Event{}, false, rows.Err()
	}
	var e Event
	var data string
	if err := rows.Scan(&e.ID, &e.Type, &e.Source, &e.ReceivedAtMs, &e.FanoutCount, &e.EndpointIDs, &data); err != nil {
		return Event{}, false, fmt.Errorf("reading event %s: %w", id, err)
	}
	e.Data = []byte(data)
	return e, true, nil
}

// EndpointStatus is where one event stands at one endpoint: its latest
// attempt.
type EndpointStatus struct {
	EndpointID      string
	Attempts        uint64
	LastOutcome     string
	LastStatusCode  uint16
	LastAttemptAtUs int64
	NextAttemptAtMs int64
}

// EventStatus returns, per endpoint, the latest attempt of event id, which
// was received at receivedAtMs (attempts are never older).
func (r *Reader) EventStatus(ctx context.Context, tenant, id string, receivedAtMs int64) ([]EndpointStatus, error) {
	rows, err := r.conn.Query(ctx, r.sql(`SELECT endpoint_id, count(), argMax(outcome, started_at_us),
		argMax(status_code, started_at_us), max(started_at_us), argMax(next_attempt_at_ms, started_at_us)
		FROM {db}.attempts FINAL WHERE tenant_id = ? AND event_id = ? AND day >= toDate(?)
		GROUP BY endpoint_id ORDER BY endpoint_id`), tenant, id, day(time.UnixMilli(receivedAtMs)))
	if err != nil {
		return nil, fmt.Errorf("querying the attempts of event %s: %w", id, err)
	}
	defer rows.Close()
	var out []EndpointStatus
	for rows.Next() {
		var s EndpointStatus
		if err := rows.Scan(&s.EndpointID, &s.Attempts, &s.LastOutcome, &s.LastStatusCode, &s.LastAttemptAtUs, &s.NextAttemptAtMs); err != nil {
			return nil, fmt.Errorf("reading the attempts of event %s: %w", id, err)
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// Attempt is one attempt as logged.
type Attempt struct {
	ID              string
	DeliveryID      string
	EndpointID      string
	EventID         string
	EventType       string
	AttemptNumber   uint32
	Outcome         string
	StatusCode      uint16
	StartedAtUs     int64
	LatencyUs       int64
	URL             string
	ResponseExcerpt string
	Error           string
	TraceID         string
	Origin          string
	NextAttemptAtMs int64
}

// AttemptQuery selects a tenant's attempts, newest first. Zero fields do
// not filter.
type AttemptQuery struct {
	Tenant     string
	Endpoint   string
	Event      string
	Outcome    string
	Status     uint16
	StatusFrom uint16 // with StatusTo: a class, 500 to 599
	StatusTo   uint16
	// Trace is a W3C trace id, 32 lowercase hex digits.
	Trace        string
	Since, Until time.Time
	Limit        int
	// AfterUs and AfterID are the last attempt of the previous page.
	AfterUs int64
	AfterID string
}

// Attempts lists attempts, newest first.
func (r *Reader) Attempts(ctx context.Context, q AttemptQuery) ([]Attempt, error) {
	where := []string{"tenant_id = ?", "day >= toDate(?)", "day <= toDate(?)", "started_at_us >= ?", "started_at_us < ?"}
	args := []any{q.Tenant, day(q.Since), day(q.Until), q.Since.UnixMicro(), q.Until.UnixMicro()}
	add := func(cond string, v ...any) {
		where = append(where, cond)
		args = append(args, v...)
	}
	if q.Endpoint != "" {
		add("endpoint_id = ?", q.Endpoint)
	}
	if q.Event != "" {
		add("event_id = ?", q.Event)
	}
	if q.Outcome != "" {
		add("outcome = ?", q.Outcome)
	}
	if q.Status != 0 {
		add("status_code = ?", q.Status)
	}
	if q.StatusTo != 0 {
		add("status_code >= ? AND status_code <= ?", q.StatusFrom, q.StatusTo)
	}
	if q.Trace != "" {
		add("trace_id = ?", q.Trace)
	}
	if q.AfterID != "" {
		add("(started_at_us < ? OR (started_at_us = ? AND attempt_id < ?))", q.AfterUs, q.AfterUs, q.AfterID)
	}
	args = append(args, q.Limit)
	rows, err := r.conn.Query(ctx, r.sql(`SELECT attempt_id, delivery_id, endpoint_id, event_id, event_type,
		attempt_number, outcome, status_code, started_at_us, latency_us, url, response_excerpt, error, trace_id,
		origin, next_attempt_at_ms
		FROM {db}.attempts FINAL WHERE `+strings.Join(where, " AND ")+`
		ORDER BY started_at_us DESC, attempt_id DESC LIMIT ?`), args...)
	if err != nil {
		return nil, fmt.Errorf("querying attempts: %w", err)
	}
	defer rows.Close()
	var out []Attempt
	for rows.Next() {
		var a Attempt
		if err := rows.Scan(&a.ID, &a.DeliveryID, &a.EndpointID, &a.EventID, &a.EventType, &a.AttemptNumber,
			&a.Outcome, &a.StatusCode, &a.StartedAtUs, &a.LatencyUs, &a.URL, &a.ResponseExcerpt, &a.Error,
			&a.TraceID, &a.Origin, &a.NextAttemptAtMs); err != nil {
			return nil, fmt.Errorf("reading attempts: %w", err)
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// Stats summarise an endpoint's attempts over a window.
type Stats struct {
	Attempts, Successes uint64
	// LatencyUs are the 50th, 95th and 99th percentiles of requests made
	// (circuit_open and blocked attempts made none); zero without any.
	LatencyUs [3]float64
	ByOutcome map[string]uint64
	// Minutes has one entry per minute with attempts, oldest first.
	Minutes []Minute
}

// Minute is one minute of an endpoint's attempts.
type Minute struct {
	StartUs             int64
	Attempts, Successes uint64
}

// noRequest are the outcomes of attempts that made no request: their
// latency is not a receiver's.
var noRequest = []string{"circuit_open", "blocked", "endpoint_disabled"}

// Stats returns endpoint's stats in [since, until).
func (r *Reader) Stats(ctx context.Context, tenant, endpoint string, since, until time.Time) (Stats, error) {
	s := Stats{ByOutcome: map[string]uint64{}}
	const where = `FROM {db}.attempts FINAL WHERE tenant_id = ? AND endpoint_id = ? AND day >= toDate(?) AND day <= toDate(?)
		AND started_at_us >= ? AND started_at_us < ?`
	args := []any{tenant, endpoint, day(since), day(until), since.UnixMicro(), until.UnixMicro()}

	rows, err := r.conn.Query(ctx, r.sql(`SELECT outcome, count() `+where+` GROUP BY outcome`), args...)
	if err != nil {
		return s, fmt.Errorf("querying stats of %s: %w", endpoint, err)
	}
	for rows.Next() {
		var o string
		var n uint64
		if err := rows.Scan(&o, &n); err != nil {
			rows.Close()
			return s, fmt.Errorf("reading stats of %s: %w", endpoint, err)
		}
		s.ByOutcome[o] = n
		s.Attempts += n
	}
	rows.Close()
	s.Successes = s.ByOutcome["success"]

	var qs []float64
	if err := r.conn.QueryRow(ctx, r.sql(`SELECT quantilesIf(0.5, 0.95, 0.99)(latency_us, NOT has(?, outcome)) `+where),
		append([]any{noRequest}, args...)...).Scan(&qs); err != nil {
		return s, fmt.Errorf("querying latency of %s: %w", endpoint, err)
	}
	for i := range min(len(qs), 3) {
		if qs[i] == qs[i] { // NaN when no request was made
			s.LatencyUs[i] = qs[i]
		}
	}

	rows, err = r.conn.Query(ctx, r.sql(`SELECT intDiv(started_at_us, 60000000) AS minute, count(), countIf(outcome = 'success') `+
		where+` GROUP BY minute ORDER BY minute`), args...)
	if err != nil {
		return s, fmt.Errorf("querying the series of %s: %w", endpoint, err)
	}
	defer rows.Close()
	for rows.Next() {
		var m Minute
		var minute int64
		if err := rows.Scan(&minute, &m.Attempts, &m.Successes); err != nil {
			return s, fmt.Errorf("reading the series of %s: %w", endpoint, err)
		}
		m.StartUs = minute * 60_000_000
		s.Minutes = append(s.Minutes, m)
	}
	return s, rows.Err()
}
