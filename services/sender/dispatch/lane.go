package dispatch

import (
	"context"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/pkg/errtext"
)

// Ordered endpoints (ARCHITECTURE: ordered endpoints) are sent only from
// the ordered topic, keyed by endpoint id. A partition of it is read as
// lanes, one per key: a lane holds its deliveries in offset order and sends
// one at a time. A lane that cannot take more (its queue is full, or the
// ordered memory budget is spent and it already holds a job) closes: it
// skips its records, remembering the first it skipped (its cursor), while
// the partition keeps being read for the other lanes. When it reopens, the
// partition is read again from its cursor, and the rules of takeOrdered
// skip what was taken before, so no lane loses, repeats or reorders a
// record and nothing pauses the partition.

// orderedState is what an ordered partition keeps beside its watermark.
type orderedState struct {
	// next is the offset after the last record handed over, or the offset
	// the partition was rewound to: what reading hands over next.
	next int64
	// frontier is the highest next ever reached: every record below it was
	// handed over once, and taken unless its lane was closed.
	frontier int64
	lanes    map[string]*lane
	// closed are the lanes closed now, whose cursors bound the commit.
	closed map[*lane]struct{}
	// reopen are closed lanes waiting for the poll loop to rewind the
	// partition to them.
	reopen []*lane
	// rewoundTo is the offset of the last rewind until a record is handed
	// over after it; -1 otherwise.
	rewoundTo int64
}

func newOrderedState() *orderedState {
	return &orderedState{next: -1, rewoundTo: -1, lanes: map[string]*lane{}, closed: map[*lane]struct{}{}}
}

// lane is one key's deliveries on an ordered partition. Its key is the
// endpoint id today; ordering by a key of the event (issue 16) makes it
// endpoint and ordering key, and laneKey is the one place that changes.
type lane struct {
	key string
	p   *partition
	// cursor: every record of the lane below it was taken. While the lane
	// is closed it is the first record the lane skipped.
	cursor int64
	closed bool
	// reopening: closed, and waiting in orderedState.reopen.
	reopening bool
	// jobs are taken and not yet settled, head first; the head may be in
	// flight (running) or waiting for its next attempt (retryTimer).
	jobs       []*job
	running    bool
	retryTimer Timer
	// q is the endpoint's queue (limits, health) while the lane holds work
	// for an ordered endpoint; the queue pumps the lane when a request slot
	// or a rate-limit token frees up.
	q *queue
	// synced: the configuration view was synced since the head's endpoint
	// was found unknown, so unknown now means deleted.
	synced bool
}

// laneKey is the lane a record of the ordered topic belongs to: its key,
// the endpoint id, as every writer of the topic sets it.
func laneKey(r *kgo.Record) string { return string(r.Key) }

// takeOrdered hands record r of ordered partition p to its lane, or skips
// it:
//   - a record below the lane's cursor, or of a lane not known and below
//     the frontier, was taken before (the partition is being read again
//     after a rewind): skipped;
//   - a record of a closed lane: skipped, not taken; the lane's cursor
//     stays at the first such record;
//   - otherwise it is taken (the watermark holds it) and the lane's cursor
//     moves past it, unless the lane has no room, which closes it.
func (d *Dispatcher) takeOrdered(p *partition, r *kgo.Record) {
	st, o := p.ord, r.Offset
	if st.rewoundTo >= 0 {
		// The first record after a rewind is the one rewound to, a
		// record's offset (a reopened lane's first skipped record, or
		// without leader epochs the commit offset). Anything later means
		// the records between were deleted (retention) or the rewind did
		// not take; either way they are beyond reach, so say so.
		if o > st.rewoundTo {
			d.log.Error("an ordered partition read again from a lane's first skipped record resumed past it",
				"topic", p.topic, "partition", p.partition, "rewound_to", st.rewoundTo, "resumed_at", o)
		}
		st.rewoundTo = -1
	}
	seen := o < st.frontier
	st.next = o + 1
	st.frontier = max(st.frontier, st.next)
	key := laneKey(r)
	l := st.lanes[key]
	switch {
	case l == nil && seen, l != nil && o < l.cursor:
		return
	case l != nil && l.closed:
		return
	}
	if l == nil {
		l = &lane{key: key, p: p}
		st.lanes[key] = l
	}
	// Room: endpoint-queue jobs, and the ordered budget, which a lane may
	// overrun by one job when it holds none: every lane keeps moving.
	size := int64(len(r.Value)) + jobOverhead
	if len(l.jobs) >= d.opts.QueueCap || len(l.jobs) > 0 && d.orderedBuffered+size > d.opts.OrderedBudget {
		l.closed, l.cursor = true, o
		st.closed[l] = struct{}{}
		d.stats.LaneCloses++
		return
	}
	l.cursor = o + 1
	j := d.newJob(p, r)
	if j == nil {
		return // undecodable: parked as it was
	}
	if j.d.EndpointId != key {
		d.park(j, "ordered record keyed "+errtext.Quote(key)+" for endpoint "+j.d.EndpointId)
		return
	}
	j.lane = l
	l.jobs = append(l.jobs, j)
	d.pumpLane(l)
}

// pumpLane sends l's head when its turn has come, one request at a time,
// and settles in order the heads that are no longer its to send: an
// endpoint deleted or disabled parks them, one made unordered hands them to
// its queue (deferral to the tiers included).
func (d *Dispatcher) pumpLane(l *lane) {
pump:
	for len(l.jobs) > 0 && !l.running && !l.p.draining {
		j := l.jobs[0]
		ep, ok := d.endpoints.Endpoint(j.d.EndpointId)
		switch {
		case !ok && !l.synced:
			// The view may trail the writer by a moment: the resolver
			// syncs it and pumps the lane again.
			d.unknownLanes[l] = struct{}{}
			d.wakeResolver()
			break pump
		case !ok:
			d.stopRetry(l)
			d.popLane(l)
			d.park(j, "endpoint "+j.d.EndpointId+" does not exist")
			continue
		case ep.Status == sluicev1.EndpointStatus_ENDPOINT_STATUS_DISABLED:
			d.stopRetry(l)
			d.popLane(l)
			d.park(j, "endpoint disabled: "+ep.DisabledReason)
			continue
		case !ep.Ordered:
			d.stopRetry(l)
			d.popLane(l)
			d.enqueue(j, ep)
			continue
		}
		l.synced = false
		if l.retryTimer != nil {
			break // the head waits for its next attempt
		}
		now := d.clock.Now()
		if due := time.UnixMilli(j.d.NotBeforeMs); j.d.NotBeforeMs != 0 && due.After(now) {
			// A copy moved here from a retry tier keeps its due time.
			l.retryTimer = d.afterFunc(due.Sub(now), func() {
				d.locked(func() { l.retryTimer = nil; d.pumpLane(l) })
			})
			break
		}
		q := d.queue(ep)
		if l.q == nil {
			l.q = q
			q.lanes[l] = struct{}{}
		}
		if !d.slotFree(q) {
			break
		}
		if !q.bucket.take(now) {
			d.waitToken(q, now)
			break
		}
		l.running = true
		d.startRequest(q)
		d.activate(j)
		d.startAttempt(j, q, ep)
	}
	if len(l.jobs) == 0 && l.q != nil {
		delete(l.q.lanes, l)
		l.q = nil
	}
	if !l.p.draining {
		d.maybeReopen(l)
	}
}

// popLane removes l's head: it was settled, or handed on.
func (d *Dispatcher) popLane(l *lane) {
	l.jobs[0].lane = nil
	l.jobs[0] = nil
	l.jobs = l.jobs[1:]
}

// stopRetry cancels the wait of l's head for its next attempt.
func (d *Dispatcher) stopRetry(l *lane) {
	if l.retryTimer != nil {
		l.retryTimer.Stop()
		l.retryTimer = nil
	}
}

// maybeReopen reopens closed lane l once it has room again: its queue
// drained to half, and it holds no job or the budget is back under 90 %
// (the gap keeps a lane from closing and reopening on every job). A lane
// whose endpoint was disabled, deleted or made unordered gets there by
// pumpLane settling its queue. A lane whose cursor the reading has not
// reached yet opens at once; otherwise the poll loop reads the partition
// again from its cursor first (planRewinds).
func (d *Dispatcher) maybeReopen(l *lane) {
	if !l.closed || l.reopening || len(l.jobs) > d.opts.QueueCap/2 ||
		len(l.jobs) > 0 && d.orderedBuffered > d.opts.OrderedBudget/10*9 {
		return
	}
	st := l.p.ord
	if l.cursor >= st.next {
		d.openLane(l)
		return
	}
	l.reopening = true
	st.reopen = append(st.reopen, l)
	d.wakePoll()
}

// wakePoll ends the poll in progress, or the next one at once, so the poll
// loop makes the rewinds lanes wait for instead of idling up to PollWait.
func (d *Dispatcher) wakePoll() {
	if d.pollCancel != nil {
		d.pollCancel()
		return
	}
	d.pollWoken = true
}

func (d *Dispatcher) openLane(l *lane) {
	l.closed, l.reopening = false, false
	delete(l.p.ord.closed, l)
	d.markCommit(l.p, false)
}

// commitOf is the offset p may be committed at. For an ordered partition
// that is the lowest of: its lowest unfinished job, the cursors of its
// closed lanes (never past a record skipped and not taken), and what
// reading hands over next (after a rewind, the records from there on of the
// reopened lanes are not taken yet).
func (d *Dispatcher) commitOf(p *partition) int64 {
	st := p.ord
	if st == nil {
		return p.wm.commit()
	}
	c := st.next
	if low, ok := p.wm.low(); ok && low < c {
		c = low
	}
	for l := range st.closed {
		c = min(c, l.cursor)
	}
	return c
}

// rewind is one ordered partition read again from an earlier offset.
type rewind struct {
	p      *partition
	to     int64
	commit int64
	epoch  int32
	lanes  []*lane
}

// planRewinds (under the lock, in the poll loop) collects the partitions
// whose reopening lanes need their records read again: each goes back to
// the lowest cursor among its reopening lanes. Lanes whose cursor reading
// has not reached yet open at once.
func (d *Dispatcher) planRewinds() []rewind {
	var out []rewind
	for _, p := range d.parts {
		st := p.ord
		if st == nil || p.draining || len(st.reopen) == 0 {
			continue
		}
		lanes := st.reopen
		st.reopen = nil
		to := lanes[0].cursor
		for _, l := range lanes {
			to = min(to, l.cursor)
		}
		if to >= st.next {
			for _, l := range lanes {
				d.openLane(l)
			}
			continue
		}
		rw := rewind{p: p, to: to, commit: d.commitOf(p), epoch: p.epoch, lanes: lanes}
		if rw.epoch < 0 {
			// Without leader epochs a mark cannot undo the rewind's
			// offset in franz-go's bookkeeping (see rewind): read again
			// from the commit instead, which is as safe, only longer.
			rw.to = rw.commit
		}
		out = append(out, rw)
	}
	return out
}

// rewindPartitions (in the poll loop, before AllowRebalance, so no revoke
// runs meanwhile) moves each partition's reading back and then opens its
// lanes. kgo's SetOffsets on a group consumer sets the partition's fetch
// offset and drops every buffered fetch (they are fetched again from each
// partition's position), but it also records the offset as both committed
// and to-commit in franz-go's bookkeeping, and the autocommit would then
// commit it: past the jobs and closed lanes below it. So:
//
//  1. CommitOffsetsSync commits the true commit offset. franz-go issues it
//     only once every earlier commit has finished, and until its onDone
//     returns no other commit can start (its sync lock, and the autocommit
//     waits on it).
//  2. In onDone, with no commit in flight or able to start, SetOffsets
//     moves the reading, and MarkCommitOffsets puts the to-commit offset
//     back to the true one: marks carry the records' leader epoch, which
//     orders above the unknown epoch (-1) SetOffsets records.
//
// A partition that cannot be rewound now (shutting down) keeps its lanes
// closed; its next owner reads them.
func (d *Dispatcher) rewindPartitions(ctx context.Context, rws []rewind) {
	for _, rw := range rws {
		p := rw.p
		done := false
		if ctx.Err() == nil {
			commit := map[string]map[int32]kgo.EpochOffset{p.topic: {p.partition: {Epoch: rw.epoch, Offset: rw.commit}}}
			d.consumer.CommitOffsetsSync(ctx, commit, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, _ *kmsg.OffsetCommitResponse, err error) {
				// A cancelled context may mean the commit never started, and
				// with it nothing holds the autocommit back.
				if ctx.Err() != nil {
					return
				}
				if err != nil {
					d.log.Warn("committing before a rewind; rewinding anyway", "topic", p.topic, "partition", p.partition, "err", err)
				}
				d.consumer.SetOffsets(map[string]map[int32]kgo.EpochOffset{p.topic: {p.partition: {Epoch: -1, Offset: rw.to}}})
				if rw.epoch >= 0 {
					d.consumer.MarkCommitOffsets(commit)
				}
				done = true
			})
		}
		d.locked(func() {
			if !done || p.draining {
				for _, l := range rw.lanes {
					l.reopening = false
				}
				return
			}
			p.ord.next, p.ord.rewoundTo = rw.to, rw.to
			for _, l := range rw.lanes {
				d.openLane(l)
			}
			d.stats.Rewinds++
			d.m.rewinds.Add(d.work, 1)
			// Completions may have marked past the commit offset meanwhile;
			// SetOffsets undid that mark, so mark again whatever is due.
			d.markCommit(p, true)
		})
	}
}

// dropLanes forgets p's lanes (revoked, or shutting down): their jobs that
// have not started are dropped, a head in flight finishes on its own.
func (d *Dispatcher) dropLanes(p *partition) {
	for _, l := range p.ord.lanes {
		d.stopRetry(l)
		keep := 0
		if l.running {
			keep = 1
		}
		for _, j := range l.jobs[keep:] {
			j.lane = nil
			d.drop(j)
		}
		clear(l.jobs[keep:])
		l.jobs = l.jobs[:keep]
		if l.q != nil && !l.running {
			delete(l.q.lanes, l)
			l.q = nil
		}
		delete(d.unknownLanes, l)
	}
	p.ord.reopen = nil
}

// sweepLanes (under the lock) looks at every lane now and then: a lane
// with waiting jobs is pumped, so an endpoint disabled, deleted or made
// unordered is noticed without waiting for its head's next attempt, and a
// closed lane reopens once the budget allows; an idle open lane is
// forgotten, unless the partition is being read again (a lane forgotten
// then would skip its records as taken before).
func (d *Dispatcher) sweepLanes() {
	for _, p := range d.parts {
		st := p.ord
		if st == nil || p.draining {
			continue
		}
		for key, l := range st.lanes {
			if len(l.jobs) > 0 && !l.running {
				d.pumpLane(l)
			}
			d.maybeReopen(l)
			if !l.closed && len(l.jobs) == 0 && !l.running && l.retryTimer == nil && st.next >= st.frontier {
				delete(st.lanes, key)
			}
		}
	}
}
