package dispatch

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/pkg/errtext"
	"github.com/sluicehq/sluice/pkg/topics"
	"github.com/sluicehq/sluice/services/sender/retry"
)

// job is one record taken from a partition.
type job struct {
	p      *partition
	offset int64
	size   int64
	d      *sluicev1.Delivery
	raw    *kgo.Record // set only when the record could not be decoded
	// read is when the record was taken, queued when it joined its
	// endpoint's queue.
	read, queued time.Time
	// acks counts what keeps the job unfinished: one for the job itself
	// until its fate is settled, plus one per record produced for it not
	// yet acknowledged. It is finished when acks reaches zero.
	acks atomic.Int32
	// active: started or settling (counted in its partition's active),
	// as opposed to waiting in a queue.
	active bool
	// lane is the ordered lane j waits in (lane.go), nil once it left it
	// or for a delivery not read from the ordered topic.
	lane *lane
	// pass is what the endpoint's circuit breaker let j's request through
	// as: only a probe's answer decides a half-open circuit.
	pass retry.Pass
}

// outgoing is a record produced on behalf of a job: the job is finished
// when all of its outgoing records are acknowledged.
type outgoing struct {
	j   *job
	rec *kgo.Record
	// step is how far down refused.go's ladder rec is: 0 as made.
	step int
}

// deferJob hands j to the first retry tier: it cannot start soon, and
// holding it would hold the watermark and memory.
func (d *Dispatcher) deferJob(j *job, reason string) {
	c := proto.CloneOf(j.d)
	c.NotBeforeMs = d.clock.Now().Add(topics.RetryTiers[0]).UnixMilli()
	d.stats.Deferred++
	d.m.deferred.Add(d.work, 1, metric.WithAttributes(attribute.String("reason", reason)))
	d.settle(j, &kgo.Record{Topic: d.opts.Names.Retry[0], Key: []byte(c.EndpointId), Value: mustMarshal(c)})
}

// moveToOrdered hands j to the ordered topic, keyed by its endpoint: the
// only place an ordered endpoint's deliveries are sent from. The copy
// finishes j.
func (d *Dispatcher) moveToOrdered(j *job) {
	d.stats.Moved++
	d.m.moved.Add(d.work, 1)
	d.settle(j, &kgo.Record{Topic: d.opts.Names.Ordered, Key: []byte(j.d.EndpointId), Value: mustMarshal(j.d)})
}

// park moves j to the dead-letter topic with its reason.
func (d *Dispatcher) park(j *job, reason string) {
	d.stats.Parked++
	d.m.parked.Add(d.work, 1)
	d.settle(j, d.deadRecord(j, reason))
}

func (d *Dispatcher) deadRecord(j *job, reason string) *kgo.Record {
	c := proto.CloneOf(j.d)
	c.DeadReason = errtext.Truncate(reason, maxTextBytes)
	c.NotBeforeMs = 0
	return &kgo.Record{Topic: d.opts.Names.Dead, Key: []byte(c.EndpointId), Value: mustMarshal(c)}
}

// DeadReasonHeader carries the reason of a dead-lettered record that could
// not be decoded (a decodable one has it in Delivery.dead_reason).
const DeadReasonHeader = "sluice-dead-reason"

// parkRaw moves an undecodable record to the dead-letter topic as it was.
func (d *Dispatcher) parkRaw(j *job, reason string) {
	r := j.raw
	headers := append(append([]kgo.RecordHeader(nil), r.Headers...),
		kgo.RecordHeader{Key: DeadReasonHeader, Value: []byte(errtext.Truncate(reason, maxTextBytes))})
	d.stats.Parked++
	d.m.parked.Add(d.work, 1)
	d.settle(j, &kgo.Record{Topic: d.opts.Names.Dead, Key: r.Key, Value: r.Value, Headers: headers})
}

// send queues rec for j (under the lock); the lock holder produces it, and
// j cannot finish before it is acknowledged.
func (d *Dispatcher) send(j *job, rec *kgo.Record) {
	if rec == nil {
		return
	}
	j.acks.Add(1)
	d.outbox = append(d.outbox, outgoing{j: j, rec: rec})
}

// settle decides j's fate: recs are the last records produced for it, and
// it finishes once they (and any sent before) are acknowledged.
func (d *Dispatcher) settle(j *job, recs ...*kgo.Record) {
	d.activate(j)
	for _, r := range recs {
		d.send(j, r)
	}
	if j.acks.Add(-1) == 0 {
		d.finish(j)
	}
}

func mustMarshal(m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		panic(fmt.Sprintf("dispatch: encoding %T: %v", m, err)) // only for invalid UTF-8 in a string, which decoding already refused
	}
	return b
}

// produce sends o.rec; when the last record of its job is acknowledged the
// job is finished. A record Kafka refuses for good (too large, invalid) goes
// down refused.go's ladder; any other failure is retried every second
// until the work context ends: the job then stays unfinished and the next
// owner of its partition delivers it again.
func (d *Dispatcher) produce(o outgoing) {
	d.producer.Produce(d.work, o.rec, func(_ *kgo.Record, err error) {
		if err != nil {
			if d.work.Err() != nil || errors.Is(err, kgo.ErrClientClosed) {
				return
			}
			if refused(err) && d.refused(o, err) {
				return
			}
			d.log.Warn("producing; retrying in 1s", "topic", o.rec.Topic, "err", err)
			// Not from this callback: producing here could wait for
			// buffer space only this goroutine would free.
			d.afterFunc(time.Second, func() { d.produce(o) })
			return
		}
		d.acked(o)
	})
}

// acked counts o's record as acknowledged (or given up on).
func (d *Dispatcher) acked(o outgoing) {
	if o.j.acks.Add(-1) == 0 {
		d.locked(func() { d.finish(o.j) })
	}
}

// finish marks j done and moves its partition's commit mark.
func (d *Dispatcher) finish(j *job) {
	p := j.p
	if j.active {
		p.active--
	}
	d.unhold(j)
	d.stats.Finished++
	d.opts.Stage.Progress()
	d.opts.Stage.Owe(d.jobs)
	p.wm.finish(j.offset)
	d.markCommit(p, false)
	d.checkMemory()
}

// drop forgets j, not started or waiting in place, without finishing it:
// its partition was revoked, and its next owner sends it.
func (d *Dispatcher) drop(j *job) {
	d.unhold(j)
	d.stats.Dropped++
}

// markCommit marks p's commit offset when it moved (or, forced, whatever it
// is: after a rewind undid the mark). Never for a revoked partition: a late
// mark would be committed over its new owner's progress.
func (d *Dispatcher) markCommit(p *partition, force bool) {
	if p.revoked {
		return
	}
	c := d.commitOf(p)
	if c < 0 || c <= p.marked && !force {
		return
	}
	p.marked = max(p.marked, c)
	if p.mark == nil {
		p.mark = map[string]map[int32]kgo.EpochOffset{p.topic: {}}
	}
	p.mark[p.topic][p.partition] = kgo.EpochOffset{Epoch: p.epoch, Offset: c}
	d.consumer.MarkCommitOffsets(p.mark)
}
