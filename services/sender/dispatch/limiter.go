package dispatch

import (
	"math"
	"time"
)

// bucket is a token bucket: rate tokens per second, holding at most burst.
// A request takes one token. burst is a twentieth of a second's worth (at
// least one), so in any one-second window an endpoint receives at most
// rate + rate/20 requests: inside the 10 % the rate limit promises with
// room for network jitter, while timer jitter of a few milliseconds does
// not cost throughput.
type bucket struct {
	rate   float64 // tokens per second; 0 means unlimited
	burst  float64
	tokens float64
	last   time.Time
}

// setRate changes the rate, keeping the tokens already earned (capped).
func (b *bucket) setRate(rate float64) {
	if rate == b.rate {
		return
	}
	b.rate = rate
	b.burst = math.Max(1, rate/20)
	b.tokens = math.Min(b.tokens, b.burst)
}

// take spends a token if one is available at now.
func (b *bucket) take(now time.Time) bool {
	if b.rate <= 0 {
		return true
	}
	b.refill(now)
	if b.tokens >= 1 {
		b.tokens--
		return true
	}
	return false
}

// The wait for a token is clamped to [minWait, maxWait] (review M1): the
// API accepts any rate above zero, and below about 1.1e-10/s the wait in
// nanoseconds overflows a Duration (into a negative one, firing its timer
// at once, over and over, under the dispatcher's lock). A day is far
// beyond any rate worth setting; a wait waits again if it comes back
// early. A millisecond keeps a fast rate from setting timers of
// nanoseconds.
const (
	minWait = time.Millisecond
	maxWait = 24 * time.Hour
)

// wait is how long until a token is available at now: 0 if one is, else
// between minWait and maxWait.
func (b *bucket) wait(now time.Time) time.Duration {
	if b.rate <= 0 {
		return 0
	}
	b.refill(now)
	if b.tokens >= 1 {
		return 0
	}
	secs := (1 - b.tokens) / b.rate
	if !(secs < maxWait.Seconds()) { // also +Inf and NaN
		return maxWait
	}
	return max(minWait, time.Duration(math.Ceil(secs*float64(time.Second))))
}

func (b *bucket) refill(now time.Time) {
	if b.last.IsZero() {
		b.tokens, b.last = b.burst, now
		return
	}
	if d := now.Sub(b.last); d > 0 {
		b.tokens = math.Min(b.burst, b.tokens+d.Seconds()*b.rate)
		b.last = now
	}
}
