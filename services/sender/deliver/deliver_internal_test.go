package deliver

// Internal tests: appendBody and deliverer.attempt are the unexported hot path
// of every webhook, tested directly here. The sender's exported behaviour
// (LoadConfig, Run against the real broker) is tested in app_test.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/valyala/fasthttp"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/pkg/egress"
	"github.com/sluicehq/sluice/pkg/secretbox"
	"github.com/sluicehq/sluice/pkg/signing"
)

// webhookBody is the body a receiver decodes; Data stays raw so a test can
// compare it byte for byte with what the delivery carried.
type webhookBody struct {
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	Timestamp string          `json:"timestamp"`
	Data      json.RawMessage `json:"data"`
}

// decodeBody decodes b strictly: exactly the four fields, nothing after.
func decodeBody(t testing.TB, b []byte) webhookBody {
	t.Helper()
	if !json.Valid(b) {
		t.Fatalf("body is not valid JSON: %q", b)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(b, &fields); err != nil {
		t.Fatalf("body %q: %v", b, err)
	}
	if len(fields) != 4 {
		t.Fatalf("body has fields %v, want id, type, timestamp and data", keys(fields))
	}
	var w webhookBody
	if err := json.Unmarshal(b, &w); err != nil {
		t.Fatalf("body %q: %v", b, err)
	}
	return w
}

func keys(m map[string]json.RawMessage) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// timestampFormat is RFC 3339 in UTC with exactly three fractional digits.
var timestampFormat = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$`)

func TestAppendBody(t *testing.T) {
	// 2024-02-29 23:59:59.007 at UTC+5: the body must say UTC, keep the
	// 7 ms as ".007" and not round to the second.
	received := time.Date(2024, 2, 29, 23, 59, 59, 7_000_000, time.FixedZone("+05", 5*3600))
	for _, tc := range []struct {
		desc     string
		id, typ  string
		atMs     int64
		data     string
		wantTime string
		wantData string
	}{
		{desc: "plain ids and an object", id: "evt_01JD3K6Z8WQ4V0M5T7E9RXN2BC", typ: "order.created",
			atMs: received.UnixMilli(), data: `{"order":42,"lines":[{"sku":"a"}]}`,
			wantTime: "2024-02-29T18:59:59.007Z", wantData: `{"order":42,"lines":[{"sku":"a"}]}`},
		{desc: "data copied byte for byte, whitespace and escapes included", id: "evt_1", typ: "t",
			atMs: received.UnixMilli(), data: "{ \"a\" : [1, 2.50],\n \"s\":\"\\u00e9\\n\" }",
			wantTime: "2024-02-29T18:59:59.007Z", wantData: "{ \"a\" : [1, 2.50],\n \"s\":\"\\u00e9\\n\" }"},
		{desc: "empty data becomes an empty object", id: "evt_2", typ: "ping",
			atMs: received.UnixMilli(), data: "", wantTime: "2024-02-29T18:59:59.007Z", wantData: `{}`},
		{desc: "whole second keeps three zero digits", id: "evt_3", typ: "t",
			atMs: 1_700_000_000_000, data: `{}`, wantTime: "2023-11-14T22:13:20.000Z", wantData: `{}`},
		{desc: "Unix epoch", id: "evt_4", typ: "t", atMs: 0, data: `{}`,
			wantTime: "1970-01-01T00:00:00.000Z", wantData: `{}`},
		{desc: "quotes in id and type", id: `evt_"quoted"`, typ: `a"b`, atMs: received.UnixMilli(),
			data: `{}`, wantTime: "2024-02-29T18:59:59.007Z", wantData: `{}`},
		{desc: "backslashes", id: `evt_\`, typ: `a\\b\u0041`, atMs: received.UnixMilli(),
			data: `{}`, wantTime: "2024-02-29T18:59:59.007Z", wantData: `{}`},
		{desc: "control characters", id: "evt_\x00\x01\t\n\r\x1f\x7f", typ: "type\bwith\fcontrols",
			atMs: received.UnixMilli(), data: `{}`, wantTime: "2024-02-29T18:59:59.007Z", wantData: `{}`},
		{desc: "non-ASCII", id: "évt_日本語_😀", typ: "commande.créée\u2028\u2029",
			atMs: received.UnixMilli(), data: `{}`, wantTime: "2024-02-29T18:59:59.007Z", wantData: `{}`},
		{desc: "HTML-significant characters", id: "evt_<script>&", typ: "</a>",
			atMs: received.UnixMilli(), data: `{}`, wantTime: "2024-02-29T18:59:59.007Z", wantData: `{}`},
		{desc: "empty id and type", id: "", typ: "", atMs: received.UnixMilli(),
			data: `{}`, wantTime: "2024-02-29T18:59:59.007Z", wantData: `{}`},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			d := &sluicev1.Delivery{EventId: tc.id, EventType: tc.typ, EventReceivedAtMs: tc.atMs, Data: []byte(tc.data)}
			// appendBody appends: what dst held before is kept.
			prefix := []byte("prefix:")
			out := appendBody(append([]byte(nil), prefix...), d)
			if !strings.HasPrefix(string(out), string(prefix)) {
				t.Fatalf("appendBody overwrote dst: %q", out)
			}
			w := decodeBody(t, out[len(prefix):])
			if w.ID != tc.id {
				t.Errorf("id = %q, want %q", w.ID, tc.id)
			}
			if w.Type != tc.typ {
				t.Errorf("type = %q, want %q", w.Type, tc.typ)
			}
			if w.Timestamp != tc.wantTime {
				t.Errorf("timestamp = %q, want %q", w.Timestamp, tc.wantTime)
			}
			if !timestampFormat.MatchString(w.Timestamp) {
				t.Errorf("timestamp %q is not RFC 3339 UTC with milliseconds", w.Timestamp)
			}
			if ts, err := time.Parse(time.RFC3339Nano, w.Timestamp); err != nil || ts.UnixMilli() != tc.atMs {
				t.Errorf("timestamp %q parses to %v (%v), want Unix ms %d", w.Timestamp, ts, err, tc.atMs)
			}
			if string(w.Data) != tc.wantData {
				t.Errorf("data = %s, want %s", w.Data, tc.wantData)
			}
		})
	}
}

// fuzzData are the data objects FuzzAppendBody chooses from: data is JSON
// validated at ingest, so only valid objects are ever appended.
var fuzzData = []string{
	``,
	`{}`,
	`{"a":1}`,
	`{"nested":{"list":[1,"two",null,true,false,-3.5e10]},"s":"\"\\\u0000"}`,
	"{\n  \"pretty\": [ 1 ,2 ]\n}",
	`{"unicode":"日本語😀","esc":"\ud83d\ude00"}`,
}

func FuzzAppendBody(f *testing.F) {
	for i, s := range []struct{ id, typ string }{
		{"evt_01JD3K6Z8WQ4V0M5T7E9RXN2BC", "order.created"},
		{`"`, `\`},
		{"\x00\x1f\x7f", "\t\n\r"},
		{"é日😀", "\u2028\u2029"},
		{"\xff\xfe", "a\xc3"},                // not UTF-8
		{"\xed\xa0\x80", "\xf4\x90\x80\x80"}, // a surrogate and a code point past U+10FFFF
		{"<>&", ""},
	} {
		f.Add(s.id, s.typ, uint8(i))
	}
	f.Fuzz(func(t *testing.T, id, typ string, which uint8) {
		data := fuzzData[int(which)%len(fuzzData)]
		d := &sluicev1.Delivery{EventId: id, EventType: typ, EventReceivedAtMs: 1_700_000_000_123, Data: []byte(data)}
		out := appendBody(nil, d)
		w := decodeBody(t, out)
		// Proto3 decoding already refuses ids that are not UTF-8; should one
		// get here, encoding/json's rule holds: each invalid byte becomes
		// U+FFFD. string([]rune(s)) applies the same rule, and is s itself for
		// valid UTF-8.
		if want := string([]rune(id)); w.ID != want {
			t.Errorf("id %q came back as %q, want %q", id, w.ID, want)
		}
		if want := string([]rune(typ)); w.Type != want {
			t.Errorf("type %q came back as %q, want %q", typ, w.Type, want)
		}
		wantData := data
		if wantData == "" {
			wantData = "{}"
		}
		if string(w.Data) != wantData {
			t.Errorf("data = %s, want %s", w.Data, wantData)
		}
		if w.Timestamp != "2023-11-14T22:13:20.123Z" {
			t.Errorf("timestamp = %q", w.Timestamp)
		}
	})
}

func BenchmarkAppendBody(b *testing.B) {
	d := &sluicev1.Delivery{
		EventId: "evt_01JD3K6Z8WQ4V0M5T7E9RXN2BC", EventType: "order.created",
		EventReceivedAtMs: 1_700_000_000_123,
		Data:              []byte(`{"order":{"id":"ord_123","total":4200,"currency":"EUR","lines":[{"sku":"a","qty":1}]}}`),
	}
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		buf = appendBody(buf[:0], d)
	}
	b.SetBytes(int64(len(buf)))
}

const testUserAgent = "Sluice-Test/1"

// box is the development secrets box; tests seal endpoint secrets with it.
var box = func() *secretbox.Box {
	b, err := secretbox.New(secretbox.Config{InsecureDevKey: true})
	if err != nil {
		panic(err)
	}
	return b
}()

// loopback is the allow-list every test needs: its receivers are on
// 127.0.0.1, which the guard refuses by default.
var loopback = netip.MustParsePrefix("127.0.0.1/32")

func withTimeout(ep *sluicev1.Endpoint, ms int64) *sluicev1.Endpoint { ep.TimeoutMs = ms; return ep }

// newTestDeliverer builds a deliverer the way Run does, with 127.0.0.1
// allowed.
func newTestDeliverer(t testing.TB, timeout time.Duration, excerpt int) *Deliverer {
	t.Helper()
	return New(Options{Timeout: timeout, Excerpt: excerpt, UserAgent: testUserAgent, MaxConnsPerHost: 16,
		Guard: egress.New(egress.WithAllow(loopback)), Box: box})
}

// testSecret is the whsec_ secret of endpoints made by endpoint().
var testSecret = signing.FormatSecret([]byte("0123456789abcdef0123456789abcdef"))

// endpoint is an endpoint with a sealed signing secret.
func endpoint(id, url string) *sluicev1.Endpoint {
	key, err := signing.ParseSecret(testSecret)
	if err != nil {
		panic(err)
	}
	return &sluicev1.Endpoint{Id: id, Url: url, Etag: "1", SecretSealed: box.Seal(key, id)}
}

func delivery(endpointID string) *sluicev1.Delivery {
	return &sluicev1.Delivery{
		SchemaVersion: sluicev1.SchemaVersion, DeliveryId: "dlv_test", TenantId: "ten_test",
		EndpointId: endpointID, EventId: "evt_01JD3K6Z8WQ4V0M5T7E9RXN2BC", EventType: "order.created",
		EventReceivedAtMs: time.Now().UnixMilli(), Data: []byte(`{"order":1}`), AttemptsMade: 2,
		Origin: sluicev1.DeliveryOrigin_DELIVERY_ORIGIN_ROUTER,
	}
}

// receiver is a webhook receiver on 127.0.0.1 with one handler per path; it
// counts the requests each path got.
type receiver struct {
	srv   *httptest.Server
	mux   *http.ServeMux
	count map[string]*atomic.Int64
}

func newReceiver(t testing.TB, handlers map[string]http.HandlerFunc) *receiver {
	t.Helper()
	r := &receiver{mux: http.NewServeMux(), count: map[string]*atomic.Int64{}}
	for path, h := range handlers {
		n := new(atomic.Int64)
		r.count[path] = n
		r.mux.HandleFunc(path, func(w http.ResponseWriter, req *http.Request) {
			n.Add(1)
			h(w, req)
		})
	}
	r.srv = httptest.NewServer(r.mux)
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) url(path string) string { return r.srv.URL + path }

// closedPortURL is an http URL on 127.0.0.1 where nothing listens.
func closedPortURL(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr + "/hook"
}

func TestAttemptOutcome(t *testing.T) {
	const slow = 2 * time.Second
	recv := newReceiver(t, map[string]http.HandlerFunc{
		"/ok":      func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "thanks") },
		"/created": func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusCreated) },
		"/empty":   func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) },
		"/broken": func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusInternalServerError)
			io.WriteString(w, "boom")
		},
		"/gone": func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusGone) },
		"/redirect": func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/target", http.StatusFound)
		},
		"/target": func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) },
		"/slow": func(w http.ResponseWriter, r *http.Request) {
			// Reading the body lets net/http notice the client hanging up.
			_, _ = io.Copy(io.Discard, r.Body)
			select {
			case <-time.After(slow):
			case <-r.Context().Done():
			}
		},
		"/late": func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(400 * time.Millisecond)
			w.WriteHeader(http.StatusOK)
		},
		"/trickle": func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			io.WriteString(w, "start")
			w.(http.Flusher).Flush()
			select {
			case <-time.After(slow):
				io.WriteString(w, " end")
			case <-r.Context().Done():
			}
		},
	})
	closed := closedPortURL(t)
	eps := map[string]*sluicev1.Endpoint{}
	for _, ep := range []*sluicev1.Endpoint{
		endpoint("ep_ok", recv.url("/ok")),
		endpoint("ep_created", recv.url("/created")),
		endpoint("ep_empty", recv.url("/empty")),
		endpoint("ep_broken", recv.url("/broken")),
		endpoint("ep_gone", recv.url("/gone")),
		endpoint("ep_redirect", recv.url("/redirect")),
		withTimeout(endpoint("ep_slow", recv.url("/slow")), 200),
		withTimeout(endpoint("ep_trickle", recv.url("/trickle")), 200),
		withTimeout(endpoint("ep_closed", closed), 2000),
		// Its own timeout is longer than the sender's default (300 ms), and
		// the receiver answers between the two.
		withTimeout(endpoint("ep_patient", recv.url("/late")), 2000),
		// No timeout of its own: the default applies.
		endpoint("ep_default_timeout", recv.url("/slow")),
		// Internal addresses are refused unless allowed.
		endpoint("ep_private", "http://10.0.0.1/hook"),
		endpoint("ep_metadata", "http://169.254.169.254/latest/meta-data/"),
		endpoint("ep_loopback_v6", "http://[::1]:9/hook"),
		// A secret sealed for another endpoint does not open: no unsigned
		// webhook is ever sent.
		{Id: "ep_bad_secret", Url: recv.url("/ok"), SecretSealed: box.Seal([]byte("0123456789abcdef01234567"), "ep_other")},
	} {
		eps[ep.Id] = ep
	}
	d := newTestDeliverer(t, 300*time.Millisecond, 4096)
	// The deliverer's clock moves a millisecond each time it is read: an
	// attempt reads it when it starts and when the answer is in, so its
	// start and latency are exact. (A timeout is cut by fasthttp on real
	// time; the outcome and the excerpt show where it cut.)
	var clockMu sync.Mutex
	tick := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	d.now = func() time.Time {
		clockMu.Lock()
		defer clockMu.Unlock()
		tick = tick.Add(time.Millisecond)
		return tick
	}

	for _, tc := range []struct {
		desc        string
		endpoint    string
		wantOutcome sluicev1.AttemptOutcome
		wantStatus  uint32
		wantError   string // substring; "" means Error must be empty
		wantExcerpt string
	}{
		{desc: "200 is a success", endpoint: "ep_ok",
			wantOutcome: sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCESS, wantStatus: 200, wantExcerpt: "thanks"},
		{desc: "201 is a success", endpoint: "ep_created",
			wantOutcome: sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCESS, wantStatus: 201},
		{desc: "204 is a success", endpoint: "ep_empty",
			wantOutcome: sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCESS, wantStatus: 204},
		{desc: "500 is an HTTP error", endpoint: "ep_broken",
			wantOutcome: sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_HTTP_ERROR, wantStatus: 500,
			wantError: "HTTP 500", wantExcerpt: "boom"},
		{desc: "410 is an HTTP error", endpoint: "ep_gone",
			wantOutcome: sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_HTTP_ERROR, wantStatus: 410, wantError: "HTTP 410"},
		{desc: "302 is an HTTP error, not followed", endpoint: "ep_redirect",
			wantOutcome: sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_HTTP_ERROR, wantStatus: 302, wantError: "HTTP 302"},
		{desc: "no answer within the endpoint's timeout", endpoint: "ep_slow",
			wantOutcome: sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_TIMEOUT, wantError: "no answer within 200ms"},
		{desc: "no answer within the default timeout", endpoint: "ep_default_timeout",
			wantOutcome: sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_TIMEOUT, wantError: "no answer within 300ms"},
		{desc: "endpoint timeout longer than the default is honoured", endpoint: "ep_patient",
			wantOutcome: sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCESS, wantStatus: 200},
		{desc: "body trickling past the timeout is cut at the deadline", endpoint: "ep_trickle",
			wantOutcome: sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCESS, wantStatus: 200, wantExcerpt: "start"},
		{desc: "closed port is a network error", endpoint: "ep_closed",
			wantOutcome: sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_NETWORK_ERROR, wantError: "connection refused"},
		{desc: "a private address is blocked", endpoint: "ep_private",
			wantOutcome: sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_BLOCKED, wantError: "10.0.0.1"},
		{desc: "the metadata address is blocked", endpoint: "ep_metadata",
			wantOutcome: sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_BLOCKED, wantError: "cloud metadata"},
		{desc: "IPv6 loopback is blocked", endpoint: "ep_loopback_v6",
			wantOutcome: sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_BLOCKED, wantError: "::1"},
		{desc: "a secret that does not open blocks the attempt", endpoint: "ep_bad_secret",
			wantOutcome: sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_BLOCKED, wantError: "not sent: the signing secret of endpoint ep_bad_secret cannot be opened"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			dl := delivery(tc.endpoint)
			a, _ := d.Attempt(dl, eps[tc.endpoint])

			if a.Outcome != tc.wantOutcome {
				t.Fatalf("outcome %v (status %d, error %q), want %v", a.Outcome, a.StatusCode, a.Error, tc.wantOutcome)
			}
			if a.StatusCode != tc.wantStatus {
				t.Errorf("status %d, want %d", a.StatusCode, tc.wantStatus)
			}
			switch {
			case tc.wantError == "" && a.Error != "":
				t.Errorf("error %q, want none", a.Error)
			case !strings.Contains(a.Error, tc.wantError):
				t.Errorf("error %q, want it to contain %q", a.Error, tc.wantError)
			}
			if string(a.ResponseExcerpt) != tc.wantExcerpt {
				t.Errorf("excerpt %q, want %q", a.ResponseExcerpt, tc.wantExcerpt)
			}
			// What every attempt record carries, whatever the outcome.
			if a.SchemaVersion != sluicev1.SchemaVersion || a.DeliveryId != dl.DeliveryId ||
				a.TenantId != dl.TenantId || a.EndpointId != dl.EndpointId || a.EventId != dl.EventId ||
				a.EventType != dl.EventType || a.Origin != dl.Origin {
				t.Errorf("attempt does not carry the delivery's identity: %v", a)
			}
			if a.AttemptNumber != dl.AttemptsMade+1 {
				t.Errorf("attempt number %d, want %d", a.AttemptNumber, dl.AttemptsMade+1)
			}
			if !strings.HasPrefix(a.AttemptId, "att_") {
				t.Errorf("attempt id %q", a.AttemptId)
			}
			clockMu.Lock()
			now := tick
			clockMu.Unlock()
			// An attempt reads the clock when it starts and when the request
			// ends (answered, timed out or refused by the guard); one not
			// sent at all reads it once.
			start, latency := now.Add(-time.Millisecond), time.Millisecond
			if strings.HasPrefix(tc.wantError, "not sent") {
				start, latency = now, 0
			}
			if started := time.UnixMicro(a.StartedAtUs); !started.Equal(start) || time.Duration(a.LatencyUs)*time.Microsecond != latency {
				t.Errorf("started at %v after %v, want %v after %v", started, time.Duration(a.LatencyUs)*time.Microsecond, start, latency)
			}
			if ep, ok := eps[tc.endpoint]; ok && a.Url != ep.Url {
				t.Errorf("url %q, want %q", a.Url, ep.Url)
			}
		})
	}
	if n := recv.count["/redirect"].Load(); n != 1 {
		t.Errorf("redirecting endpoint got %d requests, want 1", n)
	}
	if n := recv.count["/target"].Load(); n != 0 {
		t.Errorf("redirect target got %d requests: the redirect was followed", n)
	}
}

func TestAttemptCutsTheResponseToTheExcerptLimit(t *testing.T) {
	const limit = 64
	for _, tc := range []struct {
		desc string
		size int
		want int
	}{
		{desc: "shorter than the limit", size: limit - 1, want: limit - 1},
		{desc: "exactly the limit", size: limit, want: limit},
		{desc: "one byte over", size: limit + 1, want: limit},
		{desc: "a megabyte", size: 1 << 20, want: limit},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			body := strings.Repeat("0123456789", tc.size/10+1)[:tc.size]
			recv := newReceiver(t, map[string]http.HandlerFunc{
				"/big": func(w http.ResponseWriter, _ *http.Request) {
					w.WriteHeader(http.StatusServiceUnavailable)
					io.WriteString(w, body)
				},
			})
			d := newTestDeliverer(t, time.Second, limit)
			a, _ := d.Attempt(delivery("ep_big"), endpoint("ep_big", recv.url("/big")))
			if a.Outcome != sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_HTTP_ERROR || a.StatusCode != 503 {
				t.Fatalf("outcome %v status %d error %q, want HTTP_ERROR 503", a.Outcome, a.StatusCode, a.Error)
			}
			if string(a.ResponseExcerpt) != body[:tc.want] {
				t.Fatalf("excerpt has %d bytes %q…, want the first %d of the body", len(a.ResponseExcerpt),
					a.ResponseExcerpt[:min(len(a.ResponseExcerpt), 20)], tc.want)
			}
		})
	}
	t.Run("limit zero keeps nothing", func(t *testing.T) {
		recv := newReceiver(t, map[string]http.HandlerFunc{
			"/": func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "something") },
		})
		d := newTestDeliverer(t, time.Second, 0)
		if a, _ := d.Attempt(delivery("ep"), endpoint("ep", recv.url("/"))); a.Outcome != sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCESS || a.ResponseExcerpt != nil {
			t.Fatalf("outcome %v excerpt %q, want SUCCESS and no excerpt", a.Outcome, a.ResponseExcerpt)
		}
	})
}

func TestAttemptRequest(t *testing.T) {
	got := make(chan *http.Request, 1)
	gotBody := make(chan []byte, 1)
	recv := newReceiver(t, map[string]http.HandlerFunc{
		"/hook": func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			got <- r
			gotBody <- b
			w.WriteHeader(http.StatusNoContent)
		},
	})
	ep := endpoint("ep_headers", recv.url("/hook?tenant=acme"))
	ep.Headers = map[string]string{
		"X-Custom":      "custom value",
		"Authorization": "Bearer s3cret",
		// The webhook-id is the event's; an endpoint cannot override it.
		"webhook-id": "forged",
	}
	d := newTestDeliverer(t, time.Second, 4096)
	dl := delivery(ep.Id)
	before := time.Now()
	a, _ := d.Attempt(dl, ep)
	after := time.Now()
	if a.Outcome != sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCESS {
		t.Fatalf("outcome %v error %q", a.Outcome, a.Error)
	}
	r, body := <-got, <-gotBody

	if r.Method != http.MethodPost {
		t.Errorf("method %s, want POST", r.Method)
	}
	if r.URL.Path != "/hook" || r.URL.RawQuery != "tenant=acme" {
		t.Errorf("requested %s, want /hook?tenant=acme", r.URL)
	}
	for _, h := range []struct{ name, want string }{
		{"Webhook-Id", dl.EventId},
		{"Content-Type", "application/json"},
		{"User-Agent", testUserAgent},
		{"X-Custom", "custom value"},
		{"Authorization", "Bearer s3cret"},
	} {
		if v := r.Header.Values(h.name); len(v) != 1 || v[0] != h.want {
			t.Errorf("header %s = %q, want exactly %q", h.name, v, h.want)
		}
	}
	ts, err := strconv.ParseInt(r.Header.Get("Webhook-Timestamp"), 10, 64)
	if err != nil {
		t.Fatalf("webhook-timestamp %q: %v", r.Header.Get("Webhook-Timestamp"), err)
	}
	if ts < before.Unix() || ts > after.Unix() {
		t.Errorf("webhook-timestamp %d, want Unix seconds between %d and %d", ts, before.Unix(), after.Unix())
	}
	if r.ContentLength != int64(len(body)) {
		t.Errorf("content-length %d for a body of %d bytes", r.ContentLength, len(body))
	}
	w := decodeBody(t, body)
	want := webhookBody{ID: dl.EventId, Type: dl.EventType,
		Timestamp: time.UnixMilli(dl.EventReceivedAtMs).UTC().Format("2006-01-02T15:04:05.000Z"), Data: dl.Data}
	if fmt.Sprint(w) != fmt.Sprint(want) {
		t.Errorf("body %s, want %+v", body, want)
	}
}

// verify checks r's signature with the independent Standard Webhooks
// library under secret.
func verify(t testing.TB, secret string, r *http.Request, body []byte) error {
	t.Helper()
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	return wh.Verify(body, r.Header)
}

// traceparentFormat is W3C Trace Context version 00, sampled.
var traceparentFormat = regexp.MustCompile(`^00-([0-9a-f]{32})-([0-9a-f]{16})-01$`)

func TestAttemptIsSignedAndTraced(t *testing.T) {
	type got struct {
		r    *http.Request
		body []byte
	}
	reqs := make(chan got, 10)
	recv := newReceiver(t, map[string]http.HandlerFunc{
		"/hook": func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			reqs <- got{r, b}
			w.WriteHeader(http.StatusNoContent)
		},
	})
	d := newTestDeliverer(t, time.Second, 0)
	oldSecret := signing.FormatSecret([]byte("the previous secret, 32 bytes!!!"))
	oldKey, _ := signing.ParseSecret(oldSecret)
	other := signing.FormatSecret([]byte("a secret nobody configured here."))

	t.Run("one secret", func(t *testing.T) {
		ep := endpoint("ep_signed", recv.url("/hook"))
		dl := delivery(ep.Id)
		a, _ := d.Attempt(dl, ep)
		if a.Outcome != sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCESS {
			t.Fatalf("outcome %v error %q", a.Outcome, a.Error)
		}
		g := <-reqs
		if err := verify(t, testSecret, g.r, g.body); err != nil {
			t.Fatalf("the Standard Webhooks library rejects our signature: %v (header %q)", err, g.r.Header.Get("Webhook-Signature"))
		}
		if err := verify(t, other, g.r, g.body); err == nil {
			t.Fatal("a different secret verifies too")
		}
		if sig := g.r.Header.Get("Webhook-Signature"); strings.Count(sig, "v1,") != 1 {
			t.Fatalf("signature header %q, want exactly one v1 signature", sig)
		}
		m := traceparentFormat.FindStringSubmatch(g.r.Header.Get("Traceparent"))
		if m == nil {
			t.Fatalf("traceparent %q is not W3C version 00", g.r.Header.Get("Traceparent"))
		}
		if m[1] != a.TraceId {
			t.Fatalf("traceparent trace id %s, attempt record says %s", m[1], a.TraceId)
		}
		// Every attempt of one event shares the trace; each is its own span.
		a2, _ := d.Attempt(dl, ep)
		g2 := <-reqs
		m2 := traceparentFormat.FindStringSubmatch(g2.r.Header.Get("Traceparent"))
		if a2.TraceId != a.TraceId || m2 == nil || m2[2] == m[2] {
			t.Fatalf("second attempt traceparent %q (trace %s), first %q", g2.r.Header.Get("Traceparent"), a2.TraceId, m[0])
		}
		if g2.r.Header.Get("Webhook-Id") != g.r.Header.Get("Webhook-Id") {
			t.Fatal("webhook-id differs between attempts of one delivery")
		}
	})
	t.Run("rotation grace: both secrets verify", func(t *testing.T) {
		ep := endpoint("ep_rotating", recv.url("/hook"))
		ep.PreviousSecretSealed = box.Seal(oldKey, ep.Id)
		ep.PreviousSecretExpiresAtMs = time.Now().Add(time.Hour).UnixMilli()
		ep.Etag = "2"
		if a, _ := d.Attempt(delivery(ep.Id), ep); a.Outcome != sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCESS {
			t.Fatalf("outcome %v error %q", a.Outcome, a.Error)
		}
		g := <-reqs
		sig := g.r.Header.Get("Webhook-Signature")
		if parts := strings.Split(sig, " "); len(parts) != 2 {
			t.Fatalf("signature header %q, want two space-separated signatures", sig)
		}
		for _, secret := range []string{testSecret, oldSecret} {
			if err := verify(t, secret, g.r, g.body); err != nil {
				t.Errorf("a receiver holding %s… rejects the webhook: %v", secret[:10], err)
			}
		}
	})
	t.Run("previous secret expired: only the current signs", func(t *testing.T) {
		ep := endpoint("ep_rotated", recv.url("/hook"))
		ep.PreviousSecretSealed = box.Seal(oldKey, ep.Id)
		ep.PreviousSecretExpiresAtMs = time.Now().Add(-time.Second).UnixMilli()
		if a, _ := d.Attempt(delivery(ep.Id), ep); a.Outcome != sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCESS {
			t.Fatalf("outcome %v error %q", a.Outcome, a.Error)
		}
		g := <-reqs
		if err := verify(t, oldSecret, g.r, g.body); err == nil {
			t.Fatal("the expired secret still verifies")
		}
		if err := verify(t, testSecret, g.r, g.body); err != nil {
			t.Fatalf("current secret: %v", err)
		}
	})
	t.Run("a rotation takes effect at once (new etag)", func(t *testing.T) {
		ep := endpoint("ep_new_secret", recv.url("/hook"))
		_, _ = d.Attempt(delivery(ep.Id), ep)
		<-reqs
		newKey := []byte("the rotated secret is 32 bytes!!")
		ep = &sluicev1.Endpoint{Id: ep.Id, Url: ep.Url, Etag: "2", SecretSealed: box.Seal(newKey, ep.Id)}
		_, _ = d.Attempt(delivery(ep.Id), ep)
		g := <-reqs
		if err := verify(t, signing.FormatSecret(newKey), g.r, g.body); err != nil {
			t.Fatalf("signed with a stale secret after rotation: %v", err)
		}
	})
}

// TestAttemptVerifiesTLS: a certificate no system root vouches for fails
// the attempt; nothing is sent in the clear instead.
func TestAttemptVerifiesTLS(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { hits.Add(1) }))
	t.Cleanup(srv.Close)
	d := newTestDeliverer(t, time.Second, 0)
	a, _ := d.Attempt(delivery("ep_tls"), endpoint("ep_tls", srv.URL+"/hook"))
	if a.Outcome != sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_NETWORK_ERROR || !strings.Contains(a.Error, "certificate") {
		t.Fatalf("outcome %v error %q, want a certificate error", a.Outcome, a.Error)
	}
	if hits.Load() != 0 {
		t.Fatal("the request reached a server with an unverified certificate")
	}
}

// TestAttemptErrorIsBounded (review H5): a receiver presenting a
// certificate with 99 names of 2,500 bytes for another host makes Go's
// verification error list them all (about 250 KiB). The attempt's error is
// cut to MaxErrorBytes of valid UTF-8 and still says what failed.
func TestAttemptErrorIsBounded(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	label := strings.Repeat("a", 62) + "."
	var names []string
	for i := range 99 {
		names = append(names, fmt.Sprintf("%s%d.example", strings.Repeat(label, 2500/len(label)), i))
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "not-you"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: names}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake is the point
	srv.StartTLS()
	t.Cleanup(srv.Close)
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	d := newTestDeliverer(t, 5*time.Second, 0)
	// By name, so the certificate's names are checked against it.
	a, _ := d.Attempt(delivery("ep_sans"), endpoint("ep_sans", fmt.Sprintf("https://localhost:%d/hook", port)))
	if a.Outcome != sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_NETWORK_ERROR || !strings.Contains(a.Error, "certificate is valid for") {
		t.Fatalf("outcome %v, error %.200q…; want the certificate's names refused", a.Outcome, a.Error)
	}
	if len(a.Error) > MaxErrorBytes || !utf8.ValidString(a.Error) {
		t.Fatalf("error of %d bytes (valid UTF-8: %v), want at most %d", len(a.Error), utf8.ValidString(a.Error), MaxErrorBytes)
	}
}

// TestForgetDropsTheSigners (review L8): the signers of an endpoint the
// dispatcher forgot are not kept.
func TestForgetDropsTheSigners(t *testing.T) {
	recv := newReceiver(t, map[string]http.HandlerFunc{"/ok": func(http.ResponseWriter, *http.Request) {}})
	d := newTestDeliverer(t, time.Second, 0)
	ep := endpoint("ep_forgotten", recv.url("/ok"))
	if a, _ := d.Attempt(delivery(ep.Id), ep); a.Outcome != sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCESS {
		t.Fatalf("outcome %v error %q", a.Outcome, a.Error)
	}
	d.Forget(ep.Id)
	d.mu.RLock()
	defer d.mu.RUnlock()
	if _, ok := d.signers[ep.Id]; ok || len(d.signers) != 0 {
		t.Fatalf("%d signers kept after Forget", len(d.signers))
	}
}

// BenchmarkAttempt is the hot path of a delivery: body, signature, headers,
// one keep-alive POST to a local receiver and the attempt record.
func BenchmarkAttempt(b *testing.B) {
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.SetStatusCode(fasthttp.StatusNoContent) }}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	b.Cleanup(func() { _ = srv.Shutdown() })
	d := newTestDeliverer(b, time.Second, 0)
	ep := endpoint("ep_bench", "http://"+ln.Addr().String()+"/hook")
	dl := delivery(ep.Id)
	b.ReportAllocs()
	for b.Loop() {
		if a, _ := d.Attempt(dl, ep); a.Outcome != sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCESS {
			b.Fatalf("outcome %v error %q", a.Outcome, a.Error)
		}
	}
}

// TestAttemptReturnsRetryAfter: the answer's Retry-After reaches the
// dispatcher, which decides what it means.
func TestAttemptReturnsRetryAfter(t *testing.T) {
	recv := newReceiver(t, map[string]http.HandlerFunc{
		"/busy": func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Retry-After", "7")
			w.WriteHeader(http.StatusTooManyRequests)
		},
		"/fine": func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) },
	})
	d := newTestDeliverer(t, time.Second, 0)
	a, ra := d.Attempt(delivery("ep_busy"), endpoint("ep_busy", recv.url("/busy")))
	if a.StatusCode != 429 || ra != "7" {
		t.Fatalf("status %d, Retry-After %q; want 429 and 7", a.StatusCode, ra)
	}
	if _, ra := d.Attempt(delivery("ep_fine"), endpoint("ep_fine", recv.url("/fine"))); ra != "" {
		t.Fatalf("Retry-After %q from an answer without one", ra)
	}
}

// TestAttemptSendsSealedHeaders: custom header values are stored sealed,
// each bound to its endpoint and name; the deliverer opens them and sends
// the real values. A value that does not open (another key, or moved from
// another endpoint or header) blocks the attempt, saying which header,
// and nothing is sent.
func TestAttemptSendsSealedHeaders(t *testing.T) {
	got := make(chan http.Header, 1)
	recv := newReceiver(t, map[string]http.HandlerFunc{
		"/hook": func(w http.ResponseWriter, r *http.Request) {
			select {
			case got <- r.Header.Clone():
			default: // a request that must not have been made; counted
			}
			w.WriteHeader(http.StatusNoContent)
		},
	})
	d := newTestDeliverer(t, time.Second, 0)

	ep := endpoint("ep_sealed", recv.url("/hook"))
	ep.HeadersSealed = map[string][]byte{
		"Authorization": box.Seal([]byte("Bearer receiver-credential"), sluicev1.HeaderSealAAD(ep.Id, "Authorization")),
		"X-Api-Key":     box.Seal([]byte("k-123"), sluicev1.HeaderSealAAD(ep.Id, "X-Api-Key")),
	}
	// Written before sealing: still sent as stored.
	ep.Headers = map[string]string{"X-Legacy": "in clear"}
	a, _ := d.Attempt(delivery(ep.Id), ep)
	if a.Outcome != sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCESS {
		t.Fatalf("outcome %v error %q", a.Outcome, a.Error)
	}
	h := <-got
	for name, want := range map[string]string{"Authorization": "Bearer receiver-credential", "X-Api-Key": "k-123", "X-Legacy": "in clear"} {
		if v := h.Values(name); len(v) != 1 || v[0] != want {
			t.Errorf("header %s = %q, want exactly %q", name, v, want)
		}
	}

	other, _ := secretbox.New(secretbox.Config{Key: "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE="})
	for desc, sealed := range map[string][]byte{
		"sealed under another key":      other.Seal([]byte("v"), sluicev1.HeaderSealAAD("ep_bad", "X-Api-Key")),
		"moved from another endpoint":   box.Seal([]byte("v"), sluicev1.HeaderSealAAD("ep_sealed", "X-Api-Key")),
		"moved from another header":     box.Seal([]byte("v"), sluicev1.HeaderSealAAD("ep_bad", "Authorization")),
		"the endpoint's signing secret": box.Seal([]byte("v"), "ep_bad"),
		"not a sealed value":            []byte("v"),
	} {
		t.Run(desc, func(t *testing.T) {
			bad := endpoint("ep_bad", recv.url("/hook"))
			bad.HeadersSealed = map[string][]byte{"X-Api-Key": sealed}
			a, _ := d.Attempt(delivery(bad.Id), bad)
			if a.Outcome != sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_BLOCKED || !strings.Contains(a.Error, "X-Api-Key") ||
				!strings.Contains(a.Error, "cannot be opened") {
				t.Fatalf("outcome %v error %q; want blocked, naming the header", a.Outcome, a.Error)
			}
		})
	}
	if n := recv.count["/hook"].Load(); n != 1 {
		t.Fatalf("the receiver got %d requests, want only the first endpoint's", n)
	}
}
