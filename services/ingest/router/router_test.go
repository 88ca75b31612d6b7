package router_test

import (
	"context"
	"io"
	"log/slog"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/pkg/configstore"
	"github.com/sluicehq/sluice/pkg/eventrecord"
	"github.com/sluicehq/sluice/pkg/kafkax"
	"github.com/sluicehq/sluice/pkg/testenv"
	"github.com/sluicehq/sluice/pkg/topics"
	"github.com/sluicehq/sluice/services/ingest/router"
)

func TestMain(m *testing.M) { testenv.Main(m) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// startRouter runs a router of group over the store's endpoints until the
// returned stop is called.
func startRouter(t testing.TB, k *testenv.Kafka, store *configstore.Store, group string) (*router.Router, func()) {
	t.Helper()
	ix := router.NewIndex(nil)
	ix.Load(store.Subscribe(ix.Apply))
	r, err := router.New(router.Options{
		Kafka: k.Config, Names: k.Names, Group: group, Limits: eventrecord.Limits{AuthKey: testKey},
		DedupWindow: 24 * time.Hour, DedupMaxEntries: 1000, MaxBatch: 100,
	}, ix, quiet)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("router: %v", err)
		}
		r.Close()
	}
	t.Cleanup(stop)
	return r, stop
}

func openStore(t testing.TB, k *testenv.Kafka) *configstore.Store {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	store, err := configstore.Open(ctx, k.Config, k.Names.Config, quiet)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = store.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; store.Close() })
	if err := store.WaitCaughtUp(ctx); err != nil {
		t.Fatal(err)
	}
	return store
}

func putEndpoint(t testing.TB, store *configstore.Store, e *sluicev1.Endpoint) {
	t.Helper()
	if e.Status == sluicev1.EndpointStatus_ENDPOINT_STATUS_UNSPECIFIED {
		e.Status = sluicev1.EndpointStatus_ENDPOINT_STATUS_ENABLED
	}
	if err := store.Put(context.Background(), e.Id, &sluicev1.ConfigRecord{
		Object: &sluicev1.ConfigRecord_Endpoint{Endpoint: e}}); err != nil {
		t.Fatal(err)
	}
}

// event is a record in the Kafka producer contract (what kcat would send).
func event(topic, tenant, typ, id, data string) *kgo.Record {
	r := &kgo.Record{Topic: topic, Key: eventrecord.Key(tenant, id), Value: []byte(data), Headers: []kgo.RecordHeader{
		{Key: eventrecord.HeaderTenant, Value: []byte(tenant)}, {Key: eventrecord.HeaderType, Value: []byte(typ)}}}
	if id != "" {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: eventrecord.HeaderID, Value: []byte(id)})
	}
	return r
}

// testKey is the record key of the tests' routers and system events.
var testKey = []byte("0123456789abcdef0123456789abcdef")

// produceManual produces recs to the partitions they name.
func produceManual(t testing.TB, k *testenv.Kafka, recs ...*kgo.Record) {
	t.Helper()
	p, err := kafkax.NewProducer(k.Config, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

func produce(t testing.TB, k *testenv.Kafka, recs ...*kgo.Record) {
	t.Helper()
	p, err := kafkax.NewProducer(k.Config)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// waitRouted waits until the router has decided n records.
func waitRouted(t testing.TB, r *router.Router, n int64) router.Stats {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		s := r.Stats()
		if s.Events+s.Duplicates+s.Rejected >= n {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("router decided %d of %d records: %+v", s.Events+s.Duplicates+s.Rejected, n, s)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func deliveries(t testing.TB, recs []*kgo.Record) []string {
	t.Helper()
	var out []string
	for _, r := range recs {
		var d sluicev1.Delivery
		if err := proto.Unmarshal(r.Value, &d); err != nil {
			t.Fatal(err)
		}
		if string(r.Key) != d.EndpointId {
			t.Fatalf("delivery keyed %q for endpoint %s", r.Key, d.EndpointId)
		}
		out = append(out, d.EventId+"→"+d.EndpointId)
	}
	sort.Strings(out)
	return out
}

func TestRouterFansOutOnceAndParksAndRejects(t *testing.T) {
	k := testenv.NewKafka(t, testenv.WithPartitions(topics.Partitions{
		Events: 2, Deliveries: 3, Retry: 1, Dead: 1, Attempts: 1, EventLog: 2}))
	store := openStore(t, k)
	putEndpoint(t, store, &sluicev1.Endpoint{Id: "ep_orders", TenantId: "ten_a", EventTypes: []string{"order.*"}})
	putEndpoint(t, store, &sluicev1.Endpoint{Id: "ep_all", TenantId: "ten_a"})
	putEndpoint(t, store, &sluicev1.Endpoint{Id: "ep_off", TenantId: "ten_a", EventTypes: []string{"order.created"},
		Status: sluicev1.EndpointStatus_ENDPOINT_STATUS_DISABLED, DisabledReason: "paused by ops"})
	putEndpoint(t, store, &sluicev1.Endpoint{Id: "ep_invoices", TenantId: "ten_a", EventTypes: []string{"invoice.paid"}})
	putEndpoint(t, store, &sluicev1.Endpoint{Id: "ep_b", TenantId: "ten_b", EventTypes: []string{"order.created"}})

	r, stop := startRouter(t, k, store, k.Prefix+"router")
	ev := k.Names.Events
	produce(t, k,
		event(ev, "ten_a", "order.created", "evt_1", `{"n":1}`),
		event(ev, "ten_a", "order.created", "evt_1", `{"n":1}`), // a producer's retry
		event(ev, "ten_a", "invoice.paid", "evt_2", `{"n":2}`),
		event(ev, "ten_b", "order.created", "evt_3", `{"n":3}`),
		event(ev, "ten_a", "user.created", "evt_4", `{}`),   // only the catch-all wants it
		event(ev, "ten_a", "order..created", "evt_5", `{}`), // malformed type
	)
	s := waitRouted(t, r, 6)
	if s.Events != 4 || s.Duplicates != 1 || s.Rejected != 1 || s.Parked != 1 || s.Deliveries != 6 {
		t.Fatalf("stats %+v; want 4 events, 1 duplicate, 1 rejected, 1 parked, 6 deliveries", s)
	}

	want := []string{"evt_1→ep_all", "evt_1→ep_orders", "evt_2→ep_all", "evt_2→ep_invoices", "evt_3→ep_b", "evt_4→ep_all"}
	sort.Strings(want)
	if got := deliveries(t, k.Read(t, k.Names.Deliveries, len(want))); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("deliveries\n got %v\nwant %v", got, want)
	}
	dead := k.Read(t, k.Names.Dead, 1)
	if got := deliveries(t, dead); strings.Join(got, " ") != "evt_1→ep_off" {
		t.Fatalf("parked %v, want the disabled endpoint's delivery", got)
	}
	var parked sluicev1.Delivery
	_ = proto.Unmarshal(dead[0].Value, &parked)
	if parked.DeadReason != "endpoint disabled: paused by ops" {
		t.Fatalf("dead reason %q", parked.DeadReason)
	}
	logs := k.Read(t, k.Names.EventLog, 4)
	fanout := map[string]uint32{}
	for _, rec := range logs {
		var e sluicev1.EventLogEntry
		_ = proto.Unmarshal(rec.Value, &e)
		fanout[e.EventId] = e.FanoutCount
	}
	if len(logs) != 4 || fanout["evt_1"] != 3 || fanout["evt_2"] != 2 || fanout["evt_3"] != 1 || fanout["evt_4"] != 1 {
		t.Fatalf("%d event-log entries, fan-outs %v; want 4 with 3, 2, 1, 1", len(logs), fanout)
	}
	rejected := k.Read(t, k.Names.EventsRejected, 1)
	if len(rejected) != 1 {
		t.Fatalf("%d rejected records, want 1", len(rejected))
	}
	var reason string
	for _, h := range rejected[0].Headers {
		if h.Key == eventrecord.HeaderReason {
			reason = string(h.Value)
		}
	}
	if !strings.Contains(reason, "sluice-type") {
		t.Fatalf("reject reason %q does not name the header", reason)
	}

	// A repeat in a later batch of the same router is dropped from memory.
	produce(t, k, event(ev, "ten_a", "order.created", "evt_1", `{"n":1}`))
	if s = waitRouted(t, r, 7); s.Duplicates != 2 || s.Events != 4 {
		t.Fatalf("a repeat in a later batch: %+v; want it dropped", s)
	}

	// A new router (a restart) rebuilds its dedup state: the same id again
	// fans out no further, a new id does.
	stop()
	r2, _ := startRouter(t, k, store, k.Prefix+"router")
	produce(t, k,
		event(ev, "ten_a", "order.created", "evt_1", `{"n":1}`),
		event(ev, "ten_a", "invoice.paid", "evt_6", `{"n":6}`))
	s = waitRouted(t, r2, 2)
	if s.Duplicates != 1 || s.Events != 1 {
		t.Fatalf("after the restart: %+v; want the repeated id dropped and the new one routed", s)
	}
	if got := deliveries(t, k.Read(t, k.Names.Deliveries, 8)); len(got) != 8 {
		t.Fatalf("%d deliveries after the restart, want 8: %v", len(got), got)
	}
}
