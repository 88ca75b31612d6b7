package app_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/pkg/kafkax"
	"github.com/sluicehq/sluice/pkg/testenv"
	"github.com/sluicehq/sluice/services/logwriter/app"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// partitions of every test topic; records are placed by hand (i % partitions)
// so a test knows which records come before which.
const partitions = 2

func env(vars map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
}

func baseEnv(k *testenv.Kafka, ch *testenv.ClickHouse, group string) map[string]string {
	return map[string]string{
		"SLUICE_KAFKA_BROKERS":       strings.Join(k.Config.Brokers, ","),
		"SLUICE_TOPIC_PREFIX":        k.Prefix,
		"SLUICE_CLICKHOUSE_ADDRS":    strings.Join(ch.Config.Addrs, ","),
		"SLUICE_CLICKHOUSE_DATABASE": ch.Config.Database,
		"SLUICE_OPS_ADDR":            "127.0.0.1:0",
		"SLUICE_GROUP":               group,
		"SLUICE_BATCH_WAIT":          "200ms",
		"SLUICE_SHUTDOWN_TIMEOUT":    "10s",
		"SLUICE_LOG_LEVEL":           "warn",
	}
}

func newConfig(t testing.TB, k *testenv.Kafka, ch *testenv.ClickHouse) app.Config {
	t.Helper()
	cfg, err := app.LoadConfig(nil, env(baseEnv(k, ch, k.Prefix+"logwriter")))
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	return cfg
}

// logwriter is one app.Run in a goroutine.
type logwriter struct {
	cancel  context.CancelFunc
	done    chan error
	timeout time.Duration
	stopped bool
}

// start runs the logwriter until stop; if the test ends first it is stopped
// then, before the topics and database go away.
func start(t testing.TB, cfg app.Config) *logwriter {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	lw := &logwriter{cancel: cancel, done: make(chan error, 1), timeout: cfg.ShutdownTimeout}
	go func() { lw.done <- app.Run(ctx, cfg) }()
	t.Cleanup(func() {
		if !lw.stopped {
			lw.stop(t)
		}
	})
	return lw
}

// stop cancels Run and requires it to return nil within the shutdown timeout
// (plus a little for leaving the group).
func (lw *logwriter) stop(t testing.TB) {
	t.Helper()
	lw.stopped = true
	lw.cancel()
	select {
	case err := <-lw.done:
		if err != nil {
			t.Fatalf("Run returned %v after cancel, want nil", err)
		}
	case <-time.After(lw.timeout + 5*time.Second):
		t.Fatalf("Run did not return within %v of cancel", lw.timeout+5*time.Second)
	}
}

// failIfExited fails the test when Run returned on its own.
func (lw *logwriter) failIfExited(t testing.TB) {
	t.Helper()
	select {
	case err := <-lw.done:
		lw.stopped = true
		t.Fatalf("Run returned early: %v", err)
	default:
	}
}

func attempt(run string, i int, started time.Time) *sluicev1.Attempt {
	delivery := fmt.Sprintf("dlv_%s_%04d", run, i/3)
	n := uint32(i%3 + 1)
	a := &sluicev1.Attempt{
		SchemaVersion:   sluicev1.SchemaVersion,
		AttemptId:       fmt.Sprintf("%s/%d", delivery, n),
		DeliveryId:      delivery,
		TenantId:        "ten_acme",
		EndpointId:      fmt.Sprintf("ep_%02d", i%7),
		EventId:         fmt.Sprintf("evt_%s_%04d", run, i/3),
		EventType:       "order.created",
		AttemptNumber:   n,
		Outcome:         sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCESS,
		StatusCode:      200,
		StartedAtUs:     started.Add(time.Duration(i) * time.Millisecond).UnixMicro(),
		LatencyUs:       int64(20_000 + i),
		Url:             fmt.Sprintf("https://hooks.example.com/acme/%d", i%7),
		ResponseExcerpt: []byte(`{"ok":true}`),
		TraceId:         fmt.Sprintf("%032x", i+1),
		Origin:          sluicev1.DeliveryOrigin_DELIVERY_ORIGIN_ROUTER,
	}
	switch i % 10 {
	case 8:
		a.Outcome, a.StatusCode = sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_HTTP_ERROR, 503
		a.ResponseExcerpt = []byte("upstream unavailable")
		a.NextAttemptAtMs = started.Add(5 * time.Second).UnixMilli()
	case 9:
		a.Outcome, a.StatusCode, a.ResponseExcerpt = sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_TIMEOUT, 0, nil
		a.Error = "no response within 15s"
		a.NextAttemptAtMs = started.Add(5 * time.Minute).UnixMilli()
		a.Origin = sluicev1.DeliveryOrigin_DELIVERY_ORIGIN_REPLAY
	}
	return a
}

func eventEntry(run string, i int, received time.Time) *sluicev1.EventLogEntry {
	return &sluicev1.EventLogEntry{
		SchemaVersion: sluicev1.SchemaVersion,
		TenantId:      "ten_acme",
		EventId:       fmt.Sprintf("evt_%s_%04d", run, i),
		Type:          "order.created",
		Data:          fmt.Appendf(nil, `{"order":%d,"total":"12.50"}`, i),
		ReceivedAtMs:  received.Add(time.Duration(i) * time.Millisecond).UnixMilli(),
		Source:        sluicev1.EventSource_EVENT_SOURCE_HTTP,
		FanoutCount:   2,
		EndpointIds:   []string{"ep_01", fmt.Sprintf("ep_%02d", i%7)},
	}
}

// records encodes msgs for topic, record i on partition i % partitions.
func records[M proto.Message](t testing.TB, topic string, msgs []M) []*kgo.Record {
	t.Helper()
	out := make([]*kgo.Record, len(msgs))
	for i, m := range msgs {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = &kgo.Record{Topic: topic, Partition: int32(i % partitions), Value: b}
	}
	return out
}

func newProducer(t testing.TB, k *testenv.Kafka) *kgo.Client {
	t.Helper()
	p, err := kafkax.NewProducer(k.Config, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func produce(t testing.TB, p *kgo.Client, recs []*kgo.Record) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("producing: %v", err)
	}
}

func count(t testing.TB, ch *testenv.ClickHouse, query string, args ...any) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var n uint64
	if err := ch.Conn.QueryRow(ctx, query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// waitCount polls until query counts want, failing at once if it counts
// more (a duplicate or a stray row) or if the logwriter exited.
func waitCount(t testing.TB, lw *logwriter, ch *testenv.ClickHouse, want uint64, query string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		lw.failIfExited(t)
		n, err := tryCount(ch, query, args...)
		switch {
		case err == nil && n == want:
			return
		case err == nil && n > want:
			t.Fatalf("%s = %d, want %d", query, n, want)
		case time.Now().After(deadline):
			t.Fatalf("%s = %d (err %v) after 60s, want %d", query, n, err, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// tryCount tolerates errors: the tables exist only once Run migrated.
func tryCount(ch *testenv.ClickHouse, query string, args ...any) (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var n uint64
	err := ch.Conn.QueryRow(ctx, query, args...).Scan(&n)
	return n, err
}

func TestLogwriterWritesAndCollapsesRedeliveries(t *testing.T) {
	k := testenv.NewKafka(t)
	ch := testenv.NewClickHouse(t)
	cfg := newConfig(t, k, ch)
	db := ch.Config.Database
	p := newProducer(t, k)
	lw := start(t, cfg)

	now := time.Now().UTC()
	const nAttempts, nEvents = 500, 50
	attempts := make([]*sluicev1.Attempt, nAttempts)
	for i := range attempts {
		attempts[i] = attempt("a", i, now)
	}
	events := make([]*sluicev1.EventLogEntry, nEvents)
	for i := range events {
		events[i] = eventEntry("a", i, now)
	}
	produce(t, p, records(t, k.Names.Attempts, attempts))
	produce(t, p, records(t, k.Names.EventLog, events))

	waitCount(t, lw, ch, nAttempts, "SELECT count() FROM "+db+".attempts FINAL")
	waitCount(t, lw, ch, nEvents, "SELECT count() FROM "+db+".events FINAL")
	if n := count(t, ch, "SELECT uniqExact(attempt_id) FROM "+db+".attempts"); n != nAttempts {
		t.Errorf("%d distinct attempt ids in ClickHouse, want %d", n, nAttempts)
	}

	for _, i := range []int{0, 8, 9} { // a success, an HTTP error and a timeout
		a := attempts[i]
		var (
			outcome, endpoint, delivery, url, excerpt, errText, trace, origin string
			status                                                            uint16
			number                                                            uint32
			startedUs, latency, next                                          int64
			started                                                           time.Time
		)
		row := ch.Conn.QueryRow(context.Background(), "SELECT outcome, status_code, endpoint_id, delivery_id, "+
			"attempt_number, started_at, started_at_us, latency_us, url, response_excerpt, error, trace_id, origin, "+
			"next_attempt_at_ms FROM "+db+".attempts FINAL WHERE attempt_id = ?", a.AttemptId)
		if err := row.Scan(&outcome, &status, &endpoint, &delivery, &number, &started, &startedUs, &latency,
			&url, &excerpt, &errText, &trace, &origin, &next); err != nil {
			t.Fatalf("reading attempt %s: %v", a.AttemptId, err)
		}
		got := []any{outcome, status, endpoint, delivery, number, started.Unix(), startedUs, latency,
			url, excerpt, errText, trace, origin, next}
		want := []any{a.Outcome.Label(), uint16(a.StatusCode), a.EndpointId, a.DeliveryId, a.AttemptNumber,
			a.StartedAtUs / 1e6, a.StartedAtUs, a.LatencyUs, a.Url, string(a.ResponseExcerpt), a.Error, a.TraceId,
			a.Origin.Label(), a.NextAttemptAtMs}
		if !slices.Equal(got, want) {
			t.Errorf("attempt %d row\n got %v\nwant %v", i, got, want)
		}
	}
	if got := attempts[0].Outcome.Label(); got != "success" {
		t.Errorf("success is stored as %q", got)
	}

	e := events[7]
	var (
		tenant, typ, source, data string
		fanout                    uint32
		ids                       []string
		receivedMs                int64
	)
	if err := ch.Conn.QueryRow(context.Background(), "SELECT tenant_id, event_type, source, data, fanout_count, "+
		"endpoint_ids, received_at_ms FROM "+db+".events FINAL WHERE event_id = ?", e.EventId).
		Scan(&tenant, &typ, &source, &data, &fanout, &ids, &receivedMs); err != nil {
		t.Fatalf("reading event %s: %v", e.EventId, err)
	}
	if tenant != e.TenantId || typ != e.Type || source != "http" || data != string(e.Data) ||
		fanout != e.FanoutCount || !slices.Equal(ids, e.EndpointIds) || receivedMs != e.ReceivedAtMs {
		t.Errorf("event row = %q %q %q %q %d %v %d, want %v", tenant, typ, source, data, fanout, ids, receivedMs, e)
	}

	// Redelivery: the same 500 attempts again (fresh *kgo.Records: the
	// client keeps state in produced ones), then one marker per partition. A
	// marker is in ClickHouse only once every record before it in its
	// partition was inserted.
	produce(t, p, records(t, k.Names.Attempts, attempts))
	markers := []*sluicev1.Attempt{attempt("marker", 0, now), attempt("marker", 1, now)}
	produce(t, p, records(t, k.Names.Attempts, markers))
	waitCount(t, lw, ch, uint64(len(markers)),
		"SELECT count() FROM "+db+".attempts WHERE attempt_id IN (?, ?)", markers[0].AttemptId, markers[1].AttemptId)
	if n := count(t, ch, "SELECT count() FROM "+db+".attempts FINAL"); n != nAttempts+uint64(len(markers)) {
		t.Errorf("after redelivery count() FINAL = %d, want %d", n, nAttempts+len(markers))
	}

	lw.stop(t)
}

func TestLogwriterRestartLosesNothing(t *testing.T) {
	k := testenv.NewKafka(t)
	ch := testenv.NewClickHouse(t)
	cfg := newConfig(t, k, ch)
	db := ch.Config.Database
	p := newProducer(t, k)
	now := time.Now().UTC()
	batch := func(run string) []*kgo.Record {
		as := make([]*sluicev1.Attempt, 100)
		for i := range as {
			as[i] = attempt(run, i, now)
		}
		return records(t, k.Names.Attempts, as)
	}
	countAll := "SELECT count() FROM " + db + ".attempts FINAL"

	first := start(t, cfg)
	produce(t, p, batch("before"))
	waitCount(t, first, ch, 100, countAll)
	first.stop(t)

	// Stopping committed what was inserted: the group stands at the ends.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ends, err := k.Admin.ListEndOffsets(ctx, k.Names.Attempts)
	if err != nil {
		t.Fatal(err)
	}
	committed, err := k.Admin.FetchOffsets(ctx, cfg.Group)
	if err != nil {
		t.Fatal(err)
	}
	for p := range int32(partitions) {
		end, _ := ends.Lookup(k.Names.Attempts, p)
		c, ok := committed.Lookup(k.Names.Attempts, p)
		if !ok || c.Err != nil || c.At != end.Offset {
			t.Errorf("partition %d: committed offset %d (found %v, err %v), want %d", p, c.At, ok, c.Err, end.Offset)
		}
	}

	// Written while no logwriter runs; the next one picks them up.
	produce(t, p, batch("while-down"))
	second := start(t, cfg)
	waitCount(t, second, ch, 200, countAll)
	if n := count(t, ch, "SELECT count() FROM "+db+".attempts FINAL WHERE delivery_id LIKE 'dlv_while-down_%'"); n != 100 {
		t.Errorf("%d of the 100 attempts written while down arrived", n)
	}
	second.stop(t)
}

func TestLoadConfigRejects(t *testing.T) {
	valid := map[string]string{
		"SLUICE_KAFKA_BROKERS":       "127.0.0.1:19092",
		"SLUICE_TOPIC_PREFIX":        "t.",
		"SLUICE_CLICKHOUSE_ADDRS":    "127.0.0.1:19000",
		"SLUICE_CLICKHOUSE_DATABASE": "sluice_test",
		"SLUICE_OPS_ADDR":            "127.0.0.1:0",
		"SLUICE_GROUP":               "lw",
		"SLUICE_BATCH_WAIT":          "200ms",
	}
	cfg, err := app.LoadConfig(nil, env(valid))
	if err != nil {
		t.Fatalf("valid settings refused: %v", err)
	}
	if cfg.BatchWait != 200*time.Millisecond || cfg.Group != "lw" || cfg.TopicPrefix != "t." || cfg.BatchRows != 10000 ||
		cfg.RetentionDays != 30 || cfg.RetentionInterval != time.Hour {
		t.Errorf("loaded %+v", cfg)
	}
	settings := []string{"batch-rows", "batch-wait", "group", "retention-days", "retention-interval"}
	for _, tc := range []struct {
		desc, key, value, names string
	}{
		{"zero batch rows", "SLUICE_BATCH_ROWS", "0", "batch-rows"},
		{"batch rows above the memory bound", "SLUICE_BATCH_ROWS", "1000001", "batch-rows"},
		{"zero batch wait", "SLUICE_BATCH_WAIT", "0s", "batch-wait"},
		{"batch wait over a minute", "SLUICE_BATCH_WAIT", "2m", "batch-wait"},
		{"empty group", "SLUICE_GROUP", "", "group"},
		{"zero retention days", "SLUICE_RETENTION_DAYS", "0", "retention-days"},
		{"retention over ten years", "SLUICE_RETENTION_DAYS", "3651", "retention-days"},
		{"retention interval under a minute", "SLUICE_RETENTION_INTERVAL", "59s", "retention-interval"},
		{"retention interval over a day", "SLUICE_RETENTION_INTERVAL", "25h", "retention-interval"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			vars := map[string]string{}
			for k, v := range valid {
				vars[k] = v
			}
			vars[tc.key] = tc.value
			_, err := app.LoadConfig(nil, env(vars))
			if err == nil {
				t.Fatalf("%s=%q accepted", tc.key, tc.value)
			}
			for _, s := range settings {
				if named := strings.Contains(err.Error(), s); named != (s == tc.names) {
					t.Errorf("error %q: names %s = %v, want %v", err, s, named, s == tc.names)
				}
			}
		})
	}
	// The bounds themselves are allowed.
	for _, kv := range [][2]string{{"SLUICE_RETENTION_DAYS", "1"}, {"SLUICE_RETENTION_DAYS", "3650"},
		{"SLUICE_RETENTION_INTERVAL", "1m"}, {"SLUICE_RETENTION_INTERVAL", "24h"}} {
		vars := maps.Clone(valid)
		vars[kv[0]] = kv[1]
		if _, err := app.LoadConfig(nil, env(vars)); err != nil {
			t.Errorf("%s=%s refused: %v", kv[0], kv[1], err)
		}
	}
}
