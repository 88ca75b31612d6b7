package dedup

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/pkg/health"
	"github.com/sluicehq/sluice/pkg/kafkax"
)

// View is a read-only follower of the whole changelog, for the HTTP events
// API: it answers whether an event key ("tenant/id") has been routed, so a
// repeated request can be answered "duplicate" without producing the event
// again. Every ingest replica runs one over every partition, because an
// HTTP request may name any event; the router's own Sets cover only the
// partitions it owns.
//
// # What a View can promise
//
// A marker is written in the router's transaction, so a repeat is reported
// duplicate once the router has committed the first copy and this View has
// read the marker: normally milliseconds after the first copy was
// acknowledged. Two copies arriving closer together than that are both
// accepted by the API (each answered as new, with the same id) and both
// reach the events topic; the router still fans out only one of them,
// because it dedupes on the same key. The View decides the answer, never
// the fan-out.
//
// Likewise, when the View is behind (while catching up at start, or after
// newer markers evicted a key) a repeat is answered as new and dropped by
// the router. Only committed markers are read (read_committed), so a batch
// the router aborted never makes its events look routed.
//
// # Memory
//
// The View holds one Set per partition, as the routers do, each with an
// equal share of maxEntries (the first partitions one more when it does not
// divide). So a busy partition evicts only its own ids, as its router does,
// and a sweep (see Set: about 20 B per id) covers one partition's table:
// it holds the View's lock, and so its answers, for 4.8 ms at 500,000 ids,
// not the 69 ms of one table of 12 × 500,000. A key is looked up in every
// partition's Set (about 0.1 µs each), because the partition an event went
// to depends on its producer's partitioner. The marker's own time (the
// router's clock when it routed the batch) dates the entry, as in Rebuild.
type View struct {
	cl     *kgo.Client
	topic  string
	log    *slog.Logger
	window time.Duration

	mu sync.RWMutex
	// parts has one entry per partition, by number, fixed at NewView.
	parts []viewPartition

	// ends holds, until the View has caught up, the high watermark at
	// NewView of each partition that had records of the window then; a
	// partition leaves it once a record at or after end-1 was read.
	ends     map[int32]int64
	caughtUp chan struct{}
	stage    *health.Stage
}

// ReportTo makes Run report to stage (package health): waiting until the
// View has caught up, then running, progressing with every marker read.
// Call it before Run.
func (v *View) ReportTo(stage *health.Stage) { v.stage = stage }

type viewPartition struct {
	set  *Set
	read uint64 // markers read since NewView
}

// NewView builds a View of the changelog topic, reading each partition from
// its first marker less than window old (as Rebuild does), and holding at
// most maxEntries keys over all partitions. It lists each partition's
// bounds now: Ready and WaitCaughtUp report when the View holds every
// marker of the window committed before NewView. Partitions added to the
// topic later are not followed. Call Run to consume and Close when Run has
// returned.
func NewView(ctx context.Context, kcfg kafkax.Config, topic string, window time.Duration, maxEntries int,
	log *slog.Logger) (*View, error) {
	adm, err := kafkax.NewAdmin(kcfg)
	if err != nil {
		return nil, fmt.Errorf("building the dedup view of %s: %w", topic, err)
	}
	starts, ends, err := partitionBounds(ctx, adm, topic, time.Now().Add(-window).UnixMilli())
	adm.Close()
	if err != nil {
		return nil, fmt.Errorf("building the dedup view of %s: %w", topic, err)
	}
	offsets := map[int32]kgo.Offset{}
	for p, o := range starts {
		offsets[p] = kgo.NewOffset().At(o)
	}
	cl, err := kafkax.NewClient(kcfg,
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: offsets}),
		// A marker of an aborted routing batch must not count as routed.
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// Transaction markers show the View it has passed a partition's end
		// when the log ends with one (the usual case); see Rebuild.
		kgo.KeepControlRecords(),
	)
	if err != nil {
		return nil, fmt.Errorf("building the dedup view of %s: %w", topic, err)
	}
	n := len(starts)
	parts := make([]viewPartition, n)
	for p := range parts {
		share := maxEntries / n
		if p < maxEntries%n {
			share++
		}
		parts[p].set = NewSet(window, max(1, share))
	}
	v := &View{cl: cl, topic: topic, log: log, window: window, parts: parts, ends: ends,
		caughtUp: make(chan struct{})}
	if len(ends) == 0 {
		close(v.caughtUp)
	}
	return v, nil
}

// partitionBounds lists, for every partition of topic, the first offset
// stamped at or after since (Unix ms), and the high watermark of those
// partitions that have records from there (start < end). Partitions are
// numbered 0 to n-1.
func partitionBounds(ctx context.Context, adm *kadm.Client, topic string, since int64) (
	starts, ends map[int32]int64, err error) {
	listedStarts, err := adm.ListOffsetsAfterMilli(ctx, since, topic)
	if err == nil {
		err = listedStarts.Error()
	}
	if err != nil {
		return nil, nil, fmt.Errorf("listing offsets after %s: %w", time.UnixMilli(since).UTC().Format(time.RFC3339Nano), err)
	}
	listedEnds, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = listedEnds.Error()
	}
	if err != nil {
		return nil, nil, fmt.Errorf("listing end offsets: %w", err)
	}
	n := len(listedEnds[topic])
	if n == 0 {
		return nil, nil, fmt.Errorf("topic %s has no partitions", topic)
	}
	starts, ends = map[int32]int64{}, map[int32]int64{}
	for p := range int32(n) {
		e, ok := listedEnds.Lookup(topic, p)
		s, ok2 := listedStarts.Lookup(topic, p)
		if !ok || !ok2 {
			return nil, nil, fmt.Errorf("partition %d of %s's %d not listed", p, topic, n)
		}
		starts[p] = s.Offset
		if s.Offset < e.Offset {
			ends[p] = e.Offset
		}
	}
	return starts, ends, nil
}

// Run reads markers until ctx is done, then returns nil. Fetch errors are
// logged and retried by the client: a View that cannot read only answers
// "not seen" more often, which the router makes harmless.
//
// Run logs, once per change, when a partition's effective window falls
// below the window (its share of maxEntries is too small for its rate) and
// when it is back.
func (v *View) Run(ctx context.Context) error {
	stage := v.stage
	if stage == nil {
		stage = health.NewRegistry(health.DefaultStuckAfter, nil).Stage("dedup-view")
	}
	stage.Waiting("catching up with the dedup changelog")
	defer stage.Stopped("dedup view stopped")
	var changed []PartitionStats
	for {
		pctx, cancel := kafkax.PollContext(ctx)
		fetches := v.cl.PollFetches(pctx)
		cancel()
		if ctx.Err() != nil || errors.Is(fetches.Err0(), kgo.ErrClientClosed) {
			return nil
		}
		kafkax.FetchErrors(fetches, func(t string, p int32, err error) {
			v.log.Warn("reading the dedup changelog", "topic", t, "partition", p, "err", err)
		})
		now := time.Now()
		changed = changed[:0]
		v.mu.Lock()
		fetches.EachRecord(func(r *kgo.Record) { v.applyLocked(r, now.UnixMilli()) })
		for p := range v.parts {
			if _, ch := v.parts[p].set.CheckWindow(now); ch {
				changed = append(changed, v.statsLocked(int32(p), now))
			}
		}
		v.mu.Unlock()
		if fetches.NumRecords() > 0 {
			stage.Progress()
		}
		if v.Ready(ctx) == nil {
			stage.Running()
		}
		stage.Beat()
		for _, st := range changed {
			if st.EffectiveWindow < v.window {
				v.log.Warn("dedup view evicts ids before the dedup window ends: its share of dedup-max-entries "+
					"is too small for the partition's rate",
					"partition", st.Partition, "effective_window", st.EffectiveWindow, "window", v.window,
					"ids", st.Len, "evicted", st.Evicted)
			} else {
				v.log.Info("dedup view holds the whole dedup window again",
					"partition", st.Partition, "window", v.window, "ids", st.Len, "evicted", st.Evicted)
			}
		}
	}
}

// applyLocked adds one marker to its partition's Set, unless it is a
// window or more older than now (Unix ms), and moves the catch-up mark.
func (v *View) applyLocked(r *kgo.Record, now int64) {
	if end, ok := v.ends[r.Partition]; ok && r.Offset+1 >= end {
		delete(v.ends, r.Partition)
		if len(v.ends) == 0 {
			close(v.caughtUp)
		}
	}
	if r.Attrs.IsControl() || r.Partition < 0 || int(r.Partition) >= len(v.parts) {
		return
	}
	if len(r.Value) != markerSize {
		// Rebuild stops on such a record; the View only answers requests,
		// so it skips it and says where it is.
		v.log.Warn("skipping a dedup changelog record that is not a marker", "topic", r.Topic,
			"partition", r.Partition, "offset", r.Offset, "value_bytes", len(r.Value))
		return
	}
	part := &v.parts[r.Partition]
	part.read++
	t := int64(binary.BigEndian.Uint64(r.Value))
	if t <= now-v.window.Milliseconds() {
		return // expired already: not worth a slot
	}
	part.set.Add(r.Key, time.UnixMilli(t))
}

// Seen reports whether the router has committed a marker for key less than
// the window before now, on any partition, as far as the View has read. It
// is safe for concurrent use and does not allocate.
func (v *View) Seen(key []byte, now time.Time) bool {
	v.mu.RLock()
	defer v.mu.RUnlock()
	for p := range v.parts {
		if v.parts[p].set.Seen(key, now) {
			return true
		}
	}
	return false
}

// Len is the number of keys the View holds.
func (v *View) Len() int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	n := 0
	for p := range v.parts {
		n += v.parts[p].set.Len()
	}
	return n
}

// EffectiveWindow is the shortest effective window of the View's
// partitions (see Set.EffectiveWindow): a repeat of any id routed within
// it before now is answered duplicate, once the View has read its marker.
func (v *View) EffectiveWindow(now time.Time) time.Duration {
	v.mu.RLock()
	defer v.mu.RUnlock()
	w := v.window
	for p := range v.parts {
		w = min(w, v.parts[p].set.EffectiveWindow(now))
	}
	return w
}

// Evicted is the number of ids the View evicted before their window ended,
// over all partitions, since NewView.
func (v *View) Evicted() uint64 {
	v.mu.RLock()
	defer v.mu.RUnlock()
	var n uint64
	for p := range v.parts {
		n += v.parts[p].set.Evicted()
	}
	return n
}

// PartitionStats is what the View holds of one partition, for metrics.
type PartitionStats struct {
	Partition int32
	// Len is the ids held; Evicted those evicted before their window
	// ended; Read the markers read since NewView, expired ones included.
	Len     int
	Evicted uint64
	Read    uint64
	// EffectiveWindow is the partition Set's at the time asked.
	EffectiveWindow time.Duration
}

// Stats returns every partition's stats at now, by partition number.
func (v *View) Stats(now time.Time) []PartitionStats {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := make([]PartitionStats, len(v.parts))
	for p := range v.parts {
		out[p] = v.statsLocked(int32(p), now)
	}
	return out
}

func (v *View) statsLocked(p int32, now time.Time) PartitionStats {
	part := &v.parts[p]
	return PartitionStats{Partition: p, Len: part.set.Len(), Evicted: part.set.Evicted(), Read: part.read,
		EffectiveWindow: part.set.EffectiveWindow(now)}
}

// WaitCaughtUp blocks until the View holds every marker of the window
// committed before NewView, or ctx is done. A marker of a transaction still open at NewView
// is waited for until the transaction ends (at most the router's 20 s
// transaction timeout).
func (v *View) WaitCaughtUp(ctx context.Context) error {
	select {
	case <-v.caughtUp:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for the dedup view of %s to catch up: %w", v.topic, ctx.Err())
	}
}

// Ready reports whether the View has caught up; for readiness checks.
func (v *View) Ready(context.Context) error {
	select {
	case <-v.caughtUp:
		return nil
	default:
		return errors.New("dedup view still catching up")
	}
}

// Close releases the Kafka client. Run must have returned.
func (v *View) Close() { v.cl.Close() }
