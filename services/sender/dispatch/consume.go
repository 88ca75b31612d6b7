package dispatch

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/pkg/kafkax"
	"github.com/sluicehq/sluice/pkg/topics"
	"github.com/sluicehq/sluice/services/sender/retry"
)

type topicPartition struct {
	topic     string
	partition int32
}

// partition is the state of one assigned partition.
type partition struct {
	topicPartition
	// tier is the retry tier this partition belongs to, -1 for the
	// deliveries and ordered topics.
	tier int
	// ord is set on a partition of the ordered topic, read as lanes
	// (lane.go).
	ord *orderedState
	wm  watermark
	// marked is the offset last marked for commit.
	marked int64
	// epoch is the highest leader epoch of the records handed over; marks
	// carry it (see rewindPartitions), so a committed offset keeps the
	// epoch Kafka validates it against after a leader change.
	epoch int32
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
	// mark is the argument of MarkCommitOffsets for this partition, made
	// once: a watermark moves on nearly every finished delivery.
	mark map[string]map[int32]kgo.EpochOffset
}

// shutdownCommit bounds the last commit of Run.
const shutdownCommit = 2 * time.Second

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
		d.mu.Lock()
		d.pollCancel = cancel
		if d.pollWoken {
			d.pollWoken = false
			cancel()
		}
		d.mu.Unlock()
		fetches := cl.PollRecords(pctx, d.opts.PollRecords)
		d.lag.Observe(fetches)
		d.mu.Lock()
		d.pollCancel = nil
		d.mu.Unlock()
		cancel()
		if ctx.Err() != nil || errors.Is(fetches.Err0(), kgo.ErrClientClosed) {
			break
		}
		kafkax.FetchErrors(fetches, func(t string, p int32, err error) {
			d.log.Warn("fetching deliveries", "topic", t, "partition", p, "err", err)
		})
		var rewinds []rewind
		d.locked(func() {
			fetches.EachPartition(func(f kgo.FetchTopicPartition) {
				p := d.parts[topicPartition{f.Topic, f.Partition}]
				if p == nil || p.draining {
					return // revoked meanwhile: the next owner reads these
				}
				for _, r := range f.Records {
					p.epoch = max(p.epoch, r.LeaderEpoch)
					if p.ord != nil {
						d.takeOrdered(p, r)
					} else {
						d.take(p, r)
					}
				}
				if p.ord != nil {
					// Records skipped as taken before move an ordered
					// partition's commit without finishing anything.
					d.markCommit(p, false)
				}
			})
			rewinds = d.planRewinds()
			d.checkMemory()
			stage.Owe(d.jobs)
		})
		d.rewindPartitions(ctx, rewinds)
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
	d.own.close()
	if !d.own.wait(d.work) {
		d.log.Warn("giving up on goroutines still running at the end of the shutdown grace period")
	}
	// On a context of its own (review L7): waitIdle may have used the work
	// context up, and what finished before must still be committed. One
	// round trip; 2 s fits in the 5 s the process has after its shutdown
	// timeout (service.Main).
	commitCtx, cancel := context.WithTimeout(context.WithoutCancel(d.work), shutdownCommit)
	defer cancel()
	if err := cl.CommitMarkedOffsets(commitCtx); err != nil {
		return fmt.Errorf("committing delivery offsets on shutdown: %w", err)
	}
	return nil
}

// take registers r with its partition and routes it.
func (d *Dispatcher) take(p *partition, r *kgo.Record) {
	j := d.newJob(p, r)
	if j == nil {
		return
	}
	if len(p.held) > 0 {
		p.held = append(p.held, j)
		return
	}
	d.holdOrAdmit(j)
}

// newJob registers r with its partition's watermark and the memory it
// holds, and decodes it; nil when it cannot be decoded (it is parked as it
// was, with the reason).
func (d *Dispatcher) newJob(p *partition, r *kgo.Record) *job {
	p.wm.take(r.Offset)
	j := &job{p: p, offset: r.Offset, size: int64(len(r.Value)) + jobOverhead, read: d.clock.Now()}
	j.acks.Store(1)
	d.hold(j)
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
		return nil
	}
	j.d = dl
	return j
}

// hold counts j's memory against its budget: ordered partitions' jobs
// against the ordered budget, which closes lanes, every other against the
// memory budget, which pauses fetching.
func (d *Dispatcher) hold(j *job) {
	if j.p.ord != nil {
		d.orderedBuffered += j.size
	} else {
		d.buffered += j.size
	}
	d.jobs++
}

// unhold gives j's memory back: finished or dropped.
func (d *Dispatcher) unhold(j *job) {
	if j.p.ord != nil {
		d.orderedBuffered -= j.size
	} else {
		d.buffered -= j.size
	}
	d.jobs--
}

// holdOrAdmit admits j if it is due, else holds it (and everything after
// it on its partition) and pauses the partition until it is. A tier record
// due much later than its tier's delay (retry.Hop) is held at most one
// tier delay from when it was read, then appended to the tier that best
// fits the wait left: so it hops at most about wait/delay times, a quiet
// partition never spins re-reading it, and a record behind it is at most
// one tier delay late.
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
	until := due
	if wait := due.Sub(now); p.tier >= 0 && retry.Hop(p.tier, wait) {
		hopAt := j.read.Add(topics.RetryTiers[p.tier])
		if best := retry.Tier(wait); best != p.tier || !now.Before(hopAt) {
			d.stats.Hops++
			d.settle(j, &kgo.Record{Topic: d.opts.Names.Retry[best], Key: []byte(j.d.EndpointId), Value: mustMarshal(j.d)})
			return
		}
		until = hopAt
	}
	p.held = append(p.held, j)
	if len(p.held) == 1 {
		d.consumer.PauseFetchPartitions(map[string][]int32{p.topic: {p.partition}})
		p.heldTimer = d.afterFunc(until.Sub(now), func() { d.locked(func() { d.release(p) }) })
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
		d.wakeResolver()
		return
	}
	d.enqueue(j, ep)
}

// wakeResolver asks the resolver to sync the view and settle what waits for
// an unknown endpoint.
func (d *Dispatcher) wakeResolver() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// checkMemory pauses fetching above the memory budget and resumes below 90 %
// of it; the gap keeps the consumer from flapping around the line. The
// ordered topic is never paused: its jobs count against their own budget,
// which closes lanes instead (lane.go).
func (d *Dispatcher) checkMemory() {
	switch {
	case !d.paused && d.buffered > d.opts.MemoryBudget:
		d.paused = true
		d.stats.MemoryPauses++
		d.consumer.PauseFetchTopics(d.pausable...)
		d.log.Info("memory budget reached; fetching paused", "buffered_bytes", d.buffered)
	case d.paused && d.buffered <= d.opts.MemoryBudget/10*9:
		d.paused = false
		d.consumer.ResumeFetchTopics(d.pausable...)
		d.log.Info("fetching resumed", "buffered_bytes", d.buffered)
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
			for l := range d.unknownLanes {
				delete(d.unknownLanes, l)
				l.synced = true
				d.pumpLane(l)
			}
		})
		if err != nil {
			time.Sleep(time.Second)
		}
	}
}
