package telemetry_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/sluicehq/sluice/pkg/telemetry"
)

func TestNewLoggerLevels(t *testing.T) {
	for _, tc := range []struct {
		desc    string
		level   string
		wantErr bool
		// which of debug, info, warn, error get written
		want []string
	}{
		{desc: "debug writes everything", level: "debug", want: []string{"debug", "info", "warn", "error"}},
		{desc: "info is the usual", level: "info", want: []string{"info", "warn", "error"}},
		{desc: "warn", level: "warn", want: []string{"warn", "error"}},
		{desc: "error only", level: "error", want: []string{"error"}},
		{desc: "upper case and spaces are accepted", level: " WARN ", want: []string{"warn", "error"}},
		{desc: "an unknown level is refused", level: "loud", wantErr: true},
		{desc: "an empty level is refused", level: "", wantErr: true},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			var buf bytes.Buffer
			log, err := telemetry.NewLogger(&buf, "sender", tc.level)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("NewLogger(%q) accepted the level", tc.level)
				}
				if !strings.Contains(err.Error(), `"`+tc.level+`"`) {
					t.Fatalf("error %q does not name the level %q", err, tc.level)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewLogger(%q) = %v", tc.level, err)
			}
			log.Debug("debug", "n", 1)
			log.Info("info", "n", 2)
			log.Warn("warn", "n", 3)
			log.Error("error", "n", 4)
			lines := decodeLines(t, &buf)
			var got []string
			for _, l := range lines {
				if l["service"] != "sender" {
					t.Errorf("line %v has service %v, want sender", l, l["service"])
				}
				got = append(got, l["msg"].(string))
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("at level %q wrote %v, want %v", tc.level, got, tc.want)
			}
		})
	}
}

func TestNewLoggerWritesOneJSONObjectPerLine(t *testing.T) {
	var buf bytes.Buffer
	log, err := telemetry.NewLogger(&buf, "ingest", "info")
	if err != nil {
		t.Fatal(err)
	}
	log.Info("delivered\nwith a newline", "endpoint_id", "ep_1", "status", 204)
	log.With("worker", 3).Warn("slow")
	lines := decodeLines(t, &buf)
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2", len(lines))
	}
	first := lines[0]
	for k, want := range map[string]any{"service": "ingest", "msg": "delivered\nwith a newline",
		"level": "INFO", "endpoint_id": "ep_1", "status": float64(204)} {
		if first[k] != want {
			t.Errorf("%s = %v, want %v (line %v)", k, first[k], want, first)
		}
	}
	if _, ok := first["time"]; !ok {
		t.Errorf("line has no time: %v", first)
	}
	if lines[1]["service"] != "ingest" || lines[1]["worker"] != float64(3) || lines[1]["msg"] != "slow" {
		t.Errorf("second line %v", lines[1])
	}
}

// decodeLines decodes every line of r as its own JSON object.
func decodeLines(t testing.TB, r io.Reader) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %q is not a JSON object: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

func scrape(t testing.TB, m *telemetry.Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("/metrics answered %d: %s", rec.Code, rec.Body)
	}
	return rec.Body.String()
}

func TestNewMetricsExportsCountersAndRuntime(t *testing.T) {
	m, err := telemetry.NewMetrics("sender")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Shutdown(context.Background()) })
	c, err := m.Meter("x").Int64Counter("sluice.test.deliveries", metric.WithDescription("test deliveries"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c.Add(ctx, 3, metric.WithAttributes(attribute.String("outcome", "success")))
	c.Add(ctx, 1, metric.WithAttributes(attribute.String("outcome", "timeout")))
	c.Add(ctx, 2, metric.WithAttributes(attribute.String("outcome", "success")))

	out := scrape(t, m)
	for _, want := range []string{
		"# TYPE sluice_test_deliveries_total counter",
		`sluice_test_deliveries_total{otel_scope_name="x",`,
		"go_goroutines ",
		"go_memstats_alloc_bytes ",
		`service_name="sluice-sender"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	for outcome, want := range map[string]string{"success": "5", "timeout": "1"} {
		if v, ok := sample(out, "sluice_test_deliveries_total", `outcome="`+outcome+`"`); !ok || v != want {
			t.Errorf("sluice_test_deliveries_total{outcome=%q} = %q (found %v), want %s", outcome, v, ok, want)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", out)
	}
}

func TestNewMetricsRegistriesAreSeparate(t *testing.T) {
	a, err := telemetry.NewMetrics("a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := telemetry.NewMetrics("b")
	if err != nil {
		t.Fatalf("a second NewMetrics in one process: %v", err)
	}
	c, err := a.Meter("x").Int64Counter("only.in.a")
	if err != nil {
		t.Fatal(err)
	}
	c.Add(context.Background(), 1)
	if !strings.Contains(scrape(t, a), "only_in_a_total") {
		t.Fatal("a's counter missing from a's /metrics")
	}
	if strings.Contains(scrape(t, b), "only_in_a_total") {
		t.Fatal("a's counter shows up in b's /metrics")
	}
}

// sample returns the value of the first line of metric whose labels contain
// label.
func sample(exposition, metric, label string) (string, bool) {
	for _, line := range strings.Split(exposition, "\n") {
		if strings.HasPrefix(line, metric+"{") && strings.Contains(line, label) {
			f := strings.Fields(line)
			return f[len(f)-1], true
		}
	}
	return "", false
}
