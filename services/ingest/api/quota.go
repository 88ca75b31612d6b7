package api

import (
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// MaxEventsPerSecond is the largest ingest quota a tenant may have: far
// above what one replica takes on its cores (tens of thousands of events a
// second), so a larger one would be no limit at all.
const MaxEventsPerSecond = 1_000_000

// quotaSweepEvery is how often idle buckets are forgotten: those unused
// for as long. Rates are whole events a second and a bucket holds one
// second's worth, so a bucket idle for a second is full, the same as none,
// and forgetting it changes nothing. The map then holds only tenants that
// sent in the last two minutes, about 100 bytes each.
const quotaSweepEvery = time.Minute

// eventQuotas are the ingest quotas' token buckets, one per tenant that
// sent lately, in this replica: the quota holds per replica, so N
// replicas admit up to N times it. A bucket holds one second's worth of
// events (its burst) and refills at the rate.
type eventQuotas struct {
	mu        sync.Mutex
	buckets   map[string]*tokenBucket
	lastSweep time.Time
}

type tokenBucket struct {
	tokens float64
	at     time.Time // when tokens was right
}

// take takes n tokens from tenant's bucket at rate a second if it holds
// them, at now. Otherwise it takes none and says how long until it would
// hold them (0 when n is more than the bucket can ever hold).
func (q *eventQuotas) take(tenant string, rate float64, n int, now time.Time) (ok bool, wait time.Duration) {
	q.mu.Lock()
	defer q.mu.Unlock()
	burst := rate // one second's worth
	if q.buckets == nil {
		q.buckets = map[string]*tokenBucket{}
	}
	if now.Sub(q.lastSweep) >= quotaSweepEvery {
		q.sweepLocked(now)
	}
	b := q.buckets[tenant]
	if b == nil {
		b = &tokenBucket{tokens: burst, at: now}
		q.buckets[tenant] = b
	}
	if elapsed := now.Sub(b.at).Seconds(); elapsed > 0 {
		b.tokens = min(burst, b.tokens+elapsed*rate)
		b.at = now
	}
	b.tokens = min(b.tokens, burst) // the rate may have been lowered
	need := float64(n)
	switch {
	case need <= b.tokens:
		b.tokens -= need
		return true, 0
	case need > burst:
		return false, 0
	}
	return false, time.Duration((need - b.tokens) / rate * float64(time.Second))
}

// sweepLocked forgets the buckets unused for quotaSweepEvery: full ones.
func (q *eventQuotas) sweepLocked(now time.Time) {
	q.lastSweep = now
	for tenant, b := range q.buckets {
		if now.Sub(b.at) >= quotaSweepEvery {
			delete(q.buckets, tenant)
		}
	}
}

// eventRate is the tenant's ingest quota in events a second, 0 for none:
// its own events_per_second, else the operator's default.
func (a *API) eventRate(tenant string) int {
	if t, ok := a.tenant(tenant); ok && t.EventsPerSecond != nil {
		return int(*t.EventsPerSecond)
	}
	return max(a.opts.Tenants.EventsPerSecond, 0)
}

// admitEvents takes n events of the caller's quota, or answers 429 with
// Retry-After and reports false.
func (a *API) admitEvents(r *request, n int) bool {
	rate := a.eventRate(r.caller.tenant)
	if rate == 0 || n == 0 {
		return true
	}
	ok, wait := a.quotas.take(r.caller.tenant, float64(rate), n, a.now())
	if ok {
		return true
	}
	detail := fmt.Sprintf("tenant %s may send %d events per second to this server, and has sent its share; "+
		"retry after Retry-After seconds, or ask the operator to raise the tenant's events_per_second", r.caller.tenant, rate)
	if wait == 0 {
		wait = time.Second
		detail = fmt.Sprintf("the batch holds %d events, and tenant %s may send %d events per second, so at most %d at once; "+
			"send smaller batches", n, r.caller.tenant, rate, rate)
	}
	// Whole seconds, rounded up, at least 1 (RFC 9110 §10.2.3).
	r.Response.Header.Set("Retry-After", fmt.Sprint(max(1, int64(math.Ceil(wait.Seconds())))))
	WriteProblem(r.RequestCtx, fasthttp.StatusTooManyRequests, "rate-limited", detail)
	return false
}
