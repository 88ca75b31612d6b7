package retry

import "time"

// BreakerConfig says when an endpoint's circuit opens and for how long.
type BreakerConfig struct {
	// Window is how far back attempts count (5 min).
	Window time.Duration
	// MinAttempts within the window before the circuit may open (10): a
	// couple of failures of a quiet endpoint prove nothing.
	MinAttempts int
	// FailureRatio at or above which it opens (0.7).
	FailureRatio float64
	// OpenFor is how long it stays open before one probe may pass (30 s).
	OpenFor time.Duration
}

// DefaultBreaker is DESIGN §6's breaker.
var DefaultBreaker = BreakerConfig{Window: 5 * time.Minute, MinAttempts: 10, FailureRatio: 0.7, OpenFor: 30 * time.Second}

// Transition is a change of a breaker's state worth telling about.
type Transition int

const (
	// Unchanged: no change.
	Unchanged Transition = iota
	// Opened: the failures crossed the threshold, or the probe failed.
	Opened
	// Closed: the probe succeeded; the endpoint recovered.
	Closed
)

type breakerState int

const (
	closed breakerState = iota
	open
	halfOpen
)

// buckets split the window: counts per window/30 (10 s for 5 min), so the
// breaker holds 30 pairs of counters per endpoint whatever the traffic.
const buckets = 30

// Breaker is one endpoint's circuit breaker. The zero value is not usable;
// NewBreaker makes one. Not safe for concurrent use.
type Breaker struct {
	cfg      BreakerConfig
	width    time.Duration
	counts   [buckets]struct{ slot, ok, failed int64 }
	state    breakerState
	openedAt time.Time
	probing  bool
}

// NewBreaker returns a closed breaker.
func NewBreaker(cfg BreakerConfig) *Breaker {
	return &Breaker{cfg: cfg, width: max(cfg.Window/buckets, time.Millisecond)}
}

// Pass is what Allow lets through.
type Pass int

const (
	// Normal: the circuit is closed; an ordinary request. The zero value,
	// also for requests the breaker is not asked about.
	Normal Pass = iota
	// Probe: the one request whose answer decides whether the circuit
	// closes again.
	Probe
	// Refused: the circuit is open; no request.
	Refused
)

// Allow says whether a request may go now. An open breaker lets one probe
// through once OpenFor has passed; until the probe's result is recorded
// (or the probe is released), nothing else passes.
func (b *Breaker) Allow(now time.Time) Pass {
	switch b.state {
	case open:
		if now.Sub(b.openedAt) < b.cfg.OpenFor {
			return Refused
		}
		b.state, b.probing = halfOpen, true
		return Probe
	case halfOpen:
		if b.probing {
			return Refused
		}
		b.probing = true
		return Probe
	default:
		return Normal
	}
}

// Release gives back a probe Allow let through but that was not sent (no
// rate-limit token): the next Allow lets a probe through again. Without it
// the breaker would wait for a result that never comes, refusing
// everything (review M2).
func (b *Breaker) Release() {
	if b.state == halfOpen && b.probing {
		b.state, b.probing = open, false
	}
}

// Record counts the result of a request that Allow let through as pass.
// Only the probe's own result decides a half-open circuit: a request let
// through before the circuit opened can answer after OpenFor (endpoint
// timeouts go up to 60 s, OpenFor defaults to 30 s), and its answer says
// nothing of the endpoint now (review B4).
func (b *Breaker) Record(now time.Time, pass Pass, ok bool) Transition {
	switch {
	case b.state == halfOpen && pass == Probe:
		b.probing = false
		if ok {
			b.state = closed
			b.counts = [buckets]struct{ slot, ok, failed int64 }{}
			return Closed
		}
		b.state, b.openedAt = open, now
		return Opened
	case b.state != closed || pass == Probe:
		return Unchanged // a request started before the circuit opened
	}
	slot := now.UnixNano() / int64(b.width)
	c := &b.counts[slot%buckets]
	if c.slot != slot {
		*c = struct{ slot, ok, failed int64 }{slot: slot}
	}
	if ok {
		c.ok++
		return Unchanged
	}
	c.failed++
	var total, failed int64
	for _, c := range b.counts {
		if slot-c.slot < buckets {
			total += c.ok + c.failed
			failed += c.failed
		}
	}
	if total >= int64(b.cfg.MinAttempts) && float64(failed) >= b.cfg.FailureRatio*float64(total) {
		b.state, b.openedAt = open, now
		return Opened
	}
	return Unchanged
}

// Idle reports whether the breaker is closed: forgetting it loses nothing
// that matters (its failure counts matter only while the endpoint fails, and
// a failing endpoint's state is kept for its run of failures anyway).
func (b *Breaker) Idle(time.Time) bool { return b.state == closed }
