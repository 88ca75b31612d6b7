package router_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/pkg/configstore"
	"github.com/sluicehq/sluice/pkg/testenv"
	"github.com/sluicehq/sluice/pkg/topics"
)

func fanoutKafka(tb testing.TB) *testenv.Kafka {
	return testenv.NewKafka(tb, testenv.WithPartitions(topics.Partitions{
		Events: 2, Deliveries: 6, Retry: 1, Dead: 1, Attempts: 1, EventLog: 2}))
}

// endpoints registers n endpoints of ten_fan subscribed to order.*.
func endpoints(tb testing.TB, store *configstore.Store, n int) {
	for i := range n {
		putEndpoint(tb, store, &sluicev1.Endpoint{Id: fmt.Sprintf("ep_%04d", i), TenantId: "ten_fan",
			EventTypes: []string{"order.*"}})
	}
}

// TestOneEventToAThousandEndpoints: one event fans out to every one of
// 1,000 subscribed endpoints, once each, in one transaction.
func TestOneEventToAThousandEndpoints(t *testing.T) {
	k := fanoutKafka(t)
	store := openStore(t, k)
	endpoints(t, store, 1000)
	r, _ := startRouter(t, k, store, k.Prefix+"router")
	produce(t, k, event(k.Names.Events, "ten_fan", "order.created", "evt_big", `{}`))
	if s := waitRouted(t, r, 1); s.Deliveries != 1000 {
		t.Fatalf("stats %+v, want 1000 deliveries", s)
	}
	got := deliveries(t, k.Read(t, k.Names.Deliveries, 1000))
	seen := map[string]bool{}
	for _, d := range got {
		if seen[d] {
			t.Fatalf("delivered twice: %s", d)
		}
		seen[d] = true
	}
	if len(seen) != 1000 {
		t.Fatalf("%d distinct deliveries, want 1000", len(seen))
	}
}

// BenchmarkFanOutTo100Endpoints: events, each to 100 endpoints, through the
// real broker; reports deliveries per second.
func BenchmarkFanOutTo100Endpoints(b *testing.B) {
	k := fanoutKafka(b)
	store := openStore(b, k)
	endpoints(b, store, 100)
	r, _ := startRouter(b, k, store, k.Prefix+"router")
	var recs []*kgo.Record
	for i := range b.N {
		recs = append(recs, event(k.Names.Events, "ten_fan", "order.created", fmt.Sprintf("evt_%08d", i), `{"n":1}`))
	}
	b.ResetTimer()
	start := time.Now()
	produce(b, k, recs...)
	waitRouted(b, r, int64(b.N))
	elapsed := time.Since(start)
	b.ReportMetric(float64(100*b.N)/elapsed.Seconds(), "deliveries/s")
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
}
