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
// more than maxEntries newer markers evicted a key) a repeat is answered as
// new and dropped by the router. Only committed markers are read
// (read_committed), so a batch the router aborted never makes its events
// look routed.
//
// The View holds one Set of every partition's markers: at most maxEntries
// keys (about 54 B each, see Set), markers less than window old. The
// marker's own time (the router's clock when it routed the batch) dates the
// entry, as in Rebuild.
type View struct {
	cl    *kgo.Client
	topic string
	log   *slog.Logger

	mu  sync.RWMutex
	set *Set

	// ends holds, until the View has caught up, the high watermark at
	// NewView of each partition that had records then; a partition leaves
	// it once a record at or after end-1 was read.
	ends     map[int32]int64
	caughtUp chan struct{}
	stage    *health.Stage
}

// ReportTo makes Run report to stage (package health): waiting until the
// View has caught up, then running, progressing with every marker read.
// Call it before Run.
func (v *View) ReportTo(stage *health.Stage) { v.stage = stage }

// NewView builds a View of the changelog topic, reading every partition from
// its start. It lists each partition's bounds now: Ready and WaitCaughtUp
// report when the View holds every marker committed before NewView. Call Run
// to consume and Close when Run has returned.
func NewView(ctx context.Context, kcfg kafkax.Config, topic string, window time.Duration, maxEntries int,
	log *slog.Logger) (*View, error) {
	set := NewSet(window, maxEntries)
	cl, err := kafkax.NewClient(kcfg,
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		// A marker of an aborted routing batch must not count as routed.
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// Transaction markers show the View it has passed a partition's end
		// when the log ends with one (the usual case); see Rebuild.
		kgo.KeepControlRecords(),
	)
	if err != nil {
		return nil, fmt.Errorf("building the dedup view of %s: %w", topic, err)
	}
	ends, err := partitionEnds(ctx, kadm.NewClient(cl), topic)
	if err != nil {
		cl.Close()
		return nil, fmt.Errorf("building the dedup view of %s: %w", topic, err)
	}
	v := &View{cl: cl, topic: topic, log: log, set: set, ends: ends, caughtUp: make(chan struct{})}
	if len(ends) == 0 {
		close(v.caughtUp)
	}
	return v, nil
}

// partitionEnds lists the high watermark of every partition of topic that
// holds records (start < end).
func partitionEnds(ctx context.Context, adm *kadm.Client, topic string) (map[int32]int64, error) {
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("listing start offsets: %w", err)
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("listing end offsets: %w", err)
	}
	if len(ends[topic]) == 0 {
		return nil, fmt.Errorf("topic %s has no partitions", topic)
	}
	out := map[int32]int64{}
	ends.Each(func(e kadm.ListedOffset) {
		if s, ok := starts.Lookup(topic, e.Partition); !ok || s.Offset < e.Offset {
			out[e.Partition] = e.Offset
		}
	})
	return out, nil
}

// Run reads markers until ctx is done, then returns nil. Fetch errors are
// logged and retried by the client: a View that cannot read only answers
// "not seen" more often, which the router makes harmless.
func (v *View) Run(ctx context.Context) error {
	stage := v.stage
	if stage == nil {
		stage = health.NewRegistry(health.DefaultStuckAfter, nil).Stage("dedup-view")
	}
	stage.Waiting("catching up with the dedup changelog")
	defer stage.Stopped("dedup view stopped")
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
		now := time.Now().UnixMilli()
		v.mu.Lock()
		fetches.EachRecord(func(r *kgo.Record) { v.applyLocked(r, now) })
		v.mu.Unlock()
		if fetches.NumRecords() > 0 {
			stage.Progress()
		}
		if v.Ready(ctx) == nil {
			stage.Running()
		}
		stage.Beat()
	}
}

// applyLocked adds one marker to the Set, unless it is a window or more
// older than now (Unix ms), and moves the catch-up mark.
func (v *View) applyLocked(r *kgo.Record, now int64) {
	if end, ok := v.ends[r.Partition]; ok && r.Offset+1 >= end {
		delete(v.ends, r.Partition)
		if len(v.ends) == 0 {
			close(v.caughtUp)
		}
	}
	if r.Attrs.IsControl() {
		return
	}
	if len(r.Value) != markerSize {
		// Rebuild stops on such a record; the View only answers requests,
		// so it skips it and says where it is.
		v.log.Warn("skipping a dedup changelog record that is not a marker", "topic", r.Topic,
			"partition", r.Partition, "offset", r.Offset, "value_bytes", len(r.Value))
		return
	}
	t := int64(binary.BigEndian.Uint64(r.Value))
	if t <= now-v.set.window {
		return // expired already: not worth a slot
	}
	v.set.Add(r.Key, time.UnixMilli(t))
}

// Seen reports whether the router has committed a marker for key less than
// the window before now, as far as the View has read. It is safe for
// concurrent use and does not allocate.
func (v *View) Seen(key []byte, now time.Time) bool {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.set.Seen(key, now)
}

// Len is the number of keys the View holds.
func (v *View) Len() int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.set.Len()
}

// WaitCaughtUp blocks until the View holds every marker committed before
// NewView, or ctx is done. A marker of a transaction still open at NewView
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
