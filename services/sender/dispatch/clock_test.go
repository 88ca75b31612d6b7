package dispatch_test

import (
	"context"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/services/sender/dispatch"
)

// fakeClock is the dispatcher's time in tests: it stands still until the
// test moves it, so schedules of seconds or days run as fast as the broker
// answers, and the times a test compares are exact. Timers fire in the
// goroutine that moves the clock, in deadline order.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	seq    int
	timers []*fakeTimer // pending, in no order
}

type fakeTimer struct {
	c   *fakeClock
	at  time.Time
	seq int // ties fire in the order they were set
	f   func()
}

// epoch is a whole second, so due times (whole milliseconds in records)
// compare exactly with the clock.
var epoch = time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)

func newFakeClock() *fakeClock { return &fakeClock{now: epoch} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) dispatch.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	t := &fakeTimer{c: c, at: c.now.Add(d), seq: c.seq, f: f}
	c.timers = append(c.timers, t)
	return t
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	for i, p := range t.c.timers {
		if p == t {
			t.c.timers = append(t.c.timers[:i], t.c.timers[i+1:]...)
			return true
		}
	}
	return false
}

// Advance moves the clock by d, firing every timer due on the way at its
// own deadline (a callback that sets a timer within the span sees it fire
// too).
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	until := c.now.Add(d)
	c.mu.Unlock()
	for c.fireNext(until) {
	}
	c.mu.Lock()
	if c.now.Before(until) {
		c.now = until
	}
	c.mu.Unlock()
}

// fireNext moves the clock to the earliest timer due at or before until and
// fires it; false when there is none.
func (c *fakeClock) fireNext(until time.Time) bool {
	c.mu.Lock()
	if len(c.timers) == 0 {
		c.mu.Unlock()
		return false
	}
	sort.Slice(c.timers, func(i, j int) bool {
		a, b := c.timers[i], c.timers[j]
		return a.at.Before(b.at) || a.at.Equal(b.at) && a.seq < b.seq
	})
	t := c.timers[0]
	if t.at.After(until) {
		c.mu.Unlock()
		return false
	}
	c.timers = c.timers[1:]
	if t.at.After(c.now) {
		c.now = t.at
	}
	c.mu.Unlock()
	t.f()
	return true
}

// auto moves the clock from one timer's deadline to the next whenever one
// is pending, until the test ends: what waits for time gets it at once, and
// nothing is ever early. Something the broker is still carrying can be late
// by the jumps made meanwhile, so a test relying on auto compares times
// with "not before", or has one chain of timers at a time when it compares
// them exactly.
func (c *fakeClock) auto(t testing.TB) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			c.fireNext(time.Unix(1<<62, 0))
		}
	})
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
}
