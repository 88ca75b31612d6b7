package dispatch

import (
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/pkg/errtext"
)

// maxTextBytes bounds every text from outside the sender that it writes
// into a record: an attempt's error (as the Attempter gave it), each error
// in a delivery's history, a dead letter's reason. A receiver controls some
// of it (a certificate's names make an error of 250 KiB); 1 KiB says what
// went wrong.
//
// The largest delivery record the sender writes is then what it read plus
// at most 22,144 bytes: 20 history entries of at most 1,055 bytes each
// (1,024 of error, the number, time, outcome and status, and the entry's
// own tag and length: 21,100), a reason of 1,027 (1,024 and its tag and
// length), and attempts_made and not_before_ms (17). A delivery from the
// router fits the producer's 1,000,012-byte batch limit with that room to
// spare as long as its data is at most max-event-bytes; one that does not
// is caught by refused below. An attempt record is at most 1 KiB of error,
// the response excerpt (at most 64 KiB), the URL (2 KiB at the API) and
// the delivery's ids.
const maxTextBytes = 1 << 10

// refused reports whether Kafka refuses a record for good: a non-retriable
// error (too large, invalid) that producing it again cannot change.
func refused(err error) bool {
	ke, ok := errors.AsType[*kerr.Error](err)
	return ok && !ke.Retriable
}

// refused takes o one step down the ladder after Kafka refused it for good,
// and reports whether it did (false: o is as small as it gets, and is
// retried like any failed record).
//
// A delivery (retry, move, dead letter):
//
//  1. without its history (the attempts are in the attempt log), to the
//     same topic;
//  2. as a dead letter, with the reason;
//  3. as a dead letter of a few hundred bytes without data or history,
//     whose reason says so: its data is in the event log, and a replay
//     sends it again. Only a refusal of the dead-letter topic itself (an
//     ACL, a deleted topic) keeps such a record out, and then it is
//     retried until an operator fixes that.
//
// An attempt record: without its response excerpt; refused again, it is
// dropped with an error in the log, and the delivery log has no row for
// that attempt. An operational event, or a dead letter of a record that
// could not be decoded, is dropped with an error in the log.
func (d *Dispatcher) refused(o outgoing, err error) bool {
	why := fmt.Sprintf("could not be produced to %s: %v", o.rec.Topic, err)
	next := o
	next.step++
	switch {
	case o.rec.Topic == d.opts.Names.Attempts:
		a := &sluicev1.Attempt{}
		if o.step > 0 || proto.Unmarshal(o.rec.Value, a) != nil {
			d.log.Error("dropping an attempt record Kafka refuses; the delivery log will have no row for this attempt",
				"err", err, "topic", o.rec.Topic)
			d.acked(o)
			return true
		}
		a.ResponseExcerpt = nil
		next.rec = &kgo.Record{Topic: o.rec.Topic, Key: o.rec.Key, Value: mustMarshal(a)}
	case o.rec.Topic == d.opts.Names.Events || o.j.raw != nil:
		d.log.Error("dropping a record Kafka refuses", "err", err, "topic", o.rec.Topic)
		d.acked(o)
		return true
	default:
		dl := &sluicev1.Delivery{}
		if proto.Unmarshal(o.rec.Value, dl) != nil {
			return false // we made it; cannot happen
		}
		switch o.step {
		case 0:
			dl.History = nil
			next.rec = &kgo.Record{Topic: o.rec.Topic, Key: o.rec.Key, Value: mustMarshal(dl)}
		case 1:
			if o.rec.Topic == d.opts.Names.Dead {
				next.step++
				return d.refused(next, err) // already a dead letter
			}
			dl.History, dl.NotBeforeMs = nil, 0
			dl.DeadReason = errtext.Truncate(why, maxTextBytes)
			next.rec = &kgo.Record{Topic: d.opts.Names.Dead, Key: o.rec.Key, Value: mustMarshal(dl)}
		case 2:
			bare := &sluicev1.Delivery{SchemaVersion: dl.SchemaVersion, DeliveryId: dl.DeliveryId, TenantId: dl.TenantId,
				EndpointId: dl.EndpointId, EventId: dl.EventId, EventType: dl.EventType,
				EventReceivedAtMs: dl.EventReceivedAtMs, AttemptsMade: dl.AttemptsMade, Origin: dl.Origin,
				Traceparent: dl.Traceparent, Tracestate: dl.Tracestate}
			bare.DeadReason = errtext.Truncate(fmt.Sprintf("its data (%d bytes) and history were dropped, replay the event to send it again; %s",
				len(dl.Data), why), maxTextBytes)
			next.rec = &kgo.Record{Topic: d.opts.Names.Dead, Key: o.rec.Key, Value: mustMarshal(bare)}
		default:
			return false
		}
	}
	d.log.Warn("Kafka refused a record; producing a smaller one", "err", err, "topic", o.rec.Topic, "step", next.step)
	d.locked(func() { d.stats.Shrunk++ })
	// Not from this callback (see produce); owned, so shutdown waits.
	d.spawn(func() { d.produce(next) })
	return true
}
