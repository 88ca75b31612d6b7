// Package chaos is the fault suite behind `make chaos` (DESIGN §9, §10): it
// runs Sluice's three services as processes (loadtest/bench) against a dev
// stack of its own, keeps steady load on them from HTTP and Kafka
// producers, and injects faults one after another: kill -9 of each service
// and of the broker, ClickHouse frozen and stopped, receivers that flap.
// It only ever brings back what it killed, exactly as before. After each
// fault it waits for full recovery and times it; at the end it accounts for
// every accepted event at every endpoint it should reach (delivered, or
// dead with a reason), classifies duplicates, and compares the delivery
// log's attempt rows with the requests the receiver saw.
package chaos

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/sluicehq/sluice/loadtest/bench"
	"github.com/sluicehq/sluice/loadtest/receiver"
	"github.com/sluicehq/sluice/pkg/eventfilter"
	"github.com/sluicehq/sluice/pkg/topics"
)

const (
	// RecoveryBound is how long a fault may take, from its start to full
	// recovery, before the stage fails (and the faults after it are not
	// run: they would measure a system that is already broken).
	RecoveryBound = 120 * time.Second
	// drainBound is how long the suite waits, once the load has stopped,
	// for every accepted event to be delivered or dead everywhere. The
	// longest honest tail is a delivery that failed at the end of the
	// load: 4 attempts of up to 5 s with waits of 1, 2 and 5 s (28 s), or
	// an open circuit's 30 s followed by that.
	drainBound = 90 * time.Second
	// afterFailureBound replaces drainBound, and bounds the requests still
	// retrying when the load stops, once a stage has failed: the run has
	// failed already, the wait only sharpens the diagnosis, and the whole
	// run must stay under 8 minutes.
	afterFailureBound = 30 * time.Second
	// endpointTimeout is every endpoint's timeout_ms: a hang costs the
	// sender this much per attempt.
	endpointTimeout = 5 * time.Second
)

// retrySchedule is every endpoint's retry_schedule_ms: 4 attempts within
// 8 s of waits, so deliveries that fail during a flap end (delivered or
// dead) within the run instead of days later.
var retrySchedule = []int{1000, 2000, 5000}

// Config is what a run needs. The dev stack is the one dev/env.sh names
// in this process's environment, which dev/up.sh and dev/down.sh inherit
// when the suite restarts the broker or ClickHouse.
type Config struct {
	Repo string
	Logf func(string, ...any)
}

// Suite is one run.
type Suite struct {
	cfg Config
	S   *bench.Stack
	R   *bench.Runner

	tenants []tenant
	eps     []*endpoint // every endpoint, the probe's included
	probe   *endpoint   // tenant 0's probe endpoint, subscribed only to probeType

	ledger ledger
	dead   deadLetters
	stages []*Stage // the stages run so far, the current one last
	notRun []*Stage // the stages after one that failed
	http   *fasthttp.Client
	// sends are the faults after which a redelivery is expected: a
	// sender's kill or the broker's.
	sends []mark

	Failures []string
	refused  map[string]int // events the API refused, by stage and answer
	mu       sync.Mutex     // stages, Failures, refused
}

type tenant struct {
	ID, Key, Name string
	types         []string
}

type endpoint struct {
	bench.Endpoint
	tenant  int
	filters eventfilter.Set
	flap    *receiver.Behavior // the behaviour of the flap stage, nil if none
}

// mark is a moment a fault began that can leave work uncommitted.
type mark struct {
	stage int
	at    time.Time
}

const (
	probeType = "chaos.probe"
	// eventsPartitions is the events topic's partition count; the probes
	// cover each one.
	eventsPartitions = 6
)

// New starts the services and the receiver on the stack dev/env.sh names,
// then makes the tenants and endpoints.
func New(ctx context.Context, cfg Config) (*Suite, error) {
	su := &Suite{cfg: cfg, http: &fasthttp.Client{MaxConnsPerHost: 2 * sendsInFlight * len(producers)}}
	s, err := bench.StartStack(ctx, cfg.Repo, bench.StackOptions{Name: "chaos",
		// Enough partitions that a kill interrupts several partitions'
		// work at once, few enough to start quickly on two cores.
		Partitions: topics.Partitions{Events: eventsPartitions, Deliveries: 12, Retry: 3, Dead: 3, Attempts: 6, EventLog: 6},
		Env: map[string][]string{
			// info, not the bench's warn: the logs are what a failed
			// stage is diagnosed from.
			"ingest": {"SLUICE_LOG_LEVEL=info"}, "sender": {"SLUICE_LOG_LEVEL=info"}, "logwriter": {"SLUICE_LOG_LEVEL=info"},
		}}, cfg.Logf)
	if s != nil {
		su.S = s
	}
	if err != nil {
		return su, err
	}
	if su.R, err = bench.NewRunner(s, bench.Size{}, cfg.Logf, receiver.KeepArrivals()); err != nil {
		return su, err
	}
	return su, su.setup(ctx)
}

// Close stops the receiver, the services and removes the run's topics and
// database.
func (su *Suite) Close() {
	if su.R != nil {
		su.R.Close()
	}
	if su.S != nil {
		su.S.Close()
	}
}

// setup makes two tenants with six endpoints each, every endpoint on a
// short retry schedule: per tenant, one subscribed to all its types, one
// to each of its four types, and one to two of them, so an event reaches
// two or three endpoints. Tenant 0 also gets the probe endpoint.
func (su *Suite) setup(ctx context.Context) error {
	for i, name := range []string{"a", "b"} {
		id, key, err := su.R.Tenant(ctx, "chaos-"+name)
		if err != nil {
			return fmt.Errorf("making tenant %s: %w", name, err)
		}
		t := tenant{ID: id, Key: key, Name: name}
		for k := range 4 {
			t.types = append(t.types, fmt.Sprintf("chaos.%s.t%d", name, k))
		}
		su.tenants = append(su.tenants, t)
		filters := [][]string{{"chaos." + name + ".*"}, {t.types[0]}, {t.types[1]}, {t.types[2]}, {t.types[3]}, {t.types[0], t.types[2]}}
		if i == 0 {
			filters = append(filters, []string{probeType})
		}
		made, err := su.R.Endpoints(ctx, key, "chaos-"+name+"-", len(filters), func(k int) map[string]any {
			return map[string]any{"events": filters[k], "max_in_flight": 10,
				"timeout_ms": endpointTimeout.Milliseconds(), "retry_schedule_ms": retrySchedule}
		})
		if err != nil {
			return fmt.Errorf("making tenant %s's endpoints: %w", name, err)
		}
		for k, ep := range made {
			set, err := eventfilter.Compile(filters[k])
			if err != nil {
				return err
			}
			su.eps = append(su.eps, &endpoint{Endpoint: ep, tenant: i, filters: set})
		}
	}
	su.probe = su.eps[6]
	// The flap stage: four of tenant b's single-type endpoints, one
	// behaviour each, and tenant a's two-type endpoint in bursts too.
	b := su.eps[7:]
	b[1].flap = &receiver.Behavior{Status: 503, BurstEvery: 4 * time.Second, BurstFor: 2 * time.Second}
	b[2].flap = &receiver.Behavior{Hang: true}
	b[3].flap = &receiver.Behavior{Reset: true}
	b[4].flap = &receiver.Behavior{SlowBody: 2 * time.Second}
	su.eps[5].flap = &receiver.Behavior{Status: 500, BurstEvery: 3 * time.Second, BurstFor: time.Second}
	su.cfg.Logf("%d endpoints of 2 tenants, retry schedule %v ms, timeout %v", len(su.eps), retrySchedule, endpointTimeout)
	return nil
}

// expected is the endpoints an event of tenant t and type typ must reach.
func (su *Suite) expected(t int, typ string) []*endpoint {
	var out []*endpoint
	for _, ep := range su.eps {
		if ep.tenant == t && ep.filters.Matches(typ) {
			out = append(out, ep)
		}
	}
	return out
}

// stageFailed says whether a stage failed (which ends the sequence).
func (su *Suite) stageFailed() bool {
	return len(su.stages) > 0 && su.stages[len(su.stages)-1].Err != ""
}

// fail records a failure of the run.
func (su *Suite) fail(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	su.cfg.Logf("FAIL: %s", msg)
	su.mu.Lock()
	su.Failures = append(su.Failures, msg)
	su.mu.Unlock()
}

// Run runs the load, the faults in order and the accounting, and returns
// the report.
func (su *Suite) Run(ctx context.Context) *Report {
	rep := &Report{Started: time.Now()}
	dead, err := su.startDeadLetters(ctx)
	if err != nil {
		su.fail("reading %s: %v", su.S.Names.Dead, err)
		return su.finish(ctx, rep)
	}
	defer dead()

	// The producers make events until loadCtx ends; an event already sent
	// is retried until sendCtx ends, which is giveUpAfter after the load
	// stops, or afterFailureBound once a stage has failed.
	loadCtx, stopLoad := context.WithCancel(ctx)
	sendCtx, stopSends := context.WithCancel(ctx)
	defer stopSends()
	load := su.startLoad(loadCtx, sendCtx)
	su.runStages(ctx)
	stopLoad()
	bound := giveUpAfter
	if su.stageFailed() {
		bound = afterFailureBound
	}
	stop := time.AfterFunc(bound, stopSends)
	load.Wait()
	stop.Stop()
	su.cfg.Logf("load stopped: %d events accepted, %d given up after retrying for %v", su.ledger.count(), su.ledger.gaveUp.Load(), giveUpAfter)
	su.drain(ctx)
	// A stage that failed on a service's exit has reported it already.
	if msg := su.exitedByItself(); msg != "" && !strings.Contains(su.stages[len(su.stages)-1].Err, "exited by itself") {
		su.fail("after the faults: %s", msg)
	}
	return su.finish(ctx, rep)
}
