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
