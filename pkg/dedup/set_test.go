package dedup_test

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/dedup"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// step is one call on a Set: add key at t0+at, check that key is seen or
// unseen at t0+at, or check Len.
type step struct {
	do  string // "add", "seen", "unseen", "len"
	key string
	at  time.Duration
	len int
}

func add(key string, at time.Duration) step    { return step{do: "add", key: key, at: at} }
func seen(key string, at time.Duration) step   { return step{do: "seen", key: key, at: at} }
func unseen(key string, at time.Duration) step { return step{do: "unseen", key: key, at: at} }
func length(n int) step                        { return step{do: "len", len: n} }

func TestSet(t *testing.T) {
	const ms = time.Millisecond
	for _, tc := range []struct {
		desc   string
		window time.Duration
		max    int
		steps  []step
	}{
		{desc: "empty set has seen nothing", window: time.Hour, max: 10,
			steps: []step{unseen("t/a", 0), length(0)}},
		{desc: "added key is seen, another is not", window: time.Hour, max: 10,
			steps: []step{add("t/a", 0), seen("t/a", 0), seen("t/a", time.Minute), unseen("t/b", time.Minute), length(1)}},
		{desc: "keys are compared as bytes, not by prefix", window: time.Hour, max: 10,
			steps: []step{add("t/a", 0), unseen("t/", 0), unseen("t/aa", 0), unseen("u/a", 0), unseen("", 0)}},
		{desc: "expires exactly one window after it was added", window: time.Hour, max: 10,
			steps: []step{add("t/a", 0), seen("t/a", time.Hour-ms), unseen("t/a", time.Hour), unseen("t/a", 2*time.Hour)}},
		{desc: "an entry dated after now is seen", window: time.Hour, max: 10,
			steps: []step{add("t/a", time.Minute), seen("t/a", 0)}},
		{desc: "adding again restarts the window", window: time.Hour, max: 10,
			steps: []step{add("t/a", 0), add("t/a", 30*time.Minute), seen("t/a", 80*time.Minute), unseen("t/a", 90*time.Minute), length(1)}},
		{desc: "adding again with an earlier time keeps the later", window: time.Hour, max: 10,
			steps: []step{add("t/a", 30*time.Minute), add("t/a", 0), seen("t/a", 80*time.Minute), length(1)}},
		{desc: "expired entries are dropped when adding", window: time.Hour, max: 10,
			steps: []step{add("t/a", 0), add("t/b", 10*time.Minute), length(2),
				add("t/c", time.Hour+5*time.Minute), length(2), unseen("t/a", time.Hour+5*time.Minute),
				seen("t/b", time.Hour+5*time.Minute), seen("t/c", time.Hour+5*time.Minute)}},
		{desc: "full set evicts the oldest first", window: time.Hour, max: 3,
			steps: []step{add("t/a", 0), add("t/b", time.Second), add("t/c", 2*time.Second), length(3),
				add("t/d", 3*time.Second), length(3),
				unseen("t/a", 4*time.Second), seen("t/b", 4*time.Second), seen("t/c", 4*time.Second), seen("t/d", 4*time.Second),
				add("t/e", 5*time.Second), length(3), unseen("t/b", 6*time.Second), seen("t/c", 6*time.Second)}},
		{desc: "a key added again is evicted by its latest add", window: time.Hour, max: 3,
			steps: []step{add("t/a", 0), add("t/b", time.Second), add("t/a", 2*time.Second),
				// The ring holds a (stale), b, a: full. Adding c
				// discards the stale a and keeps every key.
				add("t/c", 3*time.Second), length(3),
				seen("t/a", 3*time.Second), seen("t/b", 3*time.Second), seen("t/c", 3*time.Second),
				// Then b, not a, is the oldest.
				add("t/d", 4*time.Second), length(3), unseen("t/b", 4*time.Second),
				seen("t/a", 4*time.Second), seen("t/c", 4*time.Second), seen("t/d", 4*time.Second)}},
		{desc: "one entry", window: time.Hour, max: 1,
			steps: []step{add("t/a", 0), add("t/b", time.Second), unseen("t/a", time.Second), seen("t/b", time.Second), length(1)}},
		{desc: "out-of-order times: an old entry is unseen though held", window: time.Hour, max: 10,
			steps: []step{add("t/a", 2*time.Hour), add("t/b", 0), add("t/c", 150*time.Minute),
				// b expired by its own time, but waits behind a in the ring.
				unseen("t/b", 150*time.Minute), seen("t/a", 150*time.Minute), length(3),
				// Once a expires, the entries behind it go too.
				add("t/d", 3*time.Hour+time.Minute), length(2), seen("t/c", 3*time.Hour+time.Minute),
				unseen("t/a", 3*time.Hour+time.Minute)}},
		{desc: "out-of-order times within the window", window: time.Hour, max: 10,
			steps: []step{add("t/a", 10*time.Minute), add("t/b", 5*time.Minute), add("t/c", 20*time.Minute),
				seen("t/a", 60*time.Minute), seen("t/b", 60*time.Minute), unseen("t/b", 65*time.Minute),
				seen("t/a", 65*time.Minute), length(3)}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			s := dedup.NewSet(tc.window, tc.max)
			for i, st := range tc.steps {
				switch st.do {
				case "add":
					s.Add([]byte(st.key), t0.Add(st.at))
				case "seen", "unseen":
					if got, want := s.Seen([]byte(st.key), t0.Add(st.at)), st.do == "seen"; got != want {
						t.Fatalf("step %d: Seen(%q, +%v) = %v, want %v", i, st.key, st.at, got, want)
					}
				case "len":
					if got := s.Len(); got != st.len {
						t.Fatalf("step %d: Len() = %d, want %d", i, got, st.len)
					}
				}
			}
		})
	}
}

func TestNewSetRejectsBadBounds(t *testing.T) {
	for _, tc := range []struct {
		desc   string
		window time.Duration
		max    int
	}{
		{desc: "zero window", window: 0, max: 10},
		{desc: "sub-millisecond window", window: time.Microsecond, max: 10},
		{desc: "zero entries", window: time.Hour, max: 0},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatalf("NewSet(%v, %d) did not panic", tc.window, tc.max)
				}
			}()
			dedup.NewSet(tc.window, tc.max)
		})
	}
}

func TestSetMemoryIsBounded(t *testing.T) {
	const max = 1000
	s := dedup.NewSet(24*time.Hour, max)
	for i := range 3 * max {
		s.Add(fmt.Appendf(nil, "tenant/evt-%d", i), t0.Add(time.Duration(i)*time.Millisecond))
		if s.Len() > max {
			t.Fatalf("after %d adds Len() = %d, above %d", i+1, s.Len(), max)
		}
	}
	if s.Len() != max {
		t.Fatalf("Len() = %d, want %d", s.Len(), max)
	}
	now := t0.Add(3 * max * time.Millisecond)
	for i := range 3 * max {
		if got, want := s.Seen(fmt.Appendf(nil, "tenant/evt-%d", i), now), i >= 2*max; got != want {
			t.Fatalf("Seen(evt-%d) = %v, want %v: only the newest %d are kept", i, got, want, max)
		}
	}
}

// TestSetMatchesModel runs random adds with increasing times, keys drawn
// from a small space so many repeat, against this model: a key is seen iff
// it was among the keys of the last max adds and its last add is within
// the window.
func TestSetMatchesModel(t *testing.T) {
	for _, tc := range []struct {
		desc   string
		max    int
		window time.Duration
		keys   int
	}{
		{desc: "eviction-bound", max: 50, window: time.Hour, keys: 200},
		{desc: "expiry-bound", max: 5000, window: 200 * time.Millisecond, keys: 300},
		{desc: "both", max: 64, window: 300 * time.Millisecond, keys: 100},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, uint64(tc.max)))
			s := dedup.NewSet(tc.window, tc.max)
			var adds []string                // key of every add, in order
			last := map[string]int{}         // key → index of its last add
			lastAt := map[string]time.Time{} // key → time of its last add
			now := t0
			for range 5000 {
				now = now.Add(time.Duration(1+rng.IntN(3)) * time.Millisecond)
				k := fmt.Sprintf("t/%d", rng.IntN(tc.keys))
				s.Add([]byte(k), now)
				last[k], lastAt[k] = len(adds), now
				adds = append(adds, k)
				if s.Len() > tc.max {
					t.Fatalf("Len() = %d, above %d", s.Len(), tc.max)
				}
				if rng.IntN(20) != 0 {
					continue
				}
				for k, i := range last {
					want := i >= len(adds)-tc.max && now.Sub(lastAt[k]) < tc.window
					if got := s.Seen([]byte(k), now); got != want {
						t.Fatalf("after %d adds: Seen(%s) = %v, want %v (last added at add %d, %v ago)",
							len(adds), k, got, want, i, now.Sub(lastAt[k]))
					}
				}
			}
		})
	}
}

func benchKeys(n int) [][]byte {
	keys := make([][]byte, n)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "ten_01JD3K6Z8WQ4V0M5T7E9RXN2BC/evt_01JD3K6Z8WQ4V0M5T7E9R%07d", i)
	}
	return keys
}

func BenchmarkSeen(b *testing.B) {
	const n = 1 << 20
	keys := benchKeys(2 * n)
	s := dedup.NewSet(24*time.Hour, n)
	for _, k := range keys[:n] {
		s.Add(k, t0)
	}
	now := t0.Add(time.Minute)
	for _, bc := range []struct {
		desc string
		keys [][]byte
	}{{"hit", keys[:n]}, {"miss", keys[n:]}} {
		b.Run(bc.desc, func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				s.Seen(bc.keys[i&(n-1)], now)
				i++
			}
		})
	}
}

// BenchmarkAdd adds distinct keys to a full set, so every add also evicts
// one and expires none: the router's steady state at the memory bound.
func BenchmarkAdd(b *testing.B) {
	const n = 1 << 20
	keys := benchKeys(2 * n)
	s := dedup.NewSet(24*time.Hour, n)
	for _, k := range keys[:n] {
		s.Add(k, t0)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		s.Add(keys[i&(2*n-1)], t0.Add(time.Duration(i)*time.Microsecond))
		i++
	}
}

// BenchmarkMemory reports the heap a full Set takes per entry.
func BenchmarkMemory(b *testing.B) {
	for _, n := range []int{1e5, 1e6} {
		keys := benchKeys(n)
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			var perEntry float64
			for b.Loop() {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				s := dedup.NewSet(24*time.Hour, n)
				for i, k := range keys {
					s.Add(k, t0.Add(time.Duration(i)*time.Millisecond))
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				perEntry = float64(after.HeapAlloc-before.HeapAlloc) / float64(s.Len())
				runtime.KeepAlive(s)
			}
			b.ReportMetric(perEntry, "B/entry")
		})
	}
}
