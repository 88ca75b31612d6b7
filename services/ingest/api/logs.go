package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/pkg/eventfilter"
	"github.com/sluicehq/sluice/services/ingest/logquery"
)

// The delivery log API (DESIGN §7): events, attempts and stats from
// ClickHouse, always of the caller's tenant.

const (
	// defaultLogWindow is the time range of a list without since.
	defaultLogWindow = 24 * time.Hour
	// maxLogWindow bounds since..until: a list scans the day partitions of
	// its range, and a month of them is plenty for one page.
	maxLogWindow = 31 * 24 * time.Hour
	// maxFilterValue bounds ids and other values filtered on; ids are far
	// shorter, and a huge value is refused rather than sent to ClickHouse.
	maxFilterValue = 256
	// logQueryTimeout bounds one ClickHouse query of the API.
	logQueryTimeout = 10 * time.Second
)

// outcomes are the values an attempt's outcome may be filtered on.
var outcomes = func() map[string]bool {
	m := map[string]bool{}
	for v := range sluicev1.AttemptOutcome_name {
		if o := sluicev1.AttemptOutcome(v); o != sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_UNSPECIFIED {
			m[o.Label()] = true
		}
	}
	return m
}()

// query reads a request's query string strictly: every parameter must be
// one the route knows (known), given once, and short.
type query struct {
	args  *fasthttp.Args
	errs  []FieldError
	known map[string]bool
}

func newQuery(r *request, known ...string) *query {
	q := &query{args: r.QueryArgs(), known: map[string]bool{}}
	for _, k := range known {
		q.known[k] = true
	}
	for k, v := range q.args.All() {
		name := string(k)
		switch {
		case !q.known[name]:
			q.fail(name, "is not a parameter of this route")
		case len(q.args.PeekMulti(name)) > 1:
			q.fail(name, "is given more than once")
		case len(v) > maxFilterValue:
			q.fail(name, fmt.Sprintf("is %d bytes, at most %d", len(v), maxFilterValue))
		}
	}
	return q
}

func (q *query) fail(field, detail string) { q.errs = append(q.errs, FieldError{field, detail}) }

func (q *query) str(name string) string { return string(q.args.Peek(name)) }

// timeRange reads since and until (RFC 3339): until defaults to now, since
// to the day before until.
func (q *query) timeRange(now time.Time) (since, until time.Time) {
	until, since = now, time.Time{}
	parse := func(name string) (time.Time, bool) {
		v := q.str(name)
		if v == "" {
			return time.Time{}, false
		}
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			q.fail(name, "must be an RFC 3339 time such as 2026-11-22T08:00:00Z")
			return time.Time{}, false
		}
		return t, true
	}
	if t, ok := parse("until"); ok {
		until = t
	}
	if t, ok := parse("since"); ok {
		since = t
	} else {
		since = until.Add(-defaultLogWindow)
	}
	switch {
	case !since.Before(until):
		q.fail("since", "must be before until")
	case until.Sub(since) > maxLogWindow:
		q.fail("since", "must be at most 31 days before until")
	}
	return since, until
}

// limit reads limit, 1 to maxLimit, default defaultLimit.
func (q *query) limit() int {
	v := q.str("limit")
	if v == "" {
		return defaultLimit
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > maxLimit {
		q.fail("limit", "must be an integer from 1 to "+strconv.Itoa(maxLimit))
		return defaultLimit
	}
	return n
}

// cursor reads the position after which a page continues: a time (ms or
// µs) and an id, opaque to clients.
func (q *query) cursor() (int64, string) {
	v := q.str("cursor")
	if v == "" {
		return 0, ""
	}
	b, err := base64.RawURLEncoding.DecodeString(v)
	at, id, ok := strings.Cut(string(b), ":")
	n, nerr := strconv.ParseInt(at, 10, 64)
	if err != nil || !ok || nerr != nil || id == "" || len(id) > maxFilterValue {
		q.fail("cursor", "is not a cursor this API returned")
		return 0, ""
	}
	return n, id
}

func makeCursor(at int64, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(at, 10) + ":" + id))
}

// logReady answers 503 when no delivery log is configured.
func (a *API) logReady(r *request) bool {
	if a.opts.Log == nil {
		WriteProblem(r.RequestCtx, fasthttp.StatusServiceUnavailable, "unavailable",
			"this server has no delivery log (ClickHouse) configured")
		return false
	}
	return true
}

// logFailed answers a ClickHouse error.
func (a *API) logFailed(r *request, what string, err error) {
	a.log.Warn("querying the delivery log", "what", what, "err", err)
	r.Response.Header.Set("Retry-After", "5")
	WriteProblem(r.RequestCtx, fasthttp.StatusServiceUnavailable, "unavailable",
		"the delivery log did not answer; retry later")
}

func logCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), logQueryTimeout)
}

// LoggedEventJSON is an event as the delivery log holds it.
type LoggedEventJSON struct {
	ID          string    `json:"id"`
	Type        string    `json:"type"`
	Source      string    `json:"source"`
	Received    time.Time `json:"received"`
	FanoutCount uint32    `json:"fanout_count"`
	Endpoints   []string  `json:"endpoints"`
}

// LoggedEventDetailJSON is one event with its payload and where it stands
// at each endpoint.
type LoggedEventDetailJSON struct {
	ID          string              `json:"id"`
	Type        string              `json:"type"`
	Source      string              `json:"source"`
	Received    time.Time           `json:"received"`
	FanoutCount uint32              `json:"fanout_count"`
	Endpoints   []string            `json:"endpoints"`
	Data        json.RawMessage     `json:"data"`
	Deliveries  []EventDeliveryJSON `json:"deliveries"`
}

// EventDeliveryJSON is where an event stands at one endpoint: pending (no
// attempt yet), delivered, retrying (a next attempt is due) or failed (no
// further attempt: dead-lettered, or the endpoint disabled).
type EventDeliveryJSON struct {
	EndpointID     string     `json:"endpoint_id"`
	Status         string     `json:"status"`
	Attempts       uint64     `json:"attempts"`
	LastOutcome    string     `json:"last_outcome,omitempty"`
	LastStatusCode uint16     `json:"last_status_code,omitempty"`
	LastAttempt    *time.Time `json:"last_attempt,omitempty"`
	NextAttempt    *time.Time `json:"next_attempt,omitempty"`
}

func loggedEventJSON(e logquery.Event) LoggedEventJSON {
	eps := e.EndpointIDs
	if eps == nil {
		eps = []string{}
	}
	return LoggedEventJSON{ID: e.ID, Type: e.Type, Source: e.Source, Received: fromMs(e.ReceivedAtMs),
		FanoutCount: e.FanoutCount, Endpoints: eps}
}

func (a *API) listLoggedEvents(r *request) {
	if !a.logReady(r) {
		return
	}
	q := newQuery(r, "type", "since", "until", "limit", "cursor")
	lq := logquery.EventQuery{Tenant: r.caller.tenant, Type: q.str("type"), Limit: q.limit()}
	if lq.Type != "" {
		if err := eventfilter.ValidateType(lq.Type); err != nil {
			q.fail("type", err.Error())
		}
	}
	lq.Since, lq.Until = q.timeRange(a.now())
	lq.AfterMs, lq.AfterID = q.cursor()
	serveLogPage(a, r, q, "events", lq.Limit,
		func(ctx context.Context) ([]logquery.Event, error) { return a.opts.Log.Events(ctx, lq) },
		loggedEventJSON, func(e logquery.Event) string { return makeCursor(e.ReceivedAtMs, e.ID) })
}

// serveLogPage answers a list of the delivery log: 400 when q found bad
// parameters, else the rows fetch reads as a page of JSON items, with the
// cursor of the last row when the page is full (there may be more).
func serveLogPage[R, J any](a *API, r *request, q *query, what string, limit int,
	fetch func(context.Context) ([]R, error), item func(R) J, cursor func(R) string) {
	if len(q.errs) > 0 {
		invalid(r.RequestCtx, q.errs)
		return
	}
	ctx, cancel := logCtx()
	defer cancel()
	rows, err := fetch(ctx)
	if err != nil {
		a.logFailed(r, what, err)
		return
	}
	p := page[J]{Data: make([]J, 0, len(rows))}
	for _, row := range rows {
		p.Data = append(p.Data, item(row))
	}
	if len(rows) == limit {
		p.NextCursor = cursor(rows[len(rows)-1])
	}
	writeJSON(r.RequestCtx, fasthttp.StatusOK, p)
}

// loggedEvent reads the caller's event named in the path, answering 404
// when there is none.
func (a *API) loggedEvent(r *request) (logquery.Event, bool) {
	id := r.param("event_id")
	if len(id) > maxFilterValue {
		invalid(r.RequestCtx, []FieldError{{"event_id", fmt.Sprintf("is %d bytes, at most %d", len(id), maxFilterValue)}})
		return logquery.Event{}, false
	}
	ctx, cancel := logCtx()
	defer cancel()
	e, ok, err := a.opts.Log.Event(ctx, r.caller.tenant, id)
	switch {
	case err != nil:
		a.logFailed(r, "event", err)
		return e, false
	case !ok:
		WriteProblem(r.RequestCtx, fasthttp.StatusNotFound, "not-found",
			"event "+trunc(id)+" is not in the delivery log (it may still be on its way there)")
		return e, false
	}
	return e, true
}

func (a *API) getLoggedEvent(r *request) {
	if !a.logReady(r) {
		return
	}
	if q := newQuery(r); len(q.errs) > 0 {
		invalid(r.RequestCtx, q.errs)
		return
	}
	e, ok := a.loggedEvent(r)
	if !ok {
		return
	}
	ctx, cancel := logCtx()
	defer cancel()
	statuses, err := a.opts.Log.EventStatus(ctx, r.caller.tenant, e.ID, e.ReceivedAtMs)
	if err != nil {
		a.logFailed(r, "event status", err)
		return
	}
	sum := loggedEventJSON(e)
	out := LoggedEventDetailJSON{ID: sum.ID, Type: sum.Type, Source: sum.Source, Received: sum.Received,
		FanoutCount: sum.FanoutCount, Endpoints: sum.Endpoints, Data: json.RawMessage(e.Data), Deliveries: []EventDeliveryJSON{}}
	if len(out.Data) == 0 || !json.Valid(out.Data) {
		out.Data = json.RawMessage("{}")
	}
	byEndpoint := map[string]logquery.EndpointStatus{}
	for _, s := range statuses {
		byEndpoint[s.EndpointID] = s
	}
	ids := append([]string(nil), e.EndpointIDs...)
	for _, s := range statuses { // replayed to endpoints beyond the fan-out
		if !slices.Contains(ids, s.EndpointID) {
			ids = append(ids, s.EndpointID)
		}
	}
	for _, id := range ids {
		s, seen := byEndpoint[id]
		d := EventDeliveryJSON{EndpointID: id, Status: "pending"}
		if seen {
			last := time.UnixMicro(s.LastAttemptAtUs).UTC()
			d.Attempts, d.LastOutcome, d.LastStatusCode, d.LastAttempt = s.Attempts, s.LastOutcome, s.LastStatusCode, &last
			switch {
			case s.LastOutcome == "success":
				d.Status = "delivered"
			case s.NextAttemptAtMs > 0:
				d.Status = "retrying"
				next := fromMs(s.NextAttemptAtMs)
				d.NextAttempt = &next
			default:
				d.Status = "failed"
			}
		}
		out.Deliveries = append(out.Deliveries, d)
	}
	writeJSON(r.RequestCtx, fasthttp.StatusOK, out)
}

// AttemptJSON is one attempt as the delivery log holds it.
type AttemptJSON struct {
	ID              string     `json:"id"`
	DeliveryID      string     `json:"delivery_id"`
	EndpointID      string     `json:"endpoint_id"`
	EventID         string     `json:"event_id"`
	EventType       string     `json:"event_type"`
	AttemptNumber   uint32     `json:"attempt_number"`
	Outcome         string     `json:"outcome"`
	StatusCode      uint16     `json:"status_code,omitempty"`
	Started         time.Time  `json:"started"`
	LatencyMs       float64    `json:"latency_ms"`
	URL             string     `json:"url"`
	ResponseExcerpt string     `json:"response_excerpt,omitempty"`
	Error           string     `json:"error,omitempty"`
	TraceID         string     `json:"trace_id,omitempty"`
	Origin          string     `json:"origin"`
	NextAttempt     *time.Time `json:"next_attempt,omitempty"`
}

func attemptJSON(a logquery.Attempt) AttemptJSON {
	out := AttemptJSON{ID: a.ID, DeliveryID: a.DeliveryID, EndpointID: a.EndpointID, EventID: a.EventID,
		EventType: a.EventType, AttemptNumber: a.AttemptNumber, Outcome: a.Outcome, StatusCode: a.StatusCode,
		Started: time.UnixMicro(a.StartedAtUs).UTC(), LatencyMs: float64(a.LatencyUs) / 1000, URL: a.URL,
		ResponseExcerpt: a.ResponseExcerpt, Error: a.Error, TraceID: a.TraceID, Origin: a.Origin}
	if a.NextAttemptAtMs > 0 {
		next := fromMs(a.NextAttemptAtMs)
		out.NextAttempt = &next
	}
	return out
}

// listAttempts serves GET /v1/attempts and, with the endpoint in the path,
// GET /v1/endpoints/{endpoint_id}/attempts.
func (a *API) listAttempts(r *request) {
	if !a.logReady(r) {
		return
	}
	known := []string{"event_id", "outcome", "status", "status_class", "trace_id", "since", "until", "limit", "cursor"}
	endpoint := r.param("endpoint_id")
	if endpoint == "" {
		known = append(known, "endpoint_id")
	} else if _, ok := a.endpoint(r, endpoint); !ok {
		WriteProblem(r.RequestCtx, fasthttp.StatusNotFound, "not-found", "endpoint "+trunc(endpoint)+" does not exist")
		return
	}
	q := newQuery(r, known...)
	lq := logquery.AttemptQuery{Tenant: r.caller.tenant, Endpoint: endpoint, Event: q.str("event_id"),
		Outcome: q.str("outcome"), Limit: q.limit()}
	if endpoint == "" {
		lq.Endpoint = q.str("endpoint_id")
	}
	if lq.Outcome != "" && !outcomes[lq.Outcome] {
		q.fail("outcome", "must be one of success, http_error, timeout, network_error, blocked, circuit_open, throttled, endpoint_disabled")
	}
	if v := q.str("status"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 100 || n > 599 {
			q.fail("status", "must be an HTTP status code from 100 to 599")
		}
		lq.Status = uint16(n)
	}
	if v := q.str("status_class"); v != "" {
		if len(v) != 3 || v[0] < '1' || v[0] > '5' || v[1:] != "xx" {
			q.fail("status_class", "must be 1xx, 2xx, 3xx, 4xx or 5xx")
		} else {
			lo := uint16(v[0]-'0') * 100
			lq.StatusFrom, lq.StatusTo = lo, lo+99
		}
	}
	if v := q.str("trace_id"); v != "" {
		if !validTraceID(v) {
			q.fail("trace_id", "must be a W3C trace id: 32 lowercase hex digits, not all zero")
		}
		lq.Trace = v
	}
	lq.Since, lq.Until = q.timeRange(a.now())
	lq.AfterUs, lq.AfterID = q.cursor()
	serveLogPage(a, r, q, "attempts", lq.Limit,
		func(ctx context.Context) ([]logquery.Attempt, error) { return a.opts.Log.Attempts(ctx, lq) },
		attemptJSON, func(a logquery.Attempt) string { return makeCursor(a.StartedAtUs, a.ID) })
}

// validTraceID reports whether s is a W3C trace id as traceparent writes
// it and the log stores it: 32 lowercase hex digits, not all zero.
func validTraceID(s string) bool {
	if len(s) != 32 || strings.Count(s, "0") == 32 {
		return false
	}
	for i := range len(s) {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// EndpointStatsJSON summarises an endpoint's attempts over a window.
type EndpointStatsJSON struct {
	EndpointID string    `json:"endpoint_id"`
	Since      time.Time `json:"since"`
	Until      time.Time `json:"until"`
	Attempts   uint64    `json:"attempts"`
	Successes  uint64    `json:"successes"`
	// SuccessRate is successes/attempts, null without attempts.
	SuccessRate *float64          `json:"success_rate"`
	LatencyMs   LatencyJSON       `json:"latency_ms"`
	ByOutcome   map[string]uint64 `json:"by_outcome"`
	PerMinute   []MinuteJSON      `json:"per_minute"`
}

// LatencyJSON are latency percentiles in milliseconds, of the requests made.
type LatencyJSON struct {
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
	P99 float64 `json:"p99"`
}

// MinuteJSON is one minute of the series (minutes without attempts are
// left out).
type MinuteJSON struct {
	Minute    time.Time `json:"minute"`
	Attempts  uint64    `json:"attempts"`
	Successes uint64    `json:"successes"`
}

// maxStatsWindow bounds a stats window: 24 h is 1,440 points of series.
const maxStatsWindow = 24 * time.Hour

func (a *API) endpointStats(r *request) {
	if !a.logReady(r) {
		return
	}
	id := r.param("endpoint_id")
	if _, ok := a.endpoint(r, id); !ok {
		WriteProblem(r.RequestCtx, fasthttp.StatusNotFound, "not-found", "endpoint "+trunc(id)+" does not exist")
		return
	}
	q := newQuery(r, "window")
	window := time.Hour
	if v := q.str("window"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Minute || d > maxStatsWindow {
			q.fail("window", "must be a duration from 1m to 24h, such as 15m or 6h")
		} else {
			window = d
		}
	}
	if len(q.errs) > 0 {
		invalid(r.RequestCtx, q.errs)
		return
	}
	until := a.now()
	since := until.Add(-window)
	ctx, cancel := logCtx()
	defer cancel()
	st, err := a.opts.Log.Stats(ctx, r.caller.tenant, id, since, until)
	if err != nil {
		a.logFailed(r, "stats", err)
		return
	}
	out := EndpointStatsJSON{EndpointID: id, Since: since.UTC(), Until: until.UTC(), Attempts: st.Attempts,
		Successes: st.Successes, ByOutcome: st.ByOutcome, PerMinute: []MinuteJSON{},
		LatencyMs: LatencyJSON{P50: st.LatencyUs[0] / 1000, P95: st.LatencyUs[1] / 1000, P99: st.LatencyUs[2] / 1000}}
	if st.Attempts > 0 {
		rate := float64(st.Successes) / float64(st.Attempts)
		out.SuccessRate = &rate
	}
	for _, m := range st.Minutes {
		out.PerMinute = append(out.PerMinute, MinuteJSON{Minute: time.UnixMicro(m.StartUs).UTC(), Attempts: m.Attempts, Successes: m.Successes})
	}
	writeJSON(r.RequestCtx, fasthttp.StatusOK, out)
}
