// Package e2e_test runs Sluice's services together against the real Kafka
// and ClickHouse of pkg/testenv and counts what reaches a receiver and the
// delivery log.
package e2e_test

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/loadtest/receiver"
	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/configstore"
	"github.com/sluicehq/sluice/pkg/ids"
	"github.com/sluicehq/sluice/pkg/secretbox"
	"github.com/sluicehq/sluice/pkg/signing"
	"github.com/sluicehq/sluice/pkg/testenv"
	ingest "github.com/sluicehq/sluice/services/ingest/app"
	logwriter "github.com/sluicehq/sluice/services/logwriter/app"
	sender "github.com/sluicehq/sluice/services/sender/app"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// env is a SLUICE_* environment for a service under test.
type env map[string]string

func (e env) lookup(k string) (string, bool) { v, ok := e[k]; return v, ok }

// startIngest runs ingest (API on a free port unless extra says, router
// on) on the test's topics.
func startIngest(t testing.TB, k *testenv.Kafka, extra env) {
	t.Helper()
	start(t, "ingest", ingest.LoadConfig, ingest.Run, commonEnv(k).with(env{
		"SLUICE_API_ADDR":                 "127.0.0.1:0",
		"SLUICE_INSECURE_DEV_SECRETS_KEY": "true",
		"SLUICE_ROUTER_GROUP":             k.Prefix + "router",
	}).with(extra))
}

// startLogwriter runs a logwriter on the test's topics and database, with
// batches of at most 200 ms so rows show up quickly.
func startLogwriter(t testing.TB, k *testenv.Kafka, ch *testenv.ClickHouse) {
	t.Helper()
	start(t, "logwriter", logwriter.LoadConfig, logwriter.Run, commonEnv(k).with(env{
		"SLUICE_GROUP":               k.Prefix + "logwriter",
		"SLUICE_CLICKHOUSE_ADDRS":    ch.Config.Addrs[0],
		"SLUICE_CLICKHOUSE_DATABASE": ch.Config.Database,
		"SLUICE_BATCH_WAIT":          "200ms",
	}))
}

// commonEnv is what every service under test needs: the test's broker and
// topics, an ops listener on a free port, and quiet logs.
func commonEnv(k *testenv.Kafka) env {
	return env{
		"SLUICE_KAFKA_BROKERS": k.Config.Brokers[0],
		"SLUICE_TOPIC_PREFIX":  k.Prefix,
		"SLUICE_OPS_ADDR":      "127.0.0.1:0",
		"SLUICE_LOG_LEVEL":     "warn",
	}
}

// with returns e with extra's settings added (extra wins).
func (e env) with(extra env) env {
	out := env{}
	for k, v := range e {
		out[k] = v
	}
	for k, v := range extra {
		out[k] = v
	}
	return out
}

// start runs a service's Run in the background; when the test ends (or
// stop is called) it cancels it and requires a clean, timely exit.
func start[C any](t testing.TB, name string, load func([]string, config.LookupEnv) (C, error),
	run func(context.Context, C) error, e env) (stop func()) {
	t.Helper()
	cfg, err := load(nil, e.lookup)
	if err != nil {
		t.Fatalf("%s config: %v", name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("%s stopped with %v", name, err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("%s did not stop within 30 s of cancellation", name)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// e2eSecret signs the webhooks of endpoints putEndpoint writes without a
// secret of their own; receivers verify with it.
var e2eSecret = signing.FormatSecret([]byte("the e2e tests' secret, 32 bytes."))

// devBox seals secrets as the services started with the insecure
// development key open them.
var devBox = func() *secretbox.Box {
	b, err := secretbox.New(secretbox.Config{InsecureDevKey: true})
	if err != nil {
		panic(err)
	}
	return b
}()

// senderEnv is what every sender in these tests needs besides the common
// settings: the development secrets key, and loopback allowed, since the
// receivers listen on 127.0.0.1.
var senderEnv = env{"SLUICE_INSECURE_DEV_SECRETS_KEY": "true", "SLUICE_EGRESS_ALLOW": "127.0.0.1/32"}

// putEndpoint registers an endpoint in the config topic the way the API
// will, returning once it is readable.
func putEndpoint(t testing.TB, k *testenv.Kafka, ep *sluicev1.Endpoint) {
	t.Helper()
	if len(ep.SecretSealed) == 0 {
		key, err := signing.ParseSecret(e2eSecret)
		if err != nil {
			t.Fatal(err)
		}
		ep.SecretSealed = devBox.Seal(key, ep.Id)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store, err := configstore.Open(ctx, k.Config, k.Names.Config, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	runCtx, stop := context.WithCancel(ctx)
	ran := make(chan struct{})
	go func() { _ = store.Run(runCtx); close(ran) }()
	defer func() { stop(); <-ran }()
	if err := store.Put(ctx, ep.Id, &sluicev1.ConfigRecord{Object: &sluicev1.ConfigRecord_Endpoint{Endpoint: ep}}); err != nil {
		t.Fatal(err)
	}
}

// TestEventsFlowEndToEnd: events published to sluice.events in the Kafka
// producer contract — by a Go producer and by kcat, with producer retries
// among them — are routed, delivered to a receiver on 127.0.0.1 exactly
// once each, and land in ClickHouse as one attempt row and one event row
// each.
func TestEventsFlowEndToEnd(t *testing.T) {
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		t.Fatalf("kcat is needed (dev/install.sh installs it): %v", err)
	}
	k := testenv.NewKafka(t)
	ch := testenv.NewClickHouse(t)
	recv, err := receiver.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { recv.Close() })
	if err := recv.SetSecret("first", e2eSecret); err != nil {
		t.Fatal(err)
	}

	const tenant = "ten_test"
	ep := &sluicev1.Endpoint{Id: ids.New(ids.Endpoint), TenantId: tenant, Url: recv.URL("first"),
		EventTypes: []string{"order.*"}, Status: sluicev1.EndpointStatus_ENDPOINT_STATUS_ENABLED}
	putEndpoint(t, k, ep)

	common := commonEnv(k)
	startLogwriter(t, k, ch)
	start(t, "sender", sender.LoadConfig, sender.Run, common.with(senderEnv).with(env{"SLUICE_GROUP": k.Prefix + "sender"}))
	startIngest(t, k, nil)

	const n = 200
	var eventIDs []string
	var recs []*kgo.Record
	for i := range n {
		id := fmt.Sprintf("evt_go_%03d", i)
		eventIDs = append(eventIDs, id)
		recs = append(recs, contractRecord(k.Names.Events, tenant, "order.created", id, fmt.Sprintf(`{"order":%d}`, i)))
		if i%10 == 0 { // a producer retrying: the same event again
			recs = append(recs, contractRecord(k.Names.Events, tenant, "order.created", id, fmt.Sprintf(`{"order":%d}`, i)))
		}
	}
	// Not subscribed: routed to nothing, logged with a fan-out of 0.
	recs = append(recs, contractRecord(k.Names.Events, tenant, "invoice.paid", "evt_unrouted", `{}`))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	produceRecords(t, k, recs...)
	// The README's kcat example, as a user would run it.
	cmd := exec.CommandContext(ctx, kcat, "-P", "-b", k.Config.Brokers[0], "-t", k.Names.Events,
		"-k", tenant+"/evt_kcat", "-H", "sluice-tenant="+tenant, "-H", "sluice-type=order.shipped",
		"-H", "sluice-id=evt_kcat")
	cmd.Stdin = strings.NewReader(`{"order":"shipped"}` + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kcat: %v\n%s", err, out)
	}
	eventIDs = append(eventIDs, "evt_kcat")

	// Every event reaches the receiver exactly once: the retried copies
	// were dropped by the router, and nothing crashed.
	var tally receiver.Tally
	for {
		tally = recv.Tally("first", eventIDs)
		if len(tally.Missing) == 0 || ctx.Err() != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // room for a stray duplicate to show
	tally = recv.Tally("first", eventIDs)
	if len(tally.Missing) > 0 || tally.Duplicates > 0 || len(tally.Unexpected) > 0 {
		t.Fatalf("receiver: %d of %d missing, %d duplicates, %d unexpected",
			len(tally.Missing), len(eventIDs), tally.Duplicates, len(tally.Unexpected))
	}
	if n, m := recv.BadSignatures(), recv.BadBodies(); n+m > 0 {
		t.Fatalf("receiver: %d webhooks with bad signatures, %d with bad bodies", n, m)
	}

	// ClickHouse: one successful attempt row per delivered event, one event
	// row per accepted event (the unrouted one included).
	db := ch.Config.Database
	waitCount(t, ctx, ch, "SELECT count(), uniqExact(event_id), countIf(outcome = 'success' AND status_code = 204) FROM "+
		db+".attempts FINAL WHERE endpoint_id = ?", []any{ep.Id}, uint64(len(eventIDs)))
	waitCount(t, ctx, ch, "SELECT count(), uniqExact(event_id), countIf(fanout_count = 1) FROM "+
		db+".events FINAL WHERE tenant_id = ?", []any{tenant}, uint64(len(eventIDs)+1))
	var fanout uint32
	if err := ch.Conn.QueryRow(ctx, "SELECT fanout_count FROM "+db+".events FINAL WHERE event_id = 'evt_unrouted'").
		Scan(&fanout); err != nil || fanout != 0 {
		t.Fatalf("unrouted event: fan-out %d (%v), want a row with 0", fanout, err)
	}
}

// contractRecord is an event in the Kafka producer contract.
func contractRecord(topic, tenant, typ, id, data string) *kgo.Record {
	return &kgo.Record{Topic: topic, Key: []byte(tenant + "/" + id), Value: []byte(data), Headers: []kgo.RecordHeader{
		{Key: "sluice-tenant", Value: []byte(tenant)}, {Key: "sluice-type", Value: []byte(typ)},
		{Key: "sluice-id", Value: []byte(id)}}}
}

// waitCount waits until query's three counts reach want; the first two
// must then equal want, and so must the third, except for the events
// table's unrouted event (want+1 rows, want with a fan-out of 1).
func waitCount(t *testing.T, ctx context.Context, ch *testenv.ClickHouse, query string, args []any, want uint64) {
	t.Helper()
	var rows, distinct, good uint64
	var err error
	for {
		err = ch.Conn.QueryRow(ctx, query, args...).Scan(&rows, &distinct, &good)
		if err == nil && rows >= want {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("%s: %d rows of %d (last error: %v)", query, rows, want, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	wantGood := want
	if strings.Contains(query, "fanout_count") {
		wantGood = want - 1
	}
	if rows != want || distinct != want || good != wantGood {
		t.Fatalf("%s: %d rows, %d distinct, %d good; want %d, %d, %d", query, rows, distinct, good, want, want, wantGood)
	}
}
