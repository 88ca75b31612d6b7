package dispatch_test

// Ordered endpoints: their deliveries are sent from the ordered topic only,
// each partition read as one lane per endpoint; a lane that cannot take
// more closes and is read again from where it stopped once it can, so it
// never holds another lane, its partition or the process.

import (
	"fmt"
	"slices"
	"testing"
	"time"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/pkg/testenv"
	"github.com/sluicehq/sluice/pkg/topics"
)

// deliveryIDs are the delivery ids of ds.
func deliveryIDs(ds []*sluicev1.Delivery) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.DeliveryId
	}
	return out
}

func (a *attempter) doneOf(ep string) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.done[ep])
}

func (a *attempter) orderOf(ep string) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.order[ep])
}

// TestDisablingAnOrderedEndpointOverItsQueueHoldsNothing (review H3): an
// ordered endpoint that always fails has more deliveries than its queue
// holds when it is disabled. Another endpoint's delivery behind them on
// the same deliveries partition arrives while the clock stands still (the
// failing head waits for its retry), and the disabled endpoint's
// deliveries are all parked, in order. Before lanes, the full ordered
// queue paused the partition and disabling never resumed it.
func TestDisablingAnOrderedEndpointOverItsQueueHoldsNothing(t *testing.T) {
	k := onePartition(t)
	clock := newFakeClock()
	eps := newEndpoints(
		&sluicev1.Endpoint{Id: "ep_ordered", Ordered: true, RetryScheduleMs: ms(slices.Repeat([]time.Duration{time.Second}, 20)...)},
		&sluicev1.Endpoint{Id: "ep_b"},
	)
	a := newAttempter(clock)
	a.failFirst["ep_ordered"] = -1
	var ordered []*sluicev1.Delivery
	for range 10 {
		ordered = append(ordered, delivery("ep_ordered"))
	}
	produce(t, k, k.Names.Deliveries, ordered...)
	opts := defaults(clock)
	opts.QueueCap = 4
	d, _ := start(t, k, opts, eps, a)
	waitFor(t, "the ordered endpoint's queue over its cap", func() bool {
		return d.Stats().LaneCloses > 0 && len(a.callTimes(ordered[0].DeliveryId)) == 1
	})
	eps.mu.Lock()
	eps.m["ep_ordered"] = &sluicev1.Endpoint{Id: "ep_ordered", Ordered: true, Status: sluicev1.EndpointStatus_ENDPOINT_STATUS_DISABLED,
		DisabledReason: "paused by its tenant"}
	eps.mu.Unlock()
	b := delivery("ep_b")
	produce(t, k, k.Names.Deliveries, b)
	waitFor(t, "the other endpoint's delivery", func() bool { return a.doneCount("ep_b") == 1 })

	dead := decode(t, k.Read(t, k.Names.Dead, 10))
	if got := deliveryIDs(dead); fmt.Sprint(got) != fmt.Sprint(deliveryIDs(ordered)) {
		t.Fatalf("parked\n %v\nwant, in order,\n %v", got, deliveryIDs(ordered))
	}
	for _, dl := range dead {
		if dl.DeadReason != "endpoint disabled: paused by its tenant" {
			t.Errorf("%s parked with reason %q", dl.DeliveryId, dl.DeadReason)
		}
	}
	settled(t, k)
	if s := d.Stats(); s.Moved != 10 {
		t.Errorf("stats %+v: want the 10 ordered deliveries moved to the ordered topic", s)
	}
}

// TestAFailingOrderedEndpointHoldsNeitherItsPartitionNorTheProcess (review
// H4): an ordered endpoint that always fails has 100 deliveries of
// 200 KiB on the ordered topic, against an ordered budget of 2 MiB and a
// memory budget of 16 MiB. An ordered endpoint behind them on the same
// ordered partition, and an unordered one on the deliveries topic, get
// theirs while the failing head waits for its retry; the ordered jobs held
// stay within the budget plus one job, and fetching is never paused.
// Before lanes, the sender held all 100 and paused every topic.
func TestAFailingOrderedEndpointHoldsNeitherItsPartitionNorTheProcess(t *testing.T) {
	k := onePartition(t)
	clock := newFakeClock()
	eps := newEndpoints(
		&sluicev1.Endpoint{Id: "ep_failing", Ordered: true, RetryScheduleMs: ms(time.Hour)},
		&sluicev1.Endpoint{Id: "ep_ordered_ok", Ordered: true},
		&sluicev1.Endpoint{Id: "ep_ok"},
	)
	a := newAttempter(clock)
	a.failFirst["ep_failing"] = -1
	var large []*sluicev1.Delivery
	for range 100 {
		dl := delivery("ep_failing")
		dl.Data = []byte(fmt.Sprintf(`{"pad":"%0204800d"}`, 0))
		large = append(large, dl)
	}
	produce(t, k, k.Names.Ordered, large...)
	var behind []*sluicev1.Delivery
	for range 5 {
		behind = append(behind, delivery("ep_ordered_ok"))
	}
	produce(t, k, k.Names.Ordered, behind...)
	produce(t, k, k.Names.Deliveries, delivery("ep_ok"), delivery("ep_ok"))
	opts := defaults(clock)
	opts.MemoryBudget = 16 << 20
	opts.OrderedBudget = 2 << 20
	d, _ := start(t, k, opts, eps, a)

	waitFor(t, "the healthy endpoints' deliveries", func() bool {
		return a.doneCount("ep_ordered_ok") == 5 && a.doneCount("ep_ok") == 2
	})
	if got := a.doneOf("ep_ordered_ok"); fmt.Sprint(got) != fmt.Sprint(deliveryIDs(behind)) {
		t.Errorf("ordered endpoint behind the failing one got\n %v\nwant\n %v", got, deliveryIDs(behind))
	}
	s := d.Stats()
	record := int64(len(large[0].Data)) + 1024 // one delivery, encoded, with the job's overhead
	if s.OrderedBuffered > opts.OrderedBudget+record {
		t.Errorf("%d bytes of ordered jobs held, budget %d plus one job", s.OrderedBuffered, opts.OrderedBudget)
	}
	if s.LaneCloses == 0 {
		t.Errorf("stats %+v: the failing lane never closed", s)
	}
	if paused := d.Consumer().PauseFetchTopics(); s.MemoryPauses != 0 || len(paused) != 0 {
		t.Errorf("fetching paused %d times (now %v)", s.MemoryPauses, paused)
	}
	if n := len(a.orderOf("ep_failing")); n != 1 {
		t.Errorf("the failing endpoint was called %d times, want once: its head waits for the clock", n)
	}
	// The commit of the ordered partition stays at the failing head.
	if m := d.Consumer().MarkedOffsets()[k.Names.Ordered][0]; m.Offset != 0 {
		t.Errorf("ordered partition marked at %d, want 0: the failing head", m.Offset)
	}
}

// TestOrderedLanesKeepOrderThroughCloseAndReopen: four ordered endpoints
// share one ordered partition, their deliveries interleaved, with a queue
// of two deliveries each, and one of them fails every delivery once (its
// head retried in place). The lanes close and reopen many times, the
// partition being read again each time; every endpoint receives each of
// its deliveries exactly once, in partition order.
func TestOrderedLanesKeepOrderThroughCloseAndReopen(t *testing.T) {
	k := onePartition(t)
	clock := newFakeClock()
	clock.auto(t)
	const lanes, each = 4, 60
	eps := newEndpoints()
	a := newAttempter(clock)
	want := map[string][]string{}
	var ds []*sluicev1.Delivery
	for i := range lanes {
		id := fmt.Sprintf("ep_lane_%d", i)
		eps.m[id] = &sluicev1.Endpoint{Id: id, Ordered: true, RetryScheduleMs: ms(time.Second)}
		a.delay[id] = time.Millisecond // queues fill while requests run
	}
	a.failFirst["ep_lane_0"] = 1
	for n := range lanes * each {
		// Lanes take turns unevenly: 0 0 1 2 3 3 3 1 …
		id := fmt.Sprintf("ep_lane_%d", (n*n+n/3)%lanes)
		dl := delivery(id)
		want[id] = append(want[id], dl.DeliveryId)
		ds = append(ds, dl)
	}
	produce(t, k, k.Names.Ordered, ds...)
	opts := defaults(clock)
	opts.QueueCap = 2
	d, _ := start(t, k, opts, eps, a)
	waitFor(t, "every delivery", func() bool {
		n := 0
		for id := range want {
			n += a.doneCount(id)
		}
		return n == len(ds)
	})
	settled(t, k)
	for id, w := range want {
		if got := a.doneOf(id); fmt.Sprint(got) != fmt.Sprint(w) {
			t.Errorf("%s received\n %v\nwant\n %v", id, got, w)
		}
	}
	s := d.Stats()
	t.Logf("%d deliveries in %d lanes: %d closes, %d rewinds", len(ds), lanes, s.LaneCloses, s.Rewinds)
	if s.LaneCloses < 20 || s.Rewinds < 10 {
		t.Errorf("stats %+v: want many closes and rewinds, or the test proves nothing", s)
	}
}

// TestOrderedLaneKeepsOrderAcrossARevoke: ordered endpoints on two ordered
// partitions, small queues, one endpoint failing once per delivery; a
// second dispatcher joins while they are being delivered, and one
// partition moves to it. Every delivery arrives, and each endpoint's
// arrivals never skip ahead: a delivery sent again after the move restarts
// from an earlier one and goes on in order (duplicates, never reordered).
func TestOrderedLaneKeepsOrderAcrossARevoke(t *testing.T) {
	k := testenv.NewKafka(t, testenv.WithPartitions(topics.Partitions{
		Events: 1, Deliveries: 2, Retry: 1, Dead: 1, Attempts: 2, EventLog: 1}))
	clock := newFakeClock()
	clock.auto(t)
	const lanes, each = 6, 100
	eps := newEndpoints()
	a := newAttempter(clock)
	want := map[string][]string{}
	var ds []*sluicev1.Delivery
	for i := range lanes {
		id := fmt.Sprintf("ep_lane_%d", i)
		eps.m[id] = &sluicev1.Endpoint{Id: id, Ordered: true, RetryScheduleMs: ms(time.Second)}
		a.delay[id] = 2 * time.Millisecond
	}
	a.failFirst["ep_lane_1"] = 1
	for n := range lanes * each {
		id := fmt.Sprintf("ep_lane_%d", n%lanes)
		dl := delivery(id)
		want[id] = append(want[id], dl.DeliveryId)
		ds = append(ds, dl)
	}
	// Lane i lives on partition i%2, as its key would place it.
	lanePart := func(dl *sluicev1.Delivery) int32 {
		var i int32
		fmt.Sscanf(dl.EndpointId, "ep_lane_%d", &i)
		return i % 2
	}
	produceTo(t, k, k.Names.Ordered, lanePart, ds[:len(ds)/2]...)
	opts := defaults(clock)
	opts.QueueCap = 3
	d1, _ := start(t, k, opts, eps, a)
	waitFor(t, "the first dispatcher to deliver", func() bool { return d1.Stats().Attempts >= 100 })
	d2, _ := start(t, k, opts, eps, a) // joins: one partition moves
	produceTo(t, k, k.Names.Ordered, lanePart, ds[len(ds)/2:]...)
	waitFor(t, "every delivery", func() bool {
		for id, w := range want {
			got := map[string]bool{}
			for _, dl := range a.doneOf(id) {
				got[dl] = true
			}
			if len(got) != len(w) {
				return false
			}
		}
		return true
	})
	if d2.Stats().Attempts == 0 {
		t.Fatal("the second dispatcher delivered nothing: no partition moved, the test proves nothing")
	}
	dups := 0
	for id, w := range want {
		index := map[string]int{}
		for i, dl := range w {
			index[dl] = i
		}
		got := a.doneOf(id)
		if index[got[0]] != 0 {
			t.Errorf("%s: first arrival is delivery %d", id, index[got[0]])
		}
		for i := 1; i < len(got); i++ {
			prev, cur := index[got[i-1]], index[got[i]]
			if cur > prev+1 {
				t.Errorf("%s: delivery %d arrived right after %d, skipping ahead", id, cur, prev)
			}
			if cur <= prev {
				dups++
			}
		}
	}
	t.Logf("%d deliveries across a rebalance; %d sent again in order", len(ds), dups)
}

// TestOrderedTopicFollowsTheEndpointsConfiguration: on the ordered topic, a
// delivery of an endpoint no longer ordered goes the normal way (here,
// deferred to a tier since its queue is full), one of a deleted endpoint
// is parked, and an ordered endpoint's lane is not held up by either.
func TestOrderedTopicFollowsTheEndpointsConfiguration(t *testing.T) {
	k := onePartition(t)
	clock := newFakeClock()
	eps := newEndpoints(&sluicev1.Endpoint{Id: "ep_now_unordered", MaxInFlight: 1}, &sluicev1.Endpoint{Id: "ep_ordered", Ordered: true})
	a := newAttempter(clock)
	release := a.block(t, "ep_now_unordered")
	defer release() // before the dispatcher stops: it waits for requests in flight
	var ordered []*sluicev1.Delivery
	var ds []*sluicev1.Delivery
	for range 4 {
		dl := delivery("ep_ordered")
		ordered = append(ordered, dl)
		ds = append(ds, delivery("ep_now_unordered"), delivery("ep_deleted"), dl)
	}
	produce(t, k, k.Names.Ordered, ds...)
	opts := defaults(clock)
	opts.QueueCap = 2
	d, _ := start(t, k, opts, eps, a)
	waitFor(t, "the ordered endpoint's deliveries", func() bool { return a.doneCount("ep_ordered") == 4 })
	if got := a.doneOf("ep_ordered"); fmt.Sprint(got) != fmt.Sprint(deliveryIDs(ordered)) {
		t.Errorf("ordered endpoint got\n %v\nwant\n %v", got, deliveryIDs(ordered))
	}
	// Unordered: one in flight (blocked), two queued, one deferred.
	waitFor(t, "the unordered endpoint's overflow deferred", func() bool { return d.Stats().Deferred == 1 })
	dead := decode(t, k.Read(t, k.Names.Dead, 4))
	for _, dl := range dead {
		if dl.EndpointId != "ep_deleted" || dl.DeadReason != "endpoint ep_deleted does not exist" {
			t.Errorf("dead letter for %s with reason %q", dl.EndpointId, dl.DeadReason)
		}
	}
	if len(dead) != 4 {
		t.Errorf("%d dead letters, want the deleted endpoint's 4", len(dead))
	}
}

// TestOrderedDeliveriesReadElsewhereMoveAndHoldNothing (review H4 as it
// stood): 100 deliveries of 200 KiB to an ordered endpoint that always
// fails arrive on the deliveries topic, as before the router wrote them to
// the ordered topic, against a memory budget of 16 MiB. They move to the
// ordered topic, so a healthy endpoint on the other deliveries partition
// gets its delivery while the failing head waits. Before lanes the sender
// held all 100 and paused every topic.
func TestOrderedDeliveriesReadElsewhereMoveAndHoldNothing(t *testing.T) {
	k := testenv.NewKafka(t, testenv.WithPartitions(topics.Partitions{Events: 1, Deliveries: 2, Retry: 1, Dead: 1, Attempts: 1, EventLog: 1}))
	clock := newFakeClock()
	eps := newEndpoints(&sluicev1.Endpoint{Id: "ep_failing", Ordered: true, RetryScheduleMs: ms(time.Hour)}, &sluicev1.Endpoint{Id: "ep_ok"})
	a := newAttempter(clock)
	a.failFirst["ep_failing"] = -1
	var large []*sluicev1.Delivery
	for range 100 {
		dl := delivery("ep_failing")
		dl.Data = []byte(fmt.Sprintf(`{"pad":"%0204800d"}`, 0))
		large = append(large, dl)
	}
	produce(t, k, k.Names.Deliveries, large...)
	opts := defaults(clock)
	opts.MemoryBudget = 16 << 20
	d, _ := start(t, k, opts, eps, a)
	waitFor(t, "the failing endpoint's deliveries taken", func() bool { return d.Stats().Taken >= 80 })
	produceTo(t, k, k.Names.Deliveries, func(*sluicev1.Delivery) int32 { return 1 }, delivery("ep_ok"))
	waitFor(t, "the healthy endpoint's delivery on the other partition", func() bool { return a.doneCount("ep_ok") == 1 })
	waitFor(t, "the ordered deliveries moved", func() bool { return d.Stats().Moved == 100 })
	if n := len(a.orderOf("ep_failing")); n != 1 {
		t.Errorf("the failing endpoint was called %d times, want once: its head waits for the clock", n)
	}
}
