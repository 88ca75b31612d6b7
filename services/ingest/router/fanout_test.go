package router_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
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

// TestLargeFanOutSplitsAcrossTransactions (issue 11 §3.2, review H2): events
// whose fan-out is far larger than a transaction may be are routed in
// pieces, each its own transaction within the byte budget, the rest carried
// by continuations; every (event, endpoint) pair is delivered exactly once
// and the event log lists the whole fan-out; no transaction holds much more
// than its budget. Unbounded, the 30 MiB went in one transaction (measured:
// Continued 0, MaxTxnBytes 30 MiB), and a fan-out a few times larger
// outlives the transaction timeout and aborts forever (review H2).
func TestLargeFanOutSplitsAcrossTransactions(t *testing.T) {
	const (
		nEndpoints = 60
		nEvents    = 4
		dataBytes  = 128 << 10
	)
	k := fanoutKafka(t)
	store := openStore(t, k)
	endpoints(t, store, nEndpoints)
	opts := routerOptions(k, k.Prefix+"router")
	opts.TxnBytes = 2 << 20
	opts.TransactionTimeout = 3 * time.Second
	r, _, _ := runRouter(t, store, opts)

	data := `{"blob":"` + strings.Repeat("x", dataBytes-12) + `"}`
	var recs []*kgo.Record
	for i := range nEvents {
		recs = append(recs, event(k.Names.Events, "ten_fan", "order.created", fmt.Sprintf("evt_big_%d", i), data))
	}
	produce(t, k, recs...)
	waitFor(t, 2*time.Minute, "every delivery routed", func() bool { return r.Stats().Deliveries >= nEndpoints*nEvents })
	s := r.Stats()
	if s.Events != nEvents || s.Deliveries != nEndpoints*nEvents || s.Continued == 0 {
		t.Fatalf("stats %+v; want %d events, %d deliveries, some continuations", s, nEvents, nEndpoints*nEvents)
	}
	// A transaction stops taking fan-out at its budget; what it can hold
	// beyond is the delivery that crossed it and the continuation of the
	// rest, each about one event's data.
	if limit := int64(opts.TxnBytes + 3*dataBytes); s.MaxTxnBytes > limit {
		t.Fatalf("a transaction produced %d bytes, over its %d-byte budget and the overshoot of one event (%d)",
			s.MaxTxnBytes, opts.TxnBytes, limit)
	}
	got := deliveries(t, k.Read(t, k.Names.Deliveries, nEndpoints*nEvents))
	seen := map[string]bool{}
	for _, d := range got {
		if seen[d] {
			t.Fatalf("delivered twice: %s", d)
		}
		seen[d] = true
	}
	if len(seen) != nEndpoints*nEvents {
		t.Fatalf("%d distinct deliveries, want %d", len(seen), nEndpoints*nEvents)
	}
	for _, rec := range k.Read(t, k.Names.EventLog, nEvents) {
		var e sluicev1.EventLogEntry
		if err := proto.Unmarshal(rec.Value, &e); err != nil {
			t.Fatal(err)
		}
		if e.FanoutCount != nEndpoints || len(e.EndpointIds) != nEndpoints {
			t.Fatalf("event %s logged with fan-out %d and %d ids, want %d", e.EventId, e.FanoutCount, len(e.EndpointIds), nEndpoints)
		}
	}
}

// TestRecordTooLargeIsRejectedNotRetriedForever (review H1): when the broker
// refuses a fan-out record for its size (a topic whose max.message.bytes is
// below the event), the router does not commit past it silently, nor abort
// forever: the event goes to the rejected topic with the reason, and the
// events after it are routed.
func TestRecordTooLargeIsRejectedNotRetriedForever(t *testing.T) {
	k := fanoutKafka(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	limit := "20000"
	res, err := k.Admin.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Name: "max.message.bytes", Value: &limit}}, k.Names.Deliveries)
	if err == nil {
		_, err = res.On(k.Names.Deliveries, nil)
	}
	if err != nil {
		t.Fatalf("lowering max.message.bytes: %v", err)
	}
	store := openStore(t, k)
	endpoints(t, store, 1)
	r, _, _ := runRouter(t, store, routerOptions(k, k.Prefix+"router"))
	// Random, so compression does not bring it under the limit.
	blob := make([]byte, 20_000)
	_, _ = rand.Read(blob)
	produce(t, k,
		event(k.Names.Events, "ten_fan", "order.created", "evt_huge", `{"blob":"`+hex.EncodeToString(blob)+`"}`),
		event(k.Names.Events, "ten_fan", "order.created", "evt_small", `{}`))
	waitFor(t, time.Minute, "both events decided", func() bool { s := r.Stats(); return s.Rejected == 1 && s.Events >= 1 })
	rej := k.Read(t, k.Names.EventsRejected, 1)
	var reason string
	for _, h := range rej[0].Headers {
		if h.Key == eventrecord.HeaderReason {
			reason = string(h.Value)
		}
	}
	if string(rej[0].Key) != "ten_fan/evt_huge" || !strings.Contains(reason, "exceeds the producer's or the broker's record limit") {
		t.Fatalf("rejected %q with reason %q", rej[0].Key, reason)
	}
	if got := deliveries(t, k.Read(t, k.Names.Deliveries, 1)); len(got) != 1 || got[0] != "evt_small→ep_0000" {
		t.Fatalf("deliveries %v, want only the small event's", got)
	}
}

// TestNewRefusesWhatCannotBeProduced (review H1): a router whose events may
// be larger than its records can hold, or with no key to authenticate its
// continuations, is refused at start rather than failing silently later.
func TestNewRefusesWhatCannotBeProduced(t *testing.T) {
	for desc, tc := range map[string]struct {
		lim  eventrecord.Limits
		want string
	}{
		"events larger than a record can hold": {eventrecord.Limits{MaxDataBytes: 1_040_000, AuthKey: testKey},
			"events of up to 1040000 bytes cannot be routed"},
		"no record key": {eventrecord.Limits{}, "no record key"},
	} {
		t.Run(desc, func(t *testing.T) {
			_, err := router.New(router.Options{Kafka: kafkax.Config{Brokers: []string{"127.0.0.1:1"}}, Limits: tc.lim,
				Names: topics.NewNames("x."), Group: "g", MaxBatch: 1, DedupWindow: time.Hour, DedupMaxEntries: 1000},
				router.NewIndex(nil), quiet)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
