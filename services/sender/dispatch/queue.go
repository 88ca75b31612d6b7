package dispatch

import (
	"context"
	"time"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/services/sender/retry"
)

// queue is one endpoint's waiting deliveries, its limits and its health.
type queue struct {
	id      string
	tenant  string
	jobs    []*job
	running int
	bucket  bucket
	timer   Timer // set while waiting for a rate-limit token
	waiting bool  // in Dispatcher.ready (fairness.go)
	// lanes are the ordered lanes holding work for this endpoint (ordered
	// endpoints' deliveries wait there, not in jobs): they share its rate
	// limit and health, and are pumped with it.
	lanes   map[*lane]struct{}
	breaker *retry.Breaker
	conc    retry.Concurrency
	// failingSince is when the current run of failures began (zero while
	// the last attempt succeeded); persisted, that this sender has seen the
	// run on the endpoint (failing_since), see health.
	failingSince time.Time
	persisted    bool
}

// enqueue puts j on ep's queue. A delivery of an ordered endpoint moves to
// the ordered topic, where its order is kept: it was read from the
// deliveries or a retry tier (the endpoint became ordered while it was on
// its way), or handed over by a lane while the endpoint was unordered.
func (d *Dispatcher) enqueue(j *job, ep *sluicev1.Endpoint) {
	switch {
	case ep.Status == sluicev1.EndpointStatus_ENDPOINT_STATUS_DISABLED:
		if q := d.queues[ep.Id]; q != nil {
			forgetRun(q) // whoever disabled it, its run of failures is over
		}
		d.park(j, "endpoint disabled: "+ep.DisabledReason)
		return
	case ep.Ordered:
		d.moveToOrdered(j)
		return
	}
	q := d.queue(ep)
	if len(q.jobs) >= d.queueCap(ep) {
		d.deferJob(j, "queue full")
		return
	}
	j.queued = d.clock.Now()
	q.jobs = append(q.jobs, j)
	d.pump(q)
}

// queue returns ep's queue, made on first use.
func (d *Dispatcher) queue(ep *sluicev1.Endpoint) *queue {
	q := d.queues[ep.Id]
	if q == nil {
		q = &queue{id: ep.Id, tenant: ep.TenantId, breaker: retry.NewBreaker(d.opts.Breaker), lanes: map[*lane]struct{}{}}
		if ep.FailingSinceMs != 0 {
			q.failingSince, q.persisted = time.UnixMilli(ep.FailingSinceMs), true
		}
		d.queues[ep.Id] = q
	}
	q.bucket.setRate(ep.RateLimit)
	return q
}

// queueCap is how many deliveries an endpoint may hold waiting: QueueCap,
// or for a rate-limited endpoint what it can start within MaxQueueWait.
func (d *Dispatcher) queueCap(ep *sluicev1.Endpoint) int {
	c := d.opts.QueueCap
	if ep.RateLimit > 0 {
		if byRate := int(ep.RateLimit*d.opts.MaxQueueWait.Seconds()) + 1; byRate < c {
			c = byRate
		}
	}
	return c
}

func (d *Dispatcher) inFlightLimit(ep *sluicev1.Endpoint) int {
	if ep.MaxInFlight > 0 {
		return int(ep.MaxInFlight)
	}
	return d.opts.EndpointInFlight
}

// serve pumps q's deliveries and its ordered lanes: a request slot or a
// rate-limit token freed up.
func (d *Dispatcher) serve(q *queue) {
	d.pump(q)
	for l := range q.lanes {
		d.pumpLane(l)
	}
}

// pump starts as many of q's (unordered) deliveries as its limits allow.
func (d *Dispatcher) pump(q *queue) {
	if len(q.jobs) == 0 {
		return
	}
	ep, ok := d.endpoints.Endpoint(q.id)
	if !ok || ep.Status == sluicev1.EndpointStatus_ENDPOINT_STATUS_DISABLED || ep.Ordered {
		// Deleted, disabled or made ordered while its deliveries waited.
		jobs := q.jobs
		q.jobs = nil
		for _, j := range jobs {
			d.admit(j)
		}
		return
	}
	q.bucket.setRate(ep.RateLimit)
	limit := q.conc.Limit(d.inFlightLimit(ep))
	for len(q.jobs) > 0 && q.running < limit {
		if !d.slotFree(q) {
			return
		}
		now := d.clock.Now()
		pass := q.breaker.Allow(now)
		if pass == retry.Refused {
			// Circuit open: no request; the delivery moves on to its
			// next attempt's tier and the log says why.
			j := q.pop()
			d.activate(j)
			d.after(j, q, ep, &sluicev1.Attempt{Outcome: sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_CIRCUIT_OPEN,
				StartedAtUs: now.UnixMicro(), Url: ep.Url,
				Error: "not sent: the endpoint's circuit is open after repeated failures"}, "")
			continue
		}
		if !q.bucket.take(now) {
			if pass == retry.Probe {
				q.breaker.Release() // the probe goes with the next token
			}
			d.waitToken(q, now)
			return
		}
		j := q.pop()
		j.pass = pass
		d.startRequest(q)
		d.activate(j)
		d.startAttempt(j, q, ep)
	}
}

// waitToken serves q again once its rate limit allows another request.
func (d *Dispatcher) waitToken(q *queue, now time.Time) {
	if q.timer == nil {
		q.timer = d.afterFunc(q.bucket.wait(now), func() {
			d.locked(func() { q.timer = nil; d.serve(q) })
		})
	}
}

func (q *queue) pop() *job {
	j := q.jobs[0]
	q.jobs[0] = nil
	q.jobs = q.jobs[1:]
	return j
}

// activate counts j as started in its partition: a revoke waits for it.
func (d *Dispatcher) activate(j *job) {
	if !j.active {
		j.active = true
		j.p.active++
	}
}

// startAttempt runs j's attempt in a goroutine Run waits for (its slots are
// taken). Run closes that set only once every partition is drained and no
// request is in flight, so nothing is left to start then; should one be,
// it is dropped and its partition's next owner sends it.
func (d *Dispatcher) startAttempt(j *job, q *queue, ep *sluicev1.Endpoint) {
	if d.spawn(func() { d.attempt(j, q, ep) }) {
		return
	}
	q.running--
	d.freeSlot(q)
	if l := j.lane; l != nil {
		l.running = false
	}
	j.active = false
	j.p.active--
	d.drop(j)
}

// attempt runs one HTTP attempt and settles what it leads to.
func (d *Dispatcher) attempt(j *job, q *queue, ep *sluicev1.Endpoint) {
	a, retryAfter := d.attempter.Attempt(j.d, ep)
	d.m.attempts.Add(d.work, 1, d.m.outcome(a.Outcome))
	d.m.latency.Record(d.work, float64(a.LatencyUs)/1e6)
	// The records this produces go out from this goroutine, which holds its
	// request slot until they are buffered: when the log lags by the
	// producer's whole buffer, new requests wait rather than memory
	// growing.
	d.locked(func() {
		q.running--
		d.stats.Attempts++
		d.after(j, q, ep, a, retryAfter)
		if l := j.lane; l != nil {
			l.running = false
			// Settled (delivered, dead-lettered, dropped) unless it waits
			// in place for its next attempt.
			if l.retryTimer == nil && len(l.jobs) > 0 && l.jobs[0] == j {
				d.popLane(l)
			}
			d.pumpLane(l)
		}
		d.serve(q)
	})
	d.locked(func() {
		d.freeSlot(q)
		d.serveWaiting()
	})
}

// sweep moves deliveries that waited too long in their queue to the first
// retry tier, forgets idle queues, and looks after the ordered lanes
// (sweepLanes). It runs four times per MaxQueueWait, so a delivery waits at
// most 1.25 of it, and at least once a second, so a lane whose head waits
// hours for its retry notices within a second that its endpoint was
// disabled; each round costs one pass over the queues and lanes.
func (d *Dispatcher) sweep(ctx context.Context) {
	every := min(max(d.opts.MaxQueueWait/4, 50*time.Millisecond), time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		d.locked(func() {
			now := d.clock.Now()
			for id, q := range d.queues {
				for len(q.jobs) > 0 && now.Sub(q.jobs[0].queued) > d.opts.MaxQueueWait {
					d.deferJob(q.pop(), "waited too long")
				}
				// An idle queue is forgotten, unless it holds state worth
				// keeping: an open circuit, reduced concurrency, a run of
				// failures.
				if len(q.jobs) == 0 && len(q.lanes) == 0 && q.running == 0 && q.timer == nil && !q.waiting &&
					q.failingSince.IsZero() && q.breaker.Idle(now) && q.conc.Full() {
					delete(d.queues, id)
					if f, ok := d.attempter.(Forgetter); ok {
						f.Forget(id)
					}
				}
			}
			d.sweepLanes()
		})
	}
}
