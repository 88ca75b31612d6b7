// Package metricnames finds every OpenTelemetry instrument Sluice's code
// makes and returns the names Prometheus shows for them, through the
// services' own exporter (pkg/telemetry): the alert rule tests and the
// dashboard tests check the metrics they read against it, so a renamed
// instrument fails them instead of leaving an alert or a panel that never
// shows anything.
package metricnames

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.opentelemetry.io/otel/metric"

	"github.com/sluicehq/sluice/pkg/telemetry"
)

// instrumentCall finds where the code makes an OTel instrument: its kind
// and name. Its unit is the first metric.WithUnit before the next
// instrument's call (unitWithin).
var instrumentCall = regexp.MustCompile(`\.(Int64|Float64)(Counter|UpDownCounter|Histogram|Gauge|ObservableGauge|ObservableCounter|ObservableUpDownCounter)\(\s*"([a-z_.]+)"`)

var unitOption = regexp.MustCompile(`metric\.WithUnit\("([^"]*)"\)`)

// Exported makes every instrument the services' code makes (found in
// repo's pkg/ and services/ outside tests) on the services' own Prometheus
// exporter (pkg/telemetry), records one value in each, and returns the
// metric names /metrics shows, with a histogram's _bucket, _sum and
// _count. An instrument that has recorded nothing is not exposed, so the
// names of rare counters (dead letters, disabled endpoints) can only be
// learnt this way, not from a scrape of services at work.
func Exported(repo string) (map[string]bool, error) {
	m, err := telemetry.NewMetrics("names")
	if err != nil {
		return nil, err
	}
	defer m.Shutdown(context.Background())
	meter := m.Meter("names")
	ctx := context.Background()
	made := map[string]bool{}
	for _, root := range []string{filepath.Join(repo, "pkg"), filepath.Join(repo, "services")} {
		err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			src, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			text := string(src)
			calls := instrumentCall.FindAllStringSubmatchIndex(text, -1)
			for i, c := range calls {
				kind, name := text[c[2]:c[3]]+text[c[4]:c[5]], text[c[6]:c[7]]
				// The options of this call: up to the next instrument, and
				// within 600 bytes (an options list is a few lines).
				end := min(len(text), c[1]+600)
				if i+1 < len(calls) {
					end = min(end, calls[i+1][0])
				}
				unit := ""
				if u := unitOption.FindStringSubmatch(text[c[1]:end]); u != nil {
					unit = u[1]
				}
				if err := record(ctx, meter, kind, name, unit); err != nil {
					return fmt.Errorf("%s: instrument %s: %w", path, name, err)
				}
				made[name] = true
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	// The scan must find the contract's instruments, or it found nothing.
	for _, name := range []string{"sluice.sender.attempts", "sluice.kafka.consumer.lag", "sluice.stage.ready",
		"http.server.request.duration", "sluice.logwriter.insert.failures", "sluice.router.transactions"} {
		if !made[name] {
			return nil, fmt.Errorf("no instrument %s found in the code: the scan (instrumentCall) misses how it is made", name)
		}
	}
	rec := httptest.NewRecorder()
	m.Handler.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(rec.Body)
	if err != nil {
		return nil, fmt.Errorf("parsing the exposition: %w", err)
	}
	names := map[string]bool{}
	for name, f := range families {
		names[name] = true
		if f.GetType().String() == "HISTOGRAM" {
			names[name+"_bucket"], names[name+"_sum"], names[name+"_count"] = true, true, true
		}
	}
	return names, nil
}

// record makes one instrument of kind and records a value in it.
func record(ctx context.Context, m metric.Meter, kind, name, unit string) error {
	switch kind {
	case "Int64Counter", "Int64ObservableCounter":
		c, err := m.Int64Counter(name, metric.WithUnit(unit))
		if err == nil {
			c.Add(ctx, 1)
		}
		return err
	case "Float64Counter", "Float64ObservableCounter":
		c, err := m.Float64Counter(name, metric.WithUnit(unit))
		if err == nil {
			c.Add(ctx, 1)
		}
		return err
	case "Int64UpDownCounter", "Int64ObservableUpDownCounter":
		c, err := m.Int64UpDownCounter(name, metric.WithUnit(unit))
		if err == nil {
			c.Add(ctx, 1)
		}
		return err
	case "Float64UpDownCounter", "Float64ObservableUpDownCounter":
		c, err := m.Float64UpDownCounter(name, metric.WithUnit(unit))
		if err == nil {
			c.Add(ctx, 1)
		}
		return err
	case "Int64Histogram":
		h, err := m.Int64Histogram(name, metric.WithUnit(unit))
		if err == nil {
			h.Record(ctx, 1)
		}
		return err
	case "Float64Histogram":
		h, err := m.Float64Histogram(name, metric.WithUnit(unit))
		if err == nil {
			h.Record(ctx, 1)
		}
		return err
	case "Int64Gauge", "Int64ObservableGauge":
		g, err := m.Int64Gauge(name, metric.WithUnit(unit))
		if err == nil {
			g.Record(ctx, 1)
		}
		return err
	case "Float64Gauge", "Float64ObservableGauge":
		g, err := m.Float64Gauge(name, metric.WithUnit(unit))
		if err == nil {
			g.Record(ctx, 1)
		}
		return err
	}
	return fmt.Errorf("unknown instrument kind %s", kind)
}
