package dispatch

import (
	"context"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// dropJobs forgets p's jobs that have not started: its next owner delivers
// them.
func (d *Dispatcher) dropJobs(p *partition) {
	keep := func(jobs []*job) []*job {
		out := jobs[:0]
		for _, j := range jobs {
			if j.p == p {
				d.drop(j)
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
	if p.ord != nil {
		d.dropLanes(p)
	}
	for _, j := range p.held {
		d.drop(j)
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
				p := &partition{topicPartition: tp, tier: d.tierOf(t), wm: newWatermark(), marked: -1, epoch: -1}
				if t == d.opts.Names.Ordered {
					p.ord = newOrderedState()
				}
				d.parts[tp] = p
			}
		}
	})
}

// tierOf is the retry tier index of topic, -1 for the deliveries and
// ordered topics.
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
	d.lag.Forget(revoked)
	ps := d.drain(revoked)
	if len(ps) == 0 {
		return
	}
	graceCtx, cancel := context.WithTimeout(ctx, d.opts.RevokeGrace)
	d.waitIdle(graceCtx, ps)
	cancel()
	d.forget(ps)
	// The one wait in a group callback, and a bounded one: franz-go asks
	// for the commit of revoked partitions here, before they move. A broker
	// that does not answer costs at most revokeCommitTimeout; the next
	// owner then redoes what was not committed.
	cctx, cancel := context.WithTimeout(ctx, revokeCommitTimeout)
	defer cancel()
	if err := cl.CommitMarkedOffsets(cctx); err != nil {
		d.log.Warn("committing revoked partitions", "err", err)
	}
}

// revokeCommitTimeout bounds the commit of revoked partitions: a commit is
// one round trip, and revoke-grace (at most 45 s) plus this stays under
// franz-go's 60 s rebalance timeout.
const revokeCommitTimeout = 10 * time.Second

// lost gives partitions up without committing: the group has already
// handed them to someone else.
func (d *Dispatcher) lost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	d.lag.Forget(lost)
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
