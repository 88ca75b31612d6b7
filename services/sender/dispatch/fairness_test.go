package dispatch_test

// One tenant's endpoints cannot hold every request slot of the process,
// and the queues waiting for a slot take turns by tenant.

import (
	"fmt"
	"testing"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"
)

// TestASlowTenantLeavesSlotsForOthers (review H7): the process runs 8
// requests at most. Tenant A's two endpoints (max_in_flight 1000) hang on
// every request and have 100 deliveries, read first; tenant B's endpoint
// has 5. B's all arrive while A's hang, A never holds more than its share
// (a quarter of the slots: 2), and once A's receiver answers everything
// arrives. Before, A took all 8 slots and B waited (the clock standing
// still, forever).
func TestASlowTenantLeavesSlotsForOthers(t *testing.T) {
	k := onePartition(t)
	clock := newFakeClock()
	eps := newEndpoints(
		&sluicev1.Endpoint{Id: "ep_a1", TenantId: "ten_a", MaxInFlight: 1000},
		&sluicev1.Endpoint{Id: "ep_a2", TenantId: "ten_a", MaxInFlight: 1000},
		&sluicev1.Endpoint{Id: "ep_b", TenantId: "ten_b"},
	)
	a := newAttempter(clock)
	release1, release2 := a.block(t, "ep_a1"), a.block(t, "ep_a2")
	defer release1() // before the dispatcher stops: it waits for requests in flight
	defer release2()
	var ds []*sluicev1.Delivery
	for i := range 100 {
		ds = append(ds, delivery(fmt.Sprintf("ep_a%d", i%2+1)))
	}
	for range 5 {
		ds = append(ds, delivery("ep_b"))
	}
	produce(t, k, k.Names.Deliveries, ds...)
	opts := defaults(clock)
	opts.MaxInFlight = 8
	d, _ := start(t, k, opts, eps, a)
	waitFor(t, "tenant B's deliveries", func() bool { return a.doneCount("ep_b") == 5 })
	a.mu.Lock()
	inA := a.inFlight["ep_a1"] + a.inFlight["ep_a2"]
	a.mu.Unlock()
	if inA > 2 {
		t.Errorf("tenant A has %d requests in flight, want at most a quarter of 8", inA)
	}
	release1()
	release2()
	waitFor(t, "every delivery", func() bool { return a.doneCount("ep_a1")+a.doneCount("ep_a2") == 100 })
	_ = d
}

// TestWaitingQueuesTakeTurnsByTenant: two request slots, each tenant
// allowed both. Tenant A has ten endpoints with ten deliveries each, read
// first; tenant B one endpoint with twenty. While the slots are taken,
// each one freed goes to the tenants in turn, not to the queues in the
// order they started waiting (ten of A's before B's one): B gets about
// half of the first twenty requests.
func TestWaitingQueuesTakeTurnsByTenant(t *testing.T) {
	k := onePartition(t)
	clock := newFakeClock()
	eps := newEndpoints(&sluicev1.Endpoint{Id: "ep_b", TenantId: "ten_b"})
	var ds []*sluicev1.Delivery
	for i := range 10 {
		id := fmt.Sprintf("ep_a%d", i)
		eps.m[id] = &sluicev1.Endpoint{Id: id, TenantId: "ten_a"}
	}
	for n := range 100 {
		ds = append(ds, delivery(fmt.Sprintf("ep_a%d", n%10)))
	}
	for range 20 {
		ds = append(ds, delivery("ep_b"))
	}
	a := newAttempter(clock)
	produce(t, k, k.Names.Deliveries, ds...)
	opts := defaults(clock)
	opts.MaxInFlight, opts.TenantInFlight = 2, 2
	start(t, k, opts, eps, a)
	waitFor(t, "every delivery", func() bool {
		n := a.doneCount("ep_b")
		for i := range 10 {
			n += a.doneCount(fmt.Sprintf("ep_a%d", i))
		}
		return n == 120
	})
	a.mu.Lock()
	defer a.mu.Unlock()
	b := 0
	for _, ep := range a.starts[:20] {
		if ep == "ep_b" {
			b++
		}
	}
	if b < 8 {
		t.Errorf("tenant B had %d of the first 20 requests (%v), want about half", b, a.starts[:20])
	}
}
