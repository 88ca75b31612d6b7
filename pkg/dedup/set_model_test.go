package dedup_test

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/dedup"
)

// model is the reference a Set is checked against: the latest time each
// key was added (a map, times in ms after t0), the keys in the order first
// added (a slice), and what Set promises about them. After every Add it
// checks:
//
//   - no expired or never-added key is seen;
//   - every key added within EffectiveWindow before now is seen;
//   - Seen at other times follows the entry's own time;
//   - a key that was held and live before the Add and is not after it was
//     evicted: Evicted grew by exactly their number, they are no newer than
//     any key kept, and it happened only at maxEntries with too few expired
//     ids to make room; an evicted key stays unseen until added again;
//   - with times that only increase, at most a batch and a half (1 % of
//     maxEntries, at least one) is evicted at once;
//   - Len never exceeds maxEntries, and an Add a window behind the latest
//     changes nothing.
type model struct {
	tb      testing.TB
	s       *dedup.Set
	window  int64 // ms
	max     int
	keys    []string
	last    map[string]int64
	gone    map[string]bool // evicted, not added since
	latest  int64
	started bool
	evicted uint64
	// increasing: every Add so far had a time after the one before.
	increasing bool
}

func newModel(tb testing.TB, window time.Duration, maxEntries int) *model {
	return &model{tb: tb, s: dedup.NewSet(window, maxEntries), window: window.Milliseconds(),
		max: maxEntries, last: map[string]int64{}, gone: map[string]bool{}, increasing: true}
}

func at(ms int64) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

func (m *model) add(key string, ms int64) {
	m.tb.Helper()
	now := ms
	if m.started {
		now = max(m.latest, ms)
		if ms <= m.latest {
			m.increasing = false
		}
	}
	ignored := m.started && ms <= m.latest-m.window
	lenBefore := m.s.Len()
	heldBefore := map[string]bool{}
	for _, k := range m.keys {
		if m.last[k] > now-m.window && m.s.Seen([]byte(k), at(now)) {
			heldBefore[k] = true
		}
	}
	m.s.Add([]byte(key), at(ms))
	m.started, m.latest = true, now
	if ignored {
		if m.s.Len() != lenBefore {
			m.tb.Fatalf("Add(%s, %d) a window behind the latest (%d) changed Len from %d to %d",
				key, ms, m.latest, lenBefore, m.s.Len())
		}
	} else if prev, ok := m.last[key]; !ok || ms > prev {
		if !ok {
			m.keys = append(m.keys, key)
		}
		m.last[key] = ms
		delete(m.gone, key)
	}
	m.check(key, now, heldBefore, lenBefore)
}

// farPast is a time every entry is less than a window after: Seen then
// tells whether a key is held at all.
var farPast = at(-1 << 40)

func (m *model) check(added string, now int64, heldBefore map[string]bool, lenBefore int) {
	m.tb.Helper()
	s := m.s
	if s.Len() > m.max {
		m.tb.Fatalf("Len() = %d, above %d", s.Len(), m.max)
	}
	eff := s.EffectiveWindow(at(now)).Milliseconds()
	if eff < 0 || eff > m.window {
		m.tb.Fatalf("EffectiveWindow = %d ms, outside 0 to %d", eff, m.window)
	}
	var forgotten, kept []int64
	for _, k := range m.keys {
		t := m.last[k]
		live := t > now-m.window
		got := s.Seen([]byte(k), at(now))
		switch {
		case got && !live:
			m.tb.Fatalf("at %d: %s seen, but last added at %d, a window or more before", now, k, t)
		case !got && live && t > now-eff:
			m.tb.Fatalf("at %d: %s unseen, but added at %d, within the effective window of %d ms", now, k, t, eff)
		}
		// The entry's own time decides, whatever now is: a key held is
		// seen from any time before its expiry, and none after.
		held := s.Seen([]byte(k), farPast)
		if s.Seen([]byte(k), at(t+m.window-1)) != held {
			m.tb.Fatalf("%s added at %d: held %v, but seen %v a window less 1 ms later", k, t, held, !held)
		}
		if s.Seen([]byte(k), at(t+m.window)) {
			m.tb.Fatalf("%s added at %d: seen a window later", k, t)
		}
		if k == added || !heldBefore[k] {
			continue
		}
		if got {
			kept = append(kept, t)
		} else {
			forgotten = append(forgotten, t)
		}
	}
	for _, k := range []string{"never/1", "never/2"} {
		if s.Seen([]byte(k), farPast) {
			m.tb.Fatalf("%s, never added, seen", k)
		}
	}
	for k := range m.gone {
		if s.Seen([]byte(k), farPast) {
			m.tb.Fatalf("%s, evicted and not added since, seen", k)
		}
	}
	d := s.Evicted() - m.evicted
	m.evicted = s.Evicted()
	if d != uint64(len(forgotten)) {
		m.tb.Fatalf("at %d: Evicted grew by %d, but %d live keys were forgotten", now, d, len(forgotten))
	}
	if d == 0 {
		return
	}
	// The model forgets what the set evicted: a later Add with an earlier
	// time is then the key's only time.
	m.keys = slices.DeleteFunc(m.keys, func(k string) bool {
		if k != added && heldBefore[k] && !s.Seen([]byte(k), at(now)) {
			delete(m.last, k)
			m.gone[k] = true
			return true
		}
		return false
	})
	batch := max(1, m.max/100)
	enough := max(1, batch/2)
	if lenBefore != m.max {
		m.tb.Fatalf("at %d: evicted %d while holding %d of %d", now, d, lenBefore, m.max)
	}
	if len(heldBefore) <= m.max-enough {
		m.tb.Fatalf("at %d: evicted %d while %d of %d were live: expiry made room", now, d, len(heldBefore), m.max)
	}
	if len(kept) > 0 && slices.Max(forgotten) > slices.Min(kept) {
		m.tb.Fatalf("at %d: evicted an id of %d, but kept one of %d", now, slices.Max(forgotten), slices.Min(kept))
	}
	if m.increasing && int(d) > batch+enough {
		m.tb.Fatalf("at %d: evicted %d at once, above a batch and a half (%d + %d)", now, d, batch, enough)
	}
}

// TestSetMatchesModel runs random Adds against the model: keys drawn from
// a small space so many repeat, times that increase or jump about.
func TestSetMatchesModel(t *testing.T) {
	for _, tc := range []struct {
		desc   string
		max    int
		window time.Duration
		keys   int
		adds   int
		// step returns the next time from the latest.
		step func(rng *rand.Rand, latest int64) int64
	}{
		{desc: "eviction-bound", max: 50, window: time.Hour, keys: 200, adds: 5000, step: forward},
		{desc: "expiry-bound", max: 5000, window: 200 * time.Millisecond, keys: 300, adds: 5000, step: forward},
		{desc: "both", max: 64, window: 300 * time.Millisecond, keys: 100, adds: 5000, step: forward},
		{desc: "batches of 10", max: 1000, window: 5 * time.Second, keys: 1500, adds: 4000, step: forward},
		{desc: "out of order, same milliseconds", max: 40, window: 100 * time.Millisecond, keys: 120, adds: 5000,
			step: func(rng *rand.Rand, latest int64) int64 { return latest + rng.Int64N(10) - 7 }},
		{desc: "jumps of days across 32-bit time", max: 30, window: time.Minute, keys: 60, adds: 5000,
			step: func(rng *rand.Rand, latest int64) int64 {
				if rng.IntN(200) == 0 {
					return latest + 20*24*3_600_000 + rng.Int64N(60_000)
				}
				return latest + rng.Int64N(2_000) - 500
			}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, uint64(tc.max)))
			m := newModel(t, tc.window, tc.max)
			var latest int64
			for range tc.adds {
				ms := tc.step(rng, latest)
				latest = max(latest, ms)
				m.add(fmt.Sprintf("t/%d", rng.IntN(tc.keys)), ms)
			}
			if m.s.Evicted() == 0 && tc.max < tc.keys && tc.window > time.Second {
				t.Errorf("no eviction in %d adds of %d keys to a set of %d", tc.adds, tc.keys, tc.max)
			}
		})
	}
}

func forward(rng *rand.Rand, latest int64) int64 { return latest + 1 + rng.Int64N(3) }

// FuzzSetMatchesModel drives the model from fuzz input: the first two
// bytes size the set and its window, then each pair of bytes is one Add: a
// key out of 48, and a time step from 16 ms back to 47 ms on, or (from 250
// up) 25 days on. Past 500 Adds the input is ignored: the model checks
// every key after every Add, and longer inputs only slow the fuzzer down.
func FuzzSetMatchesModel(f *testing.F) {
	f.Add([]byte{3, 50, 1, 20, 2, 20, 3, 20, 4, 20, 1, 30, 5, 16, 6, 16})
	f.Add([]byte{0, 0, 1, 17, 2, 17, 1, 17, 3, 250, 1, 16})
	f.Add(binary.BigEndian.AppendUint64([]byte{63, 199}, 0x0102030405060708))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 2 {
			return
		}
		data = data[:min(len(data), 2+2*500)]
		m := newModel(t, time.Duration(1+int(data[1])%200)*time.Millisecond, 1+int(data[0])%64)
		var ms int64
		for op := data[2:]; len(op) >= 2; op = op[2:] {
			if op[1] >= 250 {
				ms += 25 * 24 * 3_600_000
			} else {
				ms += int64(op[1]%64) - 16
			}
			m.add(fmt.Sprintf("t/%d", op[0]%48), ms)
		}
	})
}
