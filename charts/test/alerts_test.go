package charttest

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/common/model"
	"github.com/prometheus/common/promslog"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/promql/promqltest"
	"github.com/prometheus/prometheus/rules"

	"github.com/sluicehq/sluice/charts/test/metricnames"
)

// alertsFile is Sluice's rules file, plain Prometheus format.
var alertsFile = filepath.Join(chartDir, "rules", "sluice-alerts.yaml")

// firing is an alert expected to fire at a time, by its labels (alertname
// and severity included).
type firing map[string]string

// alertCheck says which alerts of one name fire at an evaluation time:
// none when want is empty.
type alertCheck struct {
	at    time.Duration
	alert string
	want  []firing
}

// evalRules runs the rules of alertsFile over the series (promtool's
// input_series, in PromQL test notation at a 1m step) from time 0,
// evaluating every minute as Prometheus would, and returns at each check's
// time the alerts firing with that name. It is promtool test rules'
// procedure (cmd/promtool/unittest.go) with the same Prometheus packages.
func evalRules(t *testing.T, series string, checks []alertCheck) {
	t.Helper()
	const step = time.Minute
	suite, err := promqltest.NewLazyLoader("load 1m\n"+series, promqltest.LazyLoaderOpts{})
	if err != nil {
		t.Fatalf("loading series: %v", err)
	}
	defer suite.Close()
	m := rules.NewManager(&rules.ManagerOptions{
		QueryFunc:  rules.EngineQueryFunc(suite.QueryEngine(), suite.Storage()),
		Appendable: suite.Storage(),
		Context:    context.Background(),
		NotifyFunc: func(context.Context, string, ...*rules.Alert) {},
		Logger:     promslog.NewNopLogger(),
	})
	groups, errs := m.LoadGroups(step, labels.EmptyLabels(), "", nil, false, alertsFile)
	if errs != nil {
		t.Fatalf("loading %s: %v", alertsFile, errs)
	}
	names := slices.Sorted(maps.Keys(groups))
	known := map[string]bool{}
	for _, g := range groups {
		for _, r := range g.Rules() {
			if ar, ok := r.(*rules.AlertingRule); ok {
				ar.SetRestored(true) // as promtool: no restore from ALERTS_FOR_STATE
				known[ar.Name()] = true
			}
		}
	}
	sort.Slice(checks, func(i, j int) bool { return checks[i].at < checks[j].at })
	for _, c := range checks {
		if !known[c.alert] {
			t.Fatalf("no alert %s in %s", c.alert, alertsFile)
		}
	}
	start := time.Unix(0, 0).UTC()
	next := 0
	for ts := start; next < len(checks); ts = ts.Add(step) {
		suite.WithSamplesTill(ts, func(err error) {
			if err != nil {
				t.Fatalf("loading samples till %v: %v", ts.Sub(start), err)
			}
			for _, name := range names {
				groups[name].Eval(suite.Context(), ts)
				for _, r := range groups[name].Rules() {
					if err := r.LastError(); err != nil {
						t.Fatalf("rule %s at %v: %v", r.Name(), ts.Sub(start), err)
					}
				}
			}
		})
		for ; next < len(checks) && checks[next].at < ts.Sub(start)+step; next++ {
			c := checks[next]
			var got []firing
			for _, g := range groups {
				for _, r := range g.Rules() {
					ar, ok := r.(*rules.AlertingRule)
					if !ok || ar.Name() != c.alert {
						continue
					}
					for _, a := range ar.ActiveAlerts() {
						if a.State != rules.StateFiring {
							continue
						}
						got = append(got, firing(a.Labels.Map()))
						for _, k := range []string{"summary", "description", "runbook"} {
							v := a.Annotations.Get(k)
							if v == "" || strings.Contains(v, "error expanding") || strings.Contains(v, "<no value>") {
								t.Errorf("%s at %v: annotation %s is %q", c.alert, c.at, k, v)
							}
						}
					}
				}
			}
			want := make([]firing, len(c.want))
			for i, w := range c.want {
				want[i] = maps.Clone(w)
				want[i]["alertname"] = c.alert
			}
			if key(got) != key(want) {
				t.Errorf("at %v, %s firing:\n  %s\nwant:\n  %s", c.at, c.alert, key(got), key(want))
			}
		}
	}
}

// key is a canonical form of a set of label sets.
func key(fs []firing) string {
	var out []string
	for _, f := range fs {
		out = append(out, model.LabelSet(toLabelSet(f)).String())
	}
	sort.Strings(out)
	return strings.Join(out, "\n  ")
}

func toLabelSet(f firing) model.LabelSet {
	ls := model.LabelSet{}
	for k, v := range f {
		ls[model.LabelName(k)] = model.LabelValue(v)
	}
	return ls
}

// TestAlertRules is the unit test of every alert: each fires on the
// series it is there for, after its for:, with its labels, and stays
// silent on the look-alikes it must ignore.
func TestAlertRules(t *testing.T) {
	lag := `sluice_kafka_consumer_lag{messaging_consumer_group_name="%s",messaging_destination_name="%s",messaging_destination_partition_id="%d"}`
	tests := map[string]struct {
		series string
		checks []alertCheck
	}{
		"lag growing on deliveries fires per group and topic; a retry tier's growth and a steady backlog do not": {
			series: fmt.Sprintf(lag, "sluice-sender", "sluice.deliveries", 0) + " 0+60x60\n" +
				fmt.Sprintf(lag, "sluice-sender", "sluice.deliveries", 1) + " 0+40x60\n" +
				fmt.Sprintf(lag, "sluice-sender", "sluice.retry.5m", 0) + " 0+500x60\n" +
				fmt.Sprintf(lag, "sluice-logwriter", "sluice.attempts", 0) + " 5000x60\n",
			checks: []alertCheck{
				// 100 records a minute: over 1000 from minute 11, then 15 minutes pending.
				{at: 20 * time.Minute, alert: "SluiceConsumerLagGrowing"},
				{at: 30 * time.Minute, alert: "SluiceConsumerLagGrowing", want: []firing{{
					"severity": "warning", "messaging_consumer_group_name": "sluice-sender",
					"messaging_destination_name": "sluice.deliveries"}}},
			},
		},
		"a stage not ready for 10 minutes": {
			series: `sluice_stage_ready{job="sluice-ingest",instance="10.0.0.1:8081",sluice_stage="router"} 1 1 0x30` + "\n" +
				`sluice_stage_ready{job="sluice-ingest",instance="10.0.0.1:8081",sluice_stage="api"} 1x32` + "\n",
			checks: []alertCheck{
				{at: 8 * time.Minute, alert: "SluiceStageNotReady"},
				{at: 15 * time.Minute, alert: "SluiceStageNotReady", want: []firing{{"severity": "warning",
					"job": "sluice-ingest", "instance": "10.0.0.1:8081", "sluice_stage": "router"}}},
			},
		},
		"a stage stuck for 5 minutes": {
			series: `sluice_stage_stuck{job="sluice-sender",instance="10.0.0.2:8081",sluice_stage="dispatcher"} 0 0 1x20` + "\n",
			checks: []alertCheck{
				{at: 4 * time.Minute, alert: "SluiceStageStuck"},
				{at: 10 * time.Minute, alert: "SluiceStageStuck", want: []firing{{"severity": "critical",
					"job": "sluice-sender", "instance": "10.0.0.2:8081", "sluice_stage": "dispatcher"}}},
			},
		},
		"ClickHouse inserts failing for 10 minutes, and over once they stop": {
			series: `sluice_logwriter_insert_failures_total{job="sluice-logwriter",instance="a"} 0+1x30 30x30` + "\n",
			checks: []alertCheck{
				{at: 5 * time.Minute, alert: "SluiceClickHouseInsertFailures"},
				{at: 20 * time.Minute, alert: "SluiceClickHouseInsertFailures", want: []firing{{"severity": "warning", "job": "sluice-logwriter"}}},
				{at: 50 * time.Minute, alert: "SluiceClickHouseInsertFailures"},
			},
		},
		"half the attempts failing": {
			series: `sluice_sender_attempts_total{outcome="success"} 0+60x60` + "\n" +
				`sluice_sender_attempts_total{outcome="http_error"} 0+40x60` + "\n" +
				`sluice_sender_attempts_total{outcome="timeout"} 0+20x60` + "\n" +
				// Not requests: a circuit open on a dead endpoint does not count.
				`sluice_sender_attempts_total{outcome="circuit_open"} 0+6000x60` + "\n",
			checks: []alertCheck{
				{at: 10 * time.Minute, alert: "SluiceDeliverySuccessRateLow"},
				{at: 30 * time.Minute, alert: "SluiceDeliverySuccessRateLow", want: []firing{{"severity": "warning"}}},
			},
		},
		"few failures, or too few attempts to judge": {
			series: `sluice_sender_attempts_total{outcome="success",instance="a"} 0+600x60` + "\n" +
				`sluice_sender_attempts_total{outcome="http_error",instance="a"} 0+6x60` + "\n" +
				`sluice_sender_attempts_total{outcome="circuit_open",instance="a"} 0+6000x60` + "\n",
			checks: []alertCheck{{at: 40 * time.Minute, alert: "SluiceDeliverySuccessRateLow"}},
		},
		"too few attempts to judge": {
			series: `sluice_sender_attempts_total{outcome="success"} 0+6x60` + "\n" +
				`sluice_sender_attempts_total{outcome="network_error"} 0+6x60` + "\n",
			checks: []alertCheck{{at: 40 * time.Minute, alert: "SluiceDeliverySuccessRateLow"}},
		},
		"deliveries exhausting their retries": {
			series: `sluice_sender_exhausted_total{instance="a"} 0x10 1+1x40` + "\n",
			checks: []alertCheck{
				{at: 12 * time.Minute, alert: "SluiceDeadLettersGrowing"},
				{at: 40 * time.Minute, alert: "SluiceDeadLettersGrowing", want: []firing{{"severity": "warning"}}},
			},
		},
		"deliveries parked for a disabled endpoint": {
			series: `sluice_sender_parked_total{instance="a"} 0+10x60` + "\n" +
				`sluice_sender_parked_total{instance="b"} 0+1x60` + "\n",
			checks: []alertCheck{
				{at: 20 * time.Minute, alert: "SluiceDeliveriesParked"},
				{at: 45 * time.Minute, alert: "SluiceDeliveriesParked", want: []firing{{"severity": "info"}}},
			},
		},
		"an endpoint disabled, and 15 minutes later no longer news": {
			series: `sluice_sender_endpoints_disabled_total{instance="a"} 0x10 1x40` + "\n",
			checks: []alertCheck{
				{at: 9 * time.Minute, alert: "SluiceEndpointDisabled"},
				{at: 12 * time.Minute, alert: "SluiceEndpointDisabled", want: []firing{{"severity": "warning"}}},
				{at: 40 * time.Minute, alert: "SluiceEndpointDisabled"},
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) { evalRules(t, tc.series, tc.checks) })
	}
}

// TestEveryAlertTested: a new alert needs a case in TestAlertRules, and
// every alert carries what an on-call engineer needs.
func TestEveryAlertTested(t *testing.T) {
	src, err := os.ReadFile("alerts_test.go")
	if err != nil {
		t.Fatal(err)
	}
	rgs, errs := rulefmt.ParseFile(alertsFile, false, model.UTF8Validation, parser.NewParser(parser.Options{}), promslog.NewNopLogger())
	if errs != nil {
		t.Fatalf("%s: %v", alertsFile, errs)
	}
	n := 0
	for _, g := range rgs.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			n++
			if !strings.Contains(string(src), `alert: "`+r.Alert+`", want:`) {
				t.Errorf("alert %s has no case in TestAlertRules where it fires", r.Alert)
			}
			if s := r.Labels["severity"]; s != "critical" && s != "warning" && s != "info" {
				t.Errorf("alert %s: severity %q, want critical, warning or info", r.Alert, s)
			}
			for _, k := range []string{"summary", "description", "runbook"} {
				if r.Annotations[k] == "" {
					t.Errorf("alert %s has no %s annotation", r.Alert, k)
				}
			}
		}
	}
	if n < 8 {
		t.Errorf("%d alerts in %s, want at least the 8 README lists", n, alertsFile)
	}
}

// exportedNames is metricnames.Exported over the repository's code.
func exportedNames(t *testing.T) map[string]bool {
	t.Helper()
	names, err := metricnames.Exported("../..")
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// TestAlertsNameExportedMetrics: every metric an alert reads is one the
// services export, under the name Prometheus shows. A renamed instrument
// otherwise leaves an alert that can never fire.
func TestAlertsNameExportedMetrics(t *testing.T) {
	names := exportedNames(t)
	rgs, errs := rulefmt.ParseFile(alertsFile, false, model.UTF8Validation, parser.NewParser(parser.Options{}), promslog.NewNopLogger())
	if errs != nil {
		t.Fatalf("%s: %v", alertsFile, errs)
	}
	p := parser.NewParser(parser.Options{})
	for _, g := range rgs.Groups {
		for _, r := range g.Rules {
			expr, err := p.ParseExpr(r.Expr)
			if err != nil {
				t.Fatalf("%s: %v", r.Alert, err)
			}
			parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
				if vs, ok := n.(*parser.VectorSelector); ok && !names[vs.Name] {
					t.Errorf("alert %s reads %s, which no service exports (exported: %s)", r.Alert, vs.Name,
						strings.Join(slices.Sorted(maps.Keys(names)), ", "))
				}
				return nil
			})
		}
	}
}

// TestPrometheusRuleRendersSluiceAlerts: with the PrometheusRule on, the
// chart renders Sluice's groups from the rules file, then the extra
// groups of values; switched off, only the extra ones.
func TestPrometheusRuleRendersSluiceAlerts(t *testing.T) {
	rgs, errs := rulefmt.ParseFile(alertsFile, false, model.UTF8Validation, parser.NewParser(parser.Options{}), promslog.NewNopLogger())
	if errs != nil {
		t.Fatalf("%s: %v", alertsFile, errs)
	}
	var want []string
	for _, g := range rgs.Groups {
		want = append(want, g.Name)
	}
	extra := `metrics: {prometheusRule: {enabled: true, groups: [{name: mine, rules: [{alert: Mine, expr: "vector(1)"}]}]}}`
	for name, tc := range map[string]struct {
		values string
		want   []string
	}{
		"default":   {extra, append(slices.Clone(want), "mine")},
		"off":       {`metrics: {prometheusRule: {enabled: true, sluiceAlerts: false, groups: [{name: mine, rules: [{alert: Mine, expr: "vector(1)"}]}]}}`, []string{"mine"}},
		"no extras": {`metrics: {prometheusRule: {enabled: true}}`, want},
	} {
		t.Run(name, func(t *testing.T) {
			r := render(t, withValues(t, "minimal.yaml", tc.values))
			prs := all[*monitoringv1.PrometheusRule](r)
			if len(prs) != 1 {
				t.Fatalf("%d PrometheusRules rendered, want 1", len(prs))
			}
			var got []string
			for _, g := range prs[0].Spec.Groups {
				got = append(got, g.Name)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("groups %v, want %v", got, tc.want)
			}
			// The annotations' templates reach Prometheus as written, not
			// expanded by Helm.
			if name != "off" && !strings.Contains(fmt.Sprint(prs[0].Spec.Groups), "{{ $labels.sluice_stage }}") {
				t.Errorf("annotation templates did not survive rendering")
			}
		})
	}
	r := render(t, withValues(t, "minimal.yaml", ""))
	if n := len(all[*monitoringv1.PrometheusRule](r)); n != 0 {
		t.Errorf("%d PrometheusRules rendered with prometheusRule off", n)
	}
}

// TestREADMEListsEveryMetric: README's metrics table has a row for every
// metric the services' code makes, under the name Prometheus shows.
func TestREADMEListsEveryMetric(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `([a-z_]+)` \\|").FindAllStringSubmatch(string(readme), -1) {
		rows[m[1]] = true
	}
	for name := range exportedNames(t) {
		base := name
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if trimmed, ok := strings.CutSuffix(name, suffix); ok && !rows[name] {
				base = trimmed
			}
		}
		if strings.HasPrefix(base, "go_") || strings.HasPrefix(base, "process_") || base == "target_info" {
			continue
		}
		if !rows[base] {
			t.Errorf("README's metrics table (Operating a service) has no row for %s", base)
		}
	}
}
