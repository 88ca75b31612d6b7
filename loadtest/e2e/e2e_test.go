// Package e2e_test runs Sluice's services together against the real Kafka
// and ClickHouse of pkg/testenv and counts what reaches a receiver and the
// delivery log.
package e2e_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/loadtest/receiver"
	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/configstore"
	"github.com/sluicehq/sluice/pkg/ids"
	"github.com/sluicehq/sluice/pkg/kafkax"
	"github.com/sluicehq/sluice/pkg/testenv"
	logwriter "github.com/sluicehq/sluice/services/logwriter/app"
	sender "github.com/sluicehq/sluice/services/sender/app"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// env is a SLUICE_* environment for a service under test.
type env map[string]string

func (e env) lookup(k string) (string, bool) { v, ok := e[k]; return v, ok }

// start runs a service's Run in the background; when the test ends it
// cancels it and requires a clean, timely exit.
func start[C any](t *testing.T, name string, load func([]string, config.LookupEnv) (C, error),
	run func(context.Context, C) error, e env) {
	t.Helper()
	cfg, err := load(nil, e.lookup)
	if err != nil {
		t.Fatalf("%s config: %v", name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg) }()
	t.Cleanup(func() {
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

// putEndpoint registers an endpoint in the config topic the way the API
// will, returning once it is readable.
func putEndpoint(t *testing.T, k *testenv.Kafka, ep *sluicev1.Endpoint) {
	t.Helper()
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

// TestFirstThread: deliveries produced to sluice.deliveries for an endpoint
// whose URL is a receiver on 127.0.0.1 all reach the receiver, and each
// attempt lands in ClickHouse as exactly one row.
func TestFirstThread(t *testing.T) {
	k := testenv.NewKafka(t)
	ch := testenv.NewClickHouse(t)
	recv, err := receiver.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { recv.Close() })

	ep := &sluicev1.Endpoint{Id: ids.New(ids.Endpoint), TenantId: "ten_test", Url: recv.URL("first"),
		Status: sluicev1.EndpointStatus_ENDPOINT_STATUS_ENABLED}
	putEndpoint(t, k, ep)

	common := env{
		"SLUICE_KAFKA_BROKERS": k.Config.Brokers[0],
		"SLUICE_TOPIC_PREFIX":  k.Prefix,
		"SLUICE_OPS_ADDR":      "127.0.0.1:0",
		"SLUICE_LOG_LEVEL":     "warn",
	}
	with := func(extra env) env {
		out := env{}
		for k, v := range common {
			out[k] = v
		}
		for k, v := range extra {
			out[k] = v
		}
		return out
	}
	start(t, "logwriter", logwriter.LoadConfig, logwriter.Run, with(env{
		"SLUICE_GROUP":               k.Prefix + "logwriter",
		"SLUICE_CLICKHOUSE_ADDRS":    ch.Config.Addrs[0],
		"SLUICE_CLICKHOUSE_DATABASE": ch.Config.Database,
		"SLUICE_BATCH_WAIT":          "200ms",
	}))
	start(t, "sender", sender.LoadConfig, sender.Run, with(env{"SLUICE_GROUP": k.Prefix + "sender"}))

	const n = 200
	producer, err := kafkax.NewProducer(k.Config)
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	var eventIDs []string
	var recs []*kgo.Record
	for i := range n {
		d := &sluicev1.Delivery{
			SchemaVersion: sluicev1.SchemaVersion, DeliveryId: ids.New(ids.Delivery),
			TenantId: ep.TenantId, EndpointId: ep.Id, EventId: ids.New(ids.Event),
			EventType: "order.created", EventReceivedAtMs: time.Now().UnixMilli(),
			Data:   []byte(fmt.Sprintf(`{"order":%d}`, i)),
			Origin: sluicev1.DeliveryOrigin_DELIVERY_ORIGIN_ROUTER,
		}
		b, err := proto.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		eventIDs = append(eventIDs, d.EventId)
		recs = append(recs, &kgo.Record{Topic: k.Names.Deliveries, Key: []byte(d.EndpointId), Value: b})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := producer.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	// Every delivery reaches the receiver exactly once (no crash here, so no
	// duplicate is allowed).
	var tally receiver.Tally
	for {
		tally = recv.Tally("first", eventIDs)
		if len(tally.Missing) == 0 || ctx.Err() != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(tally.Missing) > 0 || tally.Duplicates > 0 || len(tally.Unexpected) > 0 {
		t.Fatalf("receiver: %d of %d missing, %d duplicates, %d unexpected",
			len(tally.Missing), n, tally.Duplicates, len(tally.Unexpected))
	}

	// Every attempt lands in ClickHouse as one successful row for its event.
	query := "SELECT count(), uniqExact(event_id), countIf(outcome = 'success' AND status_code = 204) FROM " +
		ch.Config.Database + ".attempts FINAL WHERE endpoint_id = ?"
	var rows, events, ok uint64
	for {
		err := ch.Conn.QueryRow(ctx, query, ep.Id).Scan(&rows, &events, &ok)
		if err == nil && rows >= n {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("ClickHouse holds %d attempt rows of %d (last error: %v)", rows, n, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if rows != n || events != n || ok != n {
		t.Fatalf("ClickHouse: %d rows for %d events, %d successful; want %d of each", rows, events, ok, n)
	}
	var url, id string
	if err := ch.Conn.QueryRow(ctx, "SELECT url, event_id FROM "+ch.Config.Database+
		".attempts WHERE endpoint_id = ? AND event_id = ?", ep.Id, eventIDs[0]).Scan(&url, &id); err != nil {
		t.Fatal(err)
	}
	if url != ep.Url || id != eventIDs[0] {
		t.Fatalf("attempt row url=%q event=%q, want %q %q", url, id, ep.Url, eventIDs[0])
	}
}
