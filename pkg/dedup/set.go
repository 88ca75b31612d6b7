// Package dedup is the router's memory of which events it has already routed
// (DESIGN §5): a bounded in-memory Set per partition of sluice.events, and a
// compacted changelog topic (sluice.dedup) from which that Set is rebuilt
// when a router is assigned the partition, so duplicates are dropped across
// restarts and rebalances.
//
// The router writes one Marker per routed event in the same transaction as
// the event's deliveries, on the partition of sluice.dedup whose number is
// the event's partition of sluice.events, so an aborted batch leaves no
// marker and one partition of events is rebuilt from one partition of dedup.
//
// A View follows every partition of the changelog for the HTTP events API,
// which answers a repeated event as a duplicate without producing it.
package dedup

import (
	"fmt"
	"hash/maphash"
	"math"
	"math/bits"
	"slices"
	"time"
)

// Set is the dedup state of one partition: which event keys were seen, and
// when (milliseconds). It is not safe for concurrent use: one partition is
// owned by one router goroutine.
//
// Keys are stored as 64-bit maphash hashes, not as bytes, so an entry has a
// fixed size whatever the tenant and id lengths. Two distinct keys with the
// same hash make the second look like a duplicate and be dropped. With n
// keys held, a lookup of a new key collides with probability n/2^64
// (5.4e-13 for n = 10^7); the chance that any two of 10^7 keys held together
// collide is at most n²/2^65 ≈ 2.7e-6. (Hash 0 marks an empty slot, so a key
// hashing to 0 is stored as 1: one more colliding value in 2^64.) The seed
// is chosen per process: the state is rebuilt from the changelog's keys, not
// from stored hashes, so hashes need not be stable across processes, and a
// fresh seed means a colliding pair does not collide again after a restart,
// and tenants cannot choose ids that collide on purpose.
//
// # Memory
//
// An entry is one 12-byte slot (the hash, and its time as uint32
// milliseconds after a base) of an open-addressing table with linear
// probing in Robin Hood order. The table is at most 7/8 full and grows by
// half, so just after growing it is 7/8 ÷ 3/2 = 7/12 full: 12 B ÷ 7/12 ≈
// 20.6 B per id at worst, 12 B ÷ 7/8 ≈ 13.7 B at best. It never grows past
// ⌈maxEntries × 8/7⌉ slots, where maxEntries ids fill it 7/8. Eviction adds
// a buffer of 8 B per id it evicts at once (1 % of maxEntries: 0.08 B per
// id at the bound). BenchmarkMemory and TestSetMemoryPerID measure it:
// 15.6 B per id at 10^4 ids, 19.4 B at 10^6, 13.7 B at the bound, never
// above 20.6 B. While growing, the old table is held beside the new one
// until the rehash ends. The table does not shrink when fewer ids arrive
// later: maxEntries bounds it.
//
// # Expiry and eviction
//
// There is no queue of entries in time order. An entry's own time decides
// Seen, so an expired entry can stay in its slot, unseen, until its room is
// needed. Room is made when the table reaches its load limit:
//
//   - Below its largest size, expired entries are swept out first; unless
//     that frees an eighth of the limit, the table grows.
//   - At its largest size (maxEntries ids held), expired entries are swept
//     out first; unless that frees half an eviction batch, a batch of the
//     oldest ids is evicted: 1 % of maxEntries, at least one. (Of ids of
//     the same millisecond at the batch's edge, the ones the sweep meets
//     first go.)
//
// A sweep is one pass over the table, O(slots), and makes room for at least
// an eighth of the limit, or half a batch, of Adds: Add is amortised O(1).
// When every Add evicts, the sweep that evicts a batch also finds the next
// batch, so it costs 8/7 × 100 ≈ 114 slot visits per Add (BenchmarkAdd:
// 1.3 µs per Add at 2^20 ids, against 0.4 µs when ids only expire), up to
// four times that while ids of the next batch are added again. The Add
// that sweeps stalls its caller: 4.8 ms for a full table of 500,000 ids
// (571,429 slots, 6.9 MB), 69 ms for 6,000,000 (BenchmarkEvictionStall).
//
// An id evicted before its window ended is counted (Evicted), and the Set
// remembers the newest time it evicted: every id added after that time is
// still held, so EffectiveWindow is how far back the Set is sure to answer.
type Set struct {
	seed   maphash.Seed
	window int64 // ms
	max    int   // maxEntries
	batch  int   // ids evicted at once: 1 % of max, at least 1

	slots  []slot
	n      int // entries held, expired ones not yet swept included
	limit  int // n that makes room before the next insert
	maxCap int // len(slots) at most

	// Times are stored as milliseconds after base, which keeps
	// base ≤ latest − window: any time the Set holds is after base. Once a
	// time does not fit in 32 bits (2^32 ms ≈ 49.7 days after base), the
	// Set rebases, dropping what has expired.
	started bool
	base    int64
	latest  int64 // the latest time added, Unix ms
	minT    int64 // no entry held is older, Unix ms; exact after a sweep

	// oldest collects the batch oldest times left by an eviction sweep,
	// so the next eviction knows its batch without a sweep of its own: the
	// entries before cutoff and cutoffTies of those at cutoff, valid when
	// cutoffOK.
	oldest     oldest
	cutoff     int64
	cutoffTies int
	cutoffOK   bool

	evicted        uint64
	evictedThrough int64 // Unix ms of the newest id evicted, if evicted > 0
	short          bool  // the last CheckWindow's answer
}

// slot is one table entry: a key's hash (0 when empty) and its time in ms
// after Set.base. Three uint32 make 12 bytes; a uint64 field would pad the
// slot to 16.
type slot struct{ lo, hi, t uint32 }

func (sl slot) hash() uint64 { return uint64(sl.hi)<<32 | uint64(sl.lo) }
func (sl slot) used() bool   { return sl.lo|sl.hi != 0 }

const (
	// minCap is the table's first size: 768 bytes.
	minCap = 64
	// MaxWindow is the longest window a Set takes: times are kept as 32-bit
	// milliseconds after a base at most a window back, and half the range
	// is left above the window so that rebasing, which sweeps the whole
	// table, happens at most once per 2^31 ms (24.8 days) of the Set's
	// clock. Ingest's configuration stops at 168 h.
	MaxWindow = time.Duration(1<<31) * time.Millisecond
)

// NewSet returns an empty Set remembering keys for window, at most
// maxEntries of them. It panics if window is under a millisecond or over
// MaxWindow, or maxEntries is below one: they come from validated
// configuration.
func NewSet(window time.Duration, maxEntries int) *Set {
	if window < time.Millisecond || window > MaxWindow || maxEntries < 1 {
		panic(fmt.Sprintf("dedup: NewSet(%v, %d): window must be from 1ms to %v and maxEntries at least 1",
			window, maxEntries, MaxWindow))
	}
	// ⌈maxEntries × 8/7⌉ > maxEntries: a slot stays empty, which ends
	// every probe.
	maxCap := (maxEntries*8 + 6) / 7
	s := &Set{
		seed:   maphash.MakeSeed(),
		window: window.Milliseconds(),
		max:    maxEntries,
		batch:  max(1, maxEntries/100),
		maxCap: maxCap,
		minT:   math.MaxInt64,
	}
	s.resize(min(maxCap, minCap))
	return s
}

func (s *Set) hash(key []byte) uint64 {
	if h := maphash.Bytes(s.seed, key); h != 0 {
		return h
	}
	return 1
}

// home is h's first slot: the high bits of h scaled to the table, which
// needs no power-of-two size and keeps each cluster in order of home.
func (s *Set) home(h uint64) int {
	hi, _ := bits.Mul64(h, uint64(len(s.slots)))
	return int(hi)
}

// dist is how far slot i is from h's home.
func (s *Set) dist(h uint64, i int) int {
	d := i - s.home(h)
	if d < 0 {
		d += len(s.slots)
	}
	return d
}

// find returns the slot holding h, or, if none does, the slot where its
// probe stopped and h's distance from home there: an empty slot, or one
// whose entry is nearer its home than h would be (Robin Hood order puts
// h before it, had h been inserted).
func (s *Set) find(h uint64) (i, d int, found bool) {
	c := len(s.slots)
	i = s.home(h)
	for d = 0; ; d++ {
		sl := s.slots[i]
		if !sl.used() {
			return i, d, false
		}
		sh := sl.hash()
		if sh == h {
			return i, d, true
		}
		if s.dist(sh, i) < d {
			return i, d, false
		}
		if i++; i == c {
			i = 0
		}
	}
}

// insertAt puts sl at slot i, where it is d from home, moving the entries
// from there on one slot further until an empty slot takes the last.
func (s *Set) insertAt(i, d int, sl slot) {
	c := len(s.slots)
	for {
		cur := &s.slots[i]
		if !cur.used() {
			*cur = sl
			s.n++
			return
		}
		if cd := s.dist(cur.hash(), i); cd < d {
			*cur, sl = sl, *cur
			d = cd
		}
		if i++; i == c {
			i = 0
		}
		d++
	}
}

// Seen reports whether key was added less than the window before now. An
// entry exactly one window old has expired and counts as unseen; an entry
// dated after now (a clock ahead of this one) counts as seen. Seen does not
// allocate and does not modify the Set.
func (s *Set) Seen(key []byte, now time.Time) bool {
	i, _, ok := s.find(s.hash(key))
	return ok && s.base+int64(s.slots[i].t) > now.UnixMilli()-s.window
}

// Add records key at t; a key already present keeps the later of its two
// times. A t at least a window before the latest t added is ignored: by the
// Set's own clock it has expired already.
//
// When maxEntries ids are held, adding first drops the expired ones and,
// if that frees too little, evicts the oldest 1 % (see Set). Memory stays
// bounded, at the price that a duplicate of an evicted key, arriving within
// the window, is not detected. EffectiveWindow and Evicted report it. Size
// maxEntries above the ids one partition receives in a window.
//
// t drives expiry, so it must come from a trusted clock (the router's own):
// a t far ahead expires every entry older than t minus the window.
func (s *Set) Add(key []byte, t time.Time) {
	ms := t.UnixMilli()
	if !s.started {
		s.started, s.latest, s.base = true, ms, ms-s.window
	}
	if ms <= s.latest-s.window {
		return
	}
	if ms > s.latest {
		s.latest = ms
		if ms-s.base > math.MaxUint32 {
			s.rebase()
		}
	}
	h := s.hash(key)
	v := uint32(ms - s.base)
	i, d, found := s.find(h)
	if found {
		if v > s.slots[i].t {
			s.slots[i].t = v
		}
		return
	}
	if s.n >= s.limit {
		s.makeRoom()
		i, d, _ = s.find(h)
	}
	s.insertAt(i, d, slot{lo: uint32(h), hi: uint32(h >> 32), t: v})
	s.minT = min(s.minT, ms)
}

// Len is the number of keys held, expired ones not yet dropped included.
func (s *Set) Len() int { return s.n }

// Window is the window the Set was made with.
func (s *Set) Window() time.Duration { return time.Duration(s.window) * time.Millisecond }

// Evicted is the number of ids evicted to make room before their window
// ended, since NewSet. Each is a duplicate the Set can no longer catch.
func (s *Set) Evicted() uint64 { return s.evicted }

// EffectiveWindow is how long before now an id must have been added to be
// certainly remembered: the window, unless an id added less than a window
// before now was evicted; then the time since the newest evicted id. Every
// id added later than that is still held (until it expires), so Seen
// catches a repeat of any id added within EffectiveWindow(now) before now.
// A Set that only expires ids, however few it holds, reports the window.
func (s *Set) EffectiveWindow(now time.Time) time.Duration {
	if s.evicted == 0 {
		return s.Window()
	}
	age := now.UnixMilli() - s.evictedThrough
	switch {
	case age >= s.window:
		return s.Window()
	case age < 0:
		return 0
	}
	return time.Duration(age) * time.Millisecond
}

// CheckWindow reports whether the effective window at now is shorter than
// the window, and whether that answer differs from the previous call's (the
// first call compares with "not short"). A caller that logs when changed is
// true logs once per transition, not once per event.
func (s *Set) CheckWindow(now time.Time) (short, changed bool) {
	short = s.EffectiveWindow(now) < s.Window()
	changed = short != s.short
	s.short = short
	return short, changed
}

// makeRoom frees at least one slot; it is called when n reached limit.
func (s *Set) makeRoom() {
	expired := s.latest - s.window + 1 // entries before it have expired
	if len(s.slots) < s.maxCap {
		// Growing costs a rehash; an expiry sweep that frees an eighth
		// of the limit makes room for as many Adds without it.
		if s.minT < expired && s.sweep(expired, 0, 0, false) >= max(1, s.limit/8) {
			return
		}
		s.resize(min(s.maxCap, len(s.slots)+len(s.slots)/2))
		return
	}
	// At the bound. Half a batch is the least a sweep must free, so that
	// sweeps of the whole table come at most every batch/2 Adds.
	enough := max(1, s.batch/2)
	if s.minT >= expired && s.cutoffOK {
		// Nothing has expired: evict what the last eviction sweep found
		// to be the next batch. Entries added since are newer, unless out
		// of order, and then older than what is evicted, and evicted too;
		// entries of that batch added again since have moved on, so this
		// may free less than a batch, and then the sweep below frees a
		// fresh one.
		if s.sweep(s.cutoff, s.cutoffTies, 0, true) >= enough {
			return
		}
	} else if s.sweep(expired, 0, 0, true) >= enough {
		return // expiry made the room; nothing evicted
	}
	// The sweep just done found the batch oldest survivors, and nothing
	// changed since: this evicts exactly them.
	s.sweep(s.cutoff, s.cutoffTies, 0, true)
}

// rebase moves base to the window before latest, so every time held fits
// in 32 bits again. Entries at or before the new base have expired.
func (s *Set) rebase() {
	nb := s.latest - s.window
	s.sweep(nb+1, 0, nb-s.base, false)
	s.base = nb
}

// sweep deletes every entry dated before cutoff (Unix ms) and, of those
// dated at cutoff, the first ties it meets. It counts the deleted entries
// that had not expired as evicted, subtracts shift from the stored time of
// the others, and returns how many it deleted. With collect it finds the
// batch oldest survivors: the latest time among them in cutoff, and how
// many of them are of that time in cutoffTies.
//
// One pass, starting after an empty slot so that no cluster is split: each
// survivor moves back to its home or just after the survivor before it,
// whichever is later. Clusters keep their order, so Robin Hood order and
// "no empty slot between an entry and its home" hold after the pass, as
// after a backward-shift delete of each entry. Positions u are unwrapped
// (e < u < e+c), so comparisons need no modulo.
func (s *Set) sweep(cutoff int64, ties int, shift int64, collect bool) int {
	c := len(s.slots)
	e := 0
	for s.slots[e].used() {
		e++ // n < c: there is an empty slot
	}
	cut := cutoff - s.base
	expired := s.latest - s.window - s.base // at or before it: expired
	if collect {
		s.oldest.reset(s.batch)
	}
	freed, minV := 0, int64(math.MaxInt64)
	prev := e // unwrapped position of the last entry kept, or of an empty slot
	for u := e + 1; u < e+c; u++ {
		i := u
		if i >= c {
			i -= c
		}
		sl := s.slots[i]
		if !sl.used() {
			prev = u
			continue
		}
		v := int64(sl.t)
		if v < cut || v == cut && ties > 0 {
			if v == cut {
				ties--
			}
			s.slots[i] = slot{}
			freed++
			if v > expired {
				s.evicted++
				s.evictedThrough = max(s.evictedThrough, s.base+v)
			}
			continue
		}
		minV = min(minV, v)
		if collect {
			s.oldest.push(uint32(v - shift))
		}
		dst := u
		if prev < u-1 {
			// A slot between this entry's cluster start and it was
			// freed: move back, but not before home.
			dst = max(u-s.dist(sl.hash(), i), prev+1)
		}
		prev = dst
		if dst == u && shift == 0 {
			continue
		}
		sl.t = uint32(v - shift)
		s.slots[i] = slot{}
		if dst >= c {
			dst -= c
		}
		s.slots[dst] = sl
	}
	s.n -= freed
	s.minT = math.MaxInt64
	if minV != math.MaxInt64 {
		s.minT = s.base + minV
	}
	if collect {
		var top uint32
		top, s.cutoffTies, s.cutoffOK = s.oldest.result()
		s.cutoff = s.base + int64(top)
	}
	return freed
}

// oldest finds the k smallest of a stream of times, in O(1) amortised per
// time: it keeps the times below a threshold in a buffer of 2k, and each
// time the buffer fills it selects the k smallest in place (O(k)) and
// lowers the threshold to the largest of them. Its buffer is allocated at
// the first eviction: 8 B × k.
type oldest struct {
	k   int
	buf []uint32
	thr uint64 // only a time below it can be among the k smallest
}

func (o *oldest) reset(k int) {
	o.k, o.buf, o.thr = k, o.buf[:0], math.MaxUint64
}

func (o *oldest) push(v uint32) {
	if uint64(v) >= o.thr {
		return // a time equal to the threshold would only tie the k-th
	}
	if o.buf == nil {
		o.buf = make([]uint32, 0, 2*o.k)
	}
	o.buf = append(o.buf, v)
	if len(o.buf) == cap(o.buf) {
		o.shrink()
	}
}

func (o *oldest) shrink() {
	selectK(o.buf, o.k)
	o.buf = o.buf[:o.k]
	o.thr = uint64(o.buf[o.k-1])
}

// result returns the largest of the k smallest times pushed and how many
// of the k are equal to it; ok is false if none was pushed.
func (o *oldest) result() (top uint32, ties int, ok bool) {
	if len(o.buf) == 0 {
		return 0, 0, false
	}
	if len(o.buf) > o.k {
		o.shrink()
	}
	top = slices.Max(o.buf)
	for _, v := range o.buf {
		if v == top {
			ties++
		}
	}
	return top, ties, true
}

// selectK reorders a so that a[k-1] is the k-th smallest, a[:k-1] are no
// larger and a[k:] no smaller (Hoare's quickselect, median-of-three pivot).
func selectK(a []uint32, k int) {
	lo, hi, n := 0, len(a)-1, k-1
	for lo < hi {
		x, y, z := a[lo], a[lo+(hi-lo)/2], a[hi]
		p := max(min(x, y), min(max(x, y), z))
		i, j := lo, hi
		for i <= j {
			for a[i] < p {
				i++
			}
			for a[j] > p {
				j--
			}
			if i <= j {
				a[i], a[j] = a[j], a[i]
				i++
				j--
			}
		}
		// a[lo..j] ≤ p, a[i..hi] ≥ p, and anything between equals p.
		switch {
		case n <= j:
			hi = j
		case n >= i:
			lo = i
		default:
			return
		}
	}
}

// resize rehashes every unexpired entry into a table of c slots.
func (s *Set) resize(c int) {
	old := s.slots
	s.slots = make([]slot, c)
	s.limit = c * 7 / 8
	if c == s.maxCap {
		s.limit = s.max
	}
	s.n = 0
	s.minT = math.MaxInt64
	expired := s.latest - s.window - s.base
	for _, sl := range old {
		if !sl.used() || int64(sl.t) <= expired {
			continue
		}
		i, d, _ := s.find(sl.hash())
		s.insertAt(i, d, sl)
		s.minT = min(s.minT, s.base+int64(sl.t))
	}
}
