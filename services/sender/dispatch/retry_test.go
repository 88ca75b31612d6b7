package dispatch_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/pkg/eventrecord"
	"github.com/sluicehq/sluice/pkg/testenv"
	"github.com/sluicehq/sluice/pkg/topics"
	"github.com/sluicehq/sluice/services/sender/dispatch"
	"github.com/sluicehq/sluice/services/sender/retry"
)

// steady removes jitter: every wait is exactly its schedule step.
func steady() float64 { return 0.5 }

func ms(ds ...time.Duration) []int64 {
	var out []int64
	for _, d := range ds {
		out = append(out, d.Milliseconds())
	}
	return out
}

func (a *attempter) callTimes(delivery string) []time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]time.Time(nil), a.calls[delivery]...)
}

// opEvents reads the operational events of type typ from the events topic.
func opEvents(t *testing.T, k *testenv.Kafka, typ string, want int) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, r := range k.Read(t, k.Names.Events, want) {
		var h string
		for _, x := range r.Headers {
			if x.Key == eventrecord.HeaderType {
				h = string(x.Value)
			}
		}
		if h != typ {
			continue
		}
		e := &sluicev1.Event{}
		if err := proto.Unmarshal(r.Value, e); err != nil {
			t.Fatal(err)
		}
		if e.Source != sluicev1.EventSource_EVENT_SOURCE_SYSTEM || e.Type != typ {
			t.Fatalf("operational event %v", e)
		}
		var data map[string]any
		if err := json.Unmarshal(e.Data, &data); err != nil {
			t.Fatal(err)
		}
		out = append(out, data)
	}
	return out
}

func attemptsOf(t *testing.T, k *testenv.Kafka, want int) []*sluicev1.Attempt {
	t.Helper()
	var out []*sluicev1.Attempt
	for _, r := range k.Read(t, k.Names.Attempts, want) {
		a := &sluicev1.Attempt{}
		if err := proto.Unmarshal(r.Value, a); err != nil {
			t.Fatal(err)
		}
		out = append(out, a)
	}
	return out
}

// TestFailingThenSucceedingGetsExactlyNPlusOneAttempts: a delivery that
// fails 3 times gets exactly 4 attempts, spaced exactly as its endpoint's
// schedule says (jitter fixed at zero here; its bounds are a unit test):
// each retry waits in its tier for the dispatcher's clock, and the clock
// moves only to the next due time.
func TestFailingThenSucceedingGetsExactlyNPlusOneAttempts(t *testing.T) {
	k := onePartition(t)
	clock := newFakeClock()
	clock.auto(t)
	schedule := []time.Duration{time.Second, 2 * time.Second, time.Second}
	eps := newEndpoints(&sluicev1.Endpoint{Id: "ep_flaky", RetryScheduleMs: ms(schedule...)})
	a := newAttempter(clock)
	a.failFirst["ep_flaky"] = 3
	dl := delivery("ep_flaky")
	produce(t, k, k.Names.Deliveries, dl)
	opts := defaults(clock)
	opts.Rand = steady
	d, _ := start(t, k, opts, eps, a)
	waitFor(t, "the delivery", func() bool { return a.doneCount("ep_flaky") == 1 })
	settled(t, k)
	calls := a.callTimes(dl.DeliveryId)
	if len(calls) != 4 {
		t.Fatalf("%d attempts, want 4 (3 failures, then the success)", len(calls))
	}
	for i, want := range schedule {
		if gap := calls[i+1].Sub(calls[i]); gap != want {
			t.Errorf("wait before attempt %d: %v, want %v", i+2, gap, want)
		}
	}
	if s := d.Stats(); s.Retried != 3 || s.Exhausted != 0 {
		t.Errorf("stats %+v, want 3 retried", s)
	}
	// The retry records carry the history so far and the attempt number.
	retried := decode(t, k.Read(t, k.Names.Retry[0], 3))
	for i, r := range retried {
		if int(r.AttemptsMade) != i+1 || len(r.History) != i+1 || r.History[i].StatusCode != 500 {
			t.Errorf("retry %d: attempts_made %d, history %v", i+1, r.AttemptsMade, r.History)
		}
	}
	// Four attempt records, numbered 1 to 4, the failures saying when the
	// next attempt is due.
	as := attemptsOf(t, k, 4)
	for i, at := range as {
		if at.AttemptNumber != uint32(i+1) {
			t.Errorf("attempt record %d numbered %d", i+1, at.AttemptNumber)
		}
		if i < 3 && at.NextAttemptAtMs != calls[i+1].UnixMilli() {
			t.Errorf("failed attempt %d says the next is due at %v, want %v", i+1,
				time.UnixMilli(at.NextAttemptAtMs).Sub(epoch), calls[i+1].Sub(epoch))
		}
	}
}

// TestExhaustionGoesToDeadWithHistory: after its last attempt a delivery is
// dead-lettered with the reason and every attempt, and its tenant gets a
// sluice.delivery.exhausted event.
func TestExhaustionGoesToDeadWithHistory(t *testing.T) {
	k := onePartition(t)
	clock := newFakeClock()
	clock.auto(t)
	eps := newEndpoints(&sluicev1.Endpoint{Id: "ep_down", TenantId: "ten_test",
		RetryScheduleMs: ms(300*time.Millisecond, 300*time.Millisecond)})
	a := newAttempter(clock)
	a.failFirst["ep_down"] = -1
	a.status["ep_down"] = 502
	dl := delivery("ep_down")
	produce(t, k, k.Names.Deliveries, dl)
	start(t, k, defaults(clock), eps, a)
	dead := decode(t, k.Read(t, k.Names.Dead, 1))
	if len(dead) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dead))
	}
	got := dead[0]
	if got.DeliveryId != dl.DeliveryId || got.DeadReason != "exhausted: 3 attempts failed, the last with HTTP 502" {
		t.Fatalf("dead letter %s with reason %q", got.DeliveryId, got.DeadReason)
	}
	if len(got.History) != 3 || got.AttemptsMade != 3 {
		t.Fatalf("history %v, attempts %d: want all 3 attempts", got.History, got.AttemptsMade)
	}
	for i, h := range got.History {
		if h.AttemptNumber != uint32(i+1) || h.StatusCode != 502 || h.StartedAtMs == 0 {
			t.Errorf("history[%d] = %v", i, h)
		}
	}
	ev := opEvents(t, k, dispatch.EventDeliveryExhausted, 1)
	if len(ev) != 1 || ev[0]["delivery_id"] != dl.DeliveryId || ev[0]["event_id"] != dl.EventId ||
		ev[0]["attempts"] != float64(3) || ev[0]["last_status"] != float64(502) {
		t.Fatalf("exhausted events %v", ev)
	}
}

// Test410DisablesTheEndpoint: a 410 disables the endpoint with the reason,
// dead-letters the delivery, tells the tenant, and the endpoint's next
// deliveries are parked without a request.
func Test410DisablesTheEndpoint(t *testing.T) {
	k := onePartition(t)
	clock := newFakeClock()
	eps := newEndpoints(&sluicev1.Endpoint{Id: "ep_gone", TenantId: "ten_test", Url: "https://gone.example/hook"})
	a := newAttempter(clock)
	a.failFirst["ep_gone"] = -1
	a.status["ep_gone"] = 410
	produce(t, k, k.Names.Deliveries, delivery("ep_gone"))
	start(t, k, defaults(clock), eps, a)
	waitFor(t, "the endpoint to be disabled", func() bool {
		ep, _ := eps.Endpoint("ep_gone")
		return ep.Status == sluicev1.EndpointStatus_ENDPOINT_STATUS_DISABLED
	})
	ep, _ := eps.Endpoint("ep_gone")
	if ep.DisabledReason != "the endpoint answered 410 Gone" {
		t.Fatalf("disabled with reason %q", ep.DisabledReason)
	}
	ev := opEvents(t, k, dispatch.EventEndpointDisabled, 1)
	if len(ev) != 1 || ev[0]["endpoint_id"] != "ep_gone" || ev[0]["reason"] != ep.DisabledReason {
		t.Fatalf("disabled events %v", ev)
	}
	produce(t, k, k.Names.Deliveries, delivery("ep_gone"))
	dead := decode(t, k.Read(t, k.Names.Dead, 2))
	if len(dead) != 2 || dead[0].DeadReason != "endpoint disabled: the endpoint answered 410 Gone" ||
		dead[1].DeadReason != "endpoint disabled: the endpoint answered 410 Gone" {
		t.Fatalf("dead letters %v", dead)
	}
	if n := len(a.callTimes(dead[1].DeliveryId)); n != 0 {
		t.Fatalf("the disabled endpoint was called %d times", n)
	}
}

// TestRetryAfterIsHonouredWithinBounds: a 429 asking for 2 s, on a 1 s
// step, waits exactly 2 s; asking for 60 s it waits twice the step, not
// 60 s. One delivery per case, so no other timer moves the clock.
func TestRetryAfterIsHonouredWithinBounds(t *testing.T) {
	step := time.Second
	for _, tc := range []struct {
		desc, retryAfter string
		want             time.Duration
	}{
		{"asked for more than the step", "2", 2 * time.Second},
		{"asked for more than twice the step", "60", 2 * step},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			k := onePartition(t)
			clock := newFakeClock()
			clock.auto(t)
			eps := newEndpoints(&sluicev1.Endpoint{Id: "ep_asks", RetryScheduleMs: ms(step)})
			a := newAttempter(clock)
			a.failFirst["ep_asks"], a.status["ep_asks"], a.retryAfter["ep_asks"] = 1, 429, tc.retryAfter
			dl := delivery("ep_asks")
			produce(t, k, k.Names.Deliveries, dl)
			opts := defaults(clock)
			opts.Rand = steady
			start(t, k, opts, eps, a)
			waitFor(t, "the delivery", func() bool { return a.doneCount("ep_asks") == 1 })
			c := a.callTimes(dl.DeliveryId)
			if gap := c[1].Sub(c[0]); gap != tc.want {
				t.Errorf("retried after %v, want %v", gap, tc.want)
			}
		})
	}
}

// TestCircuitOpensAndClosesOnSchedule: an endpoint failing every request
// opens its circuit after the minimum number of attempts; while open no
// request is made (the attempt log says circuit_open) until one probe
// OpenFor later, by the dispatcher's clock; the first probe fails and
// reopens it, the second succeeds and closes it, the tenant hears it
// recovered, and every delivery ends delivered or dead.
func TestCircuitOpensAndClosesOnSchedule(t *testing.T) {
	k := onePartition(t)
	clock := newFakeClock()
	clock.auto(t)
	// One request at a time, so the 4th failure is the last request
	// before the circuit opens.
	eps := newEndpoints(&sluicev1.Endpoint{Id: "ep_cb", TenantId: "ten_test", MaxInFlight: 1,
		RetryScheduleMs: ms(slices.Repeat([]time.Duration{500 * time.Millisecond}, 20)...)})
	a := newAttempter(clock)
	// Four failures open the circuit; the fifth call, the first probe,
	// fails too; then the endpoint answers.
	a.failCalls["ep_cb"] = 5
	var ds []*sluicev1.Delivery
	for range 5 {
		ds = append(ds, delivery("ep_cb"))
	}
	produce(t, k, k.Names.Deliveries, ds...)
	opts := defaults(clock)
	openFor := 2 * time.Second
	opts.Breaker = retry.BreakerConfig{Window: time.Minute, MinAttempts: 4, FailureRatio: 0.7, OpenFor: openFor}
	start(t, k, opts, eps, a)

	waitFor(t, "a delivery after the circuit closed", func() bool { return a.doneCount("ep_cb") > 0 })
	settled(t, k)
	dead := len(k.Read(t, k.Names.Dead, 0))
	if got := a.doneCount("ep_cb"); got+dead != 5 {
		t.Fatalf("%d delivered and %d dead of 5", got, dead)
	}
	a.mu.Lock()
	c := slices.Clone(a.started["ep_cb"])
	a.mu.Unlock()
	// The 4th failure opens it; the next request is the probe, OpenFor
	// later; it fails and the one after waits OpenFor again.
	for _, i := range []int{4, 5} {
		if gap := c[i].Sub(c[i-1]); gap < openFor {
			t.Errorf("request %d came %v after request %d, with the circuit open for %v", i+1, gap, i, openFor)
		}
	}
	t.Logf("%d delivered after the circuit closed, %d exhausted while it was open", a.doneCount("ep_cb"), dead)
	// While it was open, deliveries kept moving without requests, and the
	// attempt log says why.
	open := 0
	for _, at := range attemptsOf(t, k, 5) {
		if at.Outcome == sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_CIRCUIT_OPEN {
			open++
			if !strings.Contains(at.Error, "circuit is open") {
				t.Errorf("circuit-open attempt says %q", at.Error)
			}
		}
	}
	if open == 0 {
		t.Fatal("no circuit_open attempt recorded while the circuit was open")
	}
	if ev := opEvents(t, k, dispatch.EventEndpointRecovered, 1); len(ev) != 1 || ev[0]["endpoint_id"] != "ep_cb" {
		t.Fatalf("recovered events %v", ev)
	}
}

// TestAutoDisableAfterOnlyFailures: an endpoint that has only failed for
// DisableAfter, by the dispatcher's clock, is disabled, with the reason.
func TestAutoDisableAfterOnlyFailures(t *testing.T) {
	k := onePartition(t)
	clock := newFakeClock()
	clock.auto(t)
	// Steps of a tier's delay (2 h), so each retry waits at its tier's head.
	eps := newEndpoints(&sluicev1.Endpoint{Id: "ep_failing", TenantId: "ten_test",
		RetryScheduleMs: ms(slices.Repeat([]time.Duration{2 * time.Hour}, 9)...)})
	a := newAttempter(clock)
	a.failFirst["ep_failing"] = -1
	produce(t, k, k.Names.Deliveries, delivery("ep_failing"), delivery("ep_failing"))
	opts := defaults(clock)
	opts.Rand = steady
	opts.DisableAfter = 6 * time.Hour
	opts.Breaker.MinAttempts = 1000 // keep the circuit out of it
	start(t, k, opts, eps, a)
	waitFor(t, "the endpoint to be disabled", func() bool {
		ep, _ := eps.Endpoint("ep_failing")
		return ep.Status == sluicev1.EndpointStatus_ENDPOINT_STATUS_DISABLED
	})
	ep, _ := eps.Endpoint("ep_failing")
	if want := "no successful delivery since " + epoch.Format(time.RFC3339) + " (6h0m0s of failures)"; ep.DisabledReason != want {
		t.Fatalf("disabled with reason %q, want %q", ep.DisabledReason, want)
	}
	// Its deliveries end parked, none lost.
	dead := decode(t, k.Read(t, k.Names.Dead, 2))
	if len(dead) != 2 {
		t.Fatalf("%d dead letters, want the 2 deliveries", len(dead))
	}
}

// TestARateLimitedProbeStillGoes (review M2): an endpoint limited to one
// request per 100 s opens its circuit after two failures; when the circuit
// lets a probe through, no token is there for it. The probe waits for the
// next token instead of leaving the circuit half-open for good: it reaches
// the receiver within a token's wait and OpenFor of the circuit opening,
// succeeds and closes the circuit, and both deliveries arrive. Before, the
// circuit stayed half-open, every delivery was failed as circuit_open
// until its attempts ran out, and no probe was ever sent.
func TestARateLimitedProbeStillGoes(t *testing.T) {
	k := onePartition(t)
	clock := newFakeClock()
	clock.auto(t)
	eps := newEndpoints(&sluicev1.Endpoint{Id: "ep_slow_rate", TenantId: "ten_test", RateLimit: 0.01,
		RetryScheduleMs: ms(slices.Repeat([]time.Duration{time.Second}, 20)...)})
	a := newAttempter(clock)
	a.failCalls["ep_slow_rate"] = 2
	produce(t, k, k.Names.Deliveries, delivery("ep_slow_rate"), delivery("ep_slow_rate"))
	opts := defaults(clock)
	opts.Rand = steady
	openFor := time.Second
	opts.Breaker = retry.BreakerConfig{Window: time.Hour, MinAttempts: 2, FailureRatio: 0.5, OpenFor: openFor}
	start(t, k, opts, eps, a)
	waitFor(t, "a probe after the circuit opened", func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return len(a.started["ep_slow_rate"]) >= 3
	})
	a.mu.Lock()
	c := slices.Clone(a.started["ep_slow_rate"])
	a.mu.Unlock()
	if gap, most := c[2].Sub(c[1]), 100*time.Second+openFor; gap > most {
		t.Errorf("the probe went %v after the circuit opened, want at most a token's wait and OpenFor (%v)", gap, most)
	}
	waitFor(t, "both deliveries", func() bool { return a.doneCount("ep_slow_rate") == 2 })
	if ev := opEvents(t, k, dispatch.EventEndpointRecovered, 1); len(ev) != 1 {
		t.Fatalf("recovered events %v", ev)
	}
}

// TestReenablingStartsTheFailureClockAfresh (review B1): an endpoint that
// only failed for DisableAfter is disabled; enabled again (the API clears
// its failing_since), it fails once and is not disabled again for the old
// run of failures, and its delivery arrives at the retry. Before, the
// sender's own memory of the run survived the enable, and the first
// failure disabled the endpoint again, dated days back.
func TestReenablingStartsTheFailureClockAfresh(t *testing.T) {
	k := onePartition(t)
	clock := newFakeClock()
	clock.auto(t)
	enabled := &sluicev1.Endpoint{Id: "ep_back", TenantId: "ten_test",
		RetryScheduleMs: ms(slices.Repeat([]time.Duration{2 * time.Hour}, 9)...)}
	eps := newEndpoints(proto.CloneOf(enabled))
	a := newAttempter(clock)
	a.failFirst["ep_back"] = -1
	produce(t, k, k.Names.Deliveries, delivery("ep_back"))
	opts := defaults(clock)
	opts.Rand = steady
	opts.DisableAfter = 6 * time.Hour
	opts.Breaker.MinAttempts = 1000
	d, _ := start(t, k, opts, eps, a)
	waitFor(t, "the endpoint to be disabled", func() bool {
		ep, _ := eps.Endpoint("ep_back")
		return ep.Status == sluicev1.EndpointStatus_ENDPOINT_STATUS_DISABLED
	})
	k.Read(t, k.Names.Dead, 1) // its delivery, parked
	before := d.Stats()

	// Enabled again, as the API does it; the next delivery fails once.
	eps.mu.Lock()
	eps.m["ep_back"] = proto.CloneOf(enabled)
	eps.mu.Unlock()
	a.mu.Lock()
	a.failFirst["ep_back"] = 1
	a.mu.Unlock()
	again := delivery("ep_back")
	produce(t, k, k.Names.Deliveries, again)
	waitFor(t, "its first attempt", func() bool { return d.Stats().Attempts > before.Attempts })
	if s := d.Stats(); s.Disabled != before.Disabled {
		t.Fatalf("disabled %d times after the enable and one failure, want none", s.Disabled-before.Disabled)
	}
	waitFor(t, "the delivery at its retry", func() bool { return a.doneCount("ep_back") == 1 })
	if ep, _ := eps.Endpoint("ep_back"); ep.Status == sluicev1.EndpointStatus_ENDPOINT_STATUS_DISABLED {
		t.Fatalf("endpoint disabled again: %s", ep.DisabledReason)
	}
}

// TestALongWaitHoldsItsTierOneDelayThenHops: a record due in a minute in
// the 5 s tier holds the partition for one tier delay, then is appended to
// the tier again; a record behind it that is due goes then, 5 s late at
// most.
func TestALongWaitHoldsItsTierOneDelayThenHops(t *testing.T) {
	k := onePartition(t)
	clock := newFakeClock()
	eps := newEndpoints(&sluicev1.Endpoint{Id: "ep_a"}, &sluicev1.Endpoint{Id: "ep_b"})
	a := newAttempter(clock)
	later, now := delivery("ep_a"), delivery("ep_b")
	later.NotBeforeMs = epoch.Add(time.Minute).UnixMilli()
	now.NotBeforeMs = epoch.UnixMilli()
	produce(t, k, k.Names.Retry[0], later, now)
	d, _ := start(t, k, defaults(clock), eps, a)
	waitFor(t, "both records taken", func() bool { return d.Stats().Taken == 2 })
	if s := d.Stats(); s.Hops != 0 || a.doneCount("ep_b") != 0 {
		t.Fatalf("stats %+v, %d attempts behind: want the head held, nothing hopped yet", s, a.doneCount("ep_b"))
	}
	clock.Advance(topics.RetryTiers[0])
	waitFor(t, "the due record", func() bool { return a.doneCount("ep_b") == 1 })
	if at := a.callTimes(now.DeliveryId)[0]; !at.Equal(epoch.Add(topics.RetryTiers[0])) {
		t.Errorf("the due record went %v after the start, want one tier delay (5s)", at.Sub(epoch))
	}
	if s := d.Stats(); s.Hops != 1 || a.doneCount("ep_a") != 0 {
		t.Fatalf("stats %+v, the later record attempted %d times: want one hop and no attempt", s, a.doneCount("ep_a"))
	}
}

// TestAFarDueTimeHopsOncePerTierDelay (review H6): a record in the 5 s
// tier due in 30 s, alone on its partition, is held a tier delay at a time
// between hops, so it hops at most 30/5 times and goes exactly when due.
// Before, it was appended again as soon as it was read: on a quiet
// partition a loop of writes as fast as the broker answered, which never
// let the (fake) clock reach its due time.
func TestAFarDueTimeHopsOncePerTierDelay(t *testing.T) {
	k := onePartition(t)
	clock := newFakeClock()
	clock.auto(t)
	eps := newEndpoints(&sluicev1.Endpoint{Id: "ep_far"})
	a := newAttempter(clock)
	far := delivery("ep_far")
	due := epoch.Add(30 * time.Second)
	far.NotBeforeMs = due.UnixMilli()
	produce(t, k, k.Names.Retry[0], far)
	d, _ := start(t, k, defaults(clock), eps, a)
	waitFor(t, "the far record", func() bool { return a.doneCount("ep_far") == 1 })
	if at := a.callTimes(far.DeliveryId)[0]; !at.Equal(due) {
		t.Errorf("attempted %v after the start, want when due (30s)", at.Sub(epoch))
	}
	if hops := d.Stats().Hops; hops < 1 || hops > 6 {
		t.Errorf("%d hops over a 30 s wait in the 5 s tier, want 1 to 6", hops)
	}
}

// TestALongRetryAfterHopsInSingleDigits (review H6): a receiver answers 429
// with Retry-After: 600 twice. Clamped to twice the step, the waits are
// 10 s (in the 5 s tier) and 10 min (in the 5 min tier): each is held a tier
// delay, hops, and goes exactly when due.
func TestALongRetryAfterHopsInSingleDigits(t *testing.T) {
	k := onePartition(t)
	clock := newFakeClock()
	clock.auto(t)
	eps := newEndpoints(&sluicev1.Endpoint{Id: "ep_busy"})
	a := newAttempter(clock)
	a.failFirst["ep_busy"], a.status["ep_busy"], a.retryAfter["ep_busy"] = 2, 429, "600"
	dl := delivery("ep_busy")
	produce(t, k, k.Names.Deliveries, dl)
	opts := defaults(clock)
	opts.Rand = steady
	d, _ := start(t, k, opts, eps, a)
	waitFor(t, "the delivery", func() bool { return a.doneCount("ep_busy") == 1 })
	c := a.callTimes(dl.DeliveryId)
	if len(c) != 3 || c[1].Sub(c[0]) != 10*time.Second || c[2].Sub(c[1]) != 10*time.Minute {
		t.Errorf("attempts at %v, want 10 s then 10 min apart", c)
	}
	if hops := d.Stats().Hops; hops > 9 {
		t.Errorf("%d hops, want single digits", hops)
	}
}

// TestEveryDeliveryEndsDeliveredOrDead: a mix of healthy, flaky, failing
// and gone endpoints; in the end each delivery was delivered exactly once
// or is in sluice.dead with a reason — never both, never neither.
func TestEveryDeliveryEndsDeliveredOrDead(t *testing.T) {
	k := testenv.NewKafka(t)
	clock := newFakeClock()
	clock.auto(t)
	short := ms(200*time.Millisecond, 200*time.Millisecond)
	eps := newEndpoints(
		&sluicev1.Endpoint{Id: "ep_healthy", RetryScheduleMs: short},
		&sluicev1.Endpoint{Id: "ep_flaky", RetryScheduleMs: short},
		&sluicev1.Endpoint{Id: "ep_failing", RetryScheduleMs: short},
		&sluicev1.Endpoint{Id: "ep_gone", RetryScheduleMs: short},
	)
	a := newAttempter(clock)
	a.failFirst["ep_flaky"] = 1
	a.failFirst["ep_failing"] = -1
	a.failFirst["ep_gone"], a.status["ep_gone"] = -1, 410
	var ds []*sluicev1.Delivery
	for range 25 {
		for _, ep := range []string{"ep_healthy", "ep_flaky", "ep_failing", "ep_gone"} {
			ds = append(ds, delivery(ep))
		}
	}
	produce(t, k, k.Names.Deliveries, ds...)
	opts := defaults(clock)
	opts.Breaker.MinAttempts = 1000
	start(t, k, opts, eps, a)
	// 25 failing + 25 to the gone endpoint end dead.
	deadRecs := k.Read(t, k.Names.Dead, 50)
	dead := map[string]string{}
	for _, d := range decode(t, deadRecs) {
		if d.DeadReason == "" {
			t.Errorf("dead letter %s without a reason", d.DeliveryId)
		}
		dead[d.DeliveryId] = d.DeadReason
	}
	waitFor(t, "the deliveries that succeed", func() bool {
		return a.doneCount("ep_healthy")+a.doneCount("ep_flaky") == 50
	})
	settled(t, k)
	a.mu.Lock()
	defer a.mu.Unlock()
	delivered, parked := 0, 0
	for _, d := range ds {
		n, isDead := a.count[d.DeliveryId], dead[d.DeliveryId] != ""
		switch {
		case n == 1 && !isDead:
			delivered++
		case n == 0 && isDead:
			parked++
		default:
			t.Errorf("delivery %s to %s: delivered %d times, dead %v", d.DeliveryId, d.EndpointId, n, isDead)
		}
	}
	t.Logf("%d deliveries: %d delivered, %d dead with a reason", len(ds), delivered, parked)
	if delivered != 50 || parked != 50 {
		t.Fatalf("%d delivered, %d dead; want 50 and 50", delivered, parked)
	}
}
