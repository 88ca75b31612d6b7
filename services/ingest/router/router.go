package router

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/pkg/dedup"
	"github.com/sluicehq/sluice/pkg/eventrecord"
	"github.com/sluicehq/sluice/pkg/ids"
	"github.com/sluicehq/sluice/pkg/kafkax"
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
	// MaxBatch bounds the records of one transaction.
	MaxBatch int
	// Meter records the router's metrics; nil records none.
	Meter metric.Meter
}

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

	mu    sync.Mutex
	seen  map[int32]*dedup.Set // per assigned events partition
	stats Stats

	txnTime  metric.Float64Histogram
	txnSize  metric.Int64Histogram
	outcomes metric.Int64Counter
	commit   metric.MeasurementOption
	abort    metric.MeasurementOption
}

// Stats count what the router did, for tests and metrics.
type Stats struct {
	Events, Deliveries, Parked, Rejected, Duplicates, Aborted int64
}

// New builds a router over index. Run starts it.
func New(opts Options, index *Index, log *slog.Logger) (*Router, error) {
	r := &Router{opts: opts, index: index, log: log, seen: map[int32]*dedup.Set{}}
	if err := r.instruments(opts.Meter); err != nil {
		return nil, err
	}
	txnID := opts.Names.Events + ".router." + ids.New("r")
	sess, err := kafkax.NewTransactSession(opts.Kafka, txnID, opts.Group, []string{opts.Names.Events},
		// Dedup markers go to the partition number of their event, set
		// explicitly; every other record is partitioned by key.
		kgo.RecordPartitioner(dedup.Partitioner(opts.Names.Dedup)),
		kgo.OnPartitionsAssigned(r.assigned),
		kgo.OnPartitionsRevoked(r.dropped),
		kgo.OnPartitionsLost(r.dropped),
	)
	if err != nil {
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
	r.commit = metric.WithAttributeSet(attribute.NewSet(attribute.String("result", "committed")))
	r.abort = metric.WithAttributeSet(attribute.NewSet(attribute.String("result", "aborted")))
	return nil
}

// assigned rebuilds the dedup state of newly assigned partitions before any
// of their records is fetched.
func (r *Router) assigned(ctx context.Context, _ *kgo.Client, assigned map[string][]int32) {
	for _, p := range assigned[r.opts.Names.Events] {
		// A rebuild waits for a transaction still open on the partition
		// (the previous owner's last batch), which the broker aborts after
		// the 20 s transaction timeout; a minute covers that and the read.
		rctx, cancel := context.WithTimeout(ctx, time.Minute)
		set, n, err := dedup.Rebuild(rctx, r.opts.Kafka, r.opts.Names.Dedup, p, r.opts.DedupWindow, r.opts.DedupMaxEntries)
		cancel()
		if err != nil {
			// Without its dedup state the partition must not be processed:
			// leaving the group makes another member (or this one, after a
			// rejoin) try again.
			r.log.Error("rebuilding dedup state; leaving the group to retry", "partition", p, "err", err)
			r.sess.Client().LeaveGroup()
			return
		}
		r.mu.Lock()
		r.seen[p] = set
		r.mu.Unlock()
		r.log.Info("dedup state rebuilt", "partition", p, "markers", n, "ids", set.Len())
	}
}

func (r *Router) dropped(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range lost[r.opts.Names.Events] {
		delete(r.seen, p)
	}
}

// Stats returns the counters so far.
func (r *Router) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats
}

// Close leaves the group and releases the clients.
func (r *Router) Close() { r.sess.Close() }

// Run routes until ctx is done; the batch in flight is then aborted (its
// records are consumed again by whoever owns the partition next).
func (r *Router) Run(ctx context.Context) error {
	var matches []*sluicev1.Endpoint
	for {
		fetches := r.sess.PollRecords(ctx, r.opts.MaxBatch)
		if ctx.Err() != nil || errors.Is(fetches.Err0(), kgo.ErrClientClosed) {
			return nil
		}
		fetches.EachError(func(t string, p int32, err error) {
			r.log.Warn("fetching events", "topic", t, "partition", p, "err", err)
		})
		if fetches.NumRecords() == 0 {
			continue
		}
		began := time.Now()
		if err := r.sess.Begin(); err != nil {
			return fmt.Errorf("beginning a routing transaction: %w", err)
		}
		b := batch{added: map[int32][][]byte{}}
		fetches.EachRecord(func(rec *kgo.Record) { matches = r.route(ctx, rec, &b, matches[:0]) })
		end := kgo.TryCommit
		if b.failed {
			end = kgo.TryAbort
		}
		committed, err := r.sess.End(ctx, end)
		r.txnTime.Record(ctx, time.Since(began).Seconds())
		r.txnSize.Record(ctx, int64(fetches.NumRecords()))
		if committed {
			r.outcomes.Add(ctx, 1, r.commit)
		} else {
			r.outcomes.Add(ctx, 1, r.abort)
		}
		r.mu.Lock()
		if committed {
			// Only now are the batch's ids remembered: an aborted batch is
			// consumed again and must not find its own ids already seen.
			for p, keys := range b.added {
				if set := r.seen[p]; set != nil {
					for _, k := range keys {
						set.Add(k, b.at)
					}
				}
			}
			r.stats.Events += b.events
			r.stats.Deliveries += b.deliveries
			r.stats.Parked += b.parked
			r.stats.Rejected += b.rejected
			r.stats.Duplicates += b.duplicates
		} else {
			r.stats.Aborted++
		}
		r.mu.Unlock()
		if err != nil && ctx.Err() == nil {
			r.log.Warn("routing transaction failed; its records will be routed again", "err", err)
		}
	}
}

// batch is what one transaction produced.
type batch struct {
	at                                               time.Time
	added                                            map[int32][][]byte
	events, deliveries, parked, rejected, duplicates int64
	// failed aborts the transaction: a record could not be built.
	failed bool
}

func (b *batch) pending(p int32, key []byte) bool {
	for _, k := range b.added[p] {
		if string(k) == string(key) {
			return true
		}
	}
	return false
}

// route handles one event record inside the open transaction.
func (r *Router) route(ctx context.Context, rec *kgo.Record, b *batch, matches []*sluicev1.Endpoint) []*sluicev1.Endpoint {
	if b.at.IsZero() {
		b.at = time.Now()
	}
	ev, err := eventrecord.Decode(rec, r.opts.Limits)
	if err != nil {
		var rej *eventrecord.RejectError
		reason := err.Error()
		if errors.As(err, &rej) {
			reason = rej.Reason
		}
		r.sess.Produce(ctx, eventrecord.Rejected(r.opts.Names.EventsRejected, rec, reason), nil)
		b.rejected++
		return matches
	}
	key := eventrecord.Key(ev.TenantId, ev.EventId)
	r.mu.Lock()
	set := r.seen[rec.Partition]
	dup := set != nil && set.Seen(key, b.at)
	r.mu.Unlock()
	if dup || b.pending(rec.Partition, key) {
		b.duplicates++
		return matches
	}
	b.added[rec.Partition] = append(b.added[rec.Partition], key)
	b.events++

	matches = r.index.Match(matches, ev.TenantId, ev.Type)
	entry := &sluicev1.EventLogEntry{
		SchemaVersion: sluicev1.SchemaVersion, TenantId: ev.TenantId, EventId: ev.EventId, Type: ev.Type,
		Data: ev.Data, ReceivedAtMs: ev.ReceivedAtMs, Source: ev.Source, FanoutCount: uint32(len(matches)),
	}
	for _, ep := range matches {
		d := &sluicev1.Delivery{
			SchemaVersion: sluicev1.SchemaVersion, DeliveryId: deliveryID(ev.TenantId, ev.EventId, ep.Id),
			TenantId: ev.TenantId, EndpointId: ep.Id, EventId: ev.EventId, EventType: ev.Type,
			EventReceivedAtMs: ev.ReceivedAtMs, Data: ev.Data, Origin: sluicev1.DeliveryOrigin_DELIVERY_ORIGIN_ROUTER,
		}
		topic := r.opts.Names.Deliveries
		if ep.Status == sluicev1.EndpointStatus_ENDPOINT_STATUS_DISABLED {
			// Parked, never dropped: recover re-sends it once re-enabled.
			topic, d.DeadReason = r.opts.Names.Dead, "endpoint disabled: "+ep.DisabledReason
			b.parked++
		} else {
			b.deliveries++
		}
		entry.EndpointIds = append(entry.EndpointIds, ep.Id)
		r.produce(ctx, b, topic, ep.Id, d)
	}
	r.produce(ctx, b, r.opts.Names.EventLog, ev.EventId, entry)
	r.sess.Produce(ctx, dedup.Marker(r.opts.Names.Dedup, rec.Partition, key, b.at), nil)
	return matches
}

// produce adds one protobuf record to the transaction. A record that
// cannot be encoded aborts the batch (a produce error aborts it at End).
func (r *Router) produce(ctx context.Context, b *batch, topic, key string, m proto.Message) {
	v, err := proto.Marshal(m)
	if err != nil {
		r.log.Error("encoding a record; aborting the batch", "topic", topic, "err", err)
		b.failed = true
		return
	}
	r.sess.Produce(ctx, &kgo.Record{Topic: topic, Key: []byte(key), Value: v}, nil)
}

// deliveryID is stable for an (event, endpoint) pair, so a batch routed
// again after an abort makes the same deliveries.
func deliveryID(tenant, event, endpoint string) string {
	h := sha256.Sum256([]byte(tenant + "\x00" + event + "\x00" + endpoint))
	return fmt.Sprintf("dlv_%x", h[:13])
}
