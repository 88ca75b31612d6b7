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
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/pkg/kafkax"
	"github.com/sluicehq/sluice/pkg/topics"
)

// Attempter makes one HTTP attempt of a delivery to its endpoint and
// describes it. It is called from many goroutines at once.
type Attempter interface {
	Attempt(d *sluicev1.Delivery, ep *sluicev1.Endpoint) *sluicev1.Attempt
}

// Endpoints is what the dispatcher needs of the configuration view.
type Endpoints interface {
	Endpoint(id string) (*sluicev1.Endpoint, bool)
	// Sync returns once the view holds every configuration write made
	// before the call.
	Sync(ctx context.Context) error
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
	// Clock tells the time; nil means the real one.
	Clock Clock
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
	ready    []*queue // queues waiting for a process-wide request slot
	running  int      // requests in flight, process-wide
	buffered int64    // bytes of jobs taken and not finished or dropped
	paused   bool     // fetching paused for memory
	unknown  []*job   // jobs whose endpoint the view does not know yet
	wake     chan struct{}
	outbox   []outgoing // records to produce once the lock is released
	stats    Stats
}

// Stats count what the dispatcher did, for tests and metrics.
type Stats struct {
	Taken, Attempts, Deferred, Parked, Dropped int64
}

type topicPartition struct {
	topic     string
	partition int32
}

// partition is the state of one assigned partition.
type partition struct {
	topicPartition
	wm watermark
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
}

// queue is one endpoint's waiting deliveries and its limits.
type queue struct {
	id      string
	jobs    []*job
	running int
	bucket  bucket
	timer   Timer // set while waiting for a rate-limit token
	waiting bool  // in Dispatcher.ready
}

// job is one record taken from a partition.
type job struct {
	p      *partition
	offset int64
	size   int64
	d      *sluicev1.Delivery
	raw    *kgo.Record // set only when the record could not be decoded
	queued time.Time
	acks   atomic.Int32
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
		wake: make(chan struct{}, 1),
	}
	if d.clock == nil {
		d.clock = realClock{}
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
	var wg sync.WaitGroup
	wg.Go(func() { d.sweep(ctx) })
	wg.Go(func() { d.resolve(ctx) })
	for {
		fetches := cl.PollRecords(ctx, d.opts.PollRecords)
		if ctx.Err() != nil || errors.Is(fetches.Err0(), kgo.ErrClientClosed) {
			break
		}
		fetches.EachError(func(t string, p int32, err error) {
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
	d.buffered += j.size
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
// it on its partition) and pauses the partition until it is.
func (d *Dispatcher) holdOrAdmit(j *job) {
	now := d.clock.Now()
	due := time.UnixMilli(j.d.NotBeforeMs)
	if j.d.NotBeforeMs == 0 || !due.After(now) {
		d.admit(j)
		return
	}
	p := j.p
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
	q := d.queues[ep.Id]
	if q == nil {
		q = &queue{id: ep.Id}
		d.queues[ep.Id] = q
	}
	q.bucket.setRate(ep.RateLimit)
	if len(q.jobs) >= d.queueCap(ep) {
		d.deferJob(j, "queue full")
		return
	}
	j.queued = d.clock.Now()
	q.jobs = append(q.jobs, j)
	d.pump(q)
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
	if len(q.jobs) == 0 {
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
	q.bucket.setRate(ep.RateLimit)
	limit := d.inFlightLimit(ep)
	for len(q.jobs) > 0 && q.running < limit {
		if d.running >= d.opts.MaxInFlight {
			if !q.waiting {
				q.waiting = true
				d.ready = append(d.ready, q)
			}
			return
		}
		now := d.clock.Now()
		if !q.bucket.take(now) {
			if q.timer == nil {
				q.timer = d.clock.AfterFunc(q.bucket.wait(now), func() {
					d.locked(func() { q.timer = nil; d.pump(q) })
				})
			}
			return
		}
		j := q.jobs[0]
		q.jobs[0] = nil
		q.jobs = q.jobs[1:]
		q.running++
		d.running++
		j.p.active++
		go d.attempt(j, q, ep)
	}
}

// attempt runs one HTTP attempt and records it.
func (d *Dispatcher) attempt(j *job, q *queue, ep *sluicev1.Endpoint) {
	a := d.attempter.Attempt(j.d, ep)
	d.m.attempts.Add(d.work, 1, metric.WithAttributes(attribute.String("outcome", a.Outcome.Label())))
	d.m.latency.Record(d.work, float64(a.LatencyUs)/1e6)
	d.locked(func() {
		q.running--
		d.stats.Attempts++
		d.pump(q)
	})
	b, err := proto.Marshal(a)
	if err != nil { // cannot happen for a well-formed message
		d.log.Error("encoding an attempt record", "attempt_id", a.AttemptId, "err", err)
	}
	rec := &kgo.Record{Topic: d.opts.Names.Attempts, Key: []byte(j.d.EndpointId), Value: b}
	// The request slot is held until the attempt record is buffered: when
	// the attempt log lags by the producer's whole buffer, new requests
	// wait rather than memory growing.
	j.acks.Store(1)
	d.produce(outgoing{j, rec})
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
	d.send(j, &kgo.Record{Topic: d.opts.Names.Retry[0], Key: []byte(c.EndpointId), Value: mustMarshal(c)})
}

// park moves j to the dead-letter topic with its reason.
func (d *Dispatcher) park(j *job, reason string) {
	c := proto.CloneOf(j.d)
	c.DeadReason = reason
	d.stats.Parked++
	d.m.parked.Add(d.work, 1)
	d.send(j, &kgo.Record{Topic: d.opts.Names.Dead, Key: []byte(c.EndpointId), Value: mustMarshal(c)})
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
	d.send(j, &kgo.Record{Topic: d.opts.Names.Dead, Key: r.Key, Value: r.Value, Headers: headers})
}

// send queues rec for j (under the lock); the lock holder produces it.
func (d *Dispatcher) send(j *job, rec *kgo.Record) {
	j.p.active++
	j.acks.Add(1)
	d.outbox = append(d.outbox, outgoing{j, rec})
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
	p.active--
	d.buffered -= j.size
	p.wm.finish(j.offset)
	if !p.revoked {
		if c := p.wm.commit(); c > p.marked {
			p.marked = c
			d.consumer.MarkCommitOffsets(map[string]map[int32]kgo.EpochOffset{
				p.topic: {p.partition: {Epoch: -1, Offset: c}}})
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
				for len(q.jobs) > 0 && now.Sub(q.jobs[0].queued) > d.opts.MaxQueueWait {
					j := q.jobs[0]
					q.jobs[0] = nil
					q.jobs = q.jobs[1:]
					d.deferJob(j, "waited too long")
				}
				if len(q.jobs) == 0 && q.running == 0 && q.timer == nil && !q.waiting {
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
	}
	d.unknown = keep(d.unknown)
	for _, j := range p.held {
		d.buffered -= j.size
		d.stats.Dropped++
	}
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
				d.parts[tp] = &partition{topicPartition: tp, wm: newWatermark(), marked: -1}
			}
		}
	})
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
