package ops_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/health"
	"github.com/sluicehq/sluice/pkg/ops"
)

func get(t *testing.T, url string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("decoding %s: %v", url, err)
	}
	return resp.StatusCode, body
}

func TestProbes(t *testing.T) {
	metrics := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "m 1\n") })
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	stages := health.NewRegistry(time.Minute, func() time.Time { return now })
	s, err := ops.Listen("127.0.0.1:0", metrics, stages, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	base := "http://" + s.Addr()

	var kafkaErr error
	s.AddCheck("kafka", func(context.Context) error { return kafkaErr })

	if code, _ := get(t, base+"/readyz"); code != http.StatusOK {
		t.Fatalf("readyz with passing checks = %d", code)
	}
	// A stage waiting for its dependency makes the process unready, and
	// only that: it is alive.
	router := stages.Stage("router")
	if code, body := get(t, base+"/readyz"); code != http.StatusServiceUnavailable ||
		!strings.Contains(body["checks"].(map[string]any)["stage router"].(string), "starting") {
		t.Fatalf("readyz with a stage not started = %d %v", code, body)
	}
	router.Waiting("kafka: connection refused")
	if code, body := get(t, base+"/readyz"); code != http.StatusServiceUnavailable ||
		body["checks"].(map[string]any)["stage router"] != "waiting: kafka: connection refused" {
		t.Fatalf("readyz with a waiting stage = %d %v", code, body)
	}
	now = now.Add(time.Hour)
	if code, body := get(t, base+"/healthz"); code != http.StatusOK {
		t.Fatalf("healthz with a stage waiting an hour for its dependency = %d %v", code, body)
	}
	router.Running()
	if code, body := get(t, base+"/readyz"); code != http.StatusOK {
		t.Fatalf("readyz once the stage runs = %d %v", code, body)
	}
	// Holding work with no progress past the threshold is stuck: healthz
	// fails, readiness is another question.
	router.Owe(3)
	now = now.Add(61 * time.Second)
	router.Beat()
	code, body := get(t, base+"/healthz")
	if code != http.StatusServiceUnavailable || body["status"] != "stuck" {
		t.Fatalf("healthz with a stuck stage = %d %v", code, body)
	}
	router.Progress()
	if code, body := get(t, base+"/healthz"); code != http.StatusOK {
		t.Fatalf("healthz after progress = %d %v", code, body)
	}
	kafkaErr = errors.New("no brokers")
	code, body = get(t, base+"/readyz")
	if code != http.StatusServiceUnavailable || body["checks"].(map[string]any)["kafka"] != "no brokers" {
		t.Fatalf("readyz with a failing check = %d %v", code, body)
	}
	if code, _ := get(t, base+"/healthz"); code != http.StatusOK {
		t.Fatalf("healthz must not depend on checks, got %d", code)
	}
	kafkaErr = nil
	s.Drain()
	if code, body := get(t, base+"/readyz"); code != http.StatusServiceUnavailable || body["status"] != "draining" {
		t.Fatalf("readyz while draining = %d %v", code, body)
	}
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), "m 1") {
		t.Fatalf("metrics body %q", b)
	}
}
