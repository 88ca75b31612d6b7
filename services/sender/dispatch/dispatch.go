// Package dispatch is the sender's flow control (DESIGN §6): it consumes
// deliveries, gives every endpoint its own queue with its own concurrency
// and rate limit, and commits each partition at its watermark, so one slow
// or dead endpoint never delays another, even on the same partition.
//
// A record's life: the poll loop takes it from its partition (the
// partition's watermark now holds it), decodes it and puts it on its
// endpoint's queue. The endpoint starts it when it has a free slot, a
// token and the process a free request slot; the HTTP attempt runs in its
// own goroutine and its attempt record is produced asynchronously. The
// record is finished when every record it caused is acknowledged by Kafka;
// only then can the watermark pass it. A record that cannot start soon (its
// endpoint's queue is full, or it waited longer than MaxQueueWait) is handed
// to the first retry tier instead: finished once that copy is acknowledged,
// so the watermark keeps moving and memory stays bounded.
package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/pkg/health"
	"github.com/sluicehq/sluice/pkg/kafkax"
	"github.com/sluicehq/sluice/pkg/topics"
	"github.com/sluicehq/sluice/services/sender/retry"
)

// Attempter makes one HTTP attempt of a delivery to its endpoint and
// describes it, with the answer's Retry-After header (empty if none). It is
// called from many goroutines at once.
type Attempter interface {
	Attempt(d *sluicev1.Delivery, ep *sluicev1.Endpoint) (*sluicev1.Attempt, string)
}

// Endpoints is what the dispatcher needs of the configuration.
type Endpoints interface {
	Endpoint(id string) (*sluicev1.Endpoint, bool)
	Tenant(id string) (*sluicev1.Tenant, bool)
	// Sync returns once the view holds every configuration write made
	// before the call.
	Sync(ctx context.Context) error
	// UpdateEndpoint changes an endpoint (disabling it, recording when it
	// started failing); change reports whether it changed anything.
	UpdateEndpoint(ctx context.Context, id string, change func(e *sluicev1.Endpoint) bool) (*sluicev1.Endpoint, error)
}

// Options are the dispatcher's settings; app.Config documents each.
type Options struct {
	Kafka kafkax.Config
	Names topics.Names
	Group string
	// MaxInFlight bounds the HTTP requests of the whole process.
	MaxInFlight int
	// EndpointInFlight is the concurrency of an endpoint that sets none.
	EndpointInFlight int
	// QueueCap bounds the deliveries waiting in one endpoint's queue.
	QueueCap int
	// MaxQueueWait is how long a delivery may wait in its endpoint's queue
	// before it is moved to the first retry tier.
	MaxQueueWait time.Duration
	// MemoryBudget bounds the bytes of deliveries held; above it fetching
	// pauses.
	MemoryBudget int64
	// RevokeGrace is how long a revoked partition's requests in flight may
	// finish before the partition is given up.
	RevokeGrace time.Duration
	// PollRecords is the most records taken from Kafka at once.
	PollRecords int
	// Breaker says when an endpoint's circuit opens.
	Breaker retry.BreakerConfig
	// DisableAfter is how long an endpoint may fail without a single
	// success before it is disabled.
	DisableAfter time.Duration
	// Clock tells the time; nil means the real one.
	Clock Clock
	// Rand returns uniform numbers in [0, 1) for jitter; nil means
	// math/rand/v2.
	Rand func() float64
	// RecordKey authenticates the operational events the dispatcher emits
	// (secretbox.Box.RecordKey), so the router tells them from a producer's.
	RecordKey []byte
	// Stage is reported to (package health): the dispatcher owes the jobs it
	// has taken and not finished, and progresses with every finished one.
	// nil reports nowhere.
	Stage *health.Stage
}

// jobOverhead approximates the memory of a held delivery beyond its encoded
// size: the decoded message (the payload is copied once more), the job and
// the queue slot.
const jobOverhead = 512

// Dispatcher runs the consumer group on the deliveries topic and the retry
// tiers.
type Dispatcher struct {
	opts      Options
	endpoints Endpoints
	attempter Attempter
	producer  *kgo.Client
	consumer  *kgo.Client
	log       *slog.Logger
	clock     Clock
	topics    []string // consumed: deliveries, then the retry tiers
	// work is the context of work in flight: it outlives the consume
	// context by the shutdown deadline.
	work context.Context
	m    instruments

	mu       sync.Mutex
	parts    map[topicPartition]*partition
	queues   map[string]*queue
	ready    []*queue        // queues waiting for a process-wide request slot
	running  int             // requests in flight, process-wide
	buffered int64           // bytes of jobs taken and not finished or dropped
	jobs     int             // jobs taken and not finished or dropped (health)
	paused   bool            // fetching paused for memory
	unknown  []*job          // jobs whose endpoint the view does not know yet
	writing  map[string]bool // endpoints with a configuration write under way
	wake     chan struct{}
	outbox   []outgoing // records to produce once the lock is released
	stats    Stats
}

// Stats count what the dispatcher did, for tests and metrics.
type Stats struct {
	Taken, Attempts, Deferred, Parked, Dropped int64
	// Retried counts deliveries sent to a retry tier after a failure,
	// Exhausted those dead-lettered after their last attempt, Hops tier
	// records re-appended to their tier.
	Retried, Exhausted, Hops int64
}

type topicPartition struct {
	topic     string
	partition int32
}

// partition is the state of one assigned partition.
type partition struct {
	topicPartition
	// tier is the retry tier this partition belongs to, -1 for deliveries.
	tier int
	wm   watermark
	// marked is the offset last marked for commit.
	marked int64
	// held are records not due yet (retry tiers), in order; the partition
	// is paused while any is held.
	held      []*job
	heldTimer Timer
	// active counts jobs started or being produced, which a revoke waits
	// for; queued and held jobs are simply dropped.
	active int
	// draining: revoke in progress, take nothing new. revoked: gone; its
	// late completions must not mark offsets.
	draining, revoked bool
	// orderedHold counts ordered endpoints whose full queue paused this
	// partition.
	orderedHold int
	// mark is the argument of MarkCommitOffsets for this partition, made
	// once: a watermark moves on nearly every finished delivery.
	mark map[string]map[int32]kgo.EpochOffset
}

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

// job is one record taken from a partition.
type job struct {
	p      *partition
	offset int64
	size   int64
	d      *sluicev1.Delivery
	raw    *kgo.Record // set only when the record could not be decoded
	queued time.Time
	// acks counts what keeps the job unfinished: one for the job itself
	// until its fate is settled, plus one per record produced for it not
	// yet acknowledged. It is finished when acks reaches zero.
	acks atomic.Int32
	// active: started or settling (counted in its partition's active),
	// as opposed to waiting in a queue.
	active bool
}

// outgoing is a record produced on behalf of a job: the job is finished
// when all of its outgoing records are acknowledged.
type outgoing struct {
	j   *job
	rec *kgo.Record
}

// New builds a dispatcher and its consumer. work is the context in-flight
// work runs under; it should outlive Run's context by the shutdown deadline.
func New(work context.Context, opts Options, endpoints Endpoints, attempter Attempter,
	producer *kgo.Client, log *slog.Logger, meter metric.Meter) (*Dispatcher, error) {
	d := &Dispatcher{
		opts: opts, endpoints: endpoints, attempter: attempter, producer: producer, log: log,
		clock: opts.Clock, work: work,
		parts: map[topicPartition]*partition{}, queues: map[string]*queue{},
		writing: map[string]bool{}, wake: make(chan struct{}, 1),
	}
	if d.clock == nil {
		d.clock = realClock{}
	}
	if d.opts.Rand == nil {
		d.opts.Rand = rand.Float64
	}
	if d.opts.Stage == nil {
		d.opts.Stage = health.NewRegistry(health.DefaultStuckAfter, nil).Stage("dispatcher")
	}
	d.topics = append([]string{opts.Names.Deliveries}, opts.Names.Retry...)
	if err := d.m.init(meter, d); err != nil {
		return nil, err
	}
	cl, err := kafkax.NewConsumer(opts.Kafka, opts.Group, d.topics,
		kgo.OnPartitionsAssigned(d.assigned),
		kgo.OnPartitionsRevoked(d.revoked),
		kgo.OnPartitionsLost(d.lost),
	)
	if err != nil {
		return nil, err
	}
	d.consumer = cl
	return d, nil
}

// Consumer is the dispatcher's consumer client, for readiness checks.
func (d *Dispatcher) Consumer() *kgo.Client { return d.consumer }

// Stats returns what the dispatcher did so far.
func (d *Dispatcher) Stats() Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stats
}

// Close leaves the group and closes the consumer.
func (d *Dispatcher) Close() { d.consumer.Close() }

// Run consumes until ctx ends, then stops taking records, lets the requests
// in flight finish (until the work context ends), commits the watermarks
// and returns.
func (d *Dispatcher) Run(ctx context.Context) error {
	cl := d.consumer
	stage := d.opts.Stage
	stage.Running()
	defer stage.Stopped("dispatcher stopped")
	var wg sync.WaitGroup
	wg.Go(func() { d.sweep(ctx) })
	wg.Go(func() { d.resolve(ctx) })
	for {
		stage.Beat()
		pctx, cancel := kafkax.PollContext(ctx)
		fetches := cl.PollRecords(pctx, d.opts.PollRecords)
		cancel()
		if ctx.Err() != nil || errors.Is(fetches.Err0(), kgo.ErrClientClosed) {
			break
		}
		kafkax.FetchErrors(fetches, func(t string, p int32, err error) {
			d.log.Warn("fetching deliveries", "topic", t, "partition", p, "err", err)
		})
		d.locked(func() {
			fetches.EachPartition(func(f kgo.FetchTopicPartition) {
				p := d.parts[topicPartition{f.Topic, f.Partition}]
				if p == nil || p.draining {
					return // revoked meanwhile: the next owner reads these
				}
				for _, r := range f.Records {
					d.take(p, r)
				}
			})
			d.checkMemory()
			stage.Owe(d.jobs)
		})
		cl.AllowRebalance()
	}
	// Shutdown: what has not started stays uncommitted for the next owner;
	// what has started is finished and recorded, then committed.
	d.locked(func() {
		for _, p := range d.parts {
			p.draining = true
			d.dropJobs(p)
		}
	})
	cl.PauseFetchTopics(d.topics...)
	cl.AllowRebalance()
	wg.Wait()
	d.waitIdle(d.work, nil)
	if err := cl.CommitMarkedOffsets(d.work); err != nil {
		return fmt.Errorf("committing delivery offsets on shutdown: %w", err)
	}
	return nil
}

// locked runs fn under the lock, then produces the records fn queued:
// producing may block on the producer's bounded buffer, which must never
// happen while holding the lock the acknowledgements need.
func (d *Dispatcher) locked(fn func()) {
	d.mu.Lock()
	fn()
	out := d.outbox
	d.outbox = nil
	d.mu.Unlock()
	for _, o := range out {
		d.produce(o)
	}
}

// take registers r with its partition and routes it.
func (d *Dispatcher) take(p *partition, r *kgo.Record) {
	p.wm.take(r.Offset)
	j := &job{p: p, offset: r.Offset, size: int64(len(r.Value)) + jobOverhead}
	j.acks.Store(1)
	d.buffered += j.size
	d.jobs++
	d.stats.Taken++
	dl := &sluicev1.Delivery{}
	if err := proto.Unmarshal(r.Value, dl); err != nil || dl.SchemaVersion != sluicev1.SchemaVersion || dl.EndpointId == "" {
		reason := "undecodable delivery record"
		switch {
		case err != nil:
			reason += ": " + err.Error()
		case dl.SchemaVersion != sluicev1.SchemaVersion:
			reason += fmt.Sprintf(": schema version %d, this sender reads %d", dl.SchemaVersion, sluicev1.SchemaVersion)
		default:
			reason += ": no endpoint id"
		}
		d.log.Error("parking an undecodable delivery", "topic", p.topic, "partition", p.partition,
			"offset", r.Offset, "reason", reason)
		j.raw = r
		d.parkRaw(j, reason)
		return
	}
	j.d = dl
	if len(p.held) > 0 {
		p.held = append(p.held, j)
		return
	}
	d.holdOrAdmit(j)
}

// holdOrAdmit admits j if it is due, else holds it (and everything after
// it on its partition) and pauses the partition until it is. A tier record
// due much later than its tier's delay is appended to the tier again
// instead (retry.Hop), so it never holds the records behind it for long.
func (d *Dispatcher) holdOrAdmit(j *job) {
	now := d.clock.Now()
	due := time.UnixMilli(j.d.NotBeforeMs)
	p := j.p
	if j.d.NotBeforeMs == 0 || !due.After(now) {
		if p.tier >= 0 && j.d.NotBeforeMs != 0 {
			d.m.lateness.Record(d.work, now.Sub(due).Seconds(),
				metric.WithAttributes(attribute.String("tier", topics.TierName(topics.RetryTiers[p.tier]))))
		}
		d.admit(j)
		return
	}
	if p.tier >= 0 && retry.Hop(p.tier, due.Sub(now)) {
		d.stats.Hops++
		d.settle(j, &kgo.Record{Topic: p.topic, Key: []byte(j.d.EndpointId), Value: mustMarshal(j.d)})
		return
	}
	p.held = append(p.held, j)
	if len(p.held) == 1 {
		d.consumer.PauseFetchPartitions(map[string][]int32{p.topic: {p.partition}})
		p.heldTimer = d.clock.AfterFunc(due.Sub(now), func() { d.locked(func() { d.release(p) }) })
	}
}

// release admits the held records of p that are due and resumes fetching
// when none is left.
func (d *Dispatcher) release(p *partition) {
	if p.draining {
		return
	}
	held := p.held
	p.held, p.heldTimer = nil, nil
	for i, j := range held {
		if len(p.held) > 0 {
			p.held = append(p.held, held[i:]...)
			return
		}
		d.holdOrAdmit(j)
	}
	if len(p.held) == 0 {
		d.consumer.ResumeFetchPartitions(map[string][]int32{p.topic: {p.partition}})
	}
}

// admit puts j on its endpoint's queue, or decides its fate when the
// endpoint is unknown or disabled.
func (d *Dispatcher) admit(j *job) {
	ep, ok := d.endpoints.Endpoint(j.d.EndpointId)
	if !ok {
		// The view may trail the router by a moment: a new endpoint's
		// first delivery can arrive before its configuration does.
		d.unknown = append(d.unknown, j)
		select {
		case d.wake <- struct{}{}:
		default:
		}
		return
	}
	d.enqueue(j, ep)
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

// deferJob hands j to the first retry tier: it cannot start soon, and
// holding it would hold the watermark and memory.
func (d *Dispatcher) deferJob(j *job, reason string) {
	c := proto.CloneOf(j.d)
	c.NotBeforeMs = d.clock.Now().Add(topics.RetryTiers[0]).UnixMilli()
	d.stats.Deferred++
	d.m.deferred.Add(d.work, 1, metric.WithAttributes(attribute.String("reason", reason)))
	d.settle(j, &kgo.Record{Topic: d.opts.Names.Retry[0], Key: []byte(c.EndpointId), Value: mustMarshal(c)})
}

// park moves j to the dead-letter topic with its reason.
func (d *Dispatcher) park(j *job, reason string) {
	d.stats.Parked++
	d.m.parked.Add(d.work, 1)
	d.settle(j, d.deadRecord(j, reason))
}

func (d *Dispatcher) deadRecord(j *job, reason string) *kgo.Record {
	c := proto.CloneOf(j.d)
	c.DeadReason = reason
	c.NotBeforeMs = 0
	return &kgo.Record{Topic: d.opts.Names.Dead, Key: []byte(c.EndpointId), Value: mustMarshal(c)}
}

// DeadReasonHeader carries the reason of a dead-lettered record that could
// not be decoded (a decodable one has it in Delivery.dead_reason).
const DeadReasonHeader = "sluice-dead-reason"

// parkRaw moves an undecodable record to the dead-letter topic as it was.
func (d *Dispatcher) parkRaw(j *job, reason string) {
	r := j.raw
	headers := append(append([]kgo.RecordHeader(nil), r.Headers...), kgo.RecordHeader{Key: DeadReasonHeader, Value: []byte(reason)})
	d.stats.Parked++
	d.m.parked.Add(d.work, 1)
	d.settle(j, &kgo.Record{Topic: d.opts.Names.Dead, Key: r.Key, Value: r.Value, Headers: headers})
}

// send queues rec for j (under the lock); the lock holder produces it, and
// j cannot finish before it is acknowledged.
func (d *Dispatcher) send(j *job, rec *kgo.Record) {
	if rec == nil {
		return
	}
	j.acks.Add(1)
	d.outbox = append(d.outbox, outgoing{j, rec})
}

// settle decides j's fate: recs are the last records produced for it, and
// it finishes once they (and any sent before) are acknowledged.
func (d *Dispatcher) settle(j *job, recs ...*kgo.Record) {
	d.activate(j)
	for _, r := range recs {
		d.send(j, r)
	}
	if j.acks.Add(-1) == 0 {
		d.finish(j)
	}
}

func mustMarshal(m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		panic(fmt.Sprintf("dispatch: encoding %T: %v", m, err)) // only for invalid UTF-8 in a string, which decoding already refused
	}
	return b
}

// produce sends o.rec; when the last record of its job is acknowledged the
// job is finished. A failed produce is retried until the work context ends:
// the job then stays unfinished and the next owner of its partition
// delivers it again.
func (d *Dispatcher) produce(o outgoing) {
	d.producer.Produce(d.work, o.rec, func(_ *kgo.Record, err error) {
		if err != nil {
			if d.work.Err() != nil || errors.Is(err, kgo.ErrClientClosed) {
				return
			}
			d.log.Warn("producing; retrying in 1s", "topic", o.rec.Topic, "err", err)
			// Not from this callback: producing here could wait for
			// buffer space only this goroutine would free.
			d.clock.AfterFunc(time.Second, func() { d.produce(o) })
			return
		}
		if o.j.acks.Add(-1) == 0 {
			d.locked(func() { d.finish(o.j) })
		}
	})
}

// finish marks j done and moves its partition's commit mark.
func (d *Dispatcher) finish(j *job) {
	p := j.p
	if j.active {
		p.active--
	}
	d.buffered -= j.size
	d.jobs--
	d.opts.Stage.Progress()
	d.opts.Stage.Owe(d.jobs)
	p.wm.finish(j.offset)
	if !p.revoked {
		if c := p.wm.commit(); c > p.marked {
			p.marked = c
			if p.mark == nil {
				p.mark = map[string]map[int32]kgo.EpochOffset{p.topic: {}}
			}
			p.mark[p.topic][p.partition] = kgo.EpochOffset{Epoch: -1, Offset: c}
			d.consumer.MarkCommitOffsets(p.mark)
		}
	}
	d.checkMemory()
}

// checkMemory pauses fetching above the memory budget and resumes below 90 %
// of it; the gap keeps the consumer from flapping around the line.
func (d *Dispatcher) checkMemory() {
	switch {
	case !d.paused && d.buffered > d.opts.MemoryBudget:
		d.paused = true
		d.consumer.PauseFetchTopics(d.topics...)
		d.log.Info("memory budget reached; fetching paused", "buffered_bytes", d.buffered)
	case d.paused && d.buffered <= d.opts.MemoryBudget/10*9:
		d.paused = false
		d.consumer.ResumeFetchTopics(d.topics...)
		d.log.Info("fetching resumed", "buffered_bytes", d.buffered)
	}
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

// resolve settles jobs whose endpoint was unknown: once the view has caught
// up with every configuration write, an endpoint still unknown was deleted
// and its deliveries are parked.
func (d *Dispatcher) resolve(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.wake:
		}
		syncCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := d.endpoints.Sync(syncCtx)
		cancel()
		d.locked(func() {
			if err != nil {
				d.log.Warn("syncing the configuration view", "err", err)
				select {
				case d.wake <- struct{}{}: // try again
				default:
				}
				return
			}
			jobs := d.unknown
			d.unknown = nil
			for _, j := range jobs {
				if j.p.draining {
					continue
				}
				if ep, ok := d.endpoints.Endpoint(j.d.EndpointId); ok {
					d.enqueue(j, ep)
				} else {
					d.park(j, "endpoint "+j.d.EndpointId+" does not exist")
				}
			}
		})
		if err != nil {
			time.Sleep(time.Second)
		}
	}
}

// dropJobs forgets p's jobs that have not started: its next owner delivers
// them.
func (d *Dispatcher) dropJobs(p *partition) {
	keep := func(jobs []*job) []*job {
		out := jobs[:0]
		for _, j := range jobs {
			if j.p == p {
				d.buffered -= j.size
				d.jobs--
				d.stats.Dropped++
				continue
			}
			out = append(out, j)
		}
		clear(jobs[len(out):])
		return out
	}
	for _, q := range d.queues {
		q.jobs = keep(q.jobs)
		if q.holding == p {
			q.holding = nil
			p.orderedHold = 0
		}
		if q.retryTimer != nil && len(q.jobs) == 0 {
			q.retryTimer.Stop()
			q.retryTimer = nil
		}
	}
	d.unknown = keep(d.unknown)
	for _, j := range p.held {
		d.buffered -= j.size
		d.jobs--
		d.stats.Dropped++
	}
	d.opts.Stage.Owe(d.jobs)
	p.held = nil
	if p.heldTimer != nil {
		p.heldTimer.Stop()
		p.heldTimer = nil
	}
	d.checkMemory()
}

// assigned starts tracking newly assigned partitions.
func (d *Dispatcher) assigned(_ context.Context, _ *kgo.Client, assigned map[string][]int32) {
	d.locked(func() {
		for t, ps := range assigned {
			for _, n := range ps {
				tp := topicPartition{t, n}
				d.parts[tp] = &partition{topicPartition: tp, tier: d.tierOf(t), wm: newWatermark(), marked: -1}
			}
		}
	})
}

// tierOf is the retry tier index of topic, -1 for the deliveries topic.
func (d *Dispatcher) tierOf(topic string) int {
	for i, t := range d.opts.Names.Retry {
		if t == topic {
			return i
		}
	}
	return -1
}

// revoked gives partitions up: their waiting deliveries are dropped, their
// requests in flight get RevokeGrace to finish, and the watermark is
// committed. Offsets are never marked after this returns.
func (d *Dispatcher) revoked(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
	ps := d.drain(revoked)
	if len(ps) == 0 {
		return
	}
	graceCtx, cancel := context.WithTimeout(ctx, d.opts.RevokeGrace)
	d.waitIdle(graceCtx, ps)
	cancel()
	d.forget(ps)
	if err := cl.CommitMarkedOffsets(ctx); err != nil {
		d.log.Warn("committing revoked partitions", "err", err)
	}
}

// lost gives partitions up without committing: the group has already
// handed them to someone else.
func (d *Dispatcher) lost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	d.forget(d.drain(lost))
}

func (d *Dispatcher) drain(tps map[string][]int32) []*partition {
	var ps []*partition
	d.locked(func() {
		for t, ns := range tps {
			for _, n := range ns {
				if p := d.parts[topicPartition{t, n}]; p != nil && !p.draining {
					p.draining = true
					d.dropJobs(p)
					ps = append(ps, p)
				}
			}
		}
	})
	return ps
}

func (d *Dispatcher) forget(ps []*partition) {
	d.locked(func() {
		resume := map[string][]int32{}
		for _, p := range ps {
			p.revoked = true
			delete(d.parts, p.topicPartition)
			resume[p.topic] = append(resume[p.topic], p.partition)
		}
		// A partition paused for a held record would stay paused if it
		// came back to this member.
		d.consumer.ResumeFetchPartitions(resume)
	})
}

// waitIdle waits until the given partitions (all when nil) have no job
// started and unfinished, or ctx ends.
func (d *Dispatcher) waitIdle(ctx context.Context, ps []*partition) {
	for {
		busy := 0
		d.locked(func() {
			if ps == nil {
				for _, p := range d.parts {
					busy += p.active
				}
				return
			}
			for _, p := range ps {
				busy += p.active
			}
		})
		if busy == 0 {
			return
		}
		select {
		case <-ctx.Done():
			d.log.Warn("giving up on work in flight; it will be delivered again", "jobs", busy)
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
}
