package chaos

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/sluicehq/sluice/loadtest/receiver"
	"github.com/sluicehq/sluice/pkg/kafkax"
	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"
)

const (
	// uncommittedBefore is how long before a sender's or the broker's kill
	// a delivery may have finished and still not be committed, so that it
	// is delivered again after the restart. The sender commits marked
	// offsets every 1 s, at its partition's watermark, which can wait on
	// the partition's oldest unfinished delivery for up to the endpoint's
	// timeout (5 s) plus the longest queue wait before it is deferred
	// (max-queue-wait, 5 s): 11 s, rounded up to 15 s.
	uncommittedBefore = 15 * time.Second
	// redeliveredWithin is how long after its fault's recovery a
	// redelivery may still arrive: the backlog the restart left is worked
	// off in the seconds after the probe went through, and a delivery that
	// fails meanwhile retries for up to 8 s of waits and 4 timeouts of 5 s.
	redeliveredWithin = 30 * time.Second
	// inFlightBefore is how long before a sender's kill a request the
	// receiver saw may have been in flight when the sender died: the
	// endpoint timeout plus 1 s for the attempt record to be produced. Its
	// attempt record was never produced, so the log has no row for it.
	inFlightBefore = endpointTimeout + time.Second
)

// httpOutcomes are the attempt outcomes of a request the receiver saw; the
// others (blocked, circuit_open, …) made no HTTP call.
var httpOutcomes = map[string]bool{"success": true, "http_error": true, "timeout": true, "network_error": true}

// deadLetters is every record read from the run's dead-letter topic, by
// event and endpoint id.
type deadLetters struct {
	mu      sync.Mutex
	reasons map[[2]string]string
}

func (d *deadLetters) reason(eventID, endpointID string) (string, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	r, ok := d.reasons[[2]string{eventID, endpointID}]
	return r, ok
}

// startDeadLetters reads the run's dead-letter topic from its start for
// the whole run, in a goroutine the returned function stops and waits for.
func (su *Suite) startDeadLetters(ctx context.Context) (func(), error) {
	cl, err := kafkax.NewClient(su.S.Kafka, kgo.ConsumeTopics(su.S.Names.Dead),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		return nil, err
	}
	su.dead.reasons = map[[2]string]string{}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		for ctx.Err() == nil {
			fs := cl.PollFetches(ctx)
			fs.EachRecord(func(r *kgo.Record) {
				var d sluicev1.Delivery
				if err := proto.Unmarshal(r.Value, &d); err != nil {
					su.fail("a dead letter at %s/%d@%d does not decode: %v", r.Topic, r.Partition, r.Offset, err)
					return
				}
				su.dead.mu.Lock()
				su.dead.reasons[[2]string{d.EventId, d.EndpointId}] = d.DeadReason
				su.dead.mu.Unlock()
			})
		}
	})
	return func() { cancel(); wg.Wait(); cl.Close() }, nil
}

// pending counts the (event, endpoint) pairs neither delivered nor dead.
func (su *Suite) pending() (int, []string) {
	evs := su.ledger.snapshot()
	received := map[string]map[string]int{}
	for _, ep := range su.eps {
		received[ep.Name] = su.R.Recv.Received(ep.Name)
	}
	n := 0
	var some []string
	for id, a := range evs {
		for _, ep := range su.expected(a.tenant, a.typ) {
			if received[ep.Name][id] > 0 {
				continue
			}
			if _, dead := su.dead.reason(id, ep.ID); dead {
				continue
			}
			n++
			if len(some) < 5 {
				some = append(some, id+"→"+ep.Name)
			}
		}
	}
	return n, some
}

// drain waits, at most drainBound, until every accepted event is delivered
// or dead at every endpoint it should reach, then until the delivery log
// stops growing.
func (su *Suite) drain(ctx context.Context) {
	bound := drainBound
	if su.stageFailed() {
		bound = afterFailureBound
	}
	start := time.Now()
	for shown := start; ; time.Sleep(time.Second) {
		n, some := su.pending()
		if n == 0 {
			su.cfg.Logf("drained %.1f s after the load stopped", time.Since(start).Seconds())
			break
		}
		if time.Since(start) > bound || ctx.Err() != nil {
			su.cfg.Logf("still %d deliveries neither delivered nor dead %v after the load stopped, e.g. %v", n, bound, some)
			break
		}
		if time.Since(shown) > 5*time.Second {
			su.cfg.Logf("draining: %d deliveries neither delivered nor dead, e.g. %v", n, some)
			shown = time.Now()
		}
	}
	// The log is complete when its row count stops moving for 5 s (the
	// logwriter inserts at least every second), within 30 s.
	var last uint64
	steady := time.Now()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline) && ctx.Err() == nil; time.Sleep(time.Second) {
		n, err := su.logRows(ctx)
		if err != nil || n != last {
			last, steady = n, time.Now()
			continue
		}
		if time.Since(steady) >= 5*time.Second {
			return
		}
	}
	su.cfg.Logf("the delivery log was still growing 30 s after the drain")
}

// logRows is the number of attempt rows of the run's tenants.
func (su *Suite) logRows(ctx context.Context) (uint64, error) {
	counts, err := su.S.AttemptCounts(ctx, su.tenantIDs())
	var n uint64
	for _, c := range counts {
		n += c.Rows
	}
	return n, err
}

func (su *Suite) tenantIDs() []string {
	var ids []string
	for _, t := range su.tenants {
		ids = append(ids, t.ID)
	}
	return ids
}

// Attempts compares the delivery log with the receiver.
type Attempts struct {
	Requests    int // requests the receiver saw
	Rows        int // attempt rows with an HTTP outcome
	InFlight    int // requests without a row, in flight when a sender was killed
	Unexplained []string
	Err         string
}

// account fills every stage's counts from the ledger, the receiver and
// the dead letters, and compares attempts with requests.
func (su *Suite) account(ctx context.Context) Attempts {
	arrivals := map[string]map[string][]receiver.Arrival{} // endpoint name → event id → requests
	for _, ep := range su.eps {
		m := map[string][]receiver.Arrival{}
		for _, a := range su.R.Recv.Arrivals(ep.Name) {
			m[a.ID] = append(m[a.ID], a)
		}
		arrivals[ep.Name] = m
	}
	su.tally(su.ledger.snapshot(), arrivals, su.dead.reason)
	return su.checkAttempts(ctx, arrivals)
}

// tally counts, into the stage each event was first sent in, its (event,
// endpoint) pairs: delivered (a 2xx arrived), dead (a dead letter with a
// reason), missing (neither: a failure), and the duplicates, in the
// uncommitted window or not (outside it: a failure).
func (su *Suite) tally(evs map[string]accepted, arrivals map[string]map[string][]receiver.Arrival, dead func(eventID, endpointID string) (string, bool)) {
	for _, st := range su.stages {
		st.DeadReasons = map[string]int{}
	}
	var missing []string
	for _, id := range slices.Sorted(maps.Keys(evs)) {
		a := evs[id]
		if a.stage >= len(su.stages) {
			continue
		}
		st := su.stages[a.stage]
		st.Accepted++
		for _, ep := range su.expected(a.tenant, a.typ) {
			st.Pairs++
			var delivered []time.Time
			for _, arr := range arrivals[ep.Name][id] {
				if arr.Status >= 200 && arr.Status < 300 {
					delivered = append(delivered, arr.At)
				}
			}
			reason, isDead := dead(id, ep.ID)
			switch {
			case len(delivered) > 0:
				st.Delivered++
			case isDead && reason != "":
				st.Dead++
				st.DeadReasons[reasonClass(reason)]++
			default:
				st.Missing++
				why := ""
				if isDead {
					why = "; a dead letter without a reason"
				}
				missing = append(missing, fmt.Sprintf("%s→%s (%s, stage %s%s)", id, ep.Name, a.via, st.Name, why))
			}
			for _, at := range delivered[min(1, len(delivered)):] {
				st.Duplicates++
				if su.inUncommittedWindow(delivered[0], at) {
					st.DupInWindow++
				}
			}
		}
	}
	if len(missing) > 0 {
		su.fail("%d deliveries missing (neither delivered nor dead with a reason), e.g. %s", len(missing), strings.Join(missing[:min(10, len(missing))], ", "))
	}
	for _, st := range su.stages {
		if out := st.Duplicates - st.DupInWindow; out > 0 {
			su.fail("stage %s: %d duplicates outside the uncommitted window", st.Name, out)
		}
	}
}

// inUncommittedWindow says whether a second arrival at was a redelivery
// the design allows: the first arrival (first) finished at most
// uncommittedBefore before a fault that can leave work uncommitted (a
// sender's kill, the broker's), and the redelivery came after that fault
// and at most redeliveredWithin after its recovery.
func (su *Suite) inUncommittedWindow(first, at time.Time) bool {
	for _, m := range su.sends {
		st := su.stages[m.stage]
		end := st.Recovered
		if end.IsZero() {
			end = time.Now()
		}
		if !first.Before(m.at.Add(-uncommittedBefore)) && first.Before(m.at) && at.After(m.at) && at.Before(end.Add(redeliveredWithin)) {
			return true
		}
	}
	return false
}

// reasonClass shortens a dead reason to its kind: "exhausted: 4 attempts
// failed, the last with no answer within 5s" stays whole, but addresses
// and ports in network errors are cut.
func reasonClass(r string) string {
	if i := strings.Index(r, "the last with "); i >= 0 {
		last := r[i+len("the last with "):]
		if j := strings.IndexAny(last, ":("); j > 0 {
			last = strings.TrimSpace(last[:j])
		}
		return r[:i] + "the last with " + last
	}
	return r[:min(len(r), 80)]
}

// checkAttempts reads the delivery log's attempt rows of the run's
// tenants and compares them with the requests the receiver saw.
func (su *Suite) checkAttempts(ctx context.Context, arrivals map[string]map[string][]receiver.Arrival) Attempts {
	counts, err := su.S.AttemptCounts(ctx, su.tenantIDs())
	if err != nil {
		su.fail("reading the delivery log: %v", err)
		return Attempts{Err: err.Error()}
	}
	byID := map[string]string{}
	for _, ep := range su.eps {
		byID[ep.ID] = ep.Name
	}
	rows := map[[2]string]int{} // event id, endpoint name
	for _, c := range counts {
		if httpOutcomes[c.Outcome] {
			rows[[2]string{c.EventID, byID[c.EndpointID]}] += int(c.Rows)
		}
	}
	var kills []time.Time
	for _, m := range su.sends {
		if su.stages[m.stage].Name == "sender" {
			kills = append(kills, m.at)
		}
	}
	res := compareAttempts(arrivals, rows, kills)
	if len(res.Unexplained) > 0 {
		su.fail("%d (event, endpoint) pairs whose attempt rows differ from the requests the receiver saw, e.g. %s",
			len(res.Unexplained), strings.Join(res.Unexplained[:min(5, len(res.Unexplained))], "; "))
	}
	return res
}

// compareAttempts compares, per (event, endpoint name), the attempt rows
// with an HTTP outcome against the requests the receiver saw. A request
// may lack its row only if it arrived within inFlightBefore before a
// sender's kill (it was in flight when the sender died); every other
// difference is unexplained.
func compareAttempts(arrivals map[string]map[string][]receiver.Arrival, rows map[[2]string]int, senderKills []time.Time) Attempts {
	var res Attempts
	for _, n := range rows {
		res.Rows += n
	}
	for name, byEvent := range arrivals {
		for id, arrs := range byEvent {
			res.Requests += len(arrs)
			n := rows[[2]string{id, name}]
			d := len(arrs) - n
			if d == 0 {
				continue
			}
			inFlight := 0
			for _, a := range arrs {
				for _, k := range senderKills {
					if !a.At.Before(k.Add(-inFlightBefore)) && a.At.Before(k) {
						inFlight++
						break
					}
				}
			}
			if d > 0 && d <= inFlight {
				res.InFlight += d
				continue
			}
			res.Unexplained = append(res.Unexplained, fmt.Sprintf("%s→%s: %d requests, %d rows", id, name, len(arrs), n))
		}
	}
	// Rows of pairs the receiver never saw at all.
	for k, n := range rows {
		if len(arrivals[k[1]][k[0]]) == 0 {
			res.Unexplained = append(res.Unexplained, fmt.Sprintf("%s→%s: 0 requests, %d rows", k[0], k[1], n))
		}
	}
	slices.Sort(res.Unexplained)
	return res
}
