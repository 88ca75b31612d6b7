package api_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/valyala/fasthttp"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/pkg/eventrecord"
	"github.com/sluicehq/sluice/pkg/kafkax"
	"github.com/sluicehq/sluice/pkg/secretbox"
	"github.com/sluicehq/sluice/pkg/testenv"
	"github.com/sluicehq/sluice/services/ingest/api"
)

// The tests of this file drive the events routes in process with a fake
// sink and dedup view, except TestEventsReachKafka, which produces to the
// real Kafka.

// fakeSink acknowledges every record, unless fail returns an error for it,
// and keeps the ones it acknowledged.
type fakeSink struct {
	fail func(*kgo.Record) error
	mu   sync.Mutex
	recs []*kgo.Record
}

func (s *fakeSink) Publish(_ context.Context, rec *kgo.Record) error {
	if s.fail != nil {
		if err := s.fail(rec); err != nil {
			return err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recs = append(s.recs, rec)
	return nil
}

func (s *fakeSink) records() []*kgo.Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*kgo.Record(nil), s.recs...)
}

// seenKeys is a dedup view that has seen the event keys it holds.
type seenKeys map[string]bool

func (s seenKeys) Seen(key []byte, _ time.Time) bool { return s[string(key)] }

// eventsHandler is the API over the fixture's store (tenant fuzzTenant,
// key fuzzAPIKey) with events going to ev.
func eventsHandler(t testing.TB, ev api.EventsOptions) fasthttp.RequestHandler {
	t.Helper()
	return eventsHandlerBox(t, newBox(t), ev)
}

func eventsHandlerBox(t testing.TB, box *secretbox.Box, ev api.EventsOptions) fasthttp.RequestHandler {
	t.Helper()
	store, _ := fixture(t, box)
	opts := testOptions()
	opts.Events = ev
	return api.New(store, box, opts, discard).Handler()
}

// postEvents sends one POST through h with the fixture tenant's key
// (unless headers set Authorization) and headers as name, value pairs.
func postEvents(h fasthttp.RequestHandler, path string, body []byte, headers ...string) *fasthttp.Response {
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.SetMethod("POST")
	ctx.Request.SetRequestURI(path)
	ctx.Request.Header.SetContentType("application/json")
	ctx.Request.Header.Set("Authorization", "Bearer "+fuzzAPIKey)
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i+1] == "" && headers[i] == "Authorization" {
			ctx.Request.Header.Del(headers[i])
			continue
		}
		ctx.Request.Header.Set(headers[i], headers[i+1])
	}
	ctx.Request.SetBody(body)
	h(&ctx)
	resp := new(fasthttp.Response)
	ctx.Response.CopyTo(resp)
	return resp
}

// inProcess adapts a fasthttp response to wantProblem's arguments.
func inProcess(resp *fasthttp.Response) (int, http.Header, []byte) {
	hdr := http.Header{}
	for k, v := range resp.Header.All() {
		hdr.Add(string(k), string(v))
	}
	return resp.StatusCode(), hdr, resp.Body()
}

// wantAccepted checks a 202 answer and returns it.
func wantAccepted(t *testing.T, resp *fasthttp.Response) api.EventAccepted {
	t.Helper()
	status, hdr, raw := inProcess(resp)
	if status != http.StatusAccepted || hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d (%s), want 202 application/json; body %s", status, hdr.Get("Content-Type"), raw)
	}
	return decodeStrict[api.EventAccepted](t, raw)
}

// wantEventRecord checks rec is the event tenant sent: key, headers and a
// value that decodes to it.
func wantEventRecord(t testing.TB, rec *kgo.Record, tenant, id, typ, data string) {
	t.Helper()
	if got, want := string(rec.Key), tenant+"/"+id; got != want {
		t.Errorf("record key %q, want %q", got, want)
	}
	headers := map[string]string{}
	for _, h := range rec.Headers {
		if _, dup := headers[h.Key]; dup {
			t.Errorf("header %s repeated", h.Key)
		}
		headers[h.Key] = string(h.Value)
	}
	for name, want := range map[string]string{eventrecord.HeaderTenant: tenant, eventrecord.HeaderType: typ,
		eventrecord.HeaderID: id, eventrecord.HeaderEncoding: eventrecord.EncodingProtobuf} {
		if headers[name] != want {
			t.Errorf("header %s = %q, want %q", name, headers[name], want)
		}
	}
	e, err := eventrecord.Decode(rec, eventrecord.Limits{})
	if err != nil {
		t.Fatalf("the record of %s does not decode: %v", id, err)
	}
	if e.TenantId != tenant || e.EventId != id || e.Type != typ || string(e.Data) != data ||
		e.Source != sluicev1.EventSource_EVENT_SOURCE_HTTP || e.ReceivedAtMs == 0 {
		t.Errorf("decoded event %v, want tenant %s, id %s, type %s, data %s from HTTP with a received time",
			e, tenant, id, typ, data)
	}
}

func TestEventsValidation(t *testing.T) {
	const maxData = 1024
	sink := &fakeSink{}
	h := eventsHandler(t, api.EventsOptions{Sink: sink, Topic: "sluice.events", MaxDataBytes: maxData})
	big := `{"a":"` + strings.Repeat("x", maxData) + `"}`
	for _, tc := range []struct {
		desc, body string
		headers    []string
		status     int
		kind       string
		fields     []string // the problem's errors, in order
	}{
		{desc: "data an array", body: `{"type":"order.created","data":[1]}`, status: 400, kind: "invalid-request", fields: []string{"data"}},
		{desc: "data a string", body: `{"type":"order.created","data":"{}"}`, status: 400, kind: "invalid-request", fields: []string{"data"}},
		{desc: "data null", body: `{"type":"order.created","data":null}`, status: 400, kind: "invalid-request", fields: []string{"data"}},
		{desc: "data a number", body: `{"type":"order.created","data":5}`, status: 400, kind: "invalid-request", fields: []string{"data"}},
		{desc: "data missing", body: `{"type":"order.created"}`, status: 400, kind: "invalid-request", fields: []string{"data"}},
		{desc: "data not UTF-8", body: "{\"type\":\"order.created\",\"data\":{\"a\":\"\xff\"}}", status: 400, kind: "invalid-request", fields: []string{"data"}},
		{desc: "type missing", body: `{"data":{}}`, status: 400, kind: "invalid-request", fields: []string{"type"}},
		{desc: "type with an empty segment", body: `{"type":"order..created","data":{}}`, status: 400, kind: "invalid-request", fields: []string{"type"}},
		{desc: "type a wildcard", body: `{"type":"order.*","data":{}}`, status: 400, kind: "invalid-request", fields: []string{"type"}},
		{desc: "type reserved", body: `{"type":"sluice.endpoint.disabled","data":{}}`, status: 400, kind: "invalid-request", fields: []string{"type"}},
		{desc: "type not a string", body: `{"type":5,"data":{}}`, status: 400, kind: "invalid-request", fields: []string{"type"}},
		{desc: "id empty", body: `{"type":"a","id":"","data":{}}`, status: 400, kind: "invalid-request", fields: []string{"id"}},
		{desc: "id with a slash", body: `{"type":"a","id":"a/b","data":{}}`, status: 400, kind: "invalid-request", fields: []string{"id"}},
		{desc: "id starting with a dot", body: `{"type":"a","id":".a","data":{}}`, status: 400, kind: "invalid-request", fields: []string{"id"}},
		{desc: "id too long", body: `{"type":"a","id":"` + strings.Repeat("i", 129) + `","data":{}}`, status: 400, kind: "invalid-request", fields: []string{"id"}},
		{desc: "every field wrong at once", body: `{"type":"sluice.x","id":"a b","data":[]}`, status: 400, kind: "invalid-request",
			fields: []string{"type", "id", "data"}},
		{desc: "an unknown field", body: `{"type":"a","data":{},"colour":"blue"}`, status: 400, kind: "invalid-request", fields: []string{"colour"}},
		{desc: "a field in another case", body: `{"Type":"a","data":{}}`, status: 400, kind: "invalid-request", fields: []string{"Type"}},
		{desc: "not an object", body: `[{"type":"a","data":{}}]`, status: 400, kind: "malformed-json"},
		{desc: "not JSON", body: `{"type":`, status: 400, kind: "malformed-json"},
		{desc: "Idempotency-Key too long", body: `{"type":"a","data":{}}`, headers: []string{"Idempotency-Key", strings.Repeat("k", 256)},
			status: 400, kind: "invalid-request", fields: []string{"Idempotency-Key"}},
		{desc: "Idempotency-Key empty", body: `{"type":"a","data":{}}`, headers: []string{"Idempotency-Key", ""},
			status: 400, kind: "invalid-request", fields: []string{"Idempotency-Key"}},
		{desc: "Idempotency-Key not ASCII", body: `{"type":"a","data":{}}`, headers: []string{"Idempotency-Key", "clé"},
			status: 400, kind: "invalid-request", fields: []string{"Idempotency-Key"}},
		{desc: "Idempotency-Key with a tab", body: `{"type":"a","data":{}}`, headers: []string{"Idempotency-Key", "a\tb"},
			status: 400, kind: "invalid-request", fields: []string{"Idempotency-Key"}},
		{desc: "Idempotency-Key and a bad type", body: `{"type":"","data":{}}`, headers: []string{"Idempotency-Key", strings.Repeat("k", 300)},
			status: 400, kind: "invalid-request", fields: []string{"Idempotency-Key", "type"}},
		{desc: "not JSON content", body: `{"type":"a","data":{}}`, headers: []string{"Content-Type", "text/plain"},
			status: 415, kind: "unsupported-media-type"},
		{desc: "data over the limit", body: `{"type":"a","data":` + big + `}`, status: 413, kind: "payload-too-large"},
		{desc: "body over the limit", body: `{"type":"a","data":{}}` + strings.Repeat(" ", maxData+8<<10), status: 413, kind: "payload-too-large"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			status, hdr, raw := inProcess(postEvents(h, "/v1/events", []byte(tc.body), tc.headers...))
			p := wantProblem(t, tc.desc, status, hdr, raw, tc.status, tc.kind)
			if len(tc.fields) > 0 {
				wantFieldError(t, tc.desc, p, tc.fields[0])
				var got []string
				for _, e := range p.Errors {
					got = append(got, e.Field)
				}
				if strings.Join(got, ",") != strings.Join(tc.fields, ",") {
					t.Errorf("errors name %q, want %q: %+v", got, tc.fields, p.Errors)
				}
			}
			if tc.status == 413 && !strings.Contains(p.Detail, "at most") {
				t.Errorf("413 detail %q does not name the limit", p.Detail)
			}
			if tc.desc == "data over the limit" && !strings.Contains(p.Detail, fmt.Sprint(maxData)) {
				t.Errorf("413 detail %q does not name the data limit %d", p.Detail, maxData)
			}
		})
	}
	if n := len(sink.records()); n != 0 {
		t.Fatalf("refused events produced %d records", n)
	}

	t.Run("data at the limit is taken", func(t *testing.T) {
		data := `{"a":"` + strings.Repeat("x", maxData-8) + `"}`
		got := wantAccepted(t, postEvents(h, "/v1/events", []byte(`{"type":"a","data":`+data+`}`)))
		recs := sink.records()
		if len(recs) != 1 {
			t.Fatalf("%d records, want 1", len(recs))
		}
		wantEventRecord(t, recs[0], fuzzTenant, got.ID, "a", data)
	})
}

// TestEventsIDs: the id is the body's, else derived from Idempotency-Key,
// else new; a repeat the dedup view has seen is answered duplicate and
// not produced.
func TestEventsIDs(t *testing.T) {
	const idemKey = "order-o_123-created"
	derived := eventrecord.IDFromIdempotencyKey(fuzzTenant, idemKey)
	seen := seenKeys{
		string(eventrecord.Key(fuzzTenant, "evt_routed")): true,
		string(eventrecord.Key(fuzzTenant, derived)):      true,
		// Another tenant's event of the same id is not this one.
		string(eventrecord.Key("ten_other", "evt_other")): true,
	}
	sink := &fakeSink{}
	h := eventsHandler(t, api.EventsOptions{Sink: sink, Seen: seen, Topic: "sluice.events"})
	for _, tc := range []struct {
		desc, body string
		headers    []string
		wantID     string // "" means a new evt_ id
		duplicate  bool
	}{
		{desc: "the body's id", body: `{"type":"a","id":"evt_new","data":{}}`, wantID: "evt_new"},
		{desc: "the body's id, already routed", body: `{"type":"a","id":"evt_routed","data":{}}`, wantID: "evt_routed", duplicate: true},
		{desc: "an id routed for another tenant", body: `{"type":"a","id":"evt_other","data":{}}`, wantID: "evt_other"},
		{desc: "Idempotency-Key, already routed", body: `{"type":"a","data":{}}`, headers: []string{"Idempotency-Key", idemKey},
			wantID: derived, duplicate: true},
		{desc: "Idempotency-Key, new", body: `{"type":"a","data":{}}`, headers: []string{"Idempotency-Key", "another key"},
			wantID: eventrecord.IDFromIdempotencyKey(fuzzTenant, "another key")},
		{desc: "the id wins over Idempotency-Key", body: `{"type":"a","id":"evt_wins","data":{}}`,
			headers: []string{"Idempotency-Key", idemKey}, wantID: "evt_wins"},
		{desc: "no id", body: `{"type":"a","data":{}}`},
		{desc: "id null", body: `{"type":"a","id":null,"data":{}}`},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			before := len(sink.records())
			got := wantAccepted(t, postEvents(h, "/v1/events", []byte(tc.body), tc.headers...))
			switch {
			case tc.wantID == "" && (!strings.HasPrefix(got.ID, "evt_") || len(got.ID) != 30):
				t.Errorf("id %q, want a new evt_ id", got.ID)
			case tc.wantID != "" && got.ID != tc.wantID:
				t.Errorf("id %q, want %q", got.ID, tc.wantID)
			}
			if got.Duplicate != tc.duplicate {
				t.Errorf("duplicate %v, want %v", got.Duplicate, tc.duplicate)
			}
			recs := sink.records()[before:]
			if tc.duplicate {
				if len(recs) != 0 {
					t.Fatalf("a duplicate produced %d records", len(recs))
				}
				return
			}
			if len(recs) != 1 {
				t.Fatalf("%d records produced, want 1", len(recs))
			}
			wantEventRecord(t, recs[0], fuzzTenant, got.ID, "a", "{}")
		})
	}
	t.Run("a repeat of an id not yet routed is produced again", func(t *testing.T) {
		// The router drops the second copy; the API cannot know yet.
		before := len(sink.records())
		for range 2 {
			if got := wantAccepted(t, postEvents(h, "/v1/events", []byte(`{"type":"a","id":"evt_twice","data":{}}`))); got.Duplicate {
				t.Fatal("a repeat the view has not seen answered as a duplicate")
			}
		}
		if n := len(sink.records()) - before; n != 2 {
			t.Fatalf("%d records, want 2", n)
		}
	})
}

func TestEventsBatch(t *testing.T) {
	seen := seenKeys{string(eventrecord.Key(fuzzTenant, "evt_routed")): true}
	sink := &fakeSink{}
	h := eventsHandler(t, api.EventsOptions{Sink: sink, Seen: seen, Topic: "sluice.events", MaxBatch: 10, MaxDataBytes: 1024})
	body := `{"events":[
		{"type":"order.created","id":"evt_1","data":{"n":1}},
		{"type":"order.created","data":[]},
		{"type":"order.paid","id":"evt_2","data":{"n":2}},
		{"type":"sluice.x","id":"evt_bad","data":{}},
		{"type":"order.shipped","data":{"n":3}},
		{"type":"order.created","id":"evt_1","data":{"n":1}},
		{"type":"order.created","id":"evt_routed","data":{}},
		null,
		{"type":"a","data":{},"extra":1},
		{"type":"a","data":{"big":"` + strings.Repeat("x", 1024) + `"}}
	]}`
	resp := postEvents(h, "/v1/events/batch", []byte(body))
	status, hdr, raw := inProcess(resp)
	if status != http.StatusOK || hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, want 200; body %s", status, raw)
	}
	if hdr.Get("Retry-After") != "" {
		t.Errorf("Retry-After %q on a batch without a 503", hdr.Get("Retry-After"))
	}
	got := decodeStrict[api.EventBatchResult](t, raw)
	if len(got.Data) != 10 {
		t.Fatalf("%d results for 10 events: %s", len(got.Data), raw)
	}
	type want struct {
		id        string // "new" is a new evt_ id
		duplicate bool
		status    int
		kind      string
		field     string
	}
	for i, w := range []want{
		{id: "evt_1"},
		{status: 400, kind: "invalid-request", field: "data"},
		{id: "evt_2"},
		{status: 400, kind: "invalid-request", field: "type"},
		{id: "new"},
		{id: "evt_1", duplicate: true}, // a copy of item 0, not produced
		{id: "evt_routed", duplicate: true},
		{status: 400, kind: "malformed-json"},
		{status: 400, kind: "invalid-request", field: "extra"},
		{status: 413, kind: "payload-too-large"},
	} {
		r := got.Data[i]
		if w.status != 0 {
			if r.Error == nil || r.ID != "" || r.Duplicate != nil {
				t.Errorf("result %d: %+v, want only an error", i, r)
				continue
			}
			p := *r.Error
			if p.Status != w.status || p.Type != api.ProblemBase+w.kind || p.Title == "" || p.Detail == "" {
				t.Errorf("result %d: problem %+v, want status %d, kind %s", i, p, w.status, w.kind)
			}
			if w.field != "" && (len(p.Errors) == 0 || p.Errors[0].Field != w.field) {
				t.Errorf("result %d: errors %+v, want the first to name %s", i, p.Errors, w.field)
			}
			continue
		}
		if r.Error != nil || r.Duplicate == nil {
			t.Errorf("result %d: %+v, want an id and duplicate", i, r)
			continue
		}
		if (w.id == "new" && !strings.HasPrefix(r.ID, "evt_")) || (w.id != "new" && r.ID != w.id) || *r.Duplicate != w.duplicate {
			t.Errorf("result %d: id %q duplicate %v, want %s and %v", i, r.ID, *r.Duplicate, w.id, w.duplicate)
		}
	}
	recs := sink.records()
	byID := map[string]*kgo.Record{}
	for _, r := range recs {
		byID[string(r.Key)] = r
	}
	if len(recs) != 3 || len(byID) != 3 {
		t.Fatalf("%d records (%d keys), want the 3 valid new events once each", len(recs), len(byID))
	}
	wantEventRecord(t, byID[fuzzTenant+"/evt_1"], fuzzTenant, "evt_1", "order.created", `{"n":1}`)
	wantEventRecord(t, byID[fuzzTenant+"/evt_2"], fuzzTenant, "evt_2", "order.paid", `{"n":2}`)
	wantEventRecord(t, byID[fuzzTenant+"/"+got.Data[4].ID], fuzzTenant, got.Data[4].ID, "order.shipped", `{"n":3}`)

	t.Run("refused whole", func(t *testing.T) {
		item := `{"type":"a","data":{}}`
		for _, tc := range []struct {
			desc, body string
			headers    []string
			status     int
			kind       string
			field      string
		}{
			{desc: "empty", body: `{"events":[]}`, status: 400, kind: "invalid-request", field: "events"},
			{desc: "events missing", body: `{}`, status: 400, kind: "invalid-request", field: "events"},
			{desc: "events null", body: `{"events":null}`, status: 400, kind: "invalid-request", field: "events"},
			{desc: "events not an array", body: `{"events":{}}`, status: 400, kind: "invalid-request", field: "events"},
			{desc: "over the most", body: `{"events":[` + strings.Repeat(item+",", 10) + item + `]}`,
				status: 400, kind: "invalid-request", field: "events"},
			{desc: "Idempotency-Key", body: `{"events":[` + item + `]}`, headers: []string{"Idempotency-Key", "k"},
				status: 400, kind: "invalid-request", field: "Idempotency-Key"},
			{desc: "an unknown member", body: `{"events":[` + item + `],"dry_run":true}`,
				status: 400, kind: "invalid-request", field: "dry_run"},
			{desc: "not an object", body: `[` + item + `]`, status: 400, kind: "malformed-json"},
			{desc: "not JSON content", body: `{"events":[` + item + `]}`, headers: []string{"Content-Type", "text/plain"},
				status: 415, kind: "unsupported-media-type"},
		} {
			t.Run(tc.desc, func(t *testing.T) {
				status, hdr, raw := inProcess(postEvents(h, "/v1/events/batch", []byte(tc.body), tc.headers...))
				p := wantProblem(t, tc.desc, status, hdr, raw, tc.status, tc.kind)
				if tc.field != "" {
					wantFieldError(t, tc.desc, p, tc.field)
				}
			})
		}
		if n := len(sink.records()); n != 3 {
			t.Fatalf("refused batches produced %d records", n-3)
		}
	})

	t.Run("body limit", func(t *testing.T) {
		h := eventsHandler(t, api.EventsOptions{Sink: &fakeSink{}, Topic: "sluice.events", MaxBatchBodyBytes: 4096})
		body := `{"events":[{"type":"a","data":{"x":"` + strings.Repeat("x", 4096) + `"}}]}`
		status, hdr, raw := inProcess(postEvents(h, "/v1/events/batch", []byte(body)))
		p := wantProblem(t, "batch over its body limit", status, hdr, raw, 413, "payload-too-large")
		if !strings.Contains(p.Detail, "at most 4096") {
			t.Errorf("detail %q does not name the limit", p.Detail)
		}
		// The control-plane limit stays 64 KiB while a batch may be larger.
		big := `{"events":[{"type":"a","data":{"x":"` + strings.Repeat("x", 100<<10) + `"}}]}`
		h = eventsHandler(t, api.EventsOptions{Sink: &fakeSink{}, Topic: "sluice.events"})
		if status, _, raw := inProcess(postEvents(h, "/v1/events/batch", []byte(big))); status != 200 {
			t.Fatalf("a 100 KiB batch: status %d: %s", status, raw)
		}
		if status, _, raw := inProcess(postEvents(h, "/v1/events", []byte(big[len(`{"events":[`):len(big)-2]))); status != 202 {
			t.Fatalf("a 100 KiB event: status %d: %s", status, raw)
		}
	})
}

// TestEventsSinkFailures: a full buffer is 503 with Retry-After, for one
// event and per item of a batch; other failures too, except a record too
// large for Kafka (413).
func TestEventsSinkFailures(t *testing.T) {
	for _, tc := range []struct {
		desc   string
		err    error
		status int
		kind   string
	}{
		{"buffer full", kgo.ErrMaxBuffered, 503, "unavailable"},
		{"Kafka unreachable", context.DeadlineExceeded, 503, "unavailable"},
		{"client closed during shutdown", kgo.ErrClientClosed, 503, "unavailable"},
		{"record too large for Kafka", kerr.MessageTooLarge, 413, "payload-too-large"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			// The sink fails events of type fail.me and takes the others.
			sink := &fakeSink{fail: func(r *kgo.Record) error {
				for _, h := range r.Headers {
					if h.Key == eventrecord.HeaderType && string(h.Value) == "fail.me" {
						return fmt.Errorf("producing: %w", tc.err)
					}
				}
				return nil
			}}
			h := eventsHandler(t, api.EventsOptions{Sink: sink, Topic: "sluice.events"})
			status, hdr, raw := inProcess(postEvents(h, "/v1/events", []byte(`{"type":"fail.me","id":"e1","data":{}}`)))
			wantProblem(t, "single event", status, hdr, raw, tc.status, tc.kind)
			if got, want := hdr.Get("Retry-After"), map[bool]string{true: "1"}[tc.status == 503]; got != want {
				t.Errorf("Retry-After %q, want %q", got, want)
			}

			status, hdr, raw = inProcess(postEvents(h, "/v1/events/batch",
				[]byte(`{"events":[{"type":"ok","id":"e2","data":{}},{"type":"fail.me","id":"e3","data":{}}]}`)))
			if status != 200 {
				t.Fatalf("batch: status %d: %s", status, raw)
			}
			if got, want := hdr.Get("Retry-After"), map[bool]string{true: "1"}[tc.status == 503]; got != want {
				t.Errorf("batch Retry-After %q, want %q", got, want)
			}
			res := decodeStrict[api.EventBatchResult](t, raw).Data
			if len(res) != 2 || res[0].ID != "e2" || res[0].Error != nil || res[1].Error == nil ||
				res[1].Error.Status != tc.status || res[1].Error.Type != api.ProblemBase+tc.kind {
				t.Fatalf("batch results %s, want e2 taken and e3 refused with %d", raw, tc.status)
			}
			if n := len(sink.records()); n != 1 {
				t.Fatalf("%d records acknowledged, want 1", n)
			}
		})
	}
}

func TestEventsDisabledAndAccess(t *testing.T) {
	t.Run("no sink", func(t *testing.T) {
		h := eventsHandler(t, api.EventsOptions{})
		for _, path := range []string{"/v1/events", "/v1/events/batch"} {
			status, hdr, raw := inProcess(postEvents(h, path, []byte(`{"type":"a","data":{}}`)))
			p := wantProblem(t, path, status, hdr, raw, 503, "unavailable")
			if p.Detail != "events are not enabled on this server" {
				t.Errorf("%s: detail %q", path, p.Detail)
			}
		}
	})
	sink := &fakeSink{}
	h := eventsHandler(t, api.EventsOptions{Sink: sink, Topic: "sluice.events"})
	for _, path := range []string{"/v1/events", "/v1/events/batch"} {
		for _, tc := range []struct {
			desc, auth string
			status     int
			kind       string
		}{
			{"no key", "", 401, "unauthorized"},
			{"an unknown key", "Bearer sk_unknown", 401, "unauthorized"},
			{"the admin key", "Bearer " + adminKey, 403, "forbidden"},
		} {
			status, hdr, raw := inProcess(postEvents(h, path, []byte(`{"type":"a","data":{}}`), "Authorization", tc.auth))
			wantProblem(t, path+" with "+tc.desc, status, hdr, raw, tc.status, tc.kind)
			if status == 401 && hdr.Get("WWW-Authenticate") == "" {
				t.Errorf("%s with %s: 401 without WWW-Authenticate", path, tc.desc)
			}
		}
		var ctx fasthttp.RequestCtx
		ctx.Request.Header.SetMethod("PUT")
		ctx.Request.SetRequestURI(path)
		ctx.Request.Header.Set("Authorization", "Bearer "+fuzzAPIKey)
		h(&ctx)
		if allow := string(ctx.Response.Header.Peek("Allow")); ctx.Response.StatusCode() != 405 || !strings.Contains(allow, "POST") {
			t.Errorf("PUT %s: status %d, Allow %q; want 405 and POST allowed", path, ctx.Response.StatusCode(), allow)
		}
	}
	if n := len(sink.records()); n != 0 {
		t.Fatalf("refused callers produced %d records", n)
	}
}

// TestEventsReachKafka: accepted events are on the events topic once the
// API answers, with the key and headers of the contract and a value that
// decodes to the event sent.
func TestEventsReachKafka(t *testing.T) {
	k := testenv.NewKafka(t)
	producer, err := kafkax.NewProducer(k.Config, kgo.MaxBufferedBytes(8<<20))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(producer.Close)
	opts := testOptions()
	opts.Events = api.EventsOptions{Sink: api.NewKafkaSink(producer), Topic: k.Names.Events}
	rep := startReplica(t, k, newBox(t), opts)
	ten, key := newTenant(t, rep.server, "Events")
	ctx := ctxT(t)

	endSum := func() int64 {
		t.Helper()
		ends, err := kafkax.EndOffsets(ctx, producer, k.Names.Events)
		if err != nil {
			t.Fatal(err)
		}
		var sum int64
		for _, e := range ends {
			sum += e
		}
		return sum
	}

	type sent struct{ id, typ, data string }
	var want []sent
	one, _, _ := call[api.EventAccepted](t, rep.server, http.StatusAccepted, "POST", "/v1/events", key,
		`{"type":"order.created","id":"order-1-created","data":{"order": 1, "items": ["a", "b"]}}`)
	if one.ID != "order-1-created" || one.Duplicate {
		t.Fatalf("answer %+v", one)
	}
	// acks=all: the 202 comes after the record is in the log.
	if n := endSum(); n != 1 {
		t.Fatalf("the events topic holds %d records after the 202, want 1", n)
	}
	want = append(want, sent{one.ID, "order.created", `{"order": 1, "items": ["a", "b"]}`})

	idem, _, _ := call[api.EventAccepted](t, rep.server, http.StatusAccepted, "POST", "/v1/events", key,
		`{"type":"order.paid","data":{}}`, "Idempotency-Key", "pay-1")
	if idem.ID != eventrecord.IDFromIdempotencyKey(ten.ID, "pay-1") {
		t.Fatalf("Idempotency-Key made id %s", idem.ID)
	}
	want = append(want, sent{idem.ID, "order.paid", `{}`})

	batch, _, _ := call[api.EventBatchResult](t, rep.server, http.StatusOK, "POST", "/v1/events/batch", key,
		`{"events":[{"type":"b.one","data":{"i":1}},{"type":"b..bad","data":{}},{"type":"b.two","id":"b2","data":{"i":2}},`+
			`{"type":"b.three","data":"not an object"},{"type":"b.four","data":{"i":4}}]}`)
	if len(batch.Data) != 5 {
		t.Fatalf("%d results", len(batch.Data))
	}
	for _, w := range []struct {
		i   int
		typ string
		n   int
	}{{0, "b.one", 1}, {2, "b.two", 2}, {4, "b.four", 4}} {
		r := batch.Data[w.i]
		if r.Error != nil || r.Duplicate == nil || *r.Duplicate {
			t.Fatalf("result %d: %+v", w.i, r)
		}
		want = append(want, sent{r.ID, w.typ, fmt.Sprintf(`{"i":%d}`, w.n)})
	}
	if batch.Data[2].ID != "b2" {
		t.Errorf("result 2 has id %s, want the given b2", batch.Data[2].ID)
	}
	for _, i := range []int{1, 3} {
		if r := batch.Data[i]; r.Error == nil || r.Error.Status != 400 {
			t.Fatalf("result %d: %+v, want a 400", i, r)
		}
	}
	if n := endSum(); n != int64(len(want)) {
		t.Fatalf("the events topic holds %d records after the answers, want %d", n, len(want))
	}

	cl, err := kafkax.NewClient(k.Config, kgo.ConsumeTopics(k.Names.Events),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	got := map[string]*kgo.Record{}
	for len(got) < len(want) {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d records", len(got), len(want))
		}
		fs.EachRecord(func(r *kgo.Record) {
			if _, dup := got[string(r.Key)]; dup {
				t.Errorf("record %s twice", r.Key)
			}
			got[string(r.Key)] = r
		})
	}
	for _, w := range want {
		rec, ok := got[ten.ID+"/"+w.id]
		if !ok {
			t.Errorf("event %s is not on the topic", w.id)
			continue
		}
		wantEventRecord(t, rec, ten.ID, w.id, w.typ, w.data)
	}
	if !bytes.Equal(got[ten.ID+"/"+one.ID].Key, eventrecord.Key(ten.ID, one.ID)) {
		t.Error("key is not eventrecord.Key")
	}
}
