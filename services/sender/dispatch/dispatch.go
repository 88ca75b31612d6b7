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
//
// The files follow that life: consume.go polls, takes and holds records
// and watches the memory budget; queue.go queues them per endpoint and
// starts their attempts; outcome.go decides what an attempt leads to;
// settle.go produces what a job leads to and finishes it, moving the
// watermark; rebalance.go hands partitions over.
package dispatch

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/metric"

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

// Forgetter is an Attempter that keeps something per endpoint (the
// deliverer's signers): the dispatcher tells it when it forgets an idle
// endpoint, and so it forgets deleted ones too.
type Forgetter interface {
	Forget(endpointID string)
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
	// TenantInFlight bounds the requests of one tenant's endpoints in the
	// process; 0 means a quarter of MaxInFlight (at least one).
	TenantInFlight int
	// EndpointInFlight is the concurrency of an endpoint that sets none.
	EndpointInFlight int
	// QueueCap bounds the deliveries waiting in one endpoint's queue.
	QueueCap int
	// MaxQueueWait is how long a delivery may wait in its endpoint's queue
	// before it is moved to the first retry tier.
	MaxQueueWait time.Duration
	// MemoryBudget bounds the bytes of deliveries held; above it fetching
	// pauses. Jobs of the ordered topic do not count.
	MemoryBudget int64
	// OrderedBudget bounds the bytes of the ordered topic's jobs; above it
	// a lane that holds a job takes no more (lane.go).
	OrderedBudget int64
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

// Dispatcher runs the consumer group on the deliveries topic, the ordered
// topic and the retry tiers.
type Dispatcher struct {
	opts      Options
	endpoints Endpoints
	attempter Attempter
	producer  *kgo.Client
	consumer  *kgo.Client
	log       *slog.Logger
	clock     Clock
	topics    []string // consumed: deliveries, ordered, then the retry tiers
	// lag reports the consumer lag of every partition consumed, from each
	// poll. A retry tier's partition holding a record not due yet is
	// paused, so its lag is expected and stays at its last fetched value.
	lag *kafkax.Lag
	// pausable are the topics the memory budget pauses: all but the
	// ordered one.
	pausable []string
	// work is the context of work in flight: it outlives the consume
	// context by the shutdown deadline.
	work context.Context
	// own are the goroutines and timers the dispatcher starts besides its
	// loops (owned.go); Run stops and waits for them before its last
	// commit.
	own owned
	m   instruments

	mu     sync.Mutex
	parts  map[topicPartition]*partition
	queues map[string]*queue
	// ready are the queues waiting for a request slot, by tenant, in the
	// order they began waiting; turns are the tenants with waiting queues,
	// the next to be served first (fairness.go).
	ready map[string][]*queue
	turns []string
	// tenantRunning counts each tenant's requests in flight.
	tenantRunning map[string]int
	running       int   // requests in flight, process-wide
	buffered      int64 // bytes of jobs taken and not finished or dropped
	// orderedBuffered is buffered for the jobs of the ordered topic.
	orderedBuffered int64
	jobs            int    // jobs taken and not finished or dropped (health)
	paused          bool   // fetching paused for memory
	unknown         []*job // jobs whose endpoint the view does not know yet
	// unknownLanes are lanes whose head's endpoint the view does not know
	// yet.
	unknownLanes map[*lane]struct{}
	writing      map[string]bool // endpoints with a configuration write under way
	wake         chan struct{}
	// pollCancel ends the poll in progress (nil between polls); pollWoken
	// says a poll should end at once: a lane waits for a rewind, which
	// only the poll loop makes (lane.go).
	pollCancel context.CancelFunc
	pollWoken  bool
	outbox     []outgoing // records to produce once the lock is released
	stats      Stats
}

// Stats count what the dispatcher did, for tests and metrics.
type Stats struct {
	// Taken counts records taken from Kafka, Finished those whose every
	// produced record was acknowledged (the watermark may pass them).
	Taken, Finished, Attempts, Deferred, Parked, Dropped int64
	// Moved counts deliveries of ordered endpoints moved to the ordered
	// topic, LaneCloses lanes closed for want of room, Rewinds ordered
	// partitions read again from a reopened lane's cursor, MemoryPauses the
	// times the memory budget paused fetching.
	Moved, LaneCloses, Rewinds, MemoryPauses int64
	// Shrunk counts records Kafka refused for good and made again smaller
	// (refused.go), Disabled the endpoints this sender set out to disable
	// (410, or failing for DisableAfter).
	Shrunk, Disabled int64
	// Buffered and OrderedBuffered are the bytes held now, against the
	// memory budget and the ordered budget.
	Buffered, OrderedBuffered int64
	// Retried counts deliveries sent to a retry tier after a failure,
	// Exhausted those dead-lettered after their last attempt, Hops tier
	// records re-appended to their tier.
	Retried, Exhausted, Hops int64
}

// New builds a dispatcher and its consumer. work is the context in-flight
// work runs under; it should outlive Run's context by the shutdown deadline.
func New(work context.Context, opts Options, endpoints Endpoints, attempter Attempter,
	producer *kgo.Client, log *slog.Logger, meter metric.Meter) (*Dispatcher, error) {
	d := &Dispatcher{
		opts: opts, endpoints: endpoints, attempter: attempter, producer: producer, log: log,
		clock: opts.Clock, work: work,
		parts: map[topicPartition]*partition{}, queues: map[string]*queue{},
		writing: map[string]bool{}, wake: make(chan struct{}, 1), unknownLanes: map[*lane]struct{}{},
		ready: map[string][]*queue{}, tenantRunning: map[string]int{},
	}
	if d.clock == nil {
		d.clock = realClock{}
	}
	if d.opts.TenantInFlight <= 0 {
		d.opts.TenantInFlight = max(1, d.opts.MaxInFlight/4)
	}
	if d.opts.Rand == nil {
		d.opts.Rand = rand.Float64
	}
	if d.opts.Stage == nil {
		d.opts.Stage = health.NewRegistry(health.DefaultStuckAfter, nil).Stage("dispatcher")
	}
	d.pausable = append([]string{opts.Names.Deliveries}, opts.Names.Retry...)
	d.topics = append([]string{opts.Names.Deliveries, opts.Names.Ordered}, opts.Names.Retry...)
	if err := d.m.init(meter, d); err != nil {
		return nil, err
	}
	lag, err := kafkax.NewLag(meter, opts.Group)
	if err != nil {
		return nil, err
	}
	cl, err := kafkax.NewConsumer(opts.Kafka, opts.Group, d.topics,
		kgo.OnPartitionsAssigned(d.assigned),
		kgo.OnPartitionsRevoked(d.revoked),
		kgo.OnPartitionsLost(d.lost),
	)
	if err != nil {
		_ = lag.Close()
		return nil, err
	}
	d.consumer, d.lag = cl, lag
	return d, nil
}

// Consumer is the dispatcher's consumer client, for readiness checks.
func (d *Dispatcher) Consumer() *kgo.Client { return d.consumer }

// Stats returns what the dispatcher did so far.
func (d *Dispatcher) Stats() Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.stats
	s.Buffered, s.OrderedBuffered = d.buffered, d.orderedBuffered
	return s
}

// Close leaves the group and closes the consumer.
func (d *Dispatcher) Close() {
	d.consumer.Close()
	_ = d.lag.Close()
}

// spawn runs fn in a goroutine Run waits for when it stops; false once Run
// has closed the set (fn is not run).
func (d *Dispatcher) spawn(fn func()) bool { return d.own.spawn(fn) }

// afterFunc runs fn after dur on the dispatcher's clock, in a goroutine Run
// waits for; Run stops the timers not fired yet when it ends.
func (d *Dispatcher) afterFunc(dur time.Duration, fn func()) Timer {
	return d.own.afterFunc(d.clock, dur, fn)
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
