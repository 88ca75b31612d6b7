package dispatch_test

// Tests of the dispatcher against the real broker, with an attempter that
// makes no HTTP call: it records when and how concurrently each endpoint is
// called, and can be told to be slow or to block. The HTTP path end to end
// is tested in loadtest/e2e.

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/metric/noop"
	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/pkg/ids"
	"github.com/sluicehq/sluice/pkg/kafkax"
	"github.com/sluicehq/sluice/pkg/testenv"
	"github.com/sluicehq/sluice/pkg/topics"
	"github.com/sluicehq/sluice/services/sender/dispatch"
	"github.com/sluicehq/sluice/services/sender/retry"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// quiet discards the dispatcher's log, unless DISPATCH_LOG is set (to
// debug a test).
var quiet = func() *slog.Logger {
	if os.Getenv("DISPATCH_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}()

// endpoints is a configuration view held in memory.
type endpoints struct {
	mu sync.Mutex
	m  map[string]*sluicev1.Endpoint
}

func newEndpoints(eps ...*sluicev1.Endpoint) *endpoints {
	e := &endpoints{m: map[string]*sluicev1.Endpoint{}}
	for _, ep := range eps {
		e.m[ep.Id] = ep
	}
	return e
}

func (e *endpoints) Endpoint(id string) (*sluicev1.Endpoint, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	ep, ok := e.m[id]
	return ep, ok
}

func (e *endpoints) Sync(context.Context) error { return nil }

func (e *endpoints) Tenant(string) (*sluicev1.Tenant, bool) { return nil, false }

func (e *endpoints) UpdateEndpoint(_ context.Context, id string, change func(*sluicev1.Endpoint) bool) (*sluicev1.Endpoint, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	ep, ok := e.m[id]
	if !ok {
		return nil, fmt.Errorf("no endpoint %s", id)
	}
	c := proto.CloneOf(ep)
	if change(c) {
		e.m[id] = c
	}
	return c, nil
}

// attempter records every call and plays each endpoint's part. Times are
// the dispatcher's (fake) clock's.
type attempter struct {
	now func() time.Time
	mu  sync.Mutex
	// failFirst: each delivery to the endpoint fails this many times
	// (with status, default 500, and retryAfter) before it succeeds; -1
	// fails forever.
	failFirst map[string]int
	// failCalls: the endpoint's first so many calls fail, whatever their
	// delivery.
	failCalls  map[string]int
	down       map[string]bool // fails every call while set
	status     map[string]uint32
	retryAfter map[string]string
	errText    map[string]string // a failure's error text; default "HTTP <status>"
	// calls has every call's time by delivery id, ordered the arrival
	// order of delivery ids per endpoint.
	calls    map[string][]time.Time
	order    map[string][]string
	delay    map[string]time.Duration
	gate     map[string]chan struct{} // calls block until the channel is closed
	inFlight map[string]int
	maxIn    map[string]int
	started  map[string][]time.Time
	done     map[string][]string // delivery ids in completion order
	starts   []string            // endpoint ids in the order of their calls
	count    map[string]int      // by delivery id
	changed  chan struct{}
}

func newAttempter(clock dispatch.Clock) *attempter {
	return &attempter{now: clock.Now, failFirst: map[string]int{}, failCalls: map[string]int{}, down: map[string]bool{},
		status: map[string]uint32{}, retryAfter: map[string]string{}, errText: map[string]string{},
		calls: map[string][]time.Time{}, order: map[string][]string{},
		delay: map[string]time.Duration{}, gate: map[string]chan struct{}{},
		inFlight: map[string]int{}, maxIn: map[string]int{}, started: map[string][]time.Time{},
		done: map[string][]string{}, count: map[string]int{}, changed: make(chan struct{}, 1)}
}

func (a *attempter) Attempt(d *sluicev1.Delivery, ep *sluicev1.Endpoint) (*sluicev1.Attempt, string) {
	a.mu.Lock()
	a.inFlight[ep.Id]++
	a.maxIn[ep.Id] = max(a.maxIn[ep.Id], a.inFlight[ep.Id])
	now := a.now()
	a.started[ep.Id] = append(a.started[ep.Id], now)
	a.calls[d.DeliveryId] = append(a.calls[d.DeliveryId], now)
	a.order[ep.Id] = append(a.order[ep.Id], d.DeliveryId)
	a.starts = append(a.starts, ep.Id)
	n := len(a.calls[d.DeliveryId])
	fail := a.down[ep.Id] || a.failFirst[ep.Id] < 0 || n <= a.failFirst[ep.Id] || len(a.started[ep.Id]) <= a.failCalls[ep.Id]
	status, retryAfter, errText := a.status[ep.Id], a.retryAfter[ep.Id], a.errText[ep.Id]
	delay, gate := a.delay[ep.Id], a.gate[ep.Id]
	a.mu.Unlock()
	time.Sleep(delay)
	if gate != nil {
		<-gate
	}
	a.mu.Lock()
	a.inFlight[ep.Id]--
	if !fail {
		a.done[ep.Id] = append(a.done[ep.Id], d.DeliveryId)
		a.count[d.DeliveryId]++
	}
	a.mu.Unlock()
	select {
	case a.changed <- struct{}{}:
	default:
	}
	at := &sluicev1.Attempt{SchemaVersion: sluicev1.SchemaVersion, AttemptId: ids.New(ids.Attempt),
		DeliveryId: d.DeliveryId, EndpointId: ep.Id, EventId: d.EventId, AttemptNumber: d.AttemptsMade + 1,
		Outcome: sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCESS, StatusCode: 204}
	if fail {
		if status == 0 {
			status = 500
		}
		if errText == "" {
			errText = fmt.Sprintf("HTTP %d", status)
		}
		at.Outcome, at.StatusCode, at.Error = sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_HTTP_ERROR, status, errText
		return at, retryAfter
	}
	return at, ""
}

// block makes calls to ep wait until the returned release is called; the
// test's cleanup releases them too, so a failing test does not leave the
// dispatcher waiting on them.
func (a *attempter) block(t testing.TB, ep string) (release func()) {
	gate := make(chan struct{})
	a.mu.Lock()
	a.gate[ep] = gate
	a.mu.Unlock()
	var once sync.Once
	release = func() { once.Do(func() { close(gate) }) }
	t.Cleanup(release)
	return release
}

func (a *attempter) doneCount(ep string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.done[ep])
}

// waitFor polls cond until it holds, failing after a minute.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited a minute for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// defaults are the tests' options, on clock.
func defaults(clock dispatch.Clock) dispatch.Options {
	return dispatch.Options{
		MaxInFlight: 256, EndpointInFlight: 10, QueueCap: 1000, MaxQueueWait: time.Minute,
		MemoryBudget: 64 << 20, OrderedBudget: 16 << 20, RevokeGrace: 5 * time.Second, PollRecords: 500,
		Breaker: retry.DefaultBreaker, DisableAfter: 5 * 24 * time.Hour, Clock: clock,
	}
}

// settled waits until the group has committed every record of the topics
// the dispatcher consumes: every delivery taken was finished, and so was
// everything it led to (a retry is a record of a tier, finished in turn).
// Once settled nothing more can happen, so counts taken then are final.
// The end offsets are read on both sides of the commits, so a record
// appended meanwhile is seen.
func settled(t testing.TB, k *testenv.Kafka) {
	t.Helper()
	ctx := context.Background()
	consumed := append([]string{k.Names.Deliveries, k.Names.Ordered}, k.Names.Retry...)
	group := k.Prefix + "sender"
	waitFor(t, "every consumed record to be committed", func() bool {
		before, err := k.Admin.ListEndOffsets(ctx, consumed...)
		if err != nil || before.Error() != nil {
			t.Fatalf("listing end offsets: %v %v", err, before.Error())
		}
		offs, err := k.Admin.FetchOffsets(ctx, group)
		if err != nil {
			t.Fatal(err)
		}
		after, err := k.Admin.ListEndOffsets(ctx, consumed...)
		if err != nil || after.Error() != nil {
			t.Fatalf("listing end offsets: %v %v", err, after.Error())
		}
		done := true
		before.Each(func(o kadm.ListedOffset) {
			end, _ := after.Lookup(o.Topic, o.Partition)
			c, ok := offs.Lookup(o.Topic, o.Partition)
			if end.Offset != o.Offset || o.Offset > 0 && (!ok || c.At != o.Offset) {
				done = false
			}
		})
		return done
	})
}

// start runs a dispatcher until the test ends (or stop is called).
func start(t testing.TB, k *testenv.Kafka, opts dispatch.Options, eps dispatch.Endpoints, a dispatch.Attempter) (*dispatch.Dispatcher, func()) {
	t.Helper()
	return startWith(t, k, opts, eps, a)
}

// startWith is start with options for the dispatcher's producer.
func startWith(t testing.TB, k *testenv.Kafka, opts dispatch.Options, eps dispatch.Endpoints, a dispatch.Attempter,
	producerOpts ...kgo.Opt) (*dispatch.Dispatcher, func()) {
	t.Helper()
	opts.Kafka, opts.Names = k.Config, k.Names
	if opts.Group == "" {
		opts.Group = k.Prefix + "sender"
	}
	producer, err := kafkax.NewProducer(k.Config, producerOpts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	work, cancelWork := context.WithTimeout(context.Background(), 5*time.Minute)
	d, err := dispatch.New(work, opts, eps, a, producer, quiet, noop.NewMeterProvider().Meter("test"))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("dispatcher: %v", err)
			}
			d.Close()
			producer.Close()
			cancelWork()
		})
	}
	t.Cleanup(stop)
	return d, stop
}

var seq int

func delivery(endpoint string) *sluicev1.Delivery {
	seq++
	return &sluicev1.Delivery{SchemaVersion: sluicev1.SchemaVersion, DeliveryId: fmt.Sprintf("dlv_%s_%d", endpoint, seq),
		TenantId: "ten_test", EndpointId: endpoint, EventId: fmt.Sprintf("evt_%d", seq), EventType: "order.created",
		EventReceivedAtMs: time.Now().UnixMilli(), Data: []byte(`{}`), Origin: sluicev1.DeliveryOrigin_DELIVERY_ORIGIN_ROUTER}
}

// produce writes deliveries to partition 0 of topic, keyed by endpoint as
// Sluice's writers key them.
func produce(t testing.TB, k *testenv.Kafka, topic string, ds ...*sluicev1.Delivery) {
	t.Helper()
	produceTo(t, k, topic, func(*sluicev1.Delivery) int32 { return 0 }, ds...)
}

// produceTo writes deliveries to topic, each to the partition part says.
func produceTo(t testing.TB, k *testenv.Kafka, topic string, part func(*sluicev1.Delivery) int32, ds ...*sluicev1.Delivery) {
	t.Helper()
	p, err := kafkax.NewProducer(k.Config, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var recs []*kgo.Record
	for _, d := range ds {
		b, err := proto.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, &kgo.Record{Topic: topic, Partition: part(d), Key: []byte(d.EndpointId), Value: b})
	}
	if err := p.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

func onePartition(t testing.TB) *testenv.Kafka {
	return testenv.NewKafka(t, testenv.WithPartitions(topics.Partitions{
		Events: 1, Deliveries: 1, Retry: 1, Dead: 1, Attempts: 1, EventLog: 1}))
}

func committed(t testing.TB, k *testenv.Kafka, group, topic string) int64 {
	t.Helper()
	offs, err := k.Admin.FetchOffsets(context.Background(), group)
	if err != nil {
		t.Fatal(err)
	}
	o, ok := offs.Lookup(topic, 0)
	if !ok {
		return -1
	}
	return o.At
}

func decode(t testing.TB, recs []*kgo.Record) []*sluicev1.Delivery {
	t.Helper()
	var out []*sluicev1.Delivery
	for _, r := range recs {
		d := &sluicev1.Delivery{}
		if err := proto.Unmarshal(r.Value, d); err != nil {
			t.Fatalf("record at %d of %s: %v", r.Offset, r.Topic, err)
		}
		out = append(out, d)
	}
	return out
}

// TestSlowEndpointDoesNotHoldOthersOrTheCommitPastIt: one partition holds
// a slow endpoint's deliveries first and twenty fast endpoints' after them.
// The fast ones all complete while the slow one is still on its first, and
// the commit mark stays at the slow delivery not yet finished.
func TestSlowEndpointDoesNotHoldOthersOrTheCommitPastIt(t *testing.T) {
	k := onePartition(t)
	clock := newFakeClock()
	eps := newEndpoints(&sluicev1.Endpoint{Id: "ep_slow", MaxInFlight: 1})
	a := newAttempter(clock)
	release := a.block(t, "ep_slow")
	var ds []*sluicev1.Delivery
	for range 3 {
		ds = append(ds, delivery("ep_slow"))
	}
	for i := range 20 {
		id := fmt.Sprintf("ep_fast_%d", i)
		eps.m[id] = &sluicev1.Endpoint{Id: id}
		for range 10 {
			ds = append(ds, delivery(id))
		}
	}
	produce(t, k, k.Names.Deliveries, ds...)
	d, _ := start(t, k, defaults(clock), eps, a)

	// Every fast delivery finished (its attempt record acknowledged): the
	// mark franz-go commits from is final for them, and must be offset 0,
	// the slow endpoint's first delivery, not past it.
	waitFor(t, "the fast endpoints' 200 deliveries to finish", func() bool { return d.Stats().Finished == 200 })
	if n := a.doneCount("ep_slow"); n != 0 {
		t.Fatalf("the slow endpoint finished %d while blocked", n)
	}
	marked := d.Consumer().MarkedOffsets()[k.Names.Deliveries][0]
	if marked.Offset != 0 {
		t.Fatalf("commit mark at offset %d, want 0: the unfinished delivery there", marked.Offset)
	}
	release()
	waitFor(t, "the slow endpoint's deliveries", func() bool { return a.doneCount("ep_slow") == 3 })
	waitFor(t, "the commit of all 203", func() bool {
		return committed(t, k, k.Prefix+"sender", k.Names.Deliveries) == 203
	})
}

// TestEndpointLimits: concurrency never exceeds max_in_flight (and reaches
// it), and a rate limit is held: the dispatcher waits for its tokens on its
// clock, so in fake time the i-th request of an endpoint limited to 20/s
// (burst 1) starts no earlier than i/20 s after the first.
func TestEndpointLimits(t *testing.T) {
	k := onePartition(t)
	clock := newFakeClock()
	clock.auto(t)
	eps := newEndpoints(
		&sluicev1.Endpoint{Id: "ep_three", MaxInFlight: 3},
		&sluicev1.Endpoint{Id: "ep_default"},
		&sluicev1.Endpoint{Id: "ep_rate", RateLimit: 20, MaxInFlight: 50},
	)
	a := newAttempter(clock)
	// Real delays, so requests overlap and concurrency shows.
	a.delay["ep_three"] = 30 * time.Millisecond
	a.delay["ep_default"] = 30 * time.Millisecond
	var ds []*sluicev1.Delivery
	for range 60 {
		ds = append(ds, delivery("ep_three"), delivery("ep_default"), delivery("ep_rate"))
	}
	produce(t, k, k.Names.Deliveries, ds...)
	start(t, k, defaults(clock), eps, a)
	waitFor(t, "all 180 deliveries", func() bool {
		return a.doneCount("ep_three")+a.doneCount("ep_default")+a.doneCount("ep_rate") == 180
	})
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.maxIn["ep_three"] != 3 {
		t.Errorf("max_in_flight 3: saw %d at once", a.maxIn["ep_three"])
	}
	if a.maxIn["ep_default"] != 10 {
		t.Errorf("default max_in_flight 10: saw %d at once", a.maxIn["ep_default"])
	}
	// The i-th token is taken no earlier than i/20 s after the first, which
	// is taken at the start or later. A request is recorded when its
	// goroutine runs, which can be after the clock moved on past the token
	// it took: later, never earlier. So the bound holds against the start.
	st := slices.Clone(a.started["ep_rate"])
	slices.SortFunc(st, func(x, y time.Time) int { return x.Compare(y) })
	for i, at := range st {
		if earliest := epoch.Add(time.Duration(i) * time.Second / 20); at.Before(earliest) {
			t.Fatalf("rate limit 20/s: request %d at %v, want not before %v", i, at.Sub(epoch), earliest.Sub(epoch))
		}
	}
}

// TestFullQueueAndLongWaitGoToTheRetryTier: an endpoint that does not
// answer holds its queue's cap and no more; the rest goes to the first
// retry tier, due 5 s later, with no attempt counted. Queued deliveries
// that wait longer than MaxQueueWait follow. Once the endpoint answers,
// every delivery arrives exactly once.
func TestFullQueueAndLongWaitGoToTheRetryTier(t *testing.T) {
	k := onePartition(t)
	clock := newFakeClock()
	eps := newEndpoints(&sluicev1.Endpoint{Id: "ep_stuck", MaxInFlight: 1})
	a := newAttempter(clock)
	release := a.block(t, "ep_stuck")
	var ds []*sluicev1.Delivery
	for range 20 {
		ds = append(ds, delivery("ep_stuck"))
	}
	produce(t, k, k.Names.Deliveries, ds...)
	opts := defaults(clock)
	opts.QueueCap = 5
	opts.MaxQueueWait = time.Second
	d, _ := start(t, k, opts, eps, a)

	// 1 running, 5 queued, 14 deferred at once (the clock stands still).
	waitFor(t, "14 deliveries deferred for the full queue", func() bool { return d.Stats().Deferred == 14 })
	fullAt := clock.Now()
	// The queued 5 wait past MaxQueueWait: the sweeper defers them too.
	clock.Advance(opts.MaxQueueWait + time.Millisecond)
	waitedAt := clock.Now()
	waitFor(t, "the 5 that waited to be deferred", func() bool { return d.Stats().Deferred == 19 })
	retried := k.Read(t, k.Names.Retry[0], 19)
	if len(retried) != 19 {
		t.Fatalf("%d deliveries in the retry tier, want 19 (20 less the one in flight)", len(retried))
	}
	for i, r := range decode(t, retried) {
		at := fullAt
		if i >= 14 {
			at = waitedAt
		}
		if due := time.UnixMilli(r.NotBeforeMs); !due.Equal(at.Add(topics.RetryTiers[0])) {
			t.Errorf("deferred delivery %d due %v after the start, want 5 s after it was deferred (%v)",
				i, due.Sub(epoch), at.Add(topics.RetryTiers[0]).Sub(epoch))
		}
		if r.AttemptsMade != 0 {
			t.Errorf("a deferred delivery counts %d attempts, want 0", r.AttemptsMade)
		}
	}
	// The watermark moves past the deferred ones: once the one in flight
	// finishes, all 20 are committed although 19 have not been attempted
	// (their copies wait in the tier for a clock that stands still).
	release()
	waitFor(t, "the commit past the deferred deliveries", func() bool {
		return committed(t, k, k.Prefix+"sender", k.Names.Deliveries) == 20
	})
	if s := d.Stats(); s.Attempts != 1 {
		t.Fatalf("stats %+v: want only the first attempted yet", s)
	}
	clock.auto(t)
	waitFor(t, "all 20 deliveries", func() bool { return a.doneCount("ep_stuck") == 20 })
	settled(t, k)
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, dl := range ds {
		if n := a.count[dl.DeliveryId]; n != 1 {
			t.Errorf("delivery %s attempted %d times, want 1", dl.DeliveryId, n)
		}
	}
}

// TestRetryTierRecordsWaitUntilDue: a tier record is attempted no earlier
// than its not_before; one behind it on the partition waits too.
func TestRetryTierRecordsWaitUntilDue(t *testing.T) {
	k := onePartition(t)
	clock := newFakeClock()
	clock.auto(t)
	eps := newEndpoints(&sluicev1.Endpoint{Id: "ep_a"}, &sluicev1.Endpoint{Id: "ep_b"})
	a := newAttempter(clock)
	due := epoch.Add(2 * time.Second)
	first, second := delivery("ep_a"), delivery("ep_b")
	first.NotBeforeMs = due.UnixMilli()
	second.NotBeforeMs = epoch.UnixMilli()
	produce(t, k, k.Names.Retry[0], first, second)
	start(t, k, defaults(clock), eps, a)
	waitFor(t, "both deliveries", func() bool { return a.doneCount("ep_a")+a.doneCount("ep_b") == 2 })
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, ep := range []string{"ep_a", "ep_b"} {
		if at := a.started[ep][0]; at.Before(due) {
			t.Errorf("%s attempted %v before the head's due time", ep, due.Sub(at))
		}
	}
}

// TestUnattemptableDeliveriesAreParked: an unknown (deleted) endpoint, a
// disabled one and an undecodable record all end in the dead-letter topic
// with a reason, and the partition is committed past them.
func TestUnattemptableDeliveriesAreParked(t *testing.T) {
	k := onePartition(t)
	clock := newFakeClock()
	eps := newEndpoints(&sluicev1.Endpoint{Id: "ep_off", Status: sluicev1.EndpointStatus_ENDPOINT_STATUS_DISABLED,
		DisabledReason: "paused by ops"}, &sluicev1.Endpoint{Id: "ep_ok"})
	a := newAttempter(clock)
	produce(t, k, k.Names.Deliveries, delivery("ep_gone"), delivery("ep_off"), delivery("ep_ok"))
	p, err := kafkax.NewProducer(k.Config)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.ProduceSync(context.Background(), &kgo.Record{Topic: k.Names.Deliveries, Key: []byte("x"), Value: []byte("not a delivery")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	p.Close()
	start(t, k, defaults(clock), eps, a)
	dead := k.Read(t, k.Names.Dead, 3)
	reasons := map[string]string{}
	for _, r := range dead {
		var reason string
		for _, h := range r.Headers {
			if h.Key == dispatch.DeadReasonHeader {
				reason = string(h.Value)
			}
		}
		if reason != "" {
			reasons["raw"] = reason
			if string(r.Value) != "not a delivery" {
				t.Errorf("undecodable record parked as %q, want it unchanged", r.Value)
			}
			continue
		}
		d := decode(t, []*kgo.Record{r})[0]
		reasons[d.EndpointId] = d.DeadReason
	}
	want := map[string]string{
		"ep_gone": "endpoint ep_gone does not exist",
		"ep_off":  "endpoint disabled: paused by ops",
	}
	for ep, w := range want {
		if reasons[ep] != w {
			t.Errorf("%s parked with reason %q, want %q", ep, reasons[ep], w)
		}
	}
	if r := reasons["raw"]; r == "" {
		t.Errorf("undecodable record not parked with a reason header: %v", reasons)
	}
	if len(dead) != 3 {
		t.Errorf("%d dead letters, want 3", len(dead))
	}
	waitFor(t, "the ok delivery", func() bool { return a.doneCount("ep_ok") == 1 })
	waitFor(t, "the commit past all four", func() bool {
		return committed(t, k, k.Prefix+"sender", k.Names.Deliveries) == 4
	})
}

// TestMemoryBudgetPausesFetching: with a blocked endpoint and a budget of a
// few dozen deliveries, the dispatcher stops taking records near the budget
// instead of holding the whole backlog; released, it delivers everything.
func TestMemoryBudgetPausesFetching(t *testing.T) {
	k := onePartition(t)
	clock := newFakeClock()
	eps := newEndpoints(&sluicev1.Endpoint{Id: "ep_blocked", MaxInFlight: 1})
	a := newAttempter(clock)
	release := a.block(t, "ep_blocked")
	var ds []*sluicev1.Delivery
	for range 1000 {
		d := delivery("ep_blocked")
		d.Data = []byte(fmt.Sprintf(`{"pad":"%0500d"}`, 0))
		ds = append(ds, d)
	}
	produce(t, k, k.Names.Deliveries, ds...)
	opts := defaults(clock)
	opts.PollRecords = 10
	// About 100 deliveries of ~1.1 KiB each (payload + overhead).
	opts.MemoryBudget = 100 * 1100
	d, _ := start(t, k, opts, eps, a)
	waitFor(t, "the budget to fill", func() bool { return d.Stats().Taken >= 100 })
	// The pause is made under the lock that took the record crossing the
	// budget, so it is in place now; paused topics are never handed over
	// again, so what was taken is at most the budget plus that one poll.
	if paused := d.Consumer().PauseFetchTopics(); !slices.Contains(paused, k.Names.Deliveries) {
		t.Fatalf("paused topics %v above the budget, want %s", paused, k.Names.Deliveries)
	}
	if s := d.Stats(); s.Taken > int64(100+opts.PollRecords) {
		t.Fatalf("took %d deliveries with a budget for about 100", s.Taken)
	}
	release()
	waitFor(t, "all 1000 deliveries", func() bool { return a.doneCount("ep_blocked") == 1000 })
}

// TestRebalanceUnderLoadLosesNothing: a second dispatcher joins the group,
// and later the first leaves, while deliveries flow; every delivery is
// attempted at least once, and duplicates stay within what was in flight.
func TestRebalanceUnderLoadLosesNothing(t *testing.T) {
	k := testenv.NewKafka(t, testenv.WithPartitions(topics.Partitions{
		Events: 1, Deliveries: 6, Retry: 2, Dead: 1, Attempts: 2, EventLog: 1}))
	clock := newFakeClock()
	eps := newEndpoints()
	for i := range 30 {
		id := fmt.Sprintf("ep_%d", i)
		eps.m[id] = &sluicev1.Endpoint{Id: id}
	}
	a := newAttempter(clock)
	for i := range 30 {
		a.delay[fmt.Sprintf("ep_%d", i)] = 2 * time.Millisecond
	}
	opts := defaults(clock)
	opts.Group = k.Prefix + "sender"
	d1, stop1 := start(t, k, opts, eps, a)

	p, err := kafkax.NewProducer(k.Config)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	const total = 6000
	var ids []string
	// send produces a third of the traffic, spread over about a second,
	// in the background: partitions move while deliveries flow.
	var wg sync.WaitGroup
	send := func() {
		wg.Wait()
		wg.Go(func() {
			for i := range total / 3 {
				d := delivery(fmt.Sprintf("ep_%d", i%30))
				ids = append(ids, d.DeliveryId)
				b, _ := proto.Marshal(d)
				p.Produce(context.Background(), &kgo.Record{Topic: k.Names.Deliveries, Key: []byte(d.EndpointId), Value: b}, nil)
				if i%100 == 99 {
					time.Sleep(20 * time.Millisecond)
				}
			}
			if err := p.Flush(context.Background()); err != nil {
				t.Error(err)
			}
		})
	}
	send()
	waitFor(t, "the first dispatcher to take deliveries", func() bool { return d1.Stats().Taken >= 500 })
	d2, stop2 := start(t, k, opts, eps, a) // joins: partitions move
	send()
	waitFor(t, "the second dispatcher to take deliveries", func() bool { return d2.Stats().Taken >= 100 })
	send()
	stop1() // leaves: its partitions move to the second
	wg.Wait()
	waitFor(t, "every delivery", func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return len(a.count) == total
	})
	stop2()
	a.mu.Lock()
	defer a.mu.Unlock()
	dups := 0
	for _, id := range ids {
		switch n := a.count[id]; {
		case n == 0:
			t.Errorf("delivery %s never attempted", id)
		case n > 1:
			dups++
		}
	}
	t.Logf("%d deliveries across two rebalances, %d attempted twice", total, dups)
	// Revokes commit what finished, so a duplicate needs a request that
	// outlived the revoke grace: none here.
	if dups > 0 {
		t.Errorf("%d duplicates, want none: revoked partitions commit what finished", dups)
	}
}
