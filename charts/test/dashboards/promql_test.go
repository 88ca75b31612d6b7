package dashboardtest

import (
	"bufio"
	"context"
	"net/http/httptest"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/promql/parser"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/sluicehq/sluice/charts/test/metricnames"
	"github.com/sluicehq/sluice/pkg/telemetry"
)

// instrument is one entry of the metric contract (the OTel instrument a
// service registers) with the attributes it records.
type instrument struct {
	name, kind, unit string
	attrs            []string
}

// contract is the part of the metric contract (docs/ARCHITECTURE.md,
// issue 13) the pipeline dashboard reads: the instrument names, kinds,
// units and attributes the services register. The test turns them into
// Prometheus names through the services' own exporter (pkg/telemetry), so
// the suffixes (_total, _seconds, _bytes, _bucket) are the exporter's, not
// guessed.
var contract = []instrument{
	{"sluice.kafka.consumer.lag", "gauge", "{record}", []string{"messaging.consumer.group.name", "messaging.destination.name", "messaging.destination.partition.id"}},
	{"sluice.router.transaction.duration", "histogram", "s", nil},
	{"sluice.router.transactions", "counter", "", []string{"result"}},
	{"sluice.sender.in_flight", "gauge", "", nil},
	{"sluice.sender.buffered", "gauge", "By", nil},
	{"sluice.sender.ordered.buffered", "gauge", "By", nil},
	{"sluice.logwriter.rows", "counter", "", []string{"table"}},
	{"sluice.logwriter.insert.failures", "counter", "", []string{"table"}},
	{"sluice.dedup.effective_window", "gauge", "s", nil},
	{"sluice.dedup.evictions", "counter", "", nil},
	{"sluice.stage.ready", "gauge", "", []string{"sluice.stage"}},
	{"sluice.stage.stuck", "gauge", "", []string{"sluice.stage"}},
}

// scrapeLabels are added by Prometheus when it scrapes, not exported.
var scrapeLabels = []string{"instance", "job"}

// exposed records one value of every contract instrument through the
// services' exporter and returns the exposed series names with their
// label names.
func exposed(t *testing.T) map[string][]string {
	t.Helper()
	m, err := telemetry.NewMetrics("contract")
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown(context.Background())
	ctx := context.Background()
	meter := m.Meter("dashboardtest")
	for _, in := range contract {
		var kv []attribute.KeyValue
		for _, a := range in.attrs {
			kv = append(kv, attribute.String(a, "x"))
		}
		opt := metric.WithAttributes(kv...)
		var err error
		switch in.kind {
		case "gauge":
			var g metric.Float64Gauge
			if g, err = meter.Float64Gauge(in.name, metric.WithUnit(in.unit)); err == nil {
				g.Record(ctx, 1, opt)
			}
		case "counter":
			var c metric.Int64Counter
			if c, err = meter.Int64Counter(in.name, metric.WithUnit(in.unit)); err == nil {
				c.Add(ctx, 1, opt)
			}
		case "histogram":
			var h metric.Float64Histogram
			if h, err = meter.Float64Histogram(in.name, metric.WithUnit(in.unit)); err == nil {
				h.Record(ctx, 0.01, opt)
			}
		}
		if err != nil {
			t.Fatalf("registering %s: %v", in.name, err)
		}
	}
	rec := httptest.NewRecorder()
	m.Handler.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	series := map[string][]string{}
	sc := bufio.NewScanner(rec.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || !strings.HasPrefix(line, "sluice_") {
			continue
		}
		name, rest, _ := strings.Cut(line, "{")
		name = strings.Fields(name)[0]
		labels := slices.Clone(scrapeLabels)
		for _, l := range labelName.FindAllStringSubmatch(rest, -1) {
			labels = append(labels, l[1])
		}
		series[name] = labels
	}
	return series
}

// promql is the parser Prometheus itself runs, with its default
// (non-experimental) language: an expression it refuses, Prometheus
// refuses.
var promql = parser.NewParser(parser.Options{})

var labelName = regexp.MustCompile(`(\w+)="`)

// grafanaVariables stand in for what Grafana writes into an expression
// before Prometheus sees it.
var grafanaVariables = strings.NewReplacer(
	"$__rate_interval", "1m", "$__interval", "1m", "$__range", "1h",
	"$memory_budget", "268435456", "$logwriter_group", "sluice-logwriter",
)

// TestDashboardPromQL parses every Prometheus expression of the dashboards
// with Prometheus's parser and checks each metric it selects, and each
// label it groups or filters by, against what the exporter exposes for
// the contract.
func TestDashboardPromQL(t *testing.T) {
	ds, err := loadDashboards()
	if err != nil {
		t.Fatal(err)
	}
	series := exposed(t)
	if len(series) == 0 {
		t.Fatal("the exporter exposed no sluice_ series")
	}
	// The contract's labels are checked above; its names must also be
	// what the code makes, or a renamed instrument leaves a panel empty.
	inCode, err := metricnames.Exported("../../..")
	if err != nil {
		t.Fatal(err)
	}
	for name := range series {
		if !inCode[name] {
			t.Errorf("the contract's %s is made nowhere in pkg/ or services/", name)
		}
	}
	known := func(name string) []string { return series[name] }
	var n int
	for _, d := range ds {
		for _, p := range d.allPanels() {
			for _, tg := range p.Targets {
				if tg.Datasource == nil || tg.Datasource.Type != prometheusType {
					continue
				}
				n++
				where := d.file + ": " + p.Title + " (" + tg.RefID + ")"
				expr := grafanaVariables.Replace(tg.Expr)
				if strings.Contains(expr, "$") {
					t.Errorf("%s: a Grafana variable this test does not know: %s", where, expr)
					continue
				}
				e, err := promql.ParseExpr(expr)
				if err != nil {
					t.Errorf("%s: %v\n%s", where, err, expr)
					continue
				}
				var labels []string // every label name one of the selected series must carry
				parser.Inspect(e, func(node parser.Node, _ []parser.Node) error {
					switch n := node.(type) {
					case *parser.VectorSelector:
						labels := known(n.Name)
						if labels == nil {
							t.Errorf("%s: metric %s is not exposed by the services; exposed: %v", where, n.Name, names(series))
						}
						for _, m := range n.LabelMatchers {
							if m.Name != "__name__" && !slices.Contains(labels, m.Name) {
								t.Errorf("%s: %s has no label %s (it has %v)", where, n.Name, m.Name, labels)
							}
						}
					case *parser.AggregateExpr:
						labels = append(labels, n.Grouping...)
					}
					return nil
				})
				var all []string
				for _, sel := range parser.ExtractSelectors(e) {
					for _, m := range sel {
						if m.Name == "__name__" {
							all = append(all, known(m.Value)...)
						}
					}
				}
				for _, l := range labels {
					if l != "le" && !slices.Contains(all, l) {
						t.Errorf("%s: grouped by %s, which none of its series carries", where, l)
					}
				}
			}
		}
	}
	if n == 0 {
		t.Fatal("no Prometheus expressions in the dashboards")
	}
}

func names(m map[string][]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
