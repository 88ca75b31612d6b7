package router_test

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/pkg/configstore"
	"github.com/sluicehq/sluice/services/ingest/router"
)

func ep(id, tenant string, filters ...string) *sluicev1.ConfigRecord {
	return &sluicev1.ConfigRecord{Object: &sluicev1.ConfigRecord_Endpoint{Endpoint: &sluicev1.Endpoint{
		Id: id, TenantId: tenant, EventTypes: filters}}}
}

func ids(eps []*sluicev1.Endpoint) string {
	var out []string
	for _, e := range eps {
		out = append(out, e.Id)
	}
	return strings.Join(out, ",")
}

func TestMatch(t *testing.T) {
	ix := router.NewIndex(nil)
	ix.Load(map[string]*sluicev1.ConfigRecord{
		"ep_all":      ep("ep_all", "ten_a"),
		"ep_orders":   ep("ep_orders", "ten_a", "order.*"),
		"ep_created":  ep("ep_created", "ten_a", "order.created"),
		"ep_mixed":    ep("ep_mixed", "ten_a", "order.created", "*.created"),
		"ep_invoice":  ep("ep_invoice", "ten_a", "invoice.paid", "invoice.failed"),
		"ep_other":    ep("ep_other", "ten_b", "order.created"),
		"ep_everyone": ep("ep_everyone", "ten_b", "*"),
	})
	for _, tc := range []struct {
		desc, tenant, typ, want string
	}{
		{"exact, prefix wildcard, one-segment wildcard and catch-all", "ten_a", "order.created", "ep_all,ep_created,ep_mixed,ep_orders"},
		{"an endpoint matching twice is listed once", "ten_a", "order.created", "ep_all,ep_created,ep_mixed,ep_orders"},
		{"prefix wildcard spans segments", "ten_a", "order.item.created", "ep_all,ep_orders"},
		{"one-segment wildcard only", "ten_a", "user.created", "ep_all,ep_mixed"},
		{"second exact filter", "ten_a", "invoice.failed", "ep_all,ep_invoice"},
		{"no filter means everything", "ten_a", "anything.at.all", "ep_all"},
		{"types are case-sensitive", "ten_a", "Order.created", "ep_all,ep_mixed"},
		{"tenants never see each other's endpoints", "ten_b", "order.created", "ep_everyone,ep_other"},
		{"unknown tenant", "ten_c", "order.created", ""},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			if got := ids(ix.Match(nil, tc.tenant, tc.typ)); got != tc.want {
				t.Fatalf("Match(%s, %s) = %s, want %s", tc.tenant, tc.typ, got, tc.want)
			}
		})
	}
}

func TestApplyFollowsChanges(t *testing.T) {
	ix := router.NewIndex(nil)
	apply := func(key string, old, new *sluicev1.ConfigRecord) {
		ix.Apply(configstore.Change{Key: key, Old: old, New: new})
	}
	v1 := ep("ep_1", "ten_a", "order.created")
	apply("ep_1", nil, v1)
	if got := ids(ix.Match(nil, "ten_a", "order.created")); got != "ep_1" {
		t.Fatalf("after create: %q", got)
	}
	v2 := ep("ep_1", "ten_a", "invoice.*")
	apply("ep_1", v1, v2)
	if got := ids(ix.Match(nil, "ten_a", "order.created")); got != "" {
		t.Fatalf("old filter still matches after update: %q", got)
	}
	if got := ids(ix.Match(nil, "ten_a", "invoice.paid")); got != "ep_1" {
		t.Fatalf("new filter does not match: %q", got)
	}
	apply("ten_a", nil, &sluicev1.ConfigRecord{Object: &sluicev1.ConfigRecord_Tenant{Tenant: &sluicev1.Tenant{Id: "ten_a"}}})
	if ix.Len() != 1 {
		t.Fatalf("a tenant record changed the endpoint count to %d", ix.Len())
	}
	apply("ep_1", v2, nil)
	if got := ids(ix.Match(nil, "ten_a", "invoice.paid")); got != "" || ix.Len() != 0 {
		t.Fatalf("deleted endpoint still matches: %q (len %d)", got, ix.Len())
	}
}

func TestInvalidStoredFiltersMatchNothing(t *testing.T) {
	var bad []string
	ix := router.NewIndex(func(id string, err error) { bad = append(bad, id) })
	ix.Load(map[string]*sluicev1.ConfigRecord{"ep_bad": ep("ep_bad", "ten_a", "ord*")})
	if got := ids(ix.Match(nil, "ten_a", "order")); got != "" || !slices.Equal(bad, []string{"ep_bad"}) {
		t.Fatalf("match %q, reported %v", got, bad)
	}
}

func TestConcurrentUse(t *testing.T) {
	ix := router.NewIndex(nil)
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range 2000 {
			id := fmt.Sprintf("ep_%d", i%50)
			ix.Apply(configstore.Change{Key: id, New: ep(id, "ten_a", "order.*")})
		}
	})
	for range 2000 {
		for _, e := range ix.Match(nil, "ten_a", "order.created") {
			if e.TenantId != "ten_a" {
				t.Fatal("foreign endpoint")
			}
		}
	}
	wg.Wait()
	if n := len(ix.Match(nil, "ten_a", "order.created")); n != 50 {
		t.Fatalf("%d endpoints match, want 50", n)
	}
}

// BenchmarkMatch: one tenant with 1,000 endpoints, 900 with exact filters
// over 300 types and 100 with wildcards.
func BenchmarkMatch(b *testing.B) {
	ix := router.NewIndex(nil)
	snap := map[string]*sluicev1.ConfigRecord{}
	for i := range 1000 {
		id := fmt.Sprintf("ep_%04d", i)
		if i < 900 {
			snap[id] = ep(id, "ten_a", fmt.Sprintf("type%d.created", i%300))
		} else {
			snap[id] = ep(id, "ten_a", fmt.Sprintf("type%d.*", i%300))
		}
	}
	ix.Load(snap)
	dst := make([]*sluicev1.Endpoint, 0, 64)
	b.ReportAllocs()
	for b.Loop() {
		dst = ix.Match(dst[:0], "ten_a", "type7.created")
	}
	// ep_0007, ep_0307 and ep_0607 exactly; ep_0907 through type7.*.
	if len(dst) != 4 {
		b.Fatalf("%d matches, want 4", len(dst))
	}
}

// TestLoadKeepsChangesAppliedBeforeIt: Subscribe registers Apply before it
// returns the snapshot, so a change can be applied before Load runs; Load
// must not put the snapshot's older version back (nor a deleted endpoint).
func TestLoadKeepsChangesAppliedBeforeIt(t *testing.T) {
	ix := router.NewIndex(nil)
	old := ep("ep_1", "ten_a", "order.created")
	gone := ep("ep_2", "ten_a", "order.created")
	snapshot := map[string]*sluicev1.ConfigRecord{"ep_1": old, "ep_2": gone}
	newer := ep("ep_1", "ten_a", "invoice.paid")
	ix.Apply(configstore.Change{Key: "ep_1", Old: old, New: newer})
	ix.Apply(configstore.Change{Key: "ep_2", Old: gone})
	ix.Load(snapshot)
	if got := ids(ix.Match(nil, "ten_a", "order.created")); got != "" {
		t.Fatalf("order.created matches %q after newer changes, want nothing", got)
	}
	if got := ids(ix.Match(nil, "ten_a", "invoice.paid")); got != "ep_1" {
		t.Fatalf("invoice.paid matches %q, want ep_1", got)
	}
	// After Load, changes apply as usual.
	ix.Apply(configstore.Change{Key: "ep_1", Old: newer, New: old})
	if got := ids(ix.Match(nil, "ten_a", "order.created")); got != "ep_1" {
		t.Fatalf("after Load, order.created matches %q, want ep_1", got)
	}
}
