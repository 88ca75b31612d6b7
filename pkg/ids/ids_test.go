package ids_test

import (
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/ids"
)

func TestShape(t *testing.T) {
	id := ids.New(ids.Event)
	if !strings.HasPrefix(id, "evt_") || len(id) != 4+26 {
		t.Fatalf("id %q: want evt_ and 26 digits", id)
	}
	for _, c := range id[4:] {
		if !strings.ContainsRune("0123456789ABCDEFGHJKMNPQRSTVWXYZ", c) {
			t.Fatalf("id %q has %q, not a Crockford digit", id, c)
		}
	}
}

func TestKnownTime(t *testing.T) {
	// The ULID spec's example: 1469918176385 ms is 01ARYZ6S41 in its first ten digits.
	id := ids.NewAt("x", time.UnixMilli(1469918176385))
	if got := id[2:12]; got != "01ARYZ6S41" {
		t.Fatalf("time part %q, want 01ARYZ6S41", got)
	}
}

func TestLaterSortsLater(t *testing.T) {
	base := time.Now()
	var got []string
	for i := range 100 {
		got = append(got, ids.NewAt("att", base.Add(time.Duration(i)*time.Millisecond)))
	}
	if !sort.StringsAreSorted(got) {
		t.Fatal("ids of increasing times do not sort in order")
	}
	seen := map[string]bool{}
	for range 10000 {
		id := ids.NewAt("att", base)
		if seen[id] {
			t.Fatalf("duplicate id %s", id)
		}
		seen[id] = true
	}
}

func BenchmarkNew(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_ = ids.New(ids.Attempt)
	}
}
