package router_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/pkg/configstore"
	"github.com/sluicehq/sluice/pkg/dedup"
	"github.com/sluicehq/sluice/pkg/eventrecord"
	"github.com/sluicehq/sluice/pkg/health"
	"github.com/sluicehq/sluice/pkg/testenv"
	"github.com/sluicehq/sluice/pkg/topics"
	"github.com/sluicehq/sluice/services/ingest/router"
)

// runRouter runs a router built from opts over the store until the test
// ends (or stop), reporting to a stage of the returned registry.
func runRouter(t testing.TB, store *configstore.Store, opts router.Options) (*router.Router, *health.Registry, func() time.Duration) {
	t.Helper()
	reg := health.NewRegistry(time.Minute, nil)
	opts.Stage = reg.Stage("router")
	ix := router.NewIndex(nil)
	ix.Load(store.Subscribe(ix.Apply))
	r, err := router.New(opts, ix, quiet)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	var took time.Duration
	stop := func() time.Duration {
		once.Do(func() {
			began := time.Now()
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("router: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("router did not stop within 30 s of cancel")
			}
			took = time.Since(began)
			r.Close()
		})
		return took
	}
	t.Cleanup(func() { stop() })
	return r, reg, stop
}

func routerOptions(k *testenv.Kafka, group string) router.Options {
	return router.Options{
		Kafka: k.Config, Names: k.Names, Group: group, Limits: eventrecord.Limits{AuthKey: testKey},
		DedupWindow: 24 * time.Hour, DedupMaxEntries: 1000, MaxBatch: 100,
	}
}

// onPartition puts a record on an explicit partition (the producer below
// partitions manually).
func onPartition(r *kgo.Record, p int32) *kgo.Record { r.Partition = p; return r }

// waitFor polls cond until it holds, failing after within.
func waitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	began := time.Now()
	deadline := began.Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("%s after %v", what, time.Since(began).Round(time.Millisecond))
}

// TestRouterRecoversWhenDedupRebuildFails is the wedge an operator saw
// after a broker restart: the rebuild of a partition's dedup state failed
// once ("listing start offsets: … connection refused"), the router left
// the group from inside its assignment callback and routed nothing more,
// /readyz stayed ready and SIGTERM did not stop it. Now the failing
// partition stays paused and is retried with backoff, the others route,
// the stage is not ready while it fails and says why, and everything
// routes once the rebuild succeeds; stopping takes moments.
func TestRouterRecoversWhenDedupRebuildFails(t *testing.T) {
	k := testenv.NewKafka(t, testenv.WithPartitions(topics.Partitions{
		Events: 2, Deliveries: 2, Retry: 1, Dead: 1, Attempts: 1, EventLog: 1}))
	store := openStore(t, k)
	putEndpoint(t, store, &sluicev1.Endpoint{Id: "ep_all", TenantId: "ten_a"})

	var mu sync.Mutex
	fail := true
	failures := 0
	opts := routerOptions(k, k.Prefix+"router")
	router.SetRebuild(&opts, func(ctx context.Context, p int32) (*dedup.Set, int, error) {
		mu.Lock()
		failing := fail && p == 0
		if failing {
			failures++
		}
		mu.Unlock()
		if failing {
			return nil, 0, errors.New("listing start offsets: dial tcp 127.0.0.1:19092: connect: connection refused")
		}
		return dedup.Rebuild(ctx, k.Config, k.Names.Dedup, p, 24*time.Hour, 1000)
	})
	r, reg, stop := runRouter(t, store, opts)

	produceManual(t, k,
		onPartition(event(k.Names.Events, "ten_a", "order.created", "evt_p0", `{}`), 0),
		onPartition(event(k.Names.Events, "ten_a", "order.created", "evt_p1", `{}`), 1))
	waitFor(t, 30*time.Second, "the healthy partition routes", func() bool { return r.Stats().Events == 1 })
	waitFor(t, 30*time.Second, "the stage says the rebuild fails", func() bool {
		err := reg.Ready()
		return err != nil && strings.Contains(err.Error(), "partition(s) 0 cannot be rebuilt") &&
			strings.Contains(err.Error(), "connection refused")
	})
	if err := reg.Live(); err != nil {
		t.Fatalf("a router retrying its rebuild counts as stuck: %v", err)
	}
	waitFor(t, 30*time.Second, "the failing rebuild is retried", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return failures >= 3
	})
	mu.Lock()
	fail = false // the broker is back
	mu.Unlock()
	waitFor(t, 60*time.Second, "the event of the recovered partition routes", func() bool { return r.Stats().Events == 2 })
	if err := reg.Ready(); err != nil {
		t.Fatalf("after the rebuild succeeded: %v", err)
	}
	if got := deliveries(t, k.Read(t, k.Names.Deliveries, 2)); strings.Join(got, " ") != "evt_p0→ep_all evt_p1→ep_all" {
		t.Fatalf("deliveries %v", got)
	}
	if took := stop(); took > 10*time.Second {
		t.Fatalf("stopping took %v", took)
	}
}

// TestBadMarkerHoldsOnlyItsPartition (review C1): a changelog record that is
// not a marker makes its partition's rebuild fail. The router stays live,
// routes the other partition, reports the partition it cannot serve, and
// serves it once the bad record is deleted: nothing is lost or routed
// without its dedup state.
func TestBadMarkerHoldsOnlyItsPartition(t *testing.T) {
	k := testenv.NewKafka(t, testenv.WithPartitions(topics.Partitions{
		Events: 2, Deliveries: 2, Retry: 1, Dead: 1, Attempts: 1, EventLog: 1}))
	store := openStore(t, k)
	putEndpoint(t, store, &sluicev1.Endpoint{Id: "ep_all", TenantId: "ten_a"})
	bad := onPartition(&kgo.Record{Topic: k.Names.Dedup, Key: []byte("ten_a/x"), Value: []byte{1, 2, 3}}, 0)
	produceManual(t, k, bad)

	opts := routerOptions(k, k.Prefix+"router")
	r, reg, _ := runRouter(t, store, opts)
	produceManual(t, k,
		onPartition(event(k.Names.Events, "ten_a", "order.created", "evt_p0", `{}`), 0),
		onPartition(event(k.Names.Events, "ten_a", "order.created", "evt_p1", `{}`), 1))
	waitFor(t, 30*time.Second, "the healthy partition routes", func() bool { return r.Stats().Events == 1 })
	waitFor(t, 30*time.Second, "the stage names the partition", func() bool {
		err := reg.Ready()
		return err != nil && strings.Contains(err.Error(), "not a marker")
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := k.Admin.DeleteRecords(ctx, kadm.Offsets{k.Names.Dedup: {0: {Topic: k.Names.Dedup, Partition: 0, At: bad.Offset + 1}}})
	if err == nil {
		err = res.Error()
	}
	if err != nil {
		t.Fatalf("deleting the bad marker: %v", err)
	}
	waitFor(t, 90*time.Second, "the partition routes once the bad record is gone", func() bool { return r.Stats().Events == 2 })
	if err := reg.Ready(); err != nil {
		t.Fatalf("after the bad record went: %v", err)
	}
}

// TestOnlySluiceEmitsOperationalEvents (issue 11 §3.9, review B3): a Kafka
// producer's sluice.* event is rejected with the reason, and never reaches
// an endpoint subscribed to sluice.*; Sluice's own (authenticated) one does.
func TestOnlySluiceEmitsOperationalEvents(t *testing.T) {
	k := testenv.NewKafka(t, testenv.WithPartitions(topics.Partitions{
		Events: 1, Deliveries: 1, Retry: 1, Dead: 1, Attempts: 1, EventLog: 1}))
	store := openStore(t, k)
	putEndpoint(t, store, &sluicev1.Endpoint{Id: "ep_ops", TenantId: "ten_a", EventTypes: []string{"sluice.*"}})
	r, _, _ := runRouter(t, store, routerOptions(k, k.Prefix+"router"))

	own, err := eventrecord.FromSystem(k.Names.Events, "ten_a", "sluice.endpoint.disabled", []byte(`{"endpoint_id":"ep_x"}`), testKey)
	if err != nil {
		t.Fatal(err)
	}
	produce(t, k,
		event(k.Names.Events, "ten_a", "sluice.endpoint.disabled", "evt_forged", `{"endpoint_id":"ep_x"}`),
		own)
	waitFor(t, 30*time.Second, "both records decided", func() bool { s := r.Stats(); return s.Events+s.Rejected == 2 })
	if s := r.Stats(); s.Events != 1 || s.Rejected != 1 || s.Deliveries != 1 {
		t.Fatalf("stats %+v; want the forged event rejected and Sluice's own delivered", s)
	}
	var own1 sluicev1.Event
	if err := proto.Unmarshal(own.Value, &own1); err != nil {
		t.Fatal(err)
	}
	if got := deliveries(t, k.Read(t, k.Names.Deliveries, 1)); len(got) != 1 || got[0] != own1.EventId+"→ep_ops" {
		t.Fatalf("deliveries %v, want only Sluice's own event", got)
	}
	rej := k.Read(t, k.Names.EventsRejected, 1)
	var reason string
	for _, h := range rej[0].Headers {
		if h.Key == eventrecord.HeaderReason {
			reason = string(h.Value)
		}
	}
	if !strings.Contains(reason, "reserved for Sluice's own operational events") {
		t.Fatalf("reject reason %q", reason)
	}
}

// TestRouterReportsAShortDedupWindow (issue 11 §3.14): when a partition
// gets more ids in a window than dedup-max-entries holds, the oldest are
// evicted, and the router says so: the evictions counter moves and the
// effective window gauge falls below the configured window.
func TestRouterReportsAShortDedupWindow(t *testing.T) {
	k := testenv.NewKafka(t, testenv.WithPartitions(topics.Partitions{
		Events: 1, Deliveries: 1, Retry: 1, Dead: 1, Attempts: 1, EventLog: 1}))
	store := openStore(t, k)
	reader := sdkmetric.NewManualReader()
	opts := routerOptions(k, k.Prefix+"router")
	opts.DedupMaxEntries = 1000
	opts.Meter = sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)).Meter("test")
	r, _, _ := runRouter(t, store, opts)

	const n = 2500
	recs := make([]*kgo.Record, n)
	for i := range recs {
		recs[i] = event(k.Names.Events, "ten_a", "order.created", fmt.Sprintf("evt_%05d", i), `{}`)
	}
	produce(t, k, recs...)
	waitFor(t, time.Minute, "every event routed", func() bool { return r.Stats().Events == n })

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var evicted int64
	window := -1.0
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				if m.Name == "sluice.dedup.evictions" {
					for _, dp := range d.DataPoints {
						evicted += dp.Value
					}
				}
			case metricdata.Gauge[float64]:
				if m.Name == "sluice.dedup.effective_window" && len(d.DataPoints) == 1 {
					window = d.DataPoints[0].Value
				}
			}
		}
	}
	if evicted < n-1000 {
		t.Errorf("sluice.dedup.evictions = %d, want at least %d", evicted, n-1000)
	}
	if window < 0 || window >= (24*time.Hour).Seconds() {
		t.Errorf("sluice.dedup.effective_window = %v s, want one value below the 24 h window", window)
	}
}

// TestOrderedEndpointsGoToTheOrderedTopic: the router routes an ordered
// endpoint's deliveries to sluice.ordered, where the sender reads them as
// lanes, and the others to sluice.deliveries.
func TestOrderedEndpointsGoToTheOrderedTopic(t *testing.T) {
	k := testenv.NewKafka(t, testenv.WithPartitions(topics.Partitions{
		Events: 1, Deliveries: 1, Retry: 1, Dead: 1, Attempts: 1, EventLog: 1}))
	store := openStore(t, k)
	putEndpoint(t, store, &sluicev1.Endpoint{Id: "ep_fifo", TenantId: "ten_a", Ordered: true})
	putEndpoint(t, store, &sluicev1.Endpoint{Id: "ep_any", TenantId: "ten_a"})
	r, _, _ := runRouter(t, store, routerOptions(k, k.Prefix+"router"))
	produce(t, k, event(k.Names.Events, "ten_a", "order.created", "evt_1", `{}`))
	waitFor(t, 30*time.Second, "the event routed", func() bool { return r.Stats().Deliveries == 2 })
	if got := deliveries(t, k.Read(t, k.Names.Ordered, 1)); strings.Join(got, " ") != "evt_1→ep_fifo" {
		t.Fatalf("ordered topic holds %v", got)
	}
	if got := deliveries(t, k.Read(t, k.Names.Deliveries, 1)); strings.Join(got, " ") != "evt_1→ep_any" {
		t.Fatalf("deliveries topic holds %v", got)
	}
}
