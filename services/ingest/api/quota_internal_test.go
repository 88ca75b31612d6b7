package api

import (
	"fmt"
	"testing"
	"time"
)

// TestQuotaBucketsOfIdleTenantsAreForgotten: the buckets map holds only
// tenants that sent lately, so its memory is bounded by recent traffic,
// not by every tenant that ever sent.
func TestQuotaBucketsOfIdleTenantsAreForgotten(t *testing.T) {
	var q eventQuotas
	t0 := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	for i := range 1000 {
		if ok, _ := q.take(fmt.Sprintf("ten_%d", i), 5, 1, t0); !ok {
			t.Fatalf("tenant %d: refused its first event", i)
		}
	}
	if n := len(q.buckets); n != 1000 {
		t.Fatalf("%d buckets after 1000 tenants sent, want 1000", n)
	}
	// One tenant keeps sending; the others go quiet for two sweeps.
	for s := 1; s <= 120; s++ {
		q.take("ten_0", 5, 1, t0.Add(time.Duration(s)*time.Second))
	}
	if n := len(q.buckets); n != 1 {
		t.Fatalf("%d buckets two minutes later, want only the active tenant's", n)
	}
	// A forgotten tenant starts again with a full bucket: its burst.
	for i := range 5 {
		if ok, _ := q.take("ten_7", 5, 1, t0.Add(121*time.Second)); !ok {
			t.Fatalf("forgotten tenant, event %d of its burst of 5: refused", i+1)
		}
	}
	if ok, wait := q.take("ten_7", 5, 1, t0.Add(121*time.Second)); ok || wait != 200*time.Millisecond {
		t.Fatalf("sixth event: admitted %v, wait %v; want refused with 200 ms to wait", ok, wait)
	}
}
