package e2e_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/sluicehq/sluice/loadtest/receiver"
	"github.com/sluicehq/sluice/pkg/testenv"
	ingest "github.com/sluicehq/sluice/services/ingest/app"
	logwriter "github.com/sluicehq/sluice/services/logwriter/app"
	sender "github.com/sluicehq/sluice/services/sender/app"
)

// exposition is one scrape of a service's /metrics.
type exposition map[string]*dto.MetricFamily

// scrape reads addr's /metrics.
func scrape(t *testing.T, addr string) exposition {
	t.Helper()
	e, err := tryScrape(addr)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// tryScrape reads addr's /metrics, or says why it could not.
func tryScrape(addr string) (exposition, error) {
	resp, err := httpClient.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, fmt.Errorf("scraping %s: %w", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		return nil, fmt.Errorf("scraping %s: status %d: %s", addr, resp.StatusCode, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("parsing %s/metrics: %w", addr, err)
	}
	return fams, nil
}

// series are the samples of family name whose labels include want.
func (e exposition) series(name string, want map[string]string) []*dto.Metric {
	f := e[name]
	if f == nil {
		return nil
	}
	var out []*dto.Metric
	for _, m := range f.GetMetric() {
		if hasLabels(m, want) {
			out = append(out, m)
		}
	}
	return out
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	got := map[string]string{}
	for _, l := range m.GetLabel() {
		got[l.GetName()] = l.GetValue()
	}
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

// sum adds up the value of name's series matching want: a counter's or
// gauge's value, a histogram's count.
func (e exposition) sum(name string, want map[string]string) float64 {
	var s float64
	for _, m := range e.series(name, want) {
		switch {
		case m.Counter != nil:
			s += m.Counter.GetValue()
		case m.Gauge != nil:
			s += m.Gauge.GetValue()
		case m.Histogram != nil:
			s += float64(m.Histogram.GetSampleCount())
		}
	}
	return s
}

// labelValues are the values label takes in name's series matching want.
func (e exposition) labelValues(name, label string, want map[string]string) map[string]float64 {
	out := map[string]float64{}
	for _, m := range e.series(name, want) {
		for _, l := range m.GetLabel() {
			if l.GetName() == label {
				out[l.GetValue()] = m.GetGauge().GetValue()
			}
		}
	}
	return out
}

// TestKeyMetricsMoveWhenEventsFlow runs the three services, sends events
// through the HTTP API, and reads each service's /metrics before and
// after: the HTTP requests are counted under their route pattern, the
// sender's successful attempts, the router's committed transactions and
// the logwriter's rows grow by what was sent, every stage reports ready,
// and each consumer group reports a lag series per partition it read,
// which comes down to what a caught-up partition shows (0, or 1 for the
// commit marker of a transactional topic).
func TestKeyMetricsMoveWhenEventsFlow(t *testing.T) {
	k := testenv.NewKafka(t)
	ch := testenv.NewClickHouse(t)
	recv, err := receiver.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { recv.Close() })

	const adminKey = "admin-key-of-the-e2e-metrics-test-012345678"
	apiAddr, ingestOps, senderOps, logwriterOps := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	common := commonEnv(k)
	start(t, "logwriter", logwriter.LoadConfig, logwriter.Run, common.with(env{
		"SLUICE_OPS_ADDR":            logwriterOps,
		"SLUICE_GROUP":               k.Prefix + "logwriter",
		"SLUICE_CLICKHOUSE_ADDRS":    ch.Config.Addrs[0],
		"SLUICE_CLICKHOUSE_DATABASE": ch.Config.Database,
		"SLUICE_BATCH_WAIT":          "200ms",
	}))
	start(t, "sender", sender.LoadConfig, sender.Run, common.with(senderEnv).with(env{
		"SLUICE_OPS_ADDR": senderOps, "SLUICE_GROUP": k.Prefix + "sender"}))
	start(t, "ingest", ingest.LoadConfig, ingest.Run, common.with(env{
		"SLUICE_OPS_ADDR":                 ingestOps,
		"SLUICE_API_ADDR":                 apiAddr,
		"SLUICE_ADMIN_KEY":                adminKey,
		"SLUICE_INSECURE_DEV_SECRETS_KEY": "true",
		"SLUICE_ROUTER_GROUP":             k.Prefix + "router",
	}))
	services := map[string]string{"ingest": ingestOps, "sender": senderOps, "logwriter": logwriterOps}

	// Every stage of every service comes to report ready = 1.
	waitFor(t, 60*time.Second, "every stage ready", func() string {
		for name, addr := range services {
			e, err := tryScrape(addr)
			if err != nil {
				return err.Error() // the ops listener is not up yet
			}
			stages := e.labelValues("sluice_stage_ready", "sluice_stage", nil)
			if len(stages) == 0 {
				return name + " reports no sluice_stage_ready series"
			}
			for stage, v := range stages {
				if v != 1 {
					return fmt.Sprintf("%s stage %s: sluice_stage_ready %v", name, stage, v)
				}
			}
			if s := e.sum("sluice_stage_stuck", nil); s != 0 {
				return fmt.Sprintf("%s: %v stages stuck", name, s)
			}
		}
		return ""
	})

	a := &apiClient{t: t, base: "http://" + apiAddr}
	a.waitUp()
	var tenant struct{ ID string }
	a.call("POST", "/v1/tenants", adminKey, `{"name":"metrics"}`, http.StatusCreated, &tenant)
	var apiKey struct{ Key string }
	a.call("POST", "/v1/tenants/"+tenant.ID+"/api-keys", adminKey, `{"name":"metrics"}`, http.StatusCreated, &apiKey)
	var created struct{ ID, Secret string }
	a.call("POST", "/v1/endpoints", apiKey.Key, `{"url":"`+recv.URL("m")+`","events":["order.*"]}`, http.StatusCreated, &created)
	if err := recv.SetSecret("m", created.Secret); err != nil {
		t.Fatal(err)
	}

	before := map[string]exposition{}
	for name, addr := range services {
		before[name] = scrape(t, addr)
	}
	const n = 40
	var ids []string
	for i := range n {
		id := fmt.Sprintf("evt_metrics_%02d", i)
		ids = append(ids, id)
		a.call("POST", "/v1/events", apiKey.Key, fmt.Sprintf(`{"type":"order.created","id":%q,"data":{"n":%d}}`, id, i),
			http.StatusAccepted, nil)
	}
	// Requests by an id in the path are counted under the pattern.
	a.call("GET", "/v1/endpoints/"+created.ID, apiKey.Key, "", http.StatusOK, nil)
	a.try("GET", "/v1/no/such/route", apiKey.Key, nil)

	waitFor(t, 90*time.Second, "every event delivered", func() string {
		if missing := recv.Tally("m", ids).Missing; len(missing) > 0 {
			return fmt.Sprintf("%d of %d not delivered", len(missing), n)
		}
		return ""
	})

	grew := func(service, name string, labels map[string]string, atLeast float64) func() string {
		return func() string {
			was := before[service].sum(name, labels)
			now := scrape(t, services[service]).sum(name, labels)
			if now-was < atLeast {
				return fmt.Sprintf("%s %s%v grew by %v, want at least %v", service, name, labels, now-was, atLeast)
			}
			return ""
		}
	}
	const within = 30 * time.Second
	waitFor(t, within, "HTTP requests counted by route", grew("ingest", "http_server_request_duration_seconds",
		map[string]string{"http_route": "/v1/events", "http_request_method": "POST", "http_response_status_code": "202"}, n))
	waitFor(t, within, "HTTP requests counted by route pattern", grew("ingest", "http_server_request_duration_seconds",
		map[string]string{"http_route": "/v1/endpoints/{endpoint_id}", "http_request_method": "GET", "http_response_status_code": "200"}, 1))
	waitFor(t, within, "unknown routes counted as one", grew("ingest", "http_server_request_duration_seconds",
		map[string]string{"http_route": "unmatched", "http_response_status_code": "404"}, 1))
	waitFor(t, within, "router transactions committed", grew("ingest", "sluice_router_transactions_total",
		map[string]string{"result": "committed"}, 1))
	waitFor(t, within, "successful attempts", grew("sender", "sluice_sender_attempts_total",
		map[string]string{"outcome": "success"}, n))
	// One attempt row and one event row per event.
	waitFor(t, within, "logwriter rows", grew("logwriter", "sluice_logwriter_rows_total", nil, 2*n))

	// No path leaks into a label: every route is a pattern or "unmatched".
	for _, m := range scrape(t, ingestOps).series("http_server_request_duration_seconds", nil) {
		for _, l := range m.GetLabel() {
			if l.GetName() == "http_route" && strings.Contains(l.GetValue(), created.ID) {
				t.Errorf("http_route %q holds an endpoint id", l.GetValue())
			}
		}
	}

	// Consumer lag: a series per partition each group read, with the
	// contract's labels; every one comes down to a caught-up value.
	lagOf := map[string]struct {
		service, group string
		topics         []string
		partitions     int
	}{
		// 40 events keyed by id land on both events partitions.
		"router":    {"ingest", k.Prefix + "router", []string{k.Names.Events}, 2},
		"sender":    {"sender", k.Prefix + "sender", []string{k.Names.Deliveries}, 1},
		"logwriter": {"logwriter", k.Prefix + "logwriter", []string{k.Names.Attempts, k.Names.EventLog}, 1},
	}
	for stage, l := range lagOf {
		waitFor(t, within, stage+" lag caught up", func() string {
			e := scrape(t, services[l.service])
			for _, topic := range l.topics {
				parts := e.labelValues("sluice_kafka_consumer_lag", "messaging_destination_partition_id", map[string]string{
					"messaging_consumer_group_name": l.group, "messaging_destination_name": topic})
				if len(parts) < l.partitions {
					return fmt.Sprintf("%s: lag series of %s for partitions %v, want at least %d", stage, topic, parts, l.partitions)
				}
				for p, v := range parts {
					if v > 1 {
						return fmt.Sprintf("%s: lag of %s/%s is %v", stage, topic, p, v)
					}
				}
				t.Logf("%s: lag of %s by partition: %v", stage, topic, parts)
			}
			return ""
		})
	}
}

// waitFor polls cond until it returns "" (done) or the deadline passes,
// then fails with cond's last word.
func waitFor(t *testing.T, within time.Duration, what string, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		msg := cond()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %s", what, within, msg)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
