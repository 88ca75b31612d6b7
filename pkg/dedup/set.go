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
	"time"
)

// Set is the dedup state of one partition: which event keys were seen, and
// when (Unix milliseconds). It is not safe for concurrent use: one partition
// is owned by one router goroutine.
//
// Keys are stored as 64-bit maphash hashes, not as bytes, so an entry has a
// fixed size whatever the tenant and id lengths. Two distinct keys with the
// same hash make the second look like a duplicate and be dropped. With n
// keys held, a lookup of a new key collides with probability n/2^64
// (5.4e-13 for n = 10^7); the chance that any two of 10^7 keys held together
// collide is at most n²/2^65 ≈ 2.7e-6. The seed is chosen per process: the
// state is rebuilt from the changelog's keys, not from stored hashes, so
// hashes need not be stable across processes, and a fresh seed means a
// colliding pair does not collide again after a restart, and tenants cannot
// choose ids that collide on purpose.
//
// Memory per entry, at the bound: the map[uint64]int64 is a Swiss table of
// 8-slot groups, 8×16 B of slots plus an 8 B control word = 136 B per group,
// 17 B per slot; it is between 7/16 and 7/8 full (it doubles at 7/8), so
// 17/0.875 ≈ 19 B to 17/0.4375 ≈ 39 B per entry. The ring holds 16 B per
// entry and never grows past maxEntries. Together 35–55 B per entry;
// BenchmarkMemory measures 40 B at 10^5 entries and 54 B at 10^6 (a map just
// doubled). So 10^6 entries take 40–55 MB, 10^7 up to 550 MB.
type Set struct {
	seed   maphash.Seed
	window int64 // ms
	max    int
	// at maps a key's hash to the time of its latest Add.
	at map[uint64]int64
	// q holds one entry per Add that recorded a time, in Add order, for
	// expiry and eviction in amortised O(1). An entry whose t differs from
	// at[h] is stale (its key was added again later) and is discarded when
	// it reaches the front; a key is deleted from at only when its current
	// entry leaves the ring. Stale entries come before their key's current
	// one, so no entry outlives its key. q.n ≤ max, and len(at) ≤ q.n.
	q ring
}

// NewSet returns an empty Set remembering keys for window, at most
// maxEntries of them. It panics if window is under a millisecond or
// maxEntries is below one: both come from validated configuration.
func NewSet(window time.Duration, maxEntries int) *Set {
	if window < time.Millisecond || maxEntries < 1 {
		panic(fmt.Sprintf("dedup: NewSet(%v, %d): window must be at least 1ms and maxEntries at least 1", window, maxEntries))
	}
	return &Set{
		seed:   maphash.MakeSeed(),
		window: window.Milliseconds(),
		max:    maxEntries,
		at:     make(map[uint64]int64),
		q:      ring{max: maxEntries},
	}
}

func (s *Set) hash(key []byte) uint64 { return maphash.Bytes(s.seed, key) }

// Seen reports whether key was added less than the window before now. An
// entry exactly one window old has expired and counts as unseen; an entry
// dated after now (a clock ahead of this one) counts as seen. Seen does not
// allocate and does not modify the Set.
func (s *Set) Seen(key []byte, now time.Time) bool {
	t, ok := s.at[s.hash(key)]
	return ok && t > now.UnixMilli()-s.window
}

// Add records key at t; a key already present keeps the later of its two
// times. Entries at least a window older than t are dropped first, lazily:
// from the front of the Add order, while the front has expired. Times out
// of order are tolerated: Seen compares each entry's own time, so an expired
// entry queued behind a newer one is never reported seen; it only holds its
// memory until it reaches the front or is evicted.
//
// When the Set is full (maxEntries Adds held), adding first evicts the
// entry added longest ago: the oldest, when times increase. Memory stays
// bounded, at the price that a duplicate of an evicted key, arriving after
// more than maxEntries newer keys but within the window, is not detected.
// Size maxEntries above the events one partition receives in a window.
//
// t drives expiry, so it must come from a trusted clock (the broker's append
// time, as the router uses): a t far ahead expires every entry older than t
// minus the window.
func (s *Set) Add(key []byte, t time.Time) {
	ms := t.UnixMilli()
	s.expire(ms - s.window)
	h := s.hash(key)
	if old, ok := s.at[h]; ok && ms <= old {
		return
	}
	if s.q.n >= s.max {
		s.evictOldest()
	}
	s.at[h] = ms // an older entry of h, if any, is now stale
	s.q.push(entry{h: h, t: ms})
}

// Len is the number of keys held, expired ones not yet dropped included.
func (s *Set) Len() int { return len(s.at) }

// expire drops entries from the front of the ring while they are at or
// before horizon. Each Add pushes at most one entry, so over many calls
// each Add pays for at most one pop.
func (s *Set) expire(horizon int64) {
	for s.q.n > 0 && s.q.front().t <= horizon {
		s.drop(s.q.pop())
	}
}

// evictOldest frees the ring slot at the front.
func (s *Set) evictOldest() { s.drop(s.q.pop()) }

// drop forgets e's key if e is its current entry.
func (s *Set) drop(e entry) {
	if cur, ok := s.at[e.h]; ok && cur == e.t {
		delete(s.at, e.h)
	}
}

type entry struct {
	h uint64
	t int64 // Unix ms
}

// ring is a FIFO of entries that grows by doubling up to max and never
// shrinks: after a burst it keeps its capacity, which maxEntries bounds.
type ring struct {
	buf     []entry
	head, n int
	max     int
}

func (r *ring) front() entry { return r.buf[r.head] }

func (r *ring) pop() entry {
	e := r.buf[r.head]
	r.head++
	if r.head == len(r.buf) {
		r.head = 0
	}
	r.n--
	return e
}

func (r *ring) push(e entry) {
	if r.n == len(r.buf) {
		r.grow()
	}
	i := r.head + r.n
	if i >= len(r.buf) {
		i -= len(r.buf)
	}
	r.buf[i] = e
	r.n++
}

// grow is only called when full; Set keeps n ≤ max, so the new size is
// larger than n.
func (r *ring) grow() {
	size := max(2*len(r.buf), 1024)
	size = min(size, r.max)
	buf := make([]entry, size)
	copied := copy(buf, r.buf[r.head:])
	copy(buf[copied:], r.buf[:r.head])
	r.buf, r.head = buf, 0
}
