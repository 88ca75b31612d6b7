package dispatch

import (
	"context"
	"sync"
	"time"
)

// owned are the goroutines and timers the dispatcher starts besides its
// loops: requests, configuration writes, records produced again, and every
// timer's callback (which may produce). Run ends them: once no request is
// in flight it closes the set, which stops the timers not fired yet and
// starts nothing more, then waits for what runs, at most until the work
// context ends (a request's HTTP call has its own timeout and no context).
type owned struct {
	mu     sync.Mutex
	n      int // goroutines running, and timers set, not yet done
	closed bool
	timers map[*ownedTimer]struct{}
}

// ownedTimer is a timer of the set: counted from when it is set until its
// callback returns or it is stopped first.
type ownedTimer struct {
	o     *owned
	t     Timer
	fired bool
}

// spawn runs fn in a goroutine of the set; false (and fn not run) once the
// set is closed.
func (o *owned) spawn(fn func()) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return false
	}
	o.n++
	go func() {
		defer o.done()
		fn()
	}()
	return true
}

// done counts one goroutine or timer of the set as done.
func (o *owned) done() {
	o.mu.Lock()
	o.n--
	o.mu.Unlock()
}

// afterFunc runs fn after d on clock, in the set; once the set is closed
// it returns a timer that never fires.
func (o *owned) afterFunc(clock Clock, d time.Duration, fn func()) Timer {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return stopped{}
	}
	if o.timers == nil {
		o.timers = map[*ownedTimer]struct{}{}
	}
	t := &ownedTimer{o: o}
	o.timers[t] = struct{}{}
	o.n++
	t.t = clock.AfterFunc(d, func() {
		o.mu.Lock()
		if t.fired { // stopped meanwhile
			o.mu.Unlock()
			return
		}
		t.fired = true
		delete(o.timers, t)
		o.mu.Unlock()
		defer o.done()
		fn()
	})
	return t
}

// Stop cancels the timer; false if it already fired or was stopped.
func (t *ownedTimer) Stop() bool {
	o := t.o
	o.mu.Lock()
	defer o.mu.Unlock()
	if t.fired {
		return false
	}
	t.fired = true
	delete(o.timers, t)
	t.t.Stop()
	o.n--
	return true
}

// close starts nothing more and stops the timers not fired yet.
func (o *owned) close() {
	o.mu.Lock()
	o.closed = true
	timers := o.timers
	o.timers = nil
	o.mu.Unlock()
	for t := range timers {
		t.Stop()
	}
}

// wait waits for the goroutines of the set until ctx ends, looking every
// 10 ms (shutdown is not a hot path); false if they had not all returned
// by then.
func (o *owned) wait(ctx context.Context) bool {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		o.mu.Lock()
		n := o.n
		o.mu.Unlock()
		if n == 0 {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
}

// stopped is a timer that never fires.
type stopped struct{}

func (stopped) Stop() bool { return false }
