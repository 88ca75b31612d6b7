package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/kafkax"
	"github.com/sluicehq/sluice/pkg/testenv"
	"github.com/sluicehq/sluice/pkg/topics"
	"github.com/sluicehq/sluice/services/ingest/api"
	"github.com/sluicehq/sluice/services/ingest/app"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// lookup is an environment of vars over a base that every ingest needs:
// the development secrets key (tests never use a real one).
func lookup(vars map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		if v, ok := vars[k]; ok {
			return v, true
		}
		if k == "SLUICE_INSECURE_DEV_SECRETS_KEY" {
			return "true", true
		}
		return "", false
	}
}

func TestLoadConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		desc string
		env  map[string]string
		want string // substring of the error; "" means valid
	}{
		{desc: "defaults are valid", env: map[string]string{}},
		{desc: "smallest body limit", env: map[string]string{"SLUICE_MAX_BODY_BYTES": "1024"}},
		{desc: "largest body limit", env: map[string]string{"SLUICE_MAX_BODY_BYTES": "268435456"}},
		{desc: "body limit of 10 bytes", env: map[string]string{"SLUICE_MAX_BODY_BYTES": "10"},
			want: "max-body-bytes must be between 1024 and 268435456, got 10"},
		{desc: "body limit above 256 MiB", env: map[string]string{"SLUICE_MAX_BODY_BYTES": "268435457"},
			want: "max-body-bytes"},
		{desc: "body limit not a number", env: map[string]string{"SLUICE_MAX_BODY_BYTES": "4MB"},
			want: "SLUICE_MAX_BODY_BYTES"},
		{desc: "zero read timeout", env: map[string]string{"SLUICE_READ_TIMEOUT": "0"},
			want: "read-timeout must be positive, got 0s"},
		{desc: "negative read timeout", env: map[string]string{"SLUICE_READ_TIMEOUT": "-1s"},
			want: "read-timeout"},
		{desc: "empty API address", env: map[string]string{"SLUICE_API_ADDR": ""}, want: "api-addr"},
		{desc: "short admin key", env: map[string]string{"SLUICE_ADMIN_KEY": "hunter2"},
			want: "admin-key must be at least 32 characters, got 7"},
		{desc: "no secrets key", env: map[string]string{"SLUICE_INSECURE_DEV_SECRETS_KEY": "false"},
			want: "SLUICE_SECRETS_KEY"},
		{desc: "rotation grace over a week", env: map[string]string{"SLUICE_SECRET_ROTATION_GRACE": "200h"},
			want: "secret-rotation-grace must be from 0 to 168h, got 200h0m0s"},
		{desc: "events buffer of 1 MiB", env: map[string]string{"SLUICE_EVENTS_BUFFER_BYTES": "1048576"},
			want: "events-buffer-bytes must be from 2097152 to 1073741824, got 1048576"},
		{desc: "events buffer of 1 GiB", env: map[string]string{"SLUICE_EVENTS_BUFFER_BYTES": "1073741824"}},
		{desc: "events batch of 0", env: map[string]string{"SLUICE_EVENTS_MAX_BATCH": "0"},
			want: "events-max-batch must be from 1 to 10000, got 0"},
		{desc: "the largest routable event", env: map[string]string{"SLUICE_MAX_EVENT_BYTES": "583628"}},
		{desc: "an event too large for its records to be produced", env: map[string]string{"SLUICE_MAX_EVENT_BYTES": "583629"},
			want: "max-event-bytes must be from 1024 to 583628 (what a record can hold beside 10000 endpoint ids), got 583629"},
		{desc: "the old limit of 1 MiB minus headers", env: map[string]string{"SLUICE_MAX_EVENT_BYTES": "1044480"},
			want: "max-event-bytes"},
		{desc: "a transaction budget below two records", env: map[string]string{"SLUICE_ROUTER_TXN_BYTES": "1000000"},
			want: "router-txn-bytes must be from 2000024 to 268435456, got 1000000"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			_, err := app.LoadConfig(nil, lookup(tc.env))
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("LoadConfig = %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("LoadConfig = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// freeAddr is a 127.0.0.1 address nothing listens on right now.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// waitStatus polls url until it answers want or the deadline passes.
func waitStatus(t testing.TB, c *http.Client, url string, want int, deadline time.Time) {
	t.Helper()
	var last string
	for time.Now().Before(deadline) {
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == want {
				return
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("GET %s never answered %d (last: %s)", url, want, last)
}

func TestRunServesAndStops(t *testing.T) {
	k := testenv.NewKafka(t)
	apiAddr, opsAddr := freeAddr(t), freeAddr(t)
	const maxBody = 1024
	cfg, err := app.LoadConfig(nil, lookup(map[string]string{
		"SLUICE_KAFKA_BROKERS":    strings.Join(k.Config.Brokers, ","),
		"SLUICE_TOPIC_PREFIX":     k.Prefix,
		"SLUICE_API_ADDR":         apiAddr,
		"SLUICE_OPS_ADDR":         opsAddr,
		"SLUICE_MAX_BODY_BYTES":   "1024",
		"SLUICE_LOG_LEVEL":        "warn",
		"SLUICE_SHUTDOWN_TIMEOUT": "5s",
	}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx, cfg) }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			cancel()
			<-done
		}
	})
	c := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(30 * time.Second)

	waitStatus(t, c, "http://"+opsAddr+"/healthz", http.StatusOK, deadline)
	waitStatus(t, c, "http://"+opsAddr+"/readyz", http.StatusOK, deadline)

	apiURL := "http://" + apiAddr
	for _, tc := range []struct {
		desc, method, path string
		body               []byte
		wantDetail         string
	}{
		{desc: "GET of an unknown path", method: "GET", path: "/v1/nothing",
			wantDetail: "no route for GET /v1/nothing"},
		{desc: "POST with a query", method: "POST", path: "/v1/nothing/ep_1?dry=1", body: []byte(`{"url":"x"}`),
			wantDetail: "no route for POST /v1/nothing/ep_1"},
		{desc: "DELETE of the root", method: "DELETE", path: "/", wantDetail: "no route for DELETE /"},
		{desc: "a body of exactly max-body-bytes is read", method: "PUT", path: "/v1/big",
			body: bytes.Repeat([]byte("a"), maxBody), wantDetail: "no route for PUT /v1/big"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, apiURL+tc.path, bytes.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusNotFound {
				t.Fatalf("status %d, want 404", resp.StatusCode)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
				t.Fatalf("content type %q, want application/problem+json", ct)
			}
			var p api.Problem
			if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
				t.Fatalf("decoding the problem: %v", err)
			}
			if p.Status != 404 || p.Type != api.ProblemBase+"not-found" || p.Detail != tc.wantDetail {
				t.Fatalf("problem %+v, want status 404, type not-found, detail %q", p, tc.wantDetail)
			}
		})
	}

	t.Run("a body over max-body-bytes is refused", func(t *testing.T) {
		req, err := http.NewRequest("POST", apiURL+"/v1/events", bytes.NewReader(bytes.Repeat([]byte("a"), maxBody+1)))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("oversized body: %v", err)
		}
		var p api.Problem
		err = json.NewDecoder(resp.Body).Decode(&p)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusRequestEntityTooLarge ||
			resp.Header.Get("Content-Type") != "application/problem+json" ||
			p.Type != api.ProblemBase+"payload-too-large" || p.Status != 413 {
			t.Fatalf("oversized body answered %s %q %+v (%v), want a 413 payload-too-large problem",
				resp.Status, resp.Header.Get("Content-Type"), p, err)
		}
		// The server is still up.
		resp, err = c.Get(apiURL + "/v1/after")
		if err != nil {
			t.Fatalf("the API stopped answering after an oversized body: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("status %d after an oversized body, want 404", resp.StatusCode)
		}
	})

	stopped = true
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run returned %v after cancel, want nil", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return within 15 s of cancel")
	}
	c.CloseIdleConnections()
	for _, addr := range []string{apiAddr, opsAddr} {
		if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			conn.Close()
			t.Errorf("%s still accepts connections after Run returned", addr)
		}
	}
}

// TestRunWaitsForMissingTopics: an ingest started before its topics exist
// (the topics job has not run yet) stays up, alive and not ready, naming
// the missing topics; once they are created it becomes ready by itself.
func TestRunWaitsForMissingTopics(t *testing.T) {
	k := testenv.NewKafka(t)
	prefix := k.Prefix + "absent."
	ops := testenv.FreeAddr(t)
	cfg, err := app.LoadConfig(nil, lookup(map[string]string{
		"SLUICE_KAFKA_BROKERS": strings.Join(k.Config.Brokers, ","),
		"SLUICE_TOPIC_PREFIX":  prefix,
		"SLUICE_API_ADDR":      "127.0.0.1:0",
		"SLUICE_OPS_ADDR":      ops,
		"SLUICE_LOG_LEVEL":     "warn",
		"SLUICE_ROUTER_GROUP":  prefix + "router",
	}))
	if err != nil {
		t.Fatal(err)
	}
	svc := testenv.StartService(t, func(ctx context.Context) error { return app.Run(ctx, cfg) }, cfg.ShutdownBudget())

	testenv.WaitProbe(t, ops, "/readyz", 503, "waiting: kafka topics", 30*time.Second)
	_, body := testenv.Probe(ops, "/readyz")
	for _, topic := range []string{prefix + "events", prefix + "config"} {
		if !strings.Contains(body, topic) {
			t.Errorf("readyz %s does not name the missing topic %s", body, topic)
		}
	}
	if code, body := testenv.Probe(ops, "/healthz"); code != 200 {
		t.Fatalf("healthz while waiting for topics = %d %s", code, body)
	}
	svc.FailIfExited(t)

	names := topics.NewNames(prefix)
	t.Cleanup(func() { _ = kafkax.DeleteTopics(context.Background(), k.Admin, names.All()...) })
	cctx, ccancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer ccancel()
	if err := kafkax.EnsureTopics(cctx, k.Admin, topics.Specs(names, topics.Partitions{
		Events: 2, Deliveries: 2, Retry: 1, Dead: 1, Attempts: 1, EventLog: 1}, topics.SingleBroker)); err != nil {
		t.Fatal(err)
	}
	testenv.WaitProbe(t, ops, "/readyz", 200, "ready", 90*time.Second)
	svc.Stop(t)
}
