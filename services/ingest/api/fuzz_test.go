package api_test

// The fuzz targets drive the API's request decoders and validation in
// process, against memStore, so they run at thousands of requests a second
// without Kafka; the other tests cover the real store.

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math"
	"net/url"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/valyala/fasthttp"
	"google.golang.org/protobuf/proto"

	"github.com/sluicehq/sluice/pkg/eventrecord"
	"github.com/sluicehq/sluice/services/ingest/api"
)

// checkAnswer checks what every answer must be: no 5xx, and every 4xx a
// problem document with its status, a type of ours and a detail.
func checkAnswer(t *testing.T, resp *fasthttp.Response) {
	t.Helper()
	status := resp.StatusCode()
	if status >= 500 {
		t.Fatalf("status %d: %s", status, resp.Body())
	}
	if status < 400 {
		return
	}
	if ct := string(resp.Header.ContentType()); ct != "application/problem+json" {
		t.Fatalf("status %d with content type %q", status, ct)
	}
	var p api.Problem
	if err := json.Unmarshal(resp.Body(), &p); err != nil {
		t.Fatalf("status %d with a body that is not a problem: %v: %s", status, err, resp.Body())
	}
	if p.Status != status || p.Detail == "" || p.Title == "" || !strings.HasPrefix(p.Type, api.ProblemBase) {
		t.Fatalf("status %d with problem %+v", status, p)
	}
	if p.Type == api.ProblemBase+"invalid-request" && len(p.Errors) == 0 {
		t.Fatalf("an invalid-request problem lists no field: %+v", p)
	}
	if status == 405 && len(resp.Header.Peek("Allow")) == 0 {
		t.Fatalf("405 without Allow")
	}
}

// checkLimits checks an endpoint the API accepted is within every limit
// the API documents.
func checkLimits(t *testing.T, e api.EndpointJSON) {
	t.Helper()
	u, err := url.Parse(e.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" || u.User != nil || u.Fragment != "" || len(e.URL) > 2048 {
		t.Fatalf("accepted url %q", e.URL)
	}
	if (e.MaxInFlight != nil && (*e.MaxInFlight < 1 || *e.MaxInFlight > 1000)) ||
		(e.TimeoutMs != nil && (*e.TimeoutMs < 1000 || *e.TimeoutMs > 60000)) ||
		(e.RateLimit != nil && (*e.RateLimit < 0.001 || *e.RateLimit > 10000 || math.IsNaN(*e.RateLimit))) {
		t.Fatalf("accepted limits max_in_flight %s, timeout_ms %s, rate_limit %s", fmtPtr(e.MaxInFlight), fmtPtr(e.TimeoutMs), fmtPtr(e.RateLimit))
	}
	if len(e.Description) > 512 || len(e.Events) > 64 || len(e.Metadata) > 32 || len(e.Headers) > 20 {
		t.Fatalf("accepted sizes: description %d, events %d, metadata %d, headers %d",
			len(e.Description), len(e.Events), len(e.Metadata), len(e.Headers))
	}
	for k, v := range e.Metadata {
		if k == "" || len(k) > 64 || len(v) > 512 {
			t.Fatalf("accepted metadata %q: %q", k, v)
		}
	}
	for k, v := range e.Headers {
		lower := strings.ToLower(k)
		if k == "" || strings.ContainsAny(k, " :\r\n\x00") || strings.ContainsAny(v, "\r\n\x00") ||
			strings.HasPrefix(lower, "webhook-") || lower == "host" || lower == "content-length" {
			t.Fatalf("accepted header %q: %q", k, v)
		}
	}
}

// endpointSeeds are bodies for both decoders: valid, invalid, and the
// JSON shapes that trip decoders.
var endpointSeeds = []string{
	`{"url":"https://example.com/hooks"}`,
	`{"url":"http://127.0.0.1:8080/x?y=1","description":"d","events":["order.*","invoice.paid"],"metadata":{"a":"b"},` +
		`"headers":{"X-Team":"a"},"max_in_flight":1000,"rate_limit":0.5,"ordered":true,"timeout_ms":60000}`,
	`{"url":"https://example.com","secret":"whsec_` + base64.StdEncoding.EncodeToString(make([]byte, 24)) + `"}`,
	`{"url":null,"description":null,"events":null,"metadata":null,"headers":null,"max_in_flight":null,"rate_limit":null,"ordered":null,"timeout_ms":null}`,
	`{"max_in_flight":5,"max_in_flight":null}`,
	`{"rate_limit":null,"rate_limit":3}`,
	`{"metadata":{"a":"1"},"metadata":{"b":"2"}}`,
	`{"url":"ftp://x"}`,
	`{"url":"https://u:p@example.com/#f"}`,
	`{"url":5}`,
	`{"events":["ord*"]}`,
	`{"headers":{"Host":"x","X":"a\r\nb"}}`,
	`{"max_in_flight":1e400}`,
	`{"rate_limit":-0}`,
	`{"timeout_ms":9223372036854775808}`,
	`{"colour":"blue"}`,
	`{"":1}`,
	`{"url":"https://example.com"} x`,
	`{"url":"\ud800"}`,
	`[]`,
	`null`,
	`"x"`,
	``,
	`{`,
	`{"metadata":{"a":1}}`,
	`{"events":[null,""]}`,
}

func FuzzDecodeEndpointCreate(f *testing.F) {
	for _, s := range endpointSeeds {
		f.Add([]byte(s))
	}
	box := newBox(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		var in api.EndpointCreate
		decErr := api.DecodeStrict(body, &in)
		var fe *api.FieldDecodeError
		if errors.As(decErr, &fe) && fe.Detail == "" {
			t.Fatalf("field error without a detail: %+v", fe)
		}

		store, h := fixture(t, box)
		resp := serveInProcess(h, "POST", "/v1/endpoints", fuzzAPIKey, body)
		checkAnswer(t, resp)
		status := resp.StatusCode()
		switch {
		case len(body) > 64<<10:
			if status != 413 {
				t.Fatalf("a body of %d bytes: status %d, want 413", len(body), status)
			}
			return
		case decErr != nil:
			if status != 400 {
				t.Fatalf("DecodeStrict refused the body (%v) but the API answered %d", decErr, status)
			}
			return
		case status == 201:
		case status == 400:
			return
		default:
			t.Fatalf("status %d: %s", status, resp.Body())
		}

		var out api.EndpointJSON
		if err := json.Unmarshal(resp.Body(), &out); err != nil {
			t.Fatal(err)
		}
		if out.URL != in.URL {
			t.Fatalf("created with url %q, want the given %q", out.URL, in.URL)
		}
		checkLimits(t, out)
		secret, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(out.Secret, "whsec_"))
		if !strings.HasPrefix(out.Secret, "whsec_") || err != nil || len(secret) < 24 || len(secret) > 64 {
			t.Fatalf("created with secret %q", out.Secret)
		}
		rec, ok := store.Get(out.ID)
		if !ok || rec.GetEndpoint().GetEtag() != out.Etag || rec.GetEndpoint().GetTenantId() != fuzzTenant {
			t.Fatalf("the store does not hold the endpoint the API created: %v", rec)
		}
		opened, err := box.Open(rec.GetEndpoint().SecretSealed, out.ID)
		if err != nil || !bytes.Equal(opened, secret) {
			t.Fatalf("the stored secret does not open to the one shown: %v", err)
		}
	})
}

func FuzzDecodeEndpointPatch(f *testing.F) {
	for _, s := range endpointSeeds {
		f.Add([]byte(s))
	}
	box := newBox(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		var in api.EndpointPatch
		decErr := api.DecodeStrict(body, &in)

		store, h := fixture(t, box)
		before, _ := store.Get(fuzzEndpoint)
		resp := serveInProcess(h, "PATCH", "/v1/endpoints/"+fuzzEndpoint, fuzzAPIKey, body)
		checkAnswer(t, resp)
		status := resp.StatusCode()
		after, _ := store.Get(fuzzEndpoint)
		if status != 200 {
			if !proto.Equal(before, after) {
				t.Fatalf("a refused patch (%d) changed the endpoint", status)
			}
		}
		switch {
		case len(body) > 64<<10:
			if status != 413 {
				t.Fatalf("a body of %d bytes: status %d, want 413", len(body), status)
			}
			return
		case decErr != nil:
			if status != 400 {
				t.Fatalf("DecodeStrict refused the body (%v) but the API answered %d", decErr, status)
			}
			return
		case status == 200:
		case status == 400:
			return
		default:
			t.Fatalf("status %d: %s", status, resp.Body())
		}

		var out api.EndpointJSON
		if err := json.Unmarshal(resp.Body(), &out); err != nil {
			t.Fatal(err)
		}
		checkLimits(t, out)
		if out.Secret != "" {
			t.Fatalf("a patch answer shows the secret")
		}
		// The answer is what is stored. A patch that changed something has a
		// new etag; one that changed nothing wrote nothing and keeps it.
		if after.GetEndpoint().GetEtag() != out.Etag {
			t.Fatalf("etag %q after the patch, stored %q", out.Etag, after.GetEndpoint().GetEtag())
		}
		changed := !proto.Equal(before, after)
		if changed == (out.Etag == fuzzEtag) {
			t.Fatalf("endpoint changed=%v but etag %q (was %q)", changed, out.Etag, fuzzEtag)
		}
		// Every member present is applied, with its last value (null is
		// the default); every member absent is left alone.
		var members map[string]json.RawMessage
		if err := json.Unmarshal(body, &members); err != nil {
			t.Fatalf("a body the API took is not an object: %v", err)
		}
		want := before.GetEndpoint()
		wantStr := func(name, old string) string {
			raw, ok := members[name]
			if !ok {
				return old
			}
			var v string
			_ = json.Unmarshal(raw, &v) // null leaves ""
			return v
		}
		if got, w := out.URL, wantStr("url", want.Url); got != w {
			t.Fatalf("url %q, want %q", got, w)
		}
		if got, w := out.Description, wantStr("description", want.Description); got != w {
			t.Fatalf("description %q, want %q", got, w)
		}
		wantInt := func(name string, old, dflt int64) int64 {
			raw, ok := members[name]
			if !ok {
				return old
			}
			if string(raw) == "null" {
				return dflt
			}
			var v int64
			if err := json.Unmarshal(raw, &v); err != nil {
				t.Fatalf("%s %s was accepted: %v", name, raw, err)
			}
			return v
		}
		// null (and a limit never set) is 0 here, as stored.
		if got, w := int64(deref(out.MaxInFlight)), wantInt("max_in_flight", int64(want.MaxInFlight), 0); got != w {
			t.Fatalf("max_in_flight %d, want %d", got, w)
		}
		if got, w := deref(out.TimeoutMs), wantInt("timeout_ms", want.TimeoutMs, 0); got != w {
			t.Fatalf("timeout_ms %d, want %d", got, w)
		}
		wantRate := want.RateLimit
		if raw, ok := members["rate_limit"]; ok {
			wantRate = 0
			_ = json.Unmarshal(raw, &wantRate)
		}
		if gotRate := float64(0); (out.RateLimit == nil) != (wantRate == 0) || (out.RateLimit != nil && *out.RateLimit != wantRate) {
			if out.RateLimit != nil {
				gotRate = *out.RateLimit
			}
			t.Fatalf("rate_limit %v, want %v", gotRate, wantRate)
		}
		if raw, ok := members["events"]; ok {
			var w []string
			_ = json.Unmarshal(raw, &w)
			if strings.Join(out.Events, "\x00") != strings.Join(w, "\x00") || len(out.Events) != len(w) {
				t.Fatalf("events %q, want %q", out.Events, w)
			}
		} else if strings.Join(out.Events, "\x00") != strings.Join(want.EventTypes, "\x00") {
			t.Fatalf("events %q changed without being patched", out.Events)
		}
	})
}

// FuzzRequest sends anything to any route, with the admin key, a tenant's
// key or none: the router, the query parsers and every body decoder.
func FuzzRequest(f *testing.F) {
	for _, s := range []struct {
		method, uri string
		who         uint8
		body        string
	}{
		{"GET", "/v1/tenants?limit=1&cursor=" + base64.RawURLEncoding.EncodeToString([]byte(fuzzTenant)), 0, ""},
		{"POST", "/v1/tenants", 0, `{"name":"n","metadata":{"a":"b"}}`},
		{"PATCH", "/v1/tenants/" + fuzzTenant, 0, `{"name":"m","metadata":null}`},
		{"DELETE", "/v1/tenants/" + fuzzTenant, 0, ""},
		{"POST", "/v1/tenants/" + fuzzTenant + "/api-keys", 0, `{"name":"k"}`},
		{"GET", "/v1/tenants/" + fuzzTenant + "/api-keys?limit=250", 0, ""},
		{"DELETE", "/v1/tenants/" + fuzzTenant + "/api-keys/" + fuzzKeyID, 0, ""},
		{"GET", "/v1/endpoints?status=enabled&event_type=order.created&limit=2", 1, ""},
		{"POST", "/v1/endpoints", 1, `{"url":"https://example.com"}`},
		{"GET", "/v1/endpoints/" + fuzzEndpoint, 1, ""},
		{"PATCH", "/v1/endpoints/" + fuzzEndpoint, 1, `{"rate_limit":null}`},
		{"DELETE", "/v1/endpoints/" + fuzzEndpoint, 1, ""},
		{"POST", "/v1/endpoints/" + fuzzEndpoint + "/rotate-secret", 1, `{"grace_period_seconds":604800}`},
		{"POST", "/v1/endpoints/" + fuzzEndpoint + "/rotate-secret", 1, `{"grace_period_seconds":18446744074}`},
		{"POST", "/v1/endpoints/" + fuzzEndpoint + "/enable", 1, ""},
		{"POST", "/v1/endpoints/" + fuzzEndpoint + "/disable", 1, `{"reason":"r"}`},
		{"PUT", "/v1/endpoints", 2, ""},
		{"GET", "/openapi.json", 2, ""},
		{"GET", "//v1//endpoints/", 1, ""},
		{"GET", "/v1/endpoints?cursor=%ff&limit=99999999999999999999", 1, ""},
	} {
		f.Add(s.method, s.uri, s.who, []byte(s.body))
	}
	box := newBox(f)
	f.Fuzz(func(t *testing.T, method, uri string, who uint8, body []byte) {
		if method == "" || strings.ContainsAny(method, " \r\n\t") || !strings.HasPrefix(uri, "/") || strings.ContainsAny(uri, " \r\n\t#") {
			return // not a request line fasthttp would read
		}
		store, h := fixture(t, box)
		key := []string{adminKey, fuzzAPIKey, ""}[who%3]
		resp := serveInProcess(h, method, uri, key, body)
		checkAnswer(t, resp)
		if resp.StatusCode() < 300 && len(resp.Body()) > 0 && method != "GET" {
			// A write was answered: what the answer names is stored.
			var obj struct {
				ID   string `json:"id"`
				Etag string `json:"etag"`
			}
			if err := json.Unmarshal(resp.Body(), &obj); err != nil {
				t.Fatalf("a %d answer that is not an object: %s", resp.StatusCode(), resp.Body())
			}
			if obj.Etag != "" {
				rec, ok := store.Get(obj.ID)
				if !ok {
					t.Fatalf("%s %s answered %s, which is not stored", method, uri, obj.ID)
				}
				var etag string
				switch {
				case rec.GetTenant() != nil:
					etag = rec.GetTenant().Etag
				case rec.GetEndpoint() != nil:
					etag = rec.GetEndpoint().Etag
				}
				if etag != obj.Etag {
					t.Fatalf("%s %s answered etag %q, stored %q", method, uri, obj.Etag, etag)
				}
			}
		}
	})
}

// FuzzEvents sends any body to POST /v1/events or /v1/events/batch, with or
// without an Idempotency-Key, to a sink that takes everything or whose
// buffer is full. Every answer is a 2xx, a problem document, or the 503
// (with Retry-After) of the full buffer; and what is answered as taken is
// exactly what was produced, each record decoding to an event of the
// caller with the id answered.
func FuzzEvents(f *testing.F) {
	for _, s := range []struct {
		body  string
		batch bool
		key   string
		full  bool
	}{
		{`{"type":"order.created","data":{"n":1}}`, false, "", false},
		{`{"type":"order.created","id":"evt_1","data":{}}`, false, "", true},
		{`{"type":"order.created","id":"evt_seen","data":{}}`, false, "", false},
		{`{"type":"order.created","data":{}}`, false, "key-1", false},
		{`{"type":"order.created","data":{}}`, false, "k\x7f", false},
		{`{"type":"sluice.x","id":".x","data":[]}`, false, "", false},
		{`{"type":"a","data":{"x":"` + strings.Repeat("x", 1100) + `"}}`, false, "", false},
		{`{"type":"a","data":{"s":"\ud800"}}`, false, "", false},
		{`{"type":"a","data":{},"data":null}`, false, "", false},
		{`{"type":"a","data":{}} {}`, false, "", false},
		{`{"events":[{"type":"a","data":{}},{"type":"a","id":"evt_seen","data":{}},{"type":"a","id":"d","data":{}},` +
			`{"type":"a","id":"d","data":{}},null]}`, true, "", false},
		{`{"events":[{"type":"a","data":{}},{"type":"b","data":[]}]}`, true, "", true},
		{`{"events":[{"type":"a","data":{}}]}`, true, "k", false},
		{`{"events":[]}`, true, "", false},
		{`{"events":[1,"x",[],{}]}`, true, "", false},
		{`{"events":[{},{},{},{},{},{}]}`, true, "", false},
		{``, true, "", false},
		{`null`, false, "", false},
	} {
		f.Add([]byte(s.body), s.batch, s.key, s.full)
	}
	box := newBox(f)
	const maxData = 1024
	f.Fuzz(func(t *testing.T, body []byte, batch bool, key string, full bool) {
		if strings.ContainsAny(key, "\r\n\x00") {
			return // not a header value that can arrive
		}
		sink := &fakeSink{}
		if full {
			sink.fail = func(*kgo.Record) error { return kgo.ErrMaxBuffered }
		}
		seen := seenKeys{string(eventrecord.Key(fuzzTenant, "evt_seen")): true}
		h := eventsHandlerBox(t, box, api.EventsOptions{Sink: sink, Seen: seen, Topic: "sluice.events",
			MaxDataBytes: maxData, MaxBatch: 5, MaxBatchBodyBytes: 16 << 10})
		path := "/v1/events"
		if batch {
			path = "/v1/events/batch"
		}
		var headers []string
		if key != "" {
			headers = []string{"Idempotency-Key", key}
		}
		resp := postEvents(h, path, body, headers...)
		status := resp.StatusCode()
		recs := sink.records()
		if status == 503 {
			if !full {
				t.Fatalf("503 from a sink with room: %s", resp.Body())
			}
			if string(resp.Header.Peek("Retry-After")) != "1" {
				t.Fatalf("503 without Retry-After: 1")
			}
			resp.SetStatusCode(429) // checkAnswer refuses every 5xx; the problem must still be one
			var p api.Problem
			if err := json.Unmarshal(resp.Body(), &p); err != nil || p.Status != 503 || p.Type != api.ProblemBase+"unavailable" {
				t.Fatalf("503 with %s", resp.Body())
			}
			return
		}
		checkAnswer(t, resp)
		if status >= 400 {
			if len(recs) != 0 {
				t.Fatalf("a refused request (%d) produced %d records", status, len(recs))
			}
			return
		}
		decoded := map[string]bool{} // ids of the records produced
		for _, r := range recs {
			e, err := eventrecord.Decode(r, eventrecord.Limits{MaxDataBytes: maxData})
			if err != nil {
				t.Fatalf("a produced record does not decode: %v", err)
			}
			if e.TenantId != fuzzTenant || decoded[e.EventId] {
				t.Fatalf("record of tenant %s, id %s (repeated: %v)", e.TenantId, e.EventId, decoded[e.EventId])
			}
			decoded[e.EventId] = true
		}
		if !batch {
			if status != 202 {
				t.Fatalf("status %d for one event", status)
			}
			var got api.EventAccepted
			if err := json.Unmarshal(resp.Body(), &got); err != nil {
				t.Fatal(err)
			}
			var in struct {
				ID   *string         `json:"id"`
				Data json.RawMessage `json:"data"`
			}
			if err := json.Unmarshal(body, &in); err != nil {
				t.Fatalf("a body the API took does not decode: %v", err)
			}
			switch {
			case in.ID != nil && got.ID != *in.ID:
				t.Fatalf("id %q, want the body's %q", got.ID, *in.ID)
			case in.ID == nil && key != "" && got.ID != eventrecord.IDFromIdempotencyKey(fuzzTenant, key):
				t.Fatalf("id %q, want the one of Idempotency-Key %q", got.ID, key)
			}
			if got.Duplicate != (got.ID == "evt_seen") || len(recs) != map[bool]int{true: 0, false: 1}[got.Duplicate] {
				t.Fatalf("answer %+v with %d records produced", got, len(recs))
			}
			if !got.Duplicate {
				e, _ := eventrecord.Decode(recs[0], eventrecord.Limits{MaxDataBytes: maxData})
				if e.EventId != got.ID || !bytes.Equal(e.Data, in.Data) {
					t.Fatalf("produced %s with data %s, answered %s for data %s", e.EventId, e.Data, got.ID, in.Data)
				}
			}
			return
		}
		if status != 200 {
			t.Fatalf("status %d for a batch", status)
		}
		var got api.EventBatchResult
		if err := json.Unmarshal(resp.Body(), &got); err != nil {
			t.Fatal(err)
		}
		var in struct {
			Events []json.RawMessage `json:"events"`
		}
		if err := json.Unmarshal(body, &in); err != nil || len(in.Events) != len(got.Data) {
			t.Fatalf("%d results for a batch of %d (%v)", len(got.Data), len(in.Events), err)
		}
		taken := 0
		for i, r := range got.Data {
			if r.Error != nil {
				p := *r.Error
				if r.ID != "" || r.Duplicate != nil || !strings.HasPrefix(p.Type, api.ProblemBase) || p.Title == "" || p.Detail == "" ||
					(p.Status != 400 && p.Status != 413 && (p.Status != 503 || !full)) ||
					(p.Type == api.ProblemBase+"invalid-request" && len(p.Errors) == 0) {
					t.Fatalf("result %d: %+v", i, p)
				}
				continue
			}
			if r.ID == "" || r.Duplicate == nil {
				t.Fatalf("result %d: %+v", i, r)
			}
			if !*r.Duplicate {
				taken++
				if !decoded[r.ID] {
					t.Fatalf("result %d: %s answered taken but not produced", i, r.ID)
				}
			} else if r.ID != "evt_seen" && !decoded[r.ID] {
				t.Fatalf("result %d: %s answered a duplicate of nothing produced", i, r.ID)
			}
		}
		if taken != len(recs) {
			t.Fatalf("%d events answered taken, %d produced", taken, len(recs))
		}
	})
}

// deref is *p, or the zero value for nil.
func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
