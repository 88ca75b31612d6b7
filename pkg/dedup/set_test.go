package dedup_test

import (
	"fmt"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/dedup"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// step is one call on a Set: add key at t0+at, check that key is seen or
// unseen at t0+at, how many of keys are seen at t0+at, Len, Evicted,
// EffectiveWindow or CheckWindow at t0+at.
type step struct {
	do   string // "add", "seen", "unseen", "seenOf", "len", "evicted", "effective", "check"
	key  string
	keys []string
	at   time.Duration
	n    int
	d    time.Duration // effective
	// short and changed are CheckWindow's answers.
	short, changed bool
}

func add(key string, at time.Duration) step    { return step{do: "add", key: key, at: at} }
func seen(key string, at time.Duration) step   { return step{do: "seen", key: key, at: at} }
func unseen(key string, at time.Duration) step { return step{do: "unseen", key: key, at: at} }
func seenOf(n int, at time.Duration, keys ...string) step {
	return step{do: "seenOf", keys: keys, at: at, n: n}
}
func length(n int) step  { return step{do: "len", n: n} }
func evicted(n int) step { return step{do: "evicted", n: n} }
func effective(at, want time.Duration) step {
	return step{do: "effective", at: at, d: want}
}
func check(at time.Duration, short, changed bool) step {
	return step{do: "check", at: at, short: short, changed: changed}
}

// b32 is a time 1h6m40s before 2^32 ms after t0: the last hour of times
// that fit in 32 bits after a Set's first base, t0 minus an hour.
const b32 = time.Duration(1<<32)*time.Millisecond - 4000*time.Second

func TestSet(t *testing.T) {
	const ms = time.Millisecond
	for _, tc := range []struct {
		desc   string
		window time.Duration
		max    int
		steps  []step
	}{
		{desc: "empty set has seen nothing", window: time.Hour, max: 10,
			steps: []step{unseen("t/a", 0), length(0), evicted(0), effective(0, time.Hour)}},
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
		{desc: "below the bound, expired entries stay until room is needed", window: time.Hour, max: 10,
			steps: []step{add("t/a", 0), add("t/b", 10*time.Minute), add("t/c", time.Hour+5*time.Minute),
				length(3), unseen("t/a", time.Hour+5*time.Minute), seen("t/b", time.Hour+5*time.Minute)}},
		{desc: "at the bound, expired entries make room before anything is evicted", window: time.Hour, max: 2,
			steps: []step{add("t/a", 0), add("t/b", 10*time.Minute), length(2),
				add("t/c", time.Hour+5*time.Minute), length(2), unseen("t/a", time.Hour+5*time.Minute),
				seen("t/b", time.Hour+5*time.Minute), seen("t/c", time.Hour+5*time.Minute),
				evicted(0), effective(time.Hour+5*time.Minute, time.Hour)}},
		{desc: "full set evicts the oldest first", window: time.Hour, max: 3,
			steps: []step{add("t/a", 0), add("t/b", time.Second), add("t/c", 2*time.Second), length(3),
				add("t/d", 3*time.Second), length(3), evicted(1),
				unseen("t/a", 4*time.Second), seen("t/b", 4*time.Second), seen("t/c", 4*time.Second), seen("t/d", 4*time.Second),
				add("t/e", 5*time.Second), length(3), evicted(2), unseen("t/b", 6*time.Second), seen("t/c", 6*time.Second)}},
		{desc: "a key added again is evicted by its latest add", window: time.Hour, max: 3,
			steps: []step{add("t/a", 0), add("t/b", time.Second), add("t/a", 2*time.Second),
				// a moved to 2 s: the set holds two keys, so c fits.
				add("t/c", 3*time.Second), length(3),
				seen("t/a", 3*time.Second), seen("t/b", 3*time.Second), seen("t/c", 3*time.Second),
				// Then b, not a, is the oldest.
				add("t/d", 4*time.Second), length(3), unseen("t/b", 4*time.Second),
				seen("t/a", 4*time.Second), seen("t/c", 4*time.Second), seen("t/d", 4*time.Second)}},
		{desc: "one entry", window: time.Hour, max: 1,
			steps: []step{add("t/a", 0), add("t/b", time.Second), unseen("t/a", time.Second), seen("t/b", time.Second), length(1)}},
		{desc: "of ids of the same millisecond, only a batch is evicted", window: time.Hour, max: 3,
			steps: []step{add("t/a", 0), add("t/b", 0), add("t/c", 0), add("t/d", time.Second),
				length(3), evicted(1), seen("t/d", time.Second), seenOf(2, time.Second, "t/a", "t/b", "t/c")}},
		{desc: "a time a window before the latest is ignored", window: time.Hour, max: 10,
			steps: []step{add("t/a", 2*time.Hour), add("t/b", 0), add("t/b", time.Hour), length(1),
				// Both b's expired by the set's clock (the latest add, a's).
				unseen("t/b", 0), unseen("t/b", 30*time.Minute),
				add("t/c", 150*time.Minute), length(2), seen("t/c", 150*time.Minute), seen("t/a", 150*time.Minute)}},
		{desc: "out-of-order times within the window", window: time.Hour, max: 10,
			steps: []step{add("t/a", 10*time.Minute), add("t/b", 5*time.Minute), add("t/c", 20*time.Minute),
				seen("t/a", 60*time.Minute), seen("t/b", 60*time.Minute), unseen("t/b", 65*time.Minute),
				seen("t/a", 65*time.Minute), length(3)}},
		{desc: "the effective window is the time since the newest evicted id", window: time.Hour, max: 2,
			steps: []step{check(0, false, false), add("t/a", 0), add("t/b", time.Minute), add("t/c", 2*time.Minute),
				evicted(1), unseen("t/a", 2*time.Minute), effective(2*time.Minute, 2*time.Minute),
				effective(30*time.Minute, 30*time.Minute), effective(-time.Minute, 0),
				check(30*time.Minute, true, true), check(40*time.Minute, true, false),
				// A window after a's time, every id of the window is held.
				effective(time.Hour, time.Hour), check(time.Hour, false, true), check(2*time.Hour, false, false),
				// b and c again, so they are live when d needs room.
				add("t/b", 50*time.Minute), add("t/c", 55*time.Minute), add("t/d", 70*time.Minute),
				evicted(2), unseen("t/b", 70*time.Minute), effective(70*time.Minute, 20*time.Minute),
				check(70*time.Minute, true, true)}},
		{desc: "expiry alone never shortens the effective window", window: time.Minute, max: 2,
			steps: []step{add("t/a", 0), add("t/b", 30*time.Second), add("t/c", 70*time.Second),
				add("t/d", 140*time.Second), evicted(0), effective(140*time.Second, time.Minute),
				check(140*time.Second, false, false)}},
		{desc: "times 2^32 ms apart: entries of the window survive a rebase", window: time.Hour, max: 10,
			// Times are kept in 32 bits after a base a window before the
			// first add (-1h): b fits, c does not.
			steps: []step{add("t/a", 0), add("t/b", b32), add("t/c", b32+30*time.Minute), length(2),
				unseen("t/a", b32+30*time.Minute), seen("t/b", b32+30*time.Minute), seen("t/c", b32+30*time.Minute),
				seen("t/b", b32+time.Hour-ms), unseen("t/b", b32+time.Hour), seen("t/c", b32+89*time.Minute),
				add("t/b", b32+2*time.Hour), seen("t/b", b32+3*time.Hour-ms), unseen("t/b", b32+3*time.Hour), length(2)}},
		{desc: "a time far ahead expires everything", window: time.Hour, max: 10,
			steps: []step{add("t/a", 0), add("t/b", time.Minute), add("t/c", 1000*24*time.Hour), length(1),
				unseen("t/a", 0), unseen("t/b", time.Minute), seen("t/c", 1000*24*time.Hour), evicted(0)}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			s := dedup.NewSet(tc.window, tc.max)
			for i, st := range tc.steps {
				at := t0.Add(st.at)
				switch st.do {
				case "add":
					s.Add([]byte(st.key), at)
				case "seen", "unseen":
					if got, want := s.Seen([]byte(st.key), at), st.do == "seen"; got != want {
						t.Fatalf("step %d: Seen(%q, +%v) = %v, want %v", i, st.key, st.at, got, want)
					}
				case "seenOf":
					n := 0
					for _, k := range st.keys {
						if s.Seen([]byte(k), at) {
							n++
						}
					}
					if n != st.n {
						t.Fatalf("step %d: %d of %v seen at +%v, want %d", i, n, st.keys, st.at, st.n)
					}
				case "len":
					if got := s.Len(); got != st.n {
						t.Fatalf("step %d: Len() = %d, want %d", i, got, st.n)
					}
				case "evicted":
					if got := s.Evicted(); got != uint64(st.n) {
						t.Fatalf("step %d: Evicted() = %d, want %d", i, got, st.n)
					}
				case "effective":
					if got := s.EffectiveWindow(at); got != st.d {
						t.Fatalf("step %d: EffectiveWindow(+%v) = %v, want %v", i, st.at, got, st.d)
					}
				case "check":
					if short, changed := s.CheckWindow(at); short != st.short || changed != st.changed {
						t.Fatalf("step %d: CheckWindow(+%v) = short %v, changed %v; want %v, %v",
							i, st.at, short, changed, st.short, st.changed)
					}
				default:
					t.Fatalf("step %d: unknown %q", i, st.do)
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
		{desc: "window above MaxWindow", window: dedup.MaxWindow + time.Millisecond, max: 10},
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

// TestSetMemoryIsBounded adds three times maxEntries distinct ids, in time
// order: the set never holds more than maxEntries, evicts in batches of
// 1 % (10 here), and what it holds is exactly the newest ids.
func TestSetMemoryIsBounded(t *testing.T) {
	const max, batch, adds = 1000, 10, 3*1000 + 7
	s := dedup.NewSet(24*time.Hour, max)
	for i := range adds {
		s.Add(fmt.Appendf(nil, "tenant/evt-%d", i), t0.Add(time.Duration(i)*time.Millisecond))
		if s.Len() > max {
			t.Fatalf("after %d adds Len() = %d, above %d", i+1, s.Len(), max)
		}
	}
	if s.Len() <= max-batch {
		t.Fatalf("Len() = %d, want above %d: evicting more than a batch", s.Len(), max-batch)
	}
	if got, want := s.Evicted(), uint64(adds-s.Len()); got != want {
		t.Fatalf("Evicted() = %d, want %d", got, want)
	}
	now := t0.Add(adds * time.Millisecond)
	for i := range adds {
		if got, want := s.Seen(fmt.Appendf(nil, "tenant/evt-%d", i), now), i >= adds-s.Len(); got != want {
			t.Fatalf("Seen(evt-%d) = %v, want %v: only the newest %d are kept", i, got, want, s.Len())
		}
	}
	// The newest evicted id is the one just before those held.
	if got, want := s.EffectiveWindow(now), time.Duration(s.Len()+1)*time.Millisecond; got != want {
		t.Fatalf("EffectiveWindow = %v, want %v", got, want)
	}
}

// TestSetMemoryPerID fills a Set to its bound and checks, at sizes 5 %
// apart from a few thousand ids up, that the live heap it takes is at most
// 24 bytes per id held. The heap is read after a GC, so only what the Set
// keeps counts; keys are built in one reused buffer, which the Set does not
// keep.
func TestSetMemoryPerID(t *testing.T) {
	const maxEntries, bound = 300_000, 24.0
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	s := dedup.NewSet(24*time.Hour, maxEntries)
	key := make([]byte, 0, 64)
	worst, worstAt := 0.0, 0
	next := 4000.0
	for i := range maxEntries {
		key = fmt.Appendf(key[:0], "ten_01JD3K6Z8WQ4V0M5T7E9RXN2BC/evt_%09d", i)
		s.Add(key, t0.Add(time.Duration(i)*time.Millisecond))
		if n := i + 1; n >= int(next) || n == maxEntries {
			next *= 1.05
			runtime.GC()
			runtime.ReadMemStats(&after)
			perID := float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / float64(s.Len())
			if perID > worst {
				worst, worstAt = perID, n
			}
			if perID > bound {
				t.Errorf("%d ids held take %.1f B each, above %v", s.Len(), perID, bound)
			}
		}
	}
	runtime.KeepAlive(s)
	t.Logf("at most %.1f B per id, at %d ids", worst, worstAt)
}

// benchKey writes the i-th key of the benchmarks into buf: a tenant and
// an event id of typical lengths (30 and 32 bytes), without allocating.
func benchKey(buf []byte, i int) []byte {
	buf = append(buf[:0], "ten_01JD3K6Z8WQ4V0M5T7E9RXN2BC/evt_01JD3K6Z8WQ4V0M5T7E9R"...)
	return strconv.AppendInt(buf, int64(10_000_000+i), 10)
}

// fill adds ids from..to-1 to s, one millisecond apart from t0.
func fill(s *dedup.Set, from, to int) {
	key := make([]byte, 0, 80)
	for i := from; i < to; i++ {
		key = benchKey(key, i)
		s.Add(key, t0.Add(time.Duration(i)*time.Millisecond))
	}
}

func BenchmarkSeen(b *testing.B) {
	const n = 1 << 20
	s := dedup.NewSet(24*time.Hour, n)
	fill(s, 0, n)
	now := t0.Add(time.Hour)
	for _, bc := range []struct {
		desc  string
		first int
	}{{"hit", 0}, {"miss", n}} {
		b.Run(bc.desc, func(b *testing.B) {
			keys := make([][]byte, 1<<16)
			for i := range keys {
				keys[i] = benchKey(nil, bc.first+i*(n>>16))
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				s.Seen(keys[i&(len(keys)-1)], now)
				i++
			}
		})
	}
}

// BenchmarkAdd adds distinct ids to a set at its bound, in time order, so
// adding evicts and nothing expires: the router's steady state when
// dedup-max-entries is too small for its rate.
func BenchmarkAdd(b *testing.B) {
	const n = 1 << 20
	s := dedup.NewSet(24*time.Hour, n)
	fill(s, 0, n)
	key := make([]byte, 0, 80)
	b.ReportAllocs()
	i := n
	for b.Loop() {
		key = benchKey(key, i)
		s.Add(key, t0.Add(time.Duration(i)*time.Millisecond))
		i++
	}
	b.ReportMetric(float64(s.Evicted())/float64(b.N), "evicted/op")
}

// BenchmarkAddExpiring adds distinct ids one millisecond apart to a set
// whose window holds 90 % of its bound: ids expire as fast as they come,
// and nothing is evicted. The router's steady state when dedup-max-entries
// covers its rate.
func BenchmarkAddExpiring(b *testing.B) {
	const n = 1 << 20
	s := dedup.NewSet(time.Duration(n*9/10)*time.Millisecond, n)
	fill(s, 0, 2*n)
	key := make([]byte, 0, 80)
	b.ReportAllocs()
	i := 2 * n
	for b.Loop() {
		key = benchKey(key, i)
		s.Add(key, t0.Add(time.Duration(i)*time.Millisecond))
		i++
	}
	if s.Evicted() != 0 {
		b.Fatalf("%d evicted", s.Evicted())
	}
}

// BenchmarkEvictionStall times the one Add in a batch that sweeps the
// table to evict (every 1 % of maxEntries Adds at the bound), for a
// partition's default 500,000 ids and a dedup view's 12 × 500,000.
func BenchmarkEvictionStall(b *testing.B) {
	for _, n := range []int{500_000, 6_000_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			s := dedup.NewSet(24*time.Hour, n)
			fill(s, 0, n+1) // the last one evicts
			key := make([]byte, 0, 80)
			i := n + 1
			var worst, total time.Duration
			sweeps := 0
			for b.Loop() {
				for before := s.Evicted(); s.Evicted() == before; i++ {
					key = benchKey(key, i)
					start := time.Now()
					s.Add(key, t0.Add(time.Duration(i)*time.Millisecond))
					if s.Evicted() != before {
						took := time.Since(start)
						worst, total = max(worst, took), total+took
						sweeps++
					}
				}
			}
			b.ReportMetric(float64(total.Microseconds())/1000/float64(sweeps), "ms/sweep")
			b.ReportMetric(float64(worst.Microseconds())/1000, "ms/worst-sweep")
		})
	}
}

// BenchmarkMemory reports the live heap a Set takes per id it holds, at
// its bound of 5·10^6 ids and on the way there.
func BenchmarkMemory(b *testing.B) {
	const maxEntries = 5_000_000
	for _, n := range []int{1e4, 1e5, 1e6, 5e6} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			var perID float64
			for b.Loop() {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				s := dedup.NewSet(24*time.Hour, maxEntries)
				fill(s, 0, n)
				runtime.GC()
				runtime.ReadMemStats(&after)
				perID = float64(after.HeapAlloc-before.HeapAlloc) / float64(s.Len())
				runtime.KeepAlive(s)
			}
			b.ReportMetric(perID, "B/id")
		})
	}
}
