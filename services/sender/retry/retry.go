// Package retry holds the sender's delivery policy (DESIGN §6): the retry
// schedule and its jitter, what an HTTP answer means, Retry-After, the
// circuit breaker and the concurrency an endpoint earns back (AIMD). It
// knows nothing of Kafka; every function takes the time it needs, so
// schedules of days are tested in microseconds.
package retry

import (
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/pkg/topics"
)

// DefaultSchedule is the wait before each retry: after the first attempt
// (made at once) 5 s, then 5 min, 30 min, 2 h, 5 h, 10 h and 10 h — eight
// attempts over about 27.6 hours, the schedule receivers know from Svix.
var DefaultSchedule = []time.Duration{
	5 * time.Second, 5 * time.Minute, 30 * time.Minute,
	2 * time.Hour, 5 * time.Hour, 10 * time.Hour, 10 * time.Hour,
}

// JitterFraction spreads each wait by up to ±20 %, so the retries of a burst
// that failed together do not return together.
const JitterFraction = 0.2

// Schedule is the endpoint's own schedule, else its tenant's, else the
// default. Values are milliseconds in the configuration.
func Schedule(ep *sluicev1.Endpoint, tenant *sluicev1.Tenant) []time.Duration {
	ms := ep.GetRetryScheduleMs()
	if len(ms) == 0 {
		ms = tenant.GetRetryScheduleMs()
	}
	if len(ms) == 0 {
		return DefaultSchedule
	}
	out := make([]time.Duration, len(ms))
	for i, v := range ms {
		out[i] = time.Duration(v) * time.Millisecond
	}
	return out
}

// Jitter scales d by a factor in [1-JitterFraction, 1+JitterFraction]; u is
// uniform in [0, 1) (math/rand's Float64 in production, fixed in tests).
func Jitter(d time.Duration, u float64) time.Duration {
	return time.Duration(float64(d) * (1 - JitterFraction + 2*JitterFraction*u))
}

// Tier is the retry topic a wait of d goes to: the longest tier delay not
// longer than d (the first tier for shorter waits). A wait longer than its
// tier's delay plus jitter is held at the head of its tier partition for
// one delay at a time (see Hop), so a tier's consumer is never held by one
// record much longer than its own delay.
func Tier(d time.Duration) int {
	t := 0
	for i, td := range topics.RetryTiers {
		if td <= d {
			t = i
		}
	}
	return t
}

// Hop reports whether a record due after wait, read from tier, must move
// on rather than be held at the head of the partition until due: it would
// hold every record behind it for longer than the tier's delay plus
// jitter. The dispatcher then holds it one tier delay from when it was
// read and appends it to the tier that best fits the wait left (Tier), so
// a wait of 4 min in the 5 s tier (custom schedules put waits between
// tiers) hops about 48 times, one small write every 5 s.
func Hop(tier int, wait time.Duration) bool {
	return wait > time.Duration(float64(topics.RetryTiers[tier])*(1+JitterFraction))
}

// Verdict is what an attempt's outcome asks for.
type Verdict int

const (
	// Delivered: a 2xx answer.
	Delivered Verdict = iota
	// Retry: any other answer, a timeout, a network error, a refusal.
	Retry
	// Disable: 410 Gone, the receiver saying the endpoint no longer exists.
	Disable
)

// Judge classifies an attempt.
func Judge(a *sluicev1.Attempt) Verdict {
	switch {
	case a.Outcome == sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCESS:
		return Delivered
	case a.Outcome == sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_HTTP_ERROR && a.StatusCode == http.StatusGone:
		return Disable
	default:
		return Retry
	}
}

// Throttled reports whether the answer asks the sender to slow down: 429
// Too Many Requests or 503 Service Unavailable.
func Throttled(a *sluicev1.Attempt) bool {
	return a.Outcome == sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_HTTP_ERROR &&
		(a.StatusCode == http.StatusTooManyRequests || a.StatusCode == http.StatusServiceUnavailable)
}

// maxRetryAfter bounds what a receiver may ask for: beyond a week the answer
// is nonsense (and Clamp would cap it anyway).
const maxRetryAfter = 7 * 24 * time.Hour

// ParseRetryAfter reads a Retry-After value (RFC 9110 §10.2.3): a number of
// seconds, or an HTTP date. It refuses anything else — negative or
// fractional numbers, dates in the past, waits beyond a week, junk.
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if v[0] >= '0' && v[0] <= '9' {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil || time.Duration(n)*time.Second > maxRetryAfter {
			return 0, false
		}
		return time.Duration(n) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	d := t.Sub(now)
	if d < 0 || d > maxRetryAfter {
		return 0, false
	}
	return d, true
}

// Clamp bounds the wait a receiver asked for to [wait, 2×wait], wait being
// what the schedule would have waited: a receiver can slow its retries down
// but neither speed them up nor park them for days.
func Clamp(asked, wait time.Duration) time.Duration {
	return min(max(asked, wait), 2*wait)
}

// Concurrency is an endpoint's concurrency limit under AIMD: halved (down to
// one) each time the receiver throttles, raised again by one request per
// limit's worth of successes — TCP's congestion control, so a receiver that
// asked to slow down gets back to its configured max_in_flight over a few
// rounds of successes rather than at once.
type Concurrency struct {
	limit float64 // 0 until first used: the maximum
}

// Limit is the concurrency allowed now, at most max.
func (c *Concurrency) Limit(maxInFlight int) int {
	if c.limit == 0 || c.limit > float64(maxInFlight) {
		return maxInFlight
	}
	return max(1, int(c.limit))
}

// Throttled halves the limit.
func (c *Concurrency) Throttled(maxInFlight int) {
	c.limit = math.Max(1, float64(c.Limit(maxInFlight))/2)
}

// Succeeded raises the limit by 1/limit, up to max.
func (c *Concurrency) Succeeded(maxInFlight int) {
	if c.limit == 0 {
		return
	}
	c.limit += 1 / c.limit
	if c.limit >= float64(maxInFlight) {
		c.limit = 0
	}
}

// Full reports whether the limit is back at the maximum.
func (c *Concurrency) Full() bool { return c.limit == 0 }
