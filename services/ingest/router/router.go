package router

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/pkg/dedup"
	"github.com/sluicehq/sluice/pkg/eventrecord"
	"github.com/sluicehq/sluice/pkg/health"
	"github.com/sluicehq/sluice/pkg/ids"
	"github.com/sluicehq/sluice/pkg/kafkax"
	"github.com/sluicehq/sluice/pkg/telemetry"
	"github.com/sluicehq/sluice/pkg/topics"
)

// Options are the router's settings.
type Options struct {
	Kafka  kafkax.Config
	Names  topics.Names
	Group  string
	Limits eventrecord.Limits
	// DedupWindow is how long a repeated event id of a tenant is dropped.
	DedupWindow time.Duration
	// DedupMaxEntries bounds the ids remembered per events partition.
	DedupMaxEntries int
	// MaxBatch bounds the events of one transaction.
	MaxBatch int
	// TxnBytes bounds the bytes a transaction produces: an event whose
	// fan-out would take it past this is split, the rest of its fan-out
	// carried by a continuation record routed in a later transaction.
	// Zero means DefaultTxnBytes.
	TxnBytes int
	// TransactionTimeout overrides kafkax's (20 s), for tests.
	TransactionTimeout time.Duration
	// Meter records the router's metrics; nil records none.
	Meter metric.Meter
	// Stage is reported to (package health); nil reports nowhere.
	Stage *health.Stage
	// Tracing makes the span of each event's processing; nil is tracing
	// off (a traceparent the event came with is still passed on).
	Tracing *telemetry.Tracing
	// RebuildTimeout bounds one attempt at rebuilding a partition's dedup
	// state; zero means DefaultRebuildTimeout.
	RebuildTimeout time.Duration
	// rebuild replaces dedup.Rebuild in tests that make it fail.
	rebuild func(ctx context.Context, partition int32) (*dedup.Set, int, error)
}

// DefaultTxnBytes bounds what one routing transaction produces: 16 MiB
// takes well under a second to write on a loaded broker, far inside the
// 20 s transaction timeout, and holds the client's buffer to that much
// whatever a tenant's fan-out.
const DefaultTxnBytes = 16 << 20

// MaxRecordBytes is the largest record the router produces: franz-go's
// default producer batch limit (1,000,012 bytes), below the broker's
// default message.max.bytes (1,048,588), so no topic needs its limit
// raised.
const MaxRecordBytes = 1_000_012

// MaxFanoutIDs bounds the endpoint ids one event-log entry or continuation
// carries: the API's hard upper bound on a tenant's endpoints.
const MaxFanoutIDs = 10_000

// The router's records beyond the event's data: an endpoint id costs at
// most 40 bytes in a list (ids are 29 today, plus protobuf framing), and
// 16 KiB covers every other field (tenant, event id, type, headers).
const (
	fanoutIDBytes  = 40
	recordOverhead = 16 << 10
)

// MaxDataBytes is the largest event data the router can route: its largest
// record, an event-log entry or a continuation naming MaxFanoutIDs
// endpoints beside the data, must fit in MaxRecordBytes, or a produce
// would fail and the transaction abort forever. 583,628 bytes.
const MaxDataBytes = MaxRecordBytes - MaxFanoutIDs*fanoutIDBytes - recordOverhead

// pollChunk is how many records one poll inside a transaction takes: the
// transaction takes more only while under TxnBytes, so a chunk is the most
// a transaction can overshoot by (32 events of a few records each).
const pollChunk = 32

// DefaultRebuildTimeout bounds the first rebuild attempt: it reads the
// dedup window of one changelog partition (7.2 M markers at 1,000 events/s
// over 24 h, a few hundred MB) and may wait out a transaction the previous
// owner left open (aborted by the broker after the 20 s transaction
// timeout); two minutes covers both with room, and a retry gets more.
const DefaultRebuildTimeout = 2 * time.Minute

// Rebuilds of different partitions run side by side, at most this many: a
// rebalance hands a new member several partitions at once, and each
// rebuild is mostly waiting on the broker.
const maxParallelRebuilds = 4

// Retries of a failed rebuild back off from 250 ms, doubling, to 30 s:
// quick when a broker restart was the cause, gentle on a broker that keeps
// failing.
const (
	rebuildBackoffMin = 250 * time.Millisecond
	rebuildBackoffMax = 30 * time.Second
)

// Router fans events out to deliveries, one Kafka transaction per batch:
// the deliveries, the event-log entries, the rejected copies, the dedup
// markers and the consumed offsets commit together or not at all, so a
// read_committed reader never sees a delivery twice, even when the router
// dies mid-batch (exactly-once fan-out, DESIGN §5).
type Router struct {
	opts  Options
	index *Index
	log   *slog.Logger
	sess  *kgo.GroupTransactSession
	stage *health.Stage
	// lag reports the consumer lag of the events partitions, from each poll.
	lag *kafkax.Lag

	mu    sync.Mutex
	parts map[int32]*partition // assigned events partitions
	stats Stats
	// poison holds the records whose fan-out the client or broker refused
	// as too large, by partition and offset, with the error: routed again,
	// they are rejected with that reason rather than abort forever.
	poison map[int32]map[int64]string
	// suspects are the records of an aborted transaction whose fan-out
	// failed as too large. The broker refuses a whole produce batch, which
	// may hold other events' records too, so a suspect is not yet known to
	// be poison: until none is left, transactions take one event each, and
	// one that still fails alone is poison.
	suspects map[int32]map[int64]string
	// wake tells the rebuilder that a partition needs its dedup state.
	wake chan struct{}

	tracer trace.Tracer

	txnTime         metric.Float64Histogram
	txnSize         metric.Int64Histogram
	outcomes        metric.Int64Counter
	rebuildFailures metric.Int64Counter
	evictions       metric.Int64Counter
	commit          metric.MeasurementOption
	abort           metric.MeasurementOption
}

// partition is the router's state of one assigned events partition. Its
// records are not fetched (the partition is paused) until set is rebuilt:
// an event routed without the ids seen before it could be fanned out twice.
type partition struct {
	n   int32
	set *dedup.Set // nil until rebuilt
	// rebuilding is set while a rebuild runs; cancel stops it when the
	// partition is revoked meanwhile.
	rebuilding bool
	cancel     context.CancelFunc
	// evicted is set.Evicted() when last exported.
	evicted uint64
	// failures counts the rebuilds that failed in a row; the next is not
	// tried before retryAt.
	failures int
	retryAt  time.Time
	lastErr  error
}

// Stats count what the router did, for tests and metrics. Continued counts
// the continuation records written for fan-outs split across transactions;
// MaxTxnBytes is the most bytes one committed transaction produced.
type Stats struct {
	Events, Deliveries, Parked, Rejected, Duplicates, Aborted, Continued int64
	MaxTxnBytes                                                          int64
}

// New builds a router over index. Run starts it.
func New(opts Options, index *Index, log *slog.Logger) (*Router, error) {
	if d := opts.Limits.MaxDataBytes; d > MaxDataBytes {
		return nil, fmt.Errorf("router: events of up to %d bytes cannot be routed: with %d endpoint ids beside it an "+
			"event-log entry would exceed the %d-byte record limit; the most is %d", d, MaxFanoutIDs, MaxRecordBytes, MaxDataBytes)
	}
	if len(opts.Limits.AuthKey) == 0 {
		return nil, errors.New("router: no record key (secretbox.Box.RecordKey): continuations and operational events could not be authenticated")
	}
	if opts.TxnBytes <= 0 {
		opts.TxnBytes = DefaultTxnBytes
	}
	r := &Router{opts: opts, index: index, log: log, parts: map[int32]*partition{}, wake: make(chan struct{}, 1),
		stage: opts.Stage, poison: map[int32]map[int64]string{}, suspects: map[int32]map[int64]string{}}
	if r.stage == nil {
		r.stage = health.NewRegistry(health.DefaultStuckAfter, nil).Stage("router")
	}
	if r.opts.RebuildTimeout <= 0 {
		r.opts.RebuildTimeout = DefaultRebuildTimeout
	}
	if r.opts.rebuild == nil {
		r.opts.rebuild = func(ctx context.Context, p int32) (*dedup.Set, int, error) {
			return dedup.Rebuild(ctx, opts.Kafka, opts.Names.Dedup, p, opts.DedupWindow, opts.DedupMaxEntries)
		}
	}
	if err := r.instruments(opts.Meter); err != nil {
		return nil, err
	}
	lag, err := kafkax.NewLag(opts.Meter, opts.Group)
	if err != nil {
		return nil, err
	}
	r.lag = lag
	if r.opts.Tracing == nil {
		r.opts.Tracing = telemetry.Disabled()
	}
	r.tracer = r.opts.Tracing.Tracer("github.com/sluicehq/sluice/services/ingest/router")
	txnID := opts.Names.Events + ".router." + ids.New("r")
	extra := []kgo.Opt{
		// Dedup markers and continuations go to the partition number of
		// their event, set explicitly; every other record is partitioned
		// by key.
		kgo.RecordPartitioner(explicitPartitions(dedup.Partitioner(opts.Names.Dedup), opts.Names.Events)),
		kgo.OnPartitionsAssigned(r.assigned),
		kgo.OnPartitionsRevoked(r.dropped),
		kgo.OnPartitionsLost(r.dropped),
	}
	if opts.TransactionTimeout > 0 {
		extra = append(extra, kgo.TransactionTimeout(opts.TransactionTimeout))
	}
	sess, err := kafkax.NewTransactSession(opts.Kafka, txnID, opts.Group, []string{opts.Names.Events}, extra...)
	if err != nil {
		_ = lag.Close()
		return nil, err
	}
	r.sess = sess
	return r, nil
}

// instruments makes the router's metrics: how long a transaction takes from
// begin to commit (the bulk of an event's latency to its deliveries), how
// many events it holds, and how many commit or abort.
func (r *Router) instruments(m metric.Meter) error {
	if m == nil {
		m = noop.NewMeterProvider().Meter("router")
	}
	var err error
	if r.txnTime, err = m.Float64Histogram("sluice.router.transaction.duration", metric.WithUnit("s"),
		metric.WithDescription("time from beginning a routing transaction to its commit or abort")); err != nil {
		return err
	}
	if r.txnSize, err = m.Int64Histogram("sluice.router.transaction.events",
		metric.WithDescription("events routed in one transaction")); err != nil {
		return err
	}
	if r.outcomes, err = m.Int64Counter("sluice.router.transactions",
		metric.WithDescription("routing transactions by result (committed, aborted)")); err != nil {
		return err
	}
	if r.rebuildFailures, err = m.Int64Counter("sluice.router.dedup.rebuild.failures",
		metric.WithDescription("attempts at rebuilding a partition's dedup state that failed and will be retried")); err != nil {
		return err
	}
	if r.evictions, err = m.Int64Counter("sluice.dedup.evictions",
		metric.WithDescription("event ids the router forgot before the dedup window ended (dedup-max-entries too small for the rate)")); err != nil {
		return err
	}
	if _, err = m.Float64ObservableGauge("sluice.dedup.effective_window", metric.WithUnit("s"),
		metric.WithDescription("how far back the router still catches duplicates, per events partition it owns: the dedup window unless ids were evicted within it"),
		metric.WithFloat64Callback(func(_ context.Context, o metric.Float64Observer) error {
			now := time.Now()
			r.mu.Lock()
			defer r.mu.Unlock()
			for p, st := range r.parts {
				if st.set != nil {
					o.Observe(st.set.EffectiveWindow(now).Seconds(), metric.WithAttributes(
						attribute.String("reader", "router"), attribute.Int("partition", int(p))))
				}
			}
			return nil
		})); err != nil {
		return err
	}
	r.commit = metric.WithAttributeSet(attribute.NewSet(attribute.String("result", "committed")))
	r.abort = metric.WithAttributeSet(attribute.NewSet(attribute.String("result", "aborted")))
	return nil
}

// assigned takes newly assigned partitions: it pauses them and hands their
// dedup rebuild to the rebuilder. Nothing here waits on the broker: a
// franz-go group callback that blocks holds up the group, and one that
// calls back into the group (LeaveGroup) deadlocks it.
func (r *Router) assigned(_ context.Context, cl *kgo.Client, assigned map[string][]int32) {
	ps := assigned[r.opts.Names.Events]
	if len(ps) == 0 {
		return
	}
	// Paused before its first fetch: buffered records of a paused
	// partition are never returned, and are fetched again on resume.
	cl.PauseFetchPartitions(map[string][]int32{r.opts.Names.Events: ps})
	r.mu.Lock()
	for _, p := range ps {
		if old := r.parts[p]; old != nil && old.cancel != nil {
			old.cancel()
		}
		r.parts[p] = &partition{n: p}
	}
	r.reportLocked()
	r.mu.Unlock()
	r.kick()
}

func (r *Router) dropped(_ context.Context, cl *kgo.Client, lost map[string][]int32) {
	ps := lost[r.opts.Names.Events]
	r.lag.Forget(lost)
	r.mu.Lock()
	for _, p := range ps {
		if st := r.parts[p]; st != nil && st.cancel != nil {
			st.cancel()
		}
		delete(r.parts, p)
		delete(r.poison, p)
		delete(r.suspects, p)
	}
	r.reportLocked()
	r.mu.Unlock()
	// Not ours any more: no pause should outlive the assignment.
	cl.ResumeFetchPartitions(map[string][]int32{r.opts.Names.Events: ps})
}

// kick wakes the rebuilder without blocking.
func (r *Router) kick() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// rebuilder rebuilds the dedup state of every assigned partition that lacks
// it, at most maxParallelRebuilds at once, retrying failures with backoff
// until the partition is revoked or ctx ends. It returns once ctx has
// ended and every rebuild it started has returned.
func (r *Router) rebuilder(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		var start []*partition
		next := time.Duration(-1)
		now := time.Now()
		r.mu.Lock()
		running := 0
		for _, st := range r.parts {
			if st.rebuilding {
				running++
			}
		}
		for _, st := range r.parts {
			if st.set != nil || st.rebuilding {
				continue
			}
			if wait := st.retryAt.Sub(now); wait > 0 {
				if next < 0 || wait < next {
					next = wait
				}
				continue
			}
			if running+len(start) < maxParallelRebuilds {
				// A rebuild that ran out of time gets twice as long next
				// time, up to 8×: a partition with more markers in its
				// window than one attempt can read is not retried in vain.
				pctx, cancel := context.WithTimeout(ctx, r.opts.RebuildTimeout<<min(st.failures, 3))
				st.rebuilding, st.cancel = true, cancel
				start = append(start, st)
				wg.Go(func() { r.rebuildOne(pctx, cancel, st) })
			}
		}
		r.mu.Unlock()
		if next >= 0 {
			timer.Reset(next)
		}
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		case <-timer.C:
		}
	}
}

// rebuildOne rebuilds st's dedup state and, if st is still assigned, resumes
// fetching it; a failure is logged, counted, and retried later.
func (r *Router) rebuildOne(ctx context.Context, cancel context.CancelFunc, st *partition) {
	defer r.kick()
	defer cancel()
	began := time.Now()
	set, n, err := r.opts.rebuild(ctx, st.n)
	r.mu.Lock()
	defer r.mu.Unlock()
	st.rebuilding, st.cancel = false, nil
	if r.parts[st.n] != st {
		return // revoked meanwhile; a later assignment starts afresh
	}
	if err != nil {
		st.failures++
		st.lastErr = err
		backoff := min(rebuildBackoffMin<<min(st.failures-1, 16), rebuildBackoffMax)
		backoff = backoff/2 + rand.N(backoff/2+1)
		st.retryAt = time.Now().Add(backoff)
		r.rebuildFailures.Add(context.WithoutCancel(ctx), 1)
		r.log.Warn("rebuilding dedup state failed; the partition stays paused and the rebuild is retried",
			"partition", st.n, "failures", st.failures, "retry_in", backoff.Round(time.Millisecond), "err", err)
		r.reportLocked()
		return
	}
	st.set, st.failures, st.lastErr = set, 0, nil
	r.checkWindowLocked(ctx, st, time.Now())
	r.sess.Client().ResumeFetchPartitions(map[string][]int32{r.opts.Names.Events: {st.n}})
	r.stage.Progress()
	r.reportLocked()
	r.log.Info("dedup state rebuilt", "partition", st.n, "markers", n, "ids", set.Len(),
		"took", time.Since(began).Round(time.Millisecond))
}

// checkWindowLocked exports the ids st's set evicted since last time, and
// logs when its effective window falls below the dedup window or is whole
// again (once per change, not per event).
func (r *Router) checkWindowLocked(ctx context.Context, st *partition, now time.Time) {
	if n := st.set.Evicted(); n > st.evicted {
		r.evictions.Add(context.WithoutCancel(ctx), int64(n-st.evicted),
			metric.WithAttributes(attribute.Int("partition", int(st.n))))
		st.evicted = n
	}
	short, changed := st.set.CheckWindow(now)
	switch {
	case changed && short:
		r.log.Warn("the router evicts event ids before the dedup window ends: dedup-max-entries is too small for the partition's rate",
			"partition", st.n, "effective_window", st.set.EffectiveWindow(now).Round(time.Second),
			"window", st.set.Window(), "ids", st.set.Len(), "evicted", st.set.Evicted())
	case changed:
		r.log.Info("the router holds the whole dedup window again", "partition", st.n, "window", st.set.Window())
	}
}

// reportLocked tells the stage how the partitions stand: partitions without
// dedup state are owed work, and a partition whose rebuild keeps failing
// makes the router waiting (not ready), naming the cause.
func (r *Router) reportLocked() {
	owed := 0
	var failing []string
	var lastErr error
	for _, st := range r.parts {
		if st.set == nil {
			owed++
			if st.failures > 0 {
				failing = append(failing, fmt.Sprint(st.n))
				lastErr = st.lastErr
			}
		}
	}
	r.stage.Owe(owed)
	if len(failing) > 0 {
		sort.Strings(failing)
		r.stage.Waiting(fmt.Sprintf("dedup state of events partition(s) %s cannot be rebuilt, retrying: %v",
			strings.Join(failing, ","), lastErr))
		return
	}
	r.stage.Running()
}

// Stats returns the counters so far.
func (r *Router) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats
}

// Close leaves the group and releases the clients.
func (r *Router) Close() {
	r.sess.Close()
	_ = r.lag.Close()
}

// Run routes until ctx is done; the batch in flight is then aborted (its
// records are consumed again by whoever owns the partition next). Run waits
// for the rebuilds it started before it returns.
func (r *Router) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { r.rebuilder(ctx) })
	r.mu.Lock()
	r.reportLocked()
	r.mu.Unlock()
	defer r.stage.Stopped("router stopped")

	var matches []*sluicev1.Endpoint
	// Aborts in a row back off: a record that keeps failing must not turn
	// the loop into a hot retry against the broker.
	aborts := 0
	for {
		if aborts > 0 {
			wait := min(100*time.Millisecond<<min(aborts-1, 8), 5*time.Second)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(wait):
			}
		}
		r.stage.Beat()
		r.mu.Lock()
		maxBatch := r.opts.MaxBatch
		if len(r.suspects) > 0 {
			maxBatch = 1 // one event per transaction until the suspects are decided
		}
		r.mu.Unlock()
		pctx, cancel := kafkax.PollContext(ctx)
		fetches := r.sess.PollRecords(pctx, min(pollChunk, maxBatch))
		cancel()
		r.lag.Observe(fetches)
		if ctx.Err() != nil || errors.Is(fetches.Err0(), kgo.ErrClientClosed) {
			return nil
		}
		kafkax.FetchErrors(fetches, func(t string, p int32, err error) {
			r.log.Warn("fetching events", "topic", t, "partition", p, "err", err)
		})
		if fetches.NumRecords() == 0 {
			continue
		}
		began := time.Now()
		if err := r.sess.Begin(); err != nil {
			// Nothing was produced; aborting rewinds the session to the
			// committed offsets, so the polled records are read again.
			r.log.Warn("beginning a routing transaction; its records will be read again", "err", err)
			if _, err := r.sess.End(ctx, kgo.TryAbort); err != nil && ctx.Err() == nil {
				r.log.Warn("aborting after a failed begin", "err", err)
			}
			aborts++
			continue
		}
		b := &batch{added: map[int32][][]byte{}}
		polled := 0
		for {
			polled += fetches.NumRecords()
			fetches.EachRecord(func(rec *kgo.Record) { matches = r.route(ctx, rec, b, matches[:0]) })
			if b.bytes >= r.opts.TxnBytes || polled >= maxBatch || b.failed() {
				break
			}
			// More of what the client has buffered, without waiting for
			// the broker: a transaction takes what is there.
			more, cancel := context.WithTimeout(ctx, time.Millisecond)
			fetches = r.sess.PollRecords(more, min(pollChunk, maxBatch-polled))
			cancel()
			r.lag.Observe(fetches)
			if fetches.NumRecords() == 0 {
				break
			}
		}
		// Every record's promise has run once the flush returns: a record
		// the client failed (too large, a partition that does not exist)
		// must abort the transaction, or End would commit the consumed
		// offsets with the records that did succeed.
		if err := r.sess.Client().Flush(ctx); err != nil && ctx.Err() == nil {
			b.fail(fmt.Errorf("flushing the batch: %w", err))
		}
		end := kgo.TryCommit
		if b.failed() {
			end = kgo.TryAbort
		}
		committed, err := r.sess.End(ctx, end)
		r.txnTime.Record(ctx, time.Since(began).Seconds())
		r.txnSize.Record(ctx, int64(polled))
		if committed {
			r.outcomes.Add(ctx, 1, r.commit)
			r.stage.Progress()
			aborts = 0
		} else {
			r.outcomes.Add(ctx, 1, r.abort)
			aborts++
		}
		r.mu.Lock()
		if committed {
			// Only now are the batch's ids remembered: an aborted batch is
			// consumed again and must not find its own ids already seen.
			for p, keys := range b.added {
				if st := r.parts[p]; st != nil && st.set != nil {
					for _, k := range keys {
						st.set.Add(k, b.at)
					}
					r.checkWindowLocked(ctx, st, b.at)
				}
			}
			r.stats.Events += b.events
			r.stats.Deliveries += b.deliveries
			r.stats.Parked += b.parked
			r.stats.Rejected += b.rejected
			r.stats.Duplicates += b.duplicates
			r.stats.Continued += b.continued
			r.stats.MaxTxnBytes = max(r.stats.MaxTxnBytes, int64(b.bytes))
			for p, offs := range b.rejectedPoison {
				for _, o := range offs {
					delete(r.poison[p], o)
				}
			}
			for p, offs := range b.routed {
				for _, o := range offs {
					forget(r.suspects, p, o)
				}
			}
		} else {
			r.stats.Aborted++
			// Alone in its transaction, a record that fails for its size
			// is poison; among others it is a suspect.
			single := polled == 1
			for p, offs := range b.tooLarge {
				if r.parts[p] == nil {
					continue
				}
				for o, reason := range offs {
					if single {
						forget(r.suspects, p, o)
						remember(r.poison, p, o, reason)
					} else {
						remember(r.suspects, p, o, reason)
					}
				}
			}
		}
		r.mu.Unlock()
		switch {
		case ctx.Err() != nil:
		case b.failed():
			r.log.Warn("routing transaction aborted; its records will be routed again", "err", b.err)
		case err != nil:
			r.log.Warn("routing transaction failed; its records will be routed again", "err", err)
		}
	}
}

// batch is what one transaction produced.
type batch struct {
	at                                                          time.Time
	added                                                       map[int32][][]byte
	events, deliveries, parked, rejected, duplicates, continued int64
	// bytes produced so far, against TxnBytes; fannedOut counts the
	// deliveries (and parked copies) among them, so a transaction splits an
	// event only once it has done some fan-out of its own.
	bytes     int
	fannedOut int
	// rejectedPoison are the poison records this batch rejected, cleared
	// from the router's set once it commits; routed are the records it
	// decided, cleared from the suspects once it commits.
	rejectedPoison map[int32][]int64
	routed         map[int32][]int64
	// tooLarge are the records whose fan-out could not be produced for its
	// size: set by promises, merged into the router's poison set on abort.
	tooLarge map[int32]map[int64]string

	// mu guards err: produce promises run on the client's goroutines.
	mu sync.Mutex
	// err aborts the transaction: a record could not be built or produced,
	// or an event's partition has no dedup state.
	err error
}

func (b *batch) fail(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.err = errors.Join(b.err, err)
}

func (b *batch) failed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err != nil
}

// promise fails the batch when its record could not be produced.
func (b *batch) promise(rec *kgo.Record, err error) {
	if err != nil {
		b.fail(fmt.Errorf("producing to %s: %w", rec.Topic, err))
	}
}

// promiseFor is promise for records made for the event at src: a record
// refused for its size also names src (see Router.suspects), so the event
// is rejected with the reason instead of failing the same way forever.
func (b *batch) promiseFor(src *kgo.Record) func(*kgo.Record, error) {
	p, off := src.Partition, src.Offset
	return func(rec *kgo.Record, err error) {
		if err != nil && errors.Is(err, kerr.MessageTooLarge) {
			b.mu.Lock()
			if b.tooLarge == nil {
				b.tooLarge = map[int32]map[int64]string{}
			}
			if b.tooLarge[p] == nil {
				b.tooLarge[p] = map[int64]string{}
			}
			b.tooLarge[p][off] = fmt.Sprintf("its fan-out record of %d bytes for %s exceeds the producer's or the broker's record limit (max.message.bytes): %v",
				len(rec.Key)+len(rec.Value), rec.Topic, err)
			b.mu.Unlock()
		}
		b.promise(rec, err)
	}
}

func (b *batch) pending(p int32, key []byte) bool {
	for _, k := range b.added[p] {
		if string(k) == string(key) {
			return true
		}
	}
	return false
}

// remember sets m[p][o] to reason.
func remember(m map[int32]map[int64]string, p int32, o int64, reason string) {
	if m[p] == nil {
		m[p] = map[int64]string{}
	}
	m[p][o] = reason
}

// forget deletes m[p][o], and m[p] once empty.
func forget(m map[int32]map[int64]string, p int32, o int64) {
	delete(m[p], o)
	if len(m[p]) == 0 {
		delete(m, p)
	}
}

// route handles one event record inside the open transaction.
func (r *Router) route(ctx context.Context, rec *kgo.Record, b *batch, matches []*sluicev1.Endpoint) []*sluicev1.Endpoint {
	if b.at.IsZero() {
		b.at = time.Now()
	}
	if b.routed == nil {
		b.routed = map[int32][]int64{}
	}
	b.routed[rec.Partition] = append(b.routed[rec.Partition], rec.Offset)
	ctx, span := r.startProcess(ctx, rec)
	if span != nil {
		defer span.End()
	}
	r.mu.Lock()
	poison, isPoison := r.poison[rec.Partition][rec.Offset]
	r.mu.Unlock()
	if isPoison {
		r.reject(ctx, rec, b, poison)
		if b.rejectedPoison == nil {
			b.rejectedPoison = map[int32][]int64{}
		}
		b.rejectedPoison[rec.Partition] = append(b.rejectedPoison[rec.Partition], rec.Offset)
		return matches
	}
	if eventrecord.IsContinuation(rec) {
		return r.routeContinuation(ctx, rec, b, matches)
	}
	ev, err := eventrecord.Decode(rec, r.opts.Limits)
	if err != nil {
		r.reject(ctx, rec, b, reason(err))
		return matches
	}
	key := eventrecord.Key(ev.TenantId, ev.EventId)
	r.mu.Lock()
	var set *dedup.Set
	if st := r.parts[rec.Partition]; st != nil {
		set = st.set
	}
	dup := set != nil && set.Seen(key, b.at)
	r.mu.Unlock()
	if set == nil {
		// Paused until rebuilt, so only a record polled just before a
		// revoke lands here; never route without the ids seen before it.
		b.fail(fmt.Errorf("events partition %d has no dedup state yet", rec.Partition))
		return matches
	}
	if dup || b.pending(rec.Partition, key) {
		b.duplicates++
		return matches
	}
	b.added[rec.Partition] = append(b.added[rec.Partition], key)
	b.events++

	// The fan-out is decided here, once: the event log lists every
	// endpoint, and a continuation carries the ones this transaction
	// could not take.
	matches = r.index.Match(matches, ev.TenantId, ev.Type)
	entry := &sluicev1.EventLogEntry{
		SchemaVersion: sluicev1.SchemaVersion, TenantId: ev.TenantId, EventId: ev.EventId, Type: ev.Type,
		Data: ev.Data, ReceivedAtMs: ev.ReceivedAtMs, Source: ev.Source, FanoutCount: uint32(len(matches)),
	}
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		entry.TraceId = sc.TraceID().String()
	}
	for _, ep := range matches {
		entry.EndpointIds = append(entry.EndpointIds, ep.Id)
	}
	promise := b.promiseFor(rec)
	r.produce(ctx, b, r.opts.Names.EventLog, ev.EventId, entry, promise)
	marker := dedup.Marker(r.opts.Names.Dedup, rec.Partition, key, b.at)
	b.bytes += len(marker.Key) + len(marker.Value)
	r.sess.Produce(ctx, marker, promise)
	r.fanOut(ctx, rec, b, ev, matches, promise)
	return matches
}

// startProcess starts the span of rec's processing, continuing the
// context it came with: the kotel receive span's when tracing is on, else
// the traceparent in its headers (the HTTP API's, or a Kafka producer's
// own). It returns ctx with that span, and the span to end (nil when there
// is none). With tracing off and no traceparent it returns ctx as is and
// allocates nothing.
func (r *Router) startProcess(ctx context.Context, rec *kgo.Record) (context.Context, trace.Span) {
	on := r.opts.Tracing.Enabled()
	pctx := ctx
	switch {
	case rec.Context != nil && trace.SpanContextFromContext(rec.Context).IsValid():
		pctx = trace.ContextWithSpanContext(ctx, trace.SpanContextFromContext(rec.Context))
	case kafkax.HasHeader(rec, "traceparent"):
		pctx = r.opts.Tracing.Propagator.Extract(ctx, kafkax.HeaderCarrier(rec))
	case !on:
		return ctx, nil
	}
	if !on {
		// The no-op span keeps the producer's span context: deliveries
		// carry it on.
		return pctx, nil
	}
	return r.tracer.Start(pctx, rec.Topic+" process", trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(
		semconv.MessagingSystemKafka,
		semconv.MessagingOperationTypeProcess,
		semconv.MessagingDestinationName(rec.Topic),
		semconv.MessagingDestinationPartitionID(strconv.Itoa(int(rec.Partition))),
		semconv.MessagingKafkaOffset(int(rec.Offset)),
		semconv.MessagingConsumerGroupName(r.opts.Group),
	))
}

// setTrace puts ctx's trace context into d, which keeps it through every
// retry, tier and dead letter.
func setTrace(ctx context.Context, d *sluicev1.Delivery) {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return
	}
	d.Traceparent = telemetry.Traceparent(sc)
	d.Tracestate = sc.TraceState().String()
}

// routeContinuation routes the rest of a fan-out decided earlier: no dedup
// (the event was decided once), no event-log entry (written then).
func (r *Router) routeContinuation(ctx context.Context, rec *kgo.Record, b *batch, targets []*sluicev1.Endpoint) []*sluicev1.Endpoint {
	ev, ids, err := eventrecord.DecodeContinuation(rec, r.opts.Limits)
	if err != nil {
		r.reject(ctx, rec, b, reason(err))
		return targets
	}
	for _, id := range ids {
		ep, ok := r.index.Endpoint(id)
		if !ok {
			// Deleted since the fan-out was decided: the delivery still
			// goes out, and the sender parks it as for any endpoint
			// deleted after routing, so it is accounted for.
			ep = &sluicev1.Endpoint{Id: id, TenantId: ev.TenantId, Status: sluicev1.EndpointStatus_ENDPOINT_STATUS_ENABLED}
		}
		targets = append(targets, ep)
	}
	r.fanOut(ctx, rec, b, ev, targets, b.promiseFor(rec))
	return targets
}

// fanOut produces ev's delivery to each of targets, in order, until the
// transaction reaches TxnBytes; the rest go into a continuation on ev's
// partition, routed after. A transaction splits only once it has fanned
// out something, so each one makes progress and a continuation shrinks
// every time it is routed.
func (r *Router) fanOut(ctx context.Context, src *kgo.Record, b *batch, ev *sluicev1.Event, targets []*sluicev1.Endpoint,
	promise func(*kgo.Record, error)) {
	for i, ep := range targets {
		if b.fannedOut > 0 && b.bytes+len(ev.Data) > r.opts.TxnBytes {
			rest := make([]string, len(targets)-i)
			for j, t := range targets[i:] {
				rest[j] = t.Id
			}
			cont, err := eventrecord.Continuation(r.opts.Names.Events, src.Partition, ev, rest, r.opts.Limits.AuthKey)
			if err != nil {
				b.fail(err)
				return
			}
			if trace.SpanContextFromContext(ctx).IsValid() {
				// The rest of the fan-out continues this event's trace.
				r.opts.Tracing.Propagator.Inject(ctx, kafkax.HeaderCarrier(cont))
			}
			b.bytes += len(cont.Key) + len(cont.Value)
			b.continued++
			r.sess.Produce(ctx, cont, promise)
			return
		}
		d := &sluicev1.Delivery{
			SchemaVersion: sluicev1.SchemaVersion, DeliveryId: deliveryID(ev.TenantId, ev.EventId, ep.Id),
			TenantId: ev.TenantId, EndpointId: ep.Id, EventId: ev.EventId, EventType: ev.Type,
			EventReceivedAtMs: ev.ReceivedAtMs, Data: ev.Data, Origin: sluicev1.DeliveryOrigin_DELIVERY_ORIGIN_ROUTER,
		}
		setTrace(ctx, d)
		topic := r.opts.Names.Deliveries
		if ep.Ordered {
			// The sender sends an ordered endpoint's deliveries from this
			// topic only, where they keep their order per endpoint.
			topic = r.opts.Names.Ordered
		}
		if ep.Status == sluicev1.EndpointStatus_ENDPOINT_STATUS_DISABLED {
			// Parked, never dropped: recover re-sends it once re-enabled.
			topic, d.DeadReason = r.opts.Names.Dead, "endpoint disabled: "+ep.DisabledReason
			b.parked++
		} else {
			b.deliveries++
		}
		b.fannedOut++
		r.produce(ctx, b, topic, ep.Id, d, promise)
	}
}

// reject copies rec to the rejected topic with reason.
func (r *Router) reject(ctx context.Context, rec *kgo.Record, b *batch, reason string) {
	c := eventrecord.Rejected(r.opts.Names.EventsRejected, rec, reason)
	b.bytes += len(c.Key) + len(c.Value)
	r.sess.Produce(ctx, c, b.promise)
	b.rejected++
}

// reason is a decode error's one-line reason.
func reason(err error) string {
	var rej *eventrecord.RejectError
	if errors.As(err, &rej) {
		return rej.Reason
	}
	return err.Error()
}

// produce adds one protobuf record to the transaction. A record that
// cannot be encoded or produced aborts the batch.
func (r *Router) produce(ctx context.Context, b *batch, topic, key string, m proto.Message, promise func(*kgo.Record, error)) {
	v, err := proto.Marshal(m)
	if err != nil {
		b.fail(fmt.Errorf("encoding a record for %s: %w", topic, err))
		return
	}
	b.bytes += len(key) + len(v)
	r.sess.Produce(ctx, &kgo.Record{Topic: topic, Key: []byte(key), Value: v}, promise)
}

// explicitPartitions returns a partitioner that sends records of topics to
// the partition set in Record.Partition and hands every other topic to
// other.
func explicitPartitions(other kgo.Partitioner, topics ...string) kgo.Partitioner {
	return partitioner{keep: topics, other: other}
}

type partitioner struct {
	keep  []string
	other kgo.Partitioner
}

func (p partitioner) ForTopic(topic string) kgo.TopicPartitioner {
	if slices.Contains(p.keep, topic) {
		return keepPartition{}
	}
	return p.other.ForTopic(topic)
}

type keepPartition struct{}

// RequiresConsistency is true: a continuation must wait for its partition's
// leader rather than be written to another partition, where another router
// would route it before the event it continues.
func (keepPartition) RequiresConsistency(*kgo.Record) bool { return true }
func (keepPartition) Partition(r *kgo.Record, _ int) int   { return int(r.Partition) }

// deliveryID is stable for an (event, endpoint) pair, so a batch routed
// again after an abort makes the same deliveries.
func deliveryID(tenant, event, endpoint string) string {
	h := sha256.Sum256([]byte(tenant + "\x00" + event + "\x00" + endpoint))
	return fmt.Sprintf("dlv_%x", h[:13])
}
