package dedup

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestOldest checks the k smallest of a stream against sorting it, for
// streams with many repeated times and without.
func TestOldest(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	for _, tc := range []struct {
		desc   string
		n, k   int
		values uint32 // times are drawn from [0, values)
	}{
		{desc: "one of one", n: 1, k: 1, values: 10},
		{desc: "fewer than k", n: 5, k: 8, values: 1000},
		{desc: "k of one", n: 1000, k: 1, values: 1 << 30},
		{desc: "distinct", n: 20_000, k: 200, values: 1 << 30},
		{desc: "many ties", n: 20_000, k: 200, values: 50},
		{desc: "all equal", n: 5000, k: 100, values: 1},
		{desc: "k is most", n: 1000, k: 999, values: 300},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			var o oldest
			for round := range 3 { // reset keeps the buffer
				o.reset(tc.k)
				all := make([]uint32, tc.n)
				for i := range all {
					all[i] = rng.Uint32N(tc.values)
					o.push(all[i])
				}
				slices.Sort(all)
				want := all[:min(tc.k, tc.n)]
				wantTies := 0
				for _, v := range want {
					if v == want[len(want)-1] {
						wantTies++
					}
				}
				top, ties, ok := o.result()
				if !ok || top != want[len(want)-1] || ties != wantTies {
					t.Fatalf("round %d: result() = %d, %d ties, %v; want %d, %d ties",
						round, top, ties, ok, want[len(want)-1], wantTies)
				}
				if got := slices.Sorted(slices.Values(o.buf[:len(want)])); !slices.Equal(got, want) {
					t.Fatalf("round %d: kept %v, want %v", round, got, want)
				}
			}
		})
	}
	var o oldest
	o.reset(3)
	if _, _, ok := o.result(); ok {
		t.Fatal("result() of nothing pushed is ok")
	}
}
