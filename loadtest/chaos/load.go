package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/valyala/fasthttp"

	"github.com/sluicehq/sluice/loadtest/bench"
	"github.com/sluicehq/sluice/pkg/eventrecord"
	"github.com/sluicehq/sluice/pkg/kafkax"
)

const (
	// giveUpAfter is how long a producer keeps retrying an event before it
	// gives up on it (the event is then not accepted and not expected
	// anywhere). It is above RecoveryBound, so a client rides out every
	// fault the suite lets pass.
	giveUpAfter = 150 * time.Second
	// requestTimeout bounds one call to the events API. An answer lost to
	// it may hide an accepted event; the retry, with the same id, is then
	// answered as a duplicate, which counts as accepted.
	requestTimeout = 10 * time.Second
	// sendsInFlight bounds each HTTP producer's requests in flight (each
	// retrying its events); at the producers' rates (a few a second) 32
	// is a whole broker outage's worth of stuck requests.
	sendsInFlight = 32
)

// The load: about 13 events/s, a few thousand over a run, from three
// producers side by side, alternating the two tenants.
var producers = []struct {
	via   string
	every time.Duration
	batch int // events per request; 0 publishes to Kafka
}{
	{"http", 250 * time.Millisecond, 1},
	{"batch", time.Second, 5},
	{"kafka", 250 * time.Millisecond, 0},
}

// accepted is an event the system took: a 202 (or a batch result with its
// id, or a duplicate answer to a retry) or a Kafka acknowledgement.
type accepted struct {
	tenant int
	typ    string
	stage  int // the stage running when it was first sent
	via    string
}

// ledger is every accepted event by id.
type ledger struct {
	mu     sync.Mutex
	events map[string]accepted
	gaveUp atomic.Int64
}

func (l *ledger) accept(id string, a accepted) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.events == nil {
		l.events = map[string]accepted{}
	}
	if _, ok := l.events[id]; !ok {
		l.events[id] = a
	}
}

func (l *ledger) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.events)
}

func (l *ledger) snapshot() map[string]accepted {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.events)
}

// stage is the index of the stage running now; the load starts a moment
// before the first stage (the baseline), and counts under it.
func (su *Suite) stage() int {
	su.mu.Lock()
	defer su.mu.Unlock()
	return max(0, len(su.stages)-1)
}

// startLoad starts the producers; they stop making events when ctx ends,
// and retry those already sent until each is accepted, giveUpAfter has
// passed or sendCtx ends. The returned group is done then.
func (su *Suite) startLoad(ctx, sendCtx context.Context) *sync.WaitGroup {
	var wg sync.WaitGroup
	for _, p := range producers {
		wg.Go(func() {
			if p.batch == 0 {
				su.produceKafka(ctx, sendCtx, p.via, p.every)
			} else {
				su.produceHTTP(ctx, sendCtx, p.via, p.every, p.batch)
			}
		})
	}
	return &wg
}

// randomEvents makes n events of tenant t of its types at random.
func (su *Suite) randomEvents(t, n int) []bench.Event {
	types := su.tenants[t].types
	return bench.NewEvents(n, func(int) string { return types[rand.IntN(len(types))] })
}

// produceHTTP sends n events every tick, each request retried (in a
// goroutine of its own, at most sendsInFlight) until its events are
// accepted or giveUpAfter passes.
func (su *Suite) produceHTTP(ctx, sendCtx context.Context, via string, every time.Duration, n int) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	sem := make(chan struct{}, sendsInFlight)
	var sends sync.WaitGroup
	defer sends.Wait()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		t := i % 2
		evs := su.randomEvents(t, n)
		stage := su.stage()
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		sends.Go(func() {
			defer func() { <-sem }()
			// Not ctx: an event already on its way is sent until
			// accepted, as by a client, after the load stops.
			su.send(sendCtx, t, evs, n > 1, stage, via)
		})
	}
}

// send posts evs for tenant t until each is accepted, retrying connection
// errors, timeouts and 5xx answers with backoff like a real client, and
// records the accepted ones. It returns the events accepted.
func (su *Suite) send(ctx context.Context, t int, evs []bench.Event, asBatch bool, stage int, via string) []bench.Event {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	deadline := time.Now().Add(giveUpAfter)
	var done []bench.Event
	for backoff := 100 * time.Millisecond; len(evs) > 0; backoff = min(2*backoff, 2*time.Second) {
		bench.EventsRequest(req, su.S.APIURL, su.tenants[t].Key, evs, asBatch)
		err := su.http.DoTimeout(req, resp, requestTimeout)
		switch {
		case err != nil:
			// Connection refused or reset, or no answer: ingest is down
			// or restarting. Sent again with the same ids.
		case resp.StatusCode() >= 500 && resp.StatusCode() != fasthttp.StatusServiceUnavailable:
			// An error of the server: sent again, as a client does.
		default:
			ok, again, err := bench.Accepted(resp, evs, asBatch)
			if err != nil {
				// A client does not retry a 4xx; the events are lost
				// to it, which the report counts as a failure.
				su.refuse(fmt.Sprintf("%d %s", resp.StatusCode(), errDetail(resp.Body())), len(evs))
				return done
			}
			for _, e := range ok {
				su.ledger.accept(e.ID, accepted{tenant: t, typ: e.Type, stage: stage, via: via})
			}
			done = append(done, ok...)
			evs = again
			backoff = 100 * time.Millisecond
		}
		if len(evs) == 0 {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			su.ledger.gaveUp.Add(int64(len(evs)))
			return done
		}
		time.Sleep(backoff)
	}
	return done
}

// produceKafka publishes one event every tick in the producer contract and
// counts it accepted when Kafka acknowledges it. Its client waits up to
// giveUpAfter for an acknowledgement, riding out a broker restart.
func (su *Suite) produceKafka(ctx, sendCtx context.Context, via string, every time.Duration) {
	cl, err := kafkax.NewProducer(su.S.Kafka, kgo.RecordDeliveryTimeout(giveUpAfter))
	if err != nil {
		su.fail("kafka producer: %v", err)
		return
	}
	defer cl.Close()
	tick := time.NewTicker(every)
	defer tick.Stop()
	var failed atomic.Value
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			// Every record is acknowledged or failed after this; one
			// still waiting when sendCtx ends fails (given up).
			if err := cl.Flush(sendCtx); err != nil {
				su.cfg.Logf("kafka producer: flushing ended: %v", err)
			}
			if err, _ := failed.Load().(error); err != nil {
				su.cfg.Logf("kafka producer: records given up, the first with: %v", err)
			}
			return
		case <-tick.C:
		}
		t := i % 2
		e := su.randomEvents(t, 1)[0]
		stage := su.stage()
		cl.Produce(sendCtx, bench.EventRecord(su.S.Names.Events, su.tenants[t].ID, e), func(_ *kgo.Record, err error) {
			if err != nil {
				su.ledger.gaveUp.Add(1)
				failed.CompareAndSwap(nil, err)
				return
			}
			su.ledger.accept(e.ID, accepted{tenant: t, typ: e.Type, stage: stage, via: via})
		})
	}
}

// probe is an event sent to see the system work end to end, the endpoints
// it must reach, and the events partition it was made for.
type probe struct {
	id        string
	tenant    int
	typ       string
	partition int32
	eps       []*endpoint
}

// eventsPartition is the partition of the events topic a record of tenant
// and id goes to: both the events API's producer and a Kafka producer
// hash the key (tenant/id) with murmur2, as Kafka's default partitioner.
func eventsPartition(tenant, id string, partitions int) int32 {
	return int32(kgo.StickyKeyPartitioner(nil).ForTopic("").Partition(&kgo.Record{Key: eventrecord.Key(tenant, id)}, partitions))
}

// sendProbe sends one event of typ for tenant t whose id puts it on the
// events partition given, and returns it once accepted.
func (su *Suite) sendProbe(ctx context.Context, t int, typ string, partition int32) (probe, error) {
	var e bench.Event
	// Ids are random: each try lands on a given one of P partitions with
	// chance 1/P, so 200 tries miss with (5/6)^200 ≈ 1e-16 at P = 6.
	for range 200 {
		e = bench.NewEvents(1, func(int) string { return typ })[0]
		if eventsPartition(su.tenants[t].ID, e.ID, eventsPartitions) == partition {
			break
		}
	}
	if ok := su.send(ctx, t, []bench.Event{e}, false, su.stage(), "probe"); len(ok) != 1 {
		return probe{}, errors.New("a probe event was not accepted")
	}
	return probe{id: e.ID, tenant: t, typ: typ, partition: partition, eps: su.expected(t, typ)}, nil
}

// sendProbes sends the probes of a recovery check: first one to the probe
// endpoint, then one of every type of every tenant, which together reach
// every endpoint, spread so that every events partition carries one.
func (su *Suite) sendProbes(ctx context.Context) ([]probe, error) {
	p, err := su.sendProbe(ctx, 0, probeType, 0)
	if err != nil {
		return nil, err
	}
	out := []probe{p}
	for t, tn := range su.tenants {
		for k, typ := range tn.types {
			p, err := su.sendProbe(ctx, t, typ, int32((t*len(tn.types)+k+1)%eventsPartitions))
			if err != nil {
				return out, err
			}
			out = append(out, p)
		}
	}
	return out, nil
}

// refuse counts events the events API refused by its answer.
func (su *Suite) refuse(answer string, n int) {
	su.mu.Lock()
	defer su.mu.Unlock()
	if su.refused == nil {
		su.refused = map[string]int{}
		su.cfg.Logf("the events API refused events: %s", answer)
	}
	stage := "before the first stage"
	if len(su.stages) > 0 {
		stage = su.stages[len(su.stages)-1].Name
	}
	su.refused[fmt.Sprintf("stage %s: %s", stage, answer)] += n
}

// errDetail is the detail of a problem document, or the body's start.
func errDetail(body []byte) string {
	var p struct{ Detail string }
	if json.Unmarshal(body, &p) == nil && p.Detail != "" {
		return p.Detail
	}
	return string(body[:min(len(body), 200)])
}
