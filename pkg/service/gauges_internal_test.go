package service

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/health"
	"github.com/sluicehq/sluice/pkg/telemetry"
)

// TestStageGauges: each stage is exported as /readyz and /healthz judge
// it, under the names Prometheus shows.
func TestStageGauges(t *testing.T) {
	m, err := telemetry.NewMetrics("test")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_000_000, 0)
	reg := health.NewRegistry(time.Minute, func() time.Time { return now })
	if err := stageGauges(m.Meter("test"), reg); err != nil {
		t.Fatal(err)
	}
	reg.Stage("router").Running()
	reg.Stage("logwriter").Waiting("clickhouse: connection refused")
	wedged := reg.Stage("dispatcher")
	wedged.Running()
	wedged.Owe(3)
	now = now.Add(2 * time.Minute) // past stuck-after with no progress; the others beat
	reg.Stage("router").Beat()
	reg.Stage("logwriter").Waiting("clickhouse: connection refused")

	rec := httptest.NewRecorder()
	m.Handler.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Result().Body)
	for _, want := range []string{
		`sluice_stage_ready{otel_scope_name="test",otel_scope_schema_url="",otel_scope_version="",sluice_stage="router"} 1`,
		`sluice_stage_ready{otel_scope_name="test",otel_scope_schema_url="",otel_scope_version="",sluice_stage="logwriter"} 0`,
		`sluice_stage_ready{otel_scope_name="test",otel_scope_schema_url="",otel_scope_version="",sluice_stage="dispatcher"} 1`,
		`sluice_stage_stuck{otel_scope_name="test",otel_scope_schema_url="",otel_scope_version="",sluice_stage="router"} 0`,
		`sluice_stage_stuck{otel_scope_name="test",otel_scope_schema_url="",otel_scope_version="",sluice_stage="logwriter"} 0`,
		`sluice_stage_stuck{otel_scope_name="test",otel_scope_schema_url="",otel_scope_version="",sluice_stage="dispatcher"} 1`,
	} {
		if !strings.Contains(string(body), want+"\n") {
			t.Errorf("no line %s in the exposition:\n%s", want, grepLines(string(body), "sluice_stage"))
		}
	}
}

func grepLines(s, sub string) string {
	var out []string
	for l := range strings.SplitSeq(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
