package api_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/sluicehq/sluice/pkg/configstore"
	"github.com/sluicehq/sluice/pkg/secretbox"
	"github.com/sluicehq/sluice/pkg/testenv"
	"github.com/sluicehq/sluice/services/ingest/api"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// adminKey is the admin key of every API in these tests (the service
// requires at least 32 characters).
const adminKey = "admin-key-of-the-ingest-api-tests-0123456789"

// httpClient calls the APIs under test. 30 s is far above any answer
// (a config write is a few Kafka round trips) and stops a hung test.
var httpClient = &http.Client{Timeout: 30 * time.Second}

// discard is the logger of the stores and APIs: a test must not log
// through t after it ends, and a store logs from its own goroutine.
var discard = slog.New(slog.DiscardHandler)

// testOptions are the API's options as ingest sets them by default.
func testOptions() api.Options {
	return api.Options{AdminKey: adminKey, RotationGrace: 24 * time.Hour, WriteTimeout: 10 * time.Second}
}

// newBox returns a box over a fresh random key, not the development one,
// so a test can tell the two apart.
func newBox(t testing.TB) *secretbox.Box {
	t.Helper()
	key := make([]byte, secretbox.KeySize)
	_, _ = rand.Read(key)
	box, err := secretbox.New(secretbox.Config{Key: base64.StdEncoding.EncodeToString(key)})
	if err != nil {
		t.Fatalf("building the secrets box: %v", err)
	}
	if box.Insecure() {
		t.Fatal("a box with a configured key says it uses the development key")
	}
	return box
}

// devBox returns a box over the public development key.
func devBox(t testing.TB) *secretbox.Box {
	t.Helper()
	box, err := secretbox.New(secretbox.Config{InsecureDevKey: true})
	if err != nil {
		t.Fatalf("building the development box: %v", err)
	}
	return box
}

// openStore starts a config store on topic and returns it with a stop
// function that cancels Run, waits for it and closes the store. stop may be
// called more than once; it also runs when the test ends.
func openStore(t testing.TB, k *testenv.Kafka) (*configstore.Store, func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	store, err := configstore.Open(ctx, k.Config, k.Names.Config, discard)
	if err != nil {
		t.Fatalf("opening the config store: %v", err)
	}
	svc := testenv.StartService(t, store.Run, 10*time.Second)
	stop := func() {
		if !svc.Stopped() {
			svc.Stop(t)
			store.Close()
		}
	}
	t.Cleanup(stop)
	if err := store.WaitCaughtUp(ctx); err != nil {
		stop()
		t.Fatal(err)
	}
	return store, stop
}

// server is one API served over HTTP on a loopback port.
type server struct {
	base string // http://127.0.0.1:port
	stop func()
	// secrets logs the signing secrets the API has shown.
	secrets *secretLog
}

// secretLog is every signing secret some APIs have shown, for the test that
// none is in Kafka in clear.
type secretLog struct {
	mu   sync.Mutex
	list []string
}

func (l *secretLog) add(secret string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.list = append(l.list, secret)
}

func (l *secretLog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.list)
}

// serve builds the API over store and serves it on a loopback port until
// stop is called or the test ends.
func serve(t testing.TB, store api.Store, box *secretbox.Box, opts api.Options) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listening: %v", err)
	}
	srv := &fasthttp.Server{
		Handler:      api.New(store, box, opts, discard).Handler(),
		ErrorHandler: api.ErrorHandler,
		Name:         "sluice-test",
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			// fasthttp waits for every connection to go idle, and counts a
			// new one idle only after 5 s; closing the client's first
			// makes shutting down take milliseconds.
			httpClient.CloseIdleConnections()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := srv.ShutdownWithContext(ctx); err != nil {
				t.Errorf("shutting down the API server: %v", err)
			}
			if err := <-done; err != nil {
				t.Errorf("API server: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return &server{base: "http://" + ln.Addr().String(), stop: stop, secrets: &secretLog{}}
}

// replica is one ingest: its own config store on the test's topic and the
// API over it.
type replica struct {
	*server
	store *configstore.Store
}

// startReplica opens a store on k's config topic and serves an API over it.
func startReplica(t testing.TB, k *testenv.Kafka, box *secretbox.Box, opts api.Options) *replica {
	t.Helper()
	store, stopStore := openStore(t, k)
	srv := serve(t, store, box, opts)
	stopServer := srv.stop
	srv.stop = func() { stopServer(); stopStore() }
	return &replica{server: srv, store: store}
}

// env is the usual test setting: the test's own topics, a box with a real
// key and one ingest replica.
type env struct {
	k   *testenv.Kafka
	box *secretbox.Box
	*replica
}

func newEnv(t testing.TB) *env {
	t.Helper()
	k := testenv.NewKafka(t)
	box := newBox(t)
	return &env{k: k, box: box, replica: startReplica(t, k, box, testOptions())}
}

// send makes one request. body is sent as is when a string or []byte, as
// JSON otherwise, and not at all when nil; a body gets Content-Type
// application/json unless headers (name, value pairs) say otherwise. Safe
// to call from any goroutine.
func (s *server) send(method, path, key string, body any, headers ...string) (int, http.Header, []byte, error) {
	if len(headers)%2 != 0 {
		return 0, nil, nil, fmt.Errorf("headers %q are not name, value pairs", headers)
	}
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return 0, nil, nil, fmt.Errorf("encoding the request body: %w", err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, s.base+path, rd)
	if err != nil {
		return 0, nil, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for i := 0; i < len(headers); i += 2 {
		if headers[i+1] == "" {
			req.Header.Del(headers[i])
			continue
		}
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("reading the answer to %s %s: %w", method, path, err)
	}
	var shown struct {
		Secret string `json:"secret"`
	}
	if resp.StatusCode < 300 && json.Unmarshal(raw, &shown) == nil && shown.Secret != "" {
		s.secrets.add(shown.Secret)
	}
	return resp.StatusCode, resp.Header, raw, nil
}

// do is send for the test's goroutine: a request that gets no answer fails
// the test.
func (s *server) do(t testing.TB, method, path, key string, body any, headers ...string) (int, http.Header, []byte) {
	t.Helper()
	status, hdr, raw, err := s.send(method, path, key, body, headers...)
	if err != nil {
		t.Fatal(err)
	}
	return status, hdr, raw
}

// call makes a request that must answer want and decodes the JSON answer
// into T, refusing fields T does not have.
func call[T any](t testing.TB, s *server, want int, method, path, key string, body any, headers ...string) (T, http.Header, []byte) {
	t.Helper()
	status, hdr, raw := s.do(t, method, path, key, body, headers...)
	if status != want {
		t.Fatalf("%s %s: status %d, want %d; body %s", method, path, status, want, raw)
	}
	if ct := hdr.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s %s: content type %q, want application/json", method, path, ct)
	}
	return decodeStrict[T](t, raw), hdr, raw
}

// callProblem makes a request that must be refused with status and the
// problem kind (the last segment of its type URI), and returns the problem.
func callProblem(t testing.TB, s *server, status int, kind, method, path, key string, body any, headers ...string) api.Problem {
	t.Helper()
	got, hdr, raw := s.do(t, method, path, key, body, headers...)
	return wantProblem(t, method+" "+path, got, hdr, raw, status, kind)
}

// wantProblem checks an answer is the problem document of status and kind.
func wantProblem(t testing.TB, what string, status int, hdr http.Header, raw []byte, wantStatus int, kind string) api.Problem {
	t.Helper()
	if status != wantStatus {
		t.Fatalf("%s: status %d, want %d; body %s", what, status, wantStatus, raw)
	}
	if ct := hdr.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("%s: content type %q, want application/problem+json; body %s", what, ct, raw)
	}
	p := decodeStrict[api.Problem](t, raw)
	if p.Type != api.ProblemBase+kind || p.Status != wantStatus || p.Title == "" || p.Detail == "" {
		t.Fatalf("%s: problem %+v, want type %s%s, status %d, a title and a detail", what, p, api.ProblemBase, kind, wantStatus)
	}
	return p
}

// wantFieldError checks an invalid-request problem names field, first.
func wantFieldError(t testing.TB, what string, p api.Problem, field string) {
	t.Helper()
	if len(p.Errors) == 0 || p.Errors[0].Field != field || p.Errors[0].Detail == "" {
		t.Fatalf("%s: errors %+v, want the first to name %q with a detail", what, p.Errors, field)
	}
	if !strings.HasPrefix(p.Detail, field+": ") {
		t.Fatalf("%s: detail %q does not start with the field %q", what, p.Detail, field)
	}
}

func decodeStrict[T any](t testing.TB, raw []byte) T {
	t.Helper()
	var v T
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decoding %T from %s: %v", v, raw, err)
	}
	return v
}

// page is the answer of a list.
type page[T any] struct {
	Data       []T    `json:"data"`
	NextCursor string `json:"next_cursor"`
}

// wantEtag checks the ETag header is the body's etag, quoted.
func wantEtag(t testing.TB, hdr http.Header, etag string) {
	t.Helper()
	if etag == "" || hdr.Get("ETag") != `"`+etag+`"` {
		t.Fatalf("ETag header %q, body etag %q: want the header to be the body's etag, quoted", hdr.Get("ETag"), etag)
	}
}

// quoted is an etag as sent in If-Match.
func quoted(etag string) string { return `"` + etag + `"` }

// newTenant creates a tenant and an API key for it through the admin
// routes, and returns both.
func newTenant(t testing.TB, s *server, name string) (api.TenantJSON, string) {
	t.Helper()
	ten, _, _ := call[api.TenantJSON](t, s, http.StatusCreated, "POST", "/v1/tenants", adminKey,
		map[string]any{"name": name})
	key, _, _ := call[api.APIKeyJSON](t, s, http.StatusCreated, "POST", "/v1/tenants/"+ten.ID+"/api-keys", adminKey,
		map[string]any{"name": name + " key"})
	return ten, key.Key
}

// newEndpoint creates an endpoint with body under key.
func newEndpoint(t testing.TB, s *server, key string, body any) api.EndpointJSON {
	t.Helper()
	ep, hdr, _ := call[api.EndpointJSON](t, s, http.StatusCreated, "POST", "/v1/endpoints", key, body)
	wantEtag(t, hdr, ep.Etag)
	return ep
}

// secretBytes checks s is a signing secret as the API shows it, whsec_ and
// standard base64, and returns its raw bytes.
func secretBytes(t testing.TB, s string) []byte {
	t.Helper()
	b64, ok := strings.CutPrefix(s, "whsec_")
	if !ok {
		t.Fatalf("secret %q does not start with whsec_", s)
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatalf("secret %q is not whsec_ and base64: %v", s, err)
	}
	return raw
}

// wantNoSecret checks an answer that must not carry a signing secret: no
// "secret" member in any object and no whsec_ anywhere.
func wantNoSecret(t testing.TB, what string, raw []byte) {
	t.Helper()
	if bytes.Contains(raw, []byte("whsec_")) {
		t.Fatalf("%s: the answer contains a secret: %s", what, raw)
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, c := range x {
				if k == "secret" {
					t.Fatalf("%s: the answer has a secret member: %s", what, raw)
				}
				walk(c)
			}
		case []any:
			for _, c := range x {
				walk(c)
			}
		}
	}
	walk(v)
}

// eventually polls cond every 10 ms for up to 10 s.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}
