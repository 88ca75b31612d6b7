package dispatch

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/pkg/errtext"
	"github.com/sluicehq/sluice/pkg/eventfilter"
	"github.com/sluicehq/sluice/pkg/eventrecord"
	"github.com/sluicehq/sluice/pkg/ids"
	"github.com/sluicehq/sluice/services/sender/retry"
)

// The reserved types of Sluice's operational events, emitted into the
// tenant's own stream so its endpoints can subscribe to them.
const (
	EventEndpointDisabled  = "sluice.endpoint.disabled"
	EventDeliveryExhausted = "sluice.delivery.exhausted"
	EventEndpointRecovered = "sluice.endpoint.recovered"
)

// maxHistory bounds the attempts a delivery carries: the default schedule
// makes 8, custom ones at most 20 (the API's limit).
const maxHistory = 20

// persistFailingAfter is how long a run of failures lasts before the
// sender records it on the endpoint: shorter blips cost no configuration
// write, longer runs survive a sender restart on their way to auto-disable.
const persistFailingAfter = time.Hour

// after settles what attempt a of j leads to (under the lock): the attempt
// record, then nothing more (delivered), a retry, a dead letter, or the
// endpoint's disabling.
func (d *Dispatcher) after(j *job, q *queue, ep *sluicev1.Endpoint, a *sluicev1.Attempt, retryAfter string) {
	now := d.clock.Now()
	dl := j.d
	// Bounded before it reaches the attempt record, the history and any
	// dead letter's reason, whatever the Attempter returned.
	a.Error = errtext.Truncate(a.Error, maxTextBytes)
	a.SchemaVersion = sluicev1.SchemaVersion
	a.DeliveryId, a.TenantId, a.EndpointId, a.EventId, a.EventType = dl.DeliveryId, dl.TenantId, dl.EndpointId, dl.EventId, dl.EventType
	a.AttemptNumber, a.Origin = dl.AttemptsMade+1, dl.Origin
	if a.AttemptId == "" {
		a.AttemptId = ids.NewAt(ids.Attempt, now)
	}
	if a.StartedAtUs == 0 {
		a.StartedAtUs = now.UnixMicro()
	}
	verdict := retry.Judge(a)
	ok := verdict == retry.Delivered
	limit := d.inFlightLimit(ep)
	switch {
	case retry.Throttled(a):
		q.conc.Throttled(limit)
	case ok:
		q.conc.Succeeded(limit)
	}
	var recs []*kgo.Record
	if a.Outcome != sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_CIRCUIT_OPEN {
		if q.breaker.Record(now, j.pass, ok) == retry.Closed {
			d.log.Info("endpoint recovered: circuit closed", "endpoint_id", ep.Id)
			recs = append(recs, d.opEvent(ep.TenantId, EventEndpointRecovered, map[string]any{
				"endpoint_id": ep.Id, "recovered_at": now.UTC().Format(time.RFC3339Nano)}))
		}
		d.health(q, ep, ok, now)
	}
	dl.AttemptsMade++
	dl.History = append(dl.History, &sluicev1.AttemptSummary{AttemptNumber: a.AttemptNumber,
		StartedAtMs: a.StartedAtUs / 1000, Outcome: a.Outcome, StatusCode: a.StatusCode, Error: a.Error})
	if len(dl.History) > maxHistory {
		dl.History = dl.History[len(dl.History)-maxHistory:]
	}

	switch verdict {
	case retry.Delivered:
		d.settle(j, append(recs, d.attemptRecord(a))...)
	case retry.Disable:
		reason := "the endpoint answered 410 Gone"
		d.disable(q, ep, reason)
		d.stats.Parked++
		d.settle(j, append(recs, d.attemptRecord(a), d.deadRecord(j, "endpoint disabled: "+reason))...)
	default:
		d.retry(j, q, ep, a, retryAfter, now, recs)
	}
}

// retry schedules j's next attempt, or dead-letters it after its last.
func (d *Dispatcher) retry(j *job, q *queue, ep *sluicev1.Endpoint, a *sluicev1.Attempt, retryAfter string,
	now time.Time, recs []*kgo.Record) {
	dl := j.d
	tenant, _ := d.endpoints.Tenant(dl.TenantId)
	schedule := retry.Schedule(ep, tenant)
	n := int(dl.AttemptsMade)
	if n > len(schedule) {
		d.stats.Exhausted++
		d.m.exhausted.Add(d.work, 1)
		reason := fmt.Sprintf("exhausted: %d attempts failed, the last with %s", n, describe(a))
		recs = append(recs, d.attemptRecord(a), d.deadRecord(j, reason))
		if !eventfilter.Reserved(dl.EventType) { // no news of news: no cascades
			recs = append(recs, d.opEvent(dl.TenantId, EventDeliveryExhausted, map[string]any{
				"endpoint_id": dl.EndpointId, "delivery_id": dl.DeliveryId, "event_id": dl.EventId,
				"event_type": dl.EventType, "attempts": n, "last_status": a.StatusCode, "last_error": a.Error}))
		}
		d.settle(j, recs...)
		return
	}
	step := schedule[n-1]
	wait := retry.Jitter(step, d.opts.Rand())
	if retry.Throttled(a) {
		if asked, ok := retry.ParseRetryAfter(retryAfter, now); ok {
			wait = retry.Clamp(asked, step)
		}
	}
	due := now.Add(wait)
	a.NextAttemptAtMs = due.UnixMilli()
	if l := j.lane; l != nil {
		// Retried in place: the head of its lane waits, unfinished (the
		// commit stays at it), and so does the rest of its lane; other
		// lanes go on.
		for _, r := range append(recs, d.attemptRecord(a)) {
			d.send(j, r)
		}
		j.active = false
		j.p.active--
		if j.p.draining {
			d.drop(j) // its next owner sends it again
			return
		}
		l.retryTimer = d.afterFunc(wait, func() {
			d.locked(func() { l.retryTimer = nil; d.pumpLane(l) })
		})
		return
	}
	c := proto.CloneOf(dl)
	c.NotBeforeMs = due.UnixMilli()
	d.stats.Retried++
	d.settle(j, append(recs, d.attemptRecord(a),
		&kgo.Record{Topic: d.opts.Names.Retry[retry.Tier(wait)], Key: []byte(c.EndpointId), Value: mustMarshal(c)})...)
}

// health follows ep's run of failures: recorded on the endpoint once it has
// lasted persistFailingAfter, cleared by a success, and disabling the
// endpoint once it has lasted DisableAfter. The run is the sender's memory
// and the endpoint's failing_since together: once this sender has seen the
// latter set, the latter being cleared (an enable, or a success on another
// sender) ends the run here too, and a disable always ends it (review B1:
// the first failure after an enable must not disable the endpoint again
// for the run before it).
func (d *Dispatcher) health(q *queue, ep *sluicev1.Endpoint, ok bool, now time.Time) {
	if ok {
		forgetRun(q)
		if ep.FailingSinceMs != 0 {
			d.writeEndpoint(ep.Id, func(e *sluicev1.Endpoint) bool {
				changed := e.FailingSinceMs != 0
				e.FailingSinceMs = 0
				return changed
			}, nil)
		}
		return
	}
	switch {
	case ep.FailingSinceMs != 0:
		q.persisted = true
	case q.persisted:
		forgetRun(q) // cleared since this sender saw it set
	}
	if q.failingSince.IsZero() {
		q.failingSince = now
	}
	if ep.FailingSinceMs != 0 && time.UnixMilli(ep.FailingSinceMs).Before(q.failingSince) {
		q.failingSince = time.UnixMilli(ep.FailingSinceMs)
	}
	since := q.failingSince
	switch age := now.Sub(since); {
	case age >= d.opts.DisableAfter:
		d.disable(q, ep, fmt.Sprintf("no successful delivery since %s (%s of failures)",
			since.UTC().Format(time.RFC3339), age.Round(time.Second)))
	case age >= persistFailingAfter && ep.FailingSinceMs == 0:
		d.writeEndpoint(ep.Id, func(e *sluicev1.Endpoint) bool {
			if e.FailingSinceMs != 0 {
				return false
			}
			e.FailingSinceMs = since.UnixMilli()
			return true
		}, nil)
	}
}

// forgetRun ends q's run of failures: the next failure starts a new one.
func forgetRun(q *queue) {
	q.failingSince, q.persisted = time.Time{}, false
}

// disable disables ep with reason and then tells its tenant. The endpoint's
// run of failures ends with it: the disable clears failing_since.
func (d *Dispatcher) disable(q *queue, ep *sluicev1.Endpoint, reason string) {
	forgetRun(q)
	if ep.Status == sluicev1.EndpointStatus_ENDPOINT_STATUS_DISABLED {
		return
	}
	d.stats.Disabled++
	d.log.Warn("disabling endpoint", "endpoint_id", ep.Id, "reason", reason)
	d.writeEndpoint(ep.Id, func(e *sluicev1.Endpoint) bool {
		if e.Status == sluicev1.EndpointStatus_ENDPOINT_STATUS_DISABLED {
			return false
		}
		e.Status, e.DisabledReason, e.FailingSinceMs = sluicev1.EndpointStatus_ENDPOINT_STATUS_DISABLED, reason, 0
		return true
	}, func(e *sluicev1.Endpoint) {
		d.m.disabled.Add(d.work, 1)
		rec := d.opEvent(e.TenantId, EventEndpointDisabled, map[string]any{
			"endpoint_id": e.Id, "url": e.Url, "reason": reason,
			"disabled_at": time.UnixMilli(e.UpdatedAtMs).UTC().Format(time.RFC3339Nano)})
		if rec != nil {
			d.produceLoose(rec)
		}
	})
}

// writeEndpoint changes endpoint id in the background, one write per
// endpoint at a time (a second asked for meanwhile is skipped: the next
// attempt asks again). done runs after a write that changed something.
func (d *Dispatcher) writeEndpoint(id string, change func(*sluicev1.Endpoint) bool, done func(*sluicev1.Endpoint)) {
	if d.writing[id] {
		return
	}
	d.writing[id] = true
	started := d.spawn(func() {
		defer d.locked(func() { delete(d.writing, id) })
		ctx, cancel := context.WithTimeout(d.work, 30*time.Second)
		defer cancel()
		changed := false
		e, err := d.endpoints.UpdateEndpoint(ctx, id, func(e *sluicev1.Endpoint) bool {
			changed = change(e)
			return changed
		})
		if err != nil {
			d.log.Warn("updating endpoint", "endpoint_id", id, "err", err)
			return
		}
		if changed && done != nil {
			done(e)
		}
	})
	if !started {
		delete(d.writing, id) // stopping: a later attempt asks again
	}
}

// opEvent is an operational event for tenant, as a record of the events
// topic in the producer contract; nil if it cannot be made.
func (d *Dispatcher) opEvent(tenant, eventType string, data map[string]any) *kgo.Record {
	b, err := json.Marshal(data)
	if err != nil {
		panic(fmt.Sprintf("dispatch: encoding %s: %v", eventType, err)) // maps of strings and numbers always encode
	}
	rec, err := eventrecord.FromSystem(d.opts.Names.Events, tenant, eventType, b, d.opts.RecordKey)
	if err != nil { // an endpoint without a valid tenant: nobody to tell
		d.log.Error("not emitting an operational event", "type", eventType, "err", err)
		return nil
	}
	d.m.opEvents.Add(d.work, 1)
	return rec
}

// produceLoose produces a record no delivery waits for, retrying until the
// work context ends; one Kafka refuses for good is dropped with an error in
// the log.
func (d *Dispatcher) produceLoose(rec *kgo.Record) {
	d.producer.Produce(d.work, rec, func(_ *kgo.Record, err error) {
		switch {
		case err == nil || d.work.Err() != nil:
		case refused(err):
			d.log.Error("dropping a record Kafka refuses", "err", err, "topic", rec.Topic)
		default:
			d.log.Warn("producing; retrying in 1s", "topic", rec.Topic, "err", err)
			d.afterFunc(time.Second, func() { d.produceLoose(rec) })
		}
	})
}

func (d *Dispatcher) attemptRecord(a *sluicev1.Attempt) *kgo.Record {
	return &kgo.Record{Topic: d.opts.Names.Attempts, Key: []byte(a.EndpointId), Value: mustMarshal(a)}
}

// describe names an attempt's result for a dead letter's reason.
func describe(a *sluicev1.Attempt) string {
	if a.StatusCode != 0 {
		return fmt.Sprintf("HTTP %d", a.StatusCode)
	}
	if a.Error != "" {
		return a.Outcome.Label() + ": " + a.Error
	}
	return a.Outcome.Label()
}
