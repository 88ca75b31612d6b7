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
	jobs    []*job
	running int
	bucket  bucket
	timer   Timer // set while waiting for a rate-limit token
	waiting bool  // in Dispatcher.ready
	// ordered: one request at a time, a failing head retried in place.
	ordered bool
	// retryTimer is set while an ordered endpoint's head waits for its
	// next attempt.
	retryTimer Timer
	// holding is the partition an ordered endpoint's full queue paused.
	holding *partition
	breaker *retry.Breaker
	conc    retry.Concurrency
	// failingSince is when the current run of failures began (zero while
	// the last attempt succeeded).
	failingSince time.Time
}

func (d *Dispatcher) enqueue(j *job, ep *sluicev1.Endpoint) {
	if ep.Status == sluicev1.EndpointStatus_ENDPOINT_STATUS_DISABLED {
		d.park(j, "endpoint disabled: "+ep.DisabledReason)
		return
	}
	q := d.queue(ep)
	switch {
	case len(q.jobs) < d.queueCap(ep):
	case q.ordered:
		// An ordered endpoint's deliveries cannot be deferred without
		// losing their order: its partition stops fetching until the
		// queue drains (see ARCHITECTURE: ordered endpoints).
		if q.holding == nil {
			q.holding = j.p
			j.p.orderedHold++
			d.consumer.PauseFetchPartitions(map[string][]int32{j.p.topic: {j.p.partition}})
		}
	default:
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
		q = &queue{id: ep.Id, breaker: retry.NewBreaker(d.opts.Breaker)}
		if ep.FailingSinceMs != 0 {
			q.failingSince = time.UnixMilli(ep.FailingSinceMs)
		}
		d.queues[ep.Id] = q
	}
	q.ordered = ep.Ordered
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

// pump starts as many of q's deliveries as its limits allow.
func (d *Dispatcher) pump(q *queue) {
	if q.holding != nil && len(q.jobs) <= d.opts.QueueCap/2 {
		p := q.holding
		q.holding = nil
		if p.orderedHold--; p.orderedHold == 0 && !p.draining && len(p.held) == 0 {
			d.consumer.ResumeFetchPartitions(map[string][]int32{p.topic: {p.partition}})
		}
	}
	if len(q.jobs) == 0 || q.retryTimer != nil {
		return
	}
	ep, ok := d.endpoints.Endpoint(q.id)
	if !ok || ep.Status == sluicev1.EndpointStatus_ENDPOINT_STATUS_DISABLED {
		// Deleted or disabled while its deliveries waited.
		jobs := q.jobs
		q.jobs = nil
		for _, j := range jobs {
			d.admit(j)
		}
		return
	}
	q.ordered = ep.Ordered
	q.bucket.setRate(ep.RateLimit)
	limit := q.conc.Limit(d.inFlightLimit(ep))
	if q.ordered {
		limit = 1
	}
	for len(q.jobs) > 0 && q.running < limit {
		if d.running >= d.opts.MaxInFlight {
			if !q.waiting {
				q.waiting = true
				d.ready = append(d.ready, q)
			}
			return
		}
		now := d.clock.Now()
		if !q.ordered && !q.breaker.Allow(now) {
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
			if q.timer == nil {
				q.timer = d.clock.AfterFunc(q.bucket.wait(now), func() {
					d.locked(func() { q.timer = nil; d.pump(q) })
				})
			}
			return
		}
		j := q.pop()
		q.running++
		d.running++
		d.activate(j)
		go d.attempt(j, q, ep)
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
		d.pump(q)
	})
	d.locked(func() {
		d.running--
		for len(d.ready) > 0 && d.running < d.opts.MaxInFlight {
			next := d.ready[0]
			d.ready[0] = nil
			d.ready = d.ready[1:]
			next.waiting = false
			d.pump(next)
		}
	})
}

// sweep moves deliveries that waited too long in their queue to the first
// retry tier, and forgets idle queues.
func (d *Dispatcher) sweep(ctx context.Context) {
	every := max(d.opts.MaxQueueWait/4, 50*time.Millisecond)
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
				for !q.ordered && len(q.jobs) > 0 && now.Sub(q.jobs[0].queued) > d.opts.MaxQueueWait {
					j := q.jobs[0]
					q.jobs[0] = nil
					q.jobs = q.jobs[1:]
					d.deferJob(j, "waited too long")
				}
				// An idle queue is forgotten, unless it holds state worth
				// keeping: an open circuit, reduced concurrency, a run of
				// failures.
				if len(q.jobs) == 0 && q.running == 0 && q.timer == nil && q.retryTimer == nil && !q.waiting &&
					q.failingSince.IsZero() && q.breaker.Idle(now) && q.conc.Full() {
					delete(d.queues, id)
				}
			}
		})
	}
}
