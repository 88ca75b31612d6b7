package e2e_test

// The sender against the real broker and a real receiver: isolation of a
// slow endpoint, per-endpoint limits measured at the receiver, the egress
// guard, and kill -9 of one of two sender processes.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/loadtest/receiver"
	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/ids"
	"github.com/sluicehq/sluice/pkg/kafkax"
	"github.com/sluicehq/sluice/pkg/testenv"
	"github.com/sluicehq/sluice/pkg/topics"
	sender "github.com/sluicehq/sluice/services/sender/app"
)

// The test binary re-executes itself as a sender process (SENDER_CHILD
// set, configured by SLUICE_* variables), so a test can kill -9 a real one.
func init() {
	if os.Getenv("SENDER_CHILD") == "" {
		return
	}
	cfg, err := sender.LoadConfig(nil, config.LookupEnv(os.LookupEnv))
	if err == nil {
		err = sender.Run(context.Background(), cfg) // until killed
	}
	fmt.Fprintln(os.Stderr, "sender child:", err)
	os.Exit(1)
}

// senderKafka is a test's topics with deliveries spread over 4 partitions.
func senderKafka(t *testing.T) *testenv.Kafka {
	return testenv.NewKafka(t, testenv.WithPartitions(topics.Partitions{
		Events: 1, Deliveries: 4, Retry: 2, Dead: 1, Attempts: 2, EventLog: 1}))
}

// startSender runs a sender service in this process until the test ends.
func startSender(t testing.TB, k *testenv.Kafka, extra env) (stop func()) {
	t.Helper()
	return start(t, "sender", sender.LoadConfig, sender.Run, commonEnv(k).with(senderEnv).with(env{
		"SLUICE_GROUP":            k.Prefix + "sender",
		"SLUICE_SHUTDOWN_TIMEOUT": "2s",
	}).with(extra))
}

// newDelivery is a delivery of a fresh event to endpoint.
func newDelivery(endpoint string) *sluicev1.Delivery {
	return &sluicev1.Delivery{
		SchemaVersion: sluicev1.SchemaVersion, DeliveryId: ids.New(ids.Delivery), TenantId: "ten_e2e",
		EndpointId: endpoint, EventId: ids.New(ids.Event), EventType: "order.created",
		EventReceivedAtMs: time.Now().UnixMilli(), Data: []byte(`{"order":"o_1"}`),
		Origin: sluicev1.DeliveryOrigin_DELIVERY_ORIGIN_ROUTER,
	}
}

// produceRecords writes recs and returns once Kafka acknowledged them all.
func produceRecords(t testing.TB, k *testenv.Kafka, recs ...*kgo.Record) {
	t.Helper()
	p, err := kafkax.NewProducer(k.Config)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := p.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// produceDeliveries writes ds to the deliveries topic, keyed by endpoint as
// the router does.
func produceDeliveries(t testing.TB, k *testenv.Kafka, ds ...*sluicev1.Delivery) {
	t.Helper()
	recs := make([]*kgo.Record, 0, len(ds))
	for _, d := range ds {
		b, err := proto.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, &kgo.Record{Topic: k.Names.Deliveries, Key: []byte(d.EndpointId), Value: b})
	}
	produceRecords(t, k, recs...)
}

// endpointAt registers an endpoint id delivering to url.
func endpointAt(t testing.TB, k *testenv.Kafka, id, url string, tweak func(*sluicev1.Endpoint)) {
	t.Helper()
	ep := &sluicev1.Endpoint{Id: id, TenantId: "ten_e2e", Url: url, Status: sluicev1.EndpointStatus_ENDPOINT_STATUS_ENABLED}
	if tweak != nil {
		tweak(ep)
	}
	putEndpoint(t, k, ep)
}

func startReceiver(t *testing.T, opts ...receiver.Option) *receiver.Receiver {
	t.Helper()
	recv, err := receiver.Start("127.0.0.1:0", opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { recv.Close() })
	return recv
}

// waitDelivered waits until every endpoint has all its webhook ids.
func waitDelivered(t *testing.T, recv *receiver.Receiver, want map[string][]string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		missing := 0
		for ep, ids := range want {
			missing += len(recv.Tally(ep, ids).Missing)
		}
		if missing == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d deliveries missing after %v", missing, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSlowEndpointDoesNotSlowTheOthers: one endpoint answers only after
// 10 s; 50 healthy endpoints share its partitions. The slow one needs at
// least 20 s for its 20 deliveries (10 at a time); the healthy ones'
// 1,000 deliveries all arrive before it has answered even one.
func TestSlowEndpointDoesNotSlowTheOthers(t *testing.T) {
	k := senderKafka(t)
	recv := startReceiver(t)
	recv.SetBehavior("slow", receiver.Behavior{Delay: 10 * time.Second})
	endpointAt(t, k, "ep_slow", recv.URL("slow"), func(ep *sluicev1.Endpoint) { ep.TimeoutMs = 30000 })
	var ds []*sluicev1.Delivery
	for range 20 {
		ds = append(ds, newDelivery("ep_slow"))
	}
	want := map[string][]string{}
	for i := range 50 {
		name := fmt.Sprintf("healthy%d", i)
		endpointAt(t, k, "ep_"+name, recv.URL(name), nil)
		if err := recv.SetSecret(name, e2eSecret); err != nil {
			t.Fatal(err)
		}
	}
	for range 20 {
		for i := range 50 {
			d := newDelivery(fmt.Sprintf("ep_healthy%d", i))
			want[fmt.Sprintf("healthy%d", i)] = append(want[fmt.Sprintf("healthy%d", i)], d.EventId)
			ds = append(ds, d)
		}
	}
	produceDeliveries(t, k, ds...)
	began := time.Now()
	startSender(t, k, nil)

	waitDelivered(t, recv, want, 60*time.Second)
	took := time.Since(began)
	if n := len(recv.Received("slow")); n > 0 {
		t.Fatalf("the slow endpoint answered %d requests before the healthy ones were done (%v)", n, took)
	}
	if got := recv.MaxConcurrent("slow"); got != 10 {
		t.Errorf("the slow endpoint had %d requests open at once, want its default limit of 10", got)
	}
	if n := recv.BadSignatures() + recv.BadBodies(); n > 0 {
		t.Fatalf("%d webhooks failed verification", n)
	}
	t.Logf("1000 healthy deliveries in %v, while the slow endpoint (10 s per request) answered none", took)
}

// TestEndpointLimitsHoldAtTheReceiver: the receiver never sees more
// concurrent requests than an endpoint's max_in_flight, and a rate limit
// holds within 10 %.
func TestEndpointLimitsHoldAtTheReceiver(t *testing.T) {
	k := senderKafka(t)
	recv := startReceiver(t, receiver.KeepArrivals())
	for _, name := range []string{"capped", "default"} {
		recv.SetBehavior(name, receiver.Behavior{Delay: 50 * time.Millisecond})
	}
	endpointAt(t, k, "ep_capped", recv.URL("capped"), func(ep *sluicev1.Endpoint) { ep.MaxInFlight = 4 })
	endpointAt(t, k, "ep_default", recv.URL("default"), nil)
	const rate = 25
	endpointAt(t, k, "ep_rated", recv.URL("rated"), func(ep *sluicev1.Endpoint) { ep.RateLimit = rate; ep.MaxInFlight = 100 })
	want := map[string][]string{}
	var ds []*sluicev1.Delivery
	for range 150 {
		for _, name := range []string{"capped", "default", "rated"} {
			d := newDelivery("ep_" + name)
			want[name] = append(want[name], d.EventId)
			ds = append(ds, d)
		}
	}
	produceDeliveries(t, k, ds...)
	startSender(t, k, nil)
	waitDelivered(t, recv, want, 60*time.Second)

	if got := recv.MaxConcurrent("capped"); got != 4 {
		t.Errorf("max_in_flight 4: the receiver saw %d requests at once", got)
	}
	if got := recv.MaxConcurrent("default"); got != 10 {
		t.Errorf("default max_in_flight 10: the receiver saw %d requests at once", got)
	}
	arr := recv.Arrivals("rated")
	if len(arr) != 150 {
		t.Fatalf("%d arrivals at the rate-limited endpoint, want 150", len(arr))
	}
	// Sustained rate over the run, and the busiest one-second window.
	span := arr[len(arr)-1].At.Sub(arr[0].At).Seconds()
	sustained := float64(len(arr)-1) / span
	busiest := 0
	for i := range arr {
		n := 0
		for j := i; j < len(arr) && arr[j].At.Sub(arr[i].At) < time.Second; j++ {
			n++
		}
		busiest = max(busiest, n)
	}
	t.Logf("rate limit %d/s: sustained %.1f/s over %.1f s, busiest second %d", rate, sustained, span, busiest)
	if sustained < rate*0.9 || sustained > rate*1.1 {
		t.Errorf("sustained rate %.1f/s, want %d/s within 10 %%", sustained, rate)
	}
	if float64(busiest) > rate*1.1 {
		t.Errorf("%d requests in one second, limit %d/s + 10 %%", busiest, rate)
	}
}

// TestEgressGuard: internal addresses are refused (outcome blocked, no
// connection) unless the allow-list names them.
func TestEgressGuard(t *testing.T) {
	recv := startReceiver(t)
	port := strings.TrimPrefix(recv.URL(""), "http://127.0.0.1:")
	port = strings.TrimSuffix(port, "/e/")
	targets := []struct {
		name, url string
		reachable bool // a receiver answers there once allowed
	}{
		{"ipv4 loopback", "http://127.0.0.1:" + port + "/e/v4", true},
		{"ipv4-mapped loopback", "http://[::ffff:127.0.0.1]:" + port + "/e/mapped", true},
		{"hostname resolving to loopback", "http://localhost:" + port + "/e/localhost", true},
		{"ipv6 loopback", "http://[::1]:" + port + "/e/v6", false},
		{"private", "http://10.0.0.1:" + port + "/e/private", false},
		{"cloud metadata", "http://169.254.169.254/latest/meta-data/", false},
		{"nat64 of the metadata address", "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/", false},
	}
	run := func(t *testing.T, allow string) map[string]*sluicev1.Attempt {
		k := senderKafka(t)
		var ds []*sluicev1.Delivery
		for i, tg := range targets {
			id := fmt.Sprintf("ep_egress_%d", i)
			endpointAt(t, k, id, tg.url, func(ep *sluicev1.Endpoint) { ep.TimeoutMs = 1000 })
			ds = append(ds, newDelivery(id))
		}
		produceDeliveries(t, k, ds...)
		startSender(t, k, env{"SLUICE_EGRESS_ALLOW": allow})
		got := map[string]*sluicev1.Attempt{}
		for _, r := range k.Read(t, k.Names.Attempts, len(targets)) {
			a := &sluicev1.Attempt{}
			if err := proto.Unmarshal(r.Value, a); err != nil {
				t.Fatal(err)
			}
			got[a.EndpointId] = a
		}
		return got
	}
	t.Run("refused by default", func(t *testing.T) {
		before := recv.Requests()
		got := run(t, "")
		for i, tg := range targets {
			a := got[fmt.Sprintf("ep_egress_%d", i)]
			if a == nil || a.Outcome != sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_BLOCKED {
				t.Errorf("%s (%s): attempt %v, want outcome blocked", tg.name, tg.url, a)
			}
		}
		if n := recv.Requests() - before; n != 0 {
			t.Errorf("the receiver on 127.0.0.1 got %d requests with nothing allowed", n)
		}
	})
	t.Run("allowed through the allow-list", func(t *testing.T) {
		got := run(t, "127.0.0.1/32,::1,10.0.0.1/32,169.254.169.254/32")
		for i, tg := range targets {
			a := got[fmt.Sprintf("ep_egress_%d", i)]
			switch {
			case a == nil:
				t.Errorf("%s: no attempt", tg.name)
			case a.Outcome == sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_BLOCKED:
				t.Errorf("%s (%s): blocked although allowed: %s", tg.name, tg.url, a.Error)
			case tg.reachable && a.Outcome != sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCESS:
				t.Errorf("%s: outcome %v (%s), want success", tg.name, a.Outcome, a.Error)
			}
		}
		// The NAT64 form is judged by the IPv4 inside it, which is allowed
		// here, so it is not blocked either.
		for _, name := range []string{"v4", "mapped", "localhost"} {
			if len(recv.Received(name)) != 1 {
				t.Errorf("receiver endpoint %s got %d webhooks, want 1", name, len(recv.Received(name)))
			}
		}
	})
}

// TestKillDashNineOfASenderLosesNothing: two sender processes share the
// deliveries; one is killed with SIGKILL mid-load. Every delivery still
// arrives at least once; duplicates come only from what the dead one had
// finished and not committed.
func TestKillDashNineOfASenderLosesNothing(t *testing.T) {
	k := senderKafka(t)
	recv := startReceiver(t)
	const endpoints, perEndpoint = 40, 100
	for i := range endpoints {
		name := fmt.Sprintf("k%d", i)
		endpointAt(t, k, "ep_"+name, recv.URL(name), nil)
		recv.SetBehavior(name, receiver.Behavior{Delay: 5 * time.Millisecond})
	}
	group := k.Prefix + "sender"
	spawn := func(n int) (*exec.Cmd, *strings.Builder) {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "SENDER_CHILD=1",
			"SLUICE_KAFKA_BROKERS="+k.Config.Brokers[0], "SLUICE_TOPIC_PREFIX="+k.Prefix,
			"SLUICE_GROUP="+group, "SLUICE_OPS_ADDR=127.0.0.1:0", "SLUICE_LOG_LEVEL=warn",
			"SLUICE_INSECURE_DEV_SECRETS_KEY=true", "SLUICE_EGRESS_ALLOW=127.0.0.1/32",
			fmt.Sprintf("SLUICE_KAFKA_CLIENT_ID=sender-child-%d", n))
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if cmd.ProcessState == nil {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
			}
		})
		return cmd, &stderr
	}
	victim, victimErr := spawn(1)
	_, _ = spawn(2)

	// Produce steadily so both senders are busy when one dies.
	want := map[string][]string{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	wg.Go(func() {
		for round := range perEndpoint {
			var ds []*sluicev1.Delivery
			mu.Lock()
			for i := range endpoints {
				d := newDelivery(fmt.Sprintf("ep_k%d", i))
				want[fmt.Sprintf("k%d", i)] = append(want[fmt.Sprintf("k%d", i)], d.EventId)
				ds = append(ds, d)
			}
			mu.Unlock()
			produceDeliveries(t, k, ds...)
			if round%10 == 9 {
				time.Sleep(300 * time.Millisecond)
			}
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for recv.Requests() < endpoints*perEndpoint/3 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d requests in 60 s\nvictim: %s", recv.Requests(), victimErr.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := victim.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = victim.Wait()
	killedAt := recv.Requests()
	wg.Wait()

	// The survivor takes the dead one's partitions once its session times
	// out (15 s) and delivers from their last commit.
	mu.Lock()
	defer mu.Unlock()
	waitDelivered(t, recv, want, 90*time.Second)
	dups := 0
	for ep, ids := range want {
		tally := recv.Tally(ep, ids)
		dups += tally.Duplicates
		if len(tally.Unexpected) > 0 {
			t.Errorf("%s: unexpected webhooks %v", ep, tally.Unexpected)
		}
	}
	t.Logf("killed one sender after %d of %d requests; all delivered, %d duplicates", killedAt, endpoints*perEndpoint, dups)
	// Duplicates only from the dead sender's uncommitted window: at most
	// what it finished in the second before the kill plus what it had in
	// flight, far below everything it had delivered.
	if int64(dups) > killedAt/2 {
		t.Errorf("%d duplicates for %d requests before the kill: more than an uncommitted window", dups, killedAt)
	}
}

// TestEveryEventDeliveredOrDeadEndToEnd: events published in the Kafka
// contract fan out to four endpoints — healthy, flaky (one 503 with
// Retry-After, then fine), failing (always 500) and gone (410). In the
// end every (event, endpoint) pair is either at the receiver exactly once
// or in sluice.dead with a reason; nothing else.
func TestEveryEventDeliveredOrDeadEndToEnd(t *testing.T) {
	k := senderKafka(t)
	recv := startReceiver(t)
	const tenant = "ten_e2e"
	names := []string{"healthy", "flaky", "failing", "gone"}
	recv.SetBehavior("flaky", receiver.Behavior{Status: 503, FailFirst: 1, RetryAfter: "1"})
	recv.SetBehavior("failing", receiver.Behavior{Status: 500})
	recv.SetBehavior("gone", receiver.Behavior{Status: 410})
	for _, name := range names {
		endpointAt(t, k, "ep_"+name, recv.URL(name), func(ep *sluicev1.Endpoint) {
			ep.EventTypes = []string{"order.*"}
			ep.RetryScheduleMs = []int64{1000, 1000}
		})
		if err := recv.SetSecret(name, e2eSecret); err != nil {
			t.Fatal(err)
		}
	}
	// 20 first attempts failing at once would open the flaky endpoint's
	// circuit, and with two retries its deliveries would run out while it
	// is open; the breaker has tests of its own.
	startSender(t, k, env{"SLUICE_CIRCUIT_MIN_ATTEMPTS": "1000"})
	startIngest(t, k, nil)

	const n = 20
	var eventIDs []string
	var recs []*kgo.Record
	for i := range n {
		id := fmt.Sprintf("evt_mix_%02d", i)
		eventIDs = append(eventIDs, id)
		recs = append(recs, contractRecord(k.Names.Events, tenant, "order.created", id, fmt.Sprintf(`{"order":%d}`, i)))
	}
	produceRecords(t, k, recs...)

	// The failing and gone endpoints' 40 end in sluice.dead.
	dead := map[string]map[string]string{} // endpoint → event → reason
	for _, r := range k.Read(t, k.Names.Dead, 2*n) {
		d := &sluicev1.Delivery{}
		if err := proto.Unmarshal(r.Value, d); err != nil {
			t.Fatal(err)
		}
		if dead[d.EndpointId] == nil {
			dead[d.EndpointId] = map[string]string{}
		}
		if _, twice := dead[d.EndpointId][d.EventId]; twice {
			t.Errorf("%s → %s dead-lettered twice", d.EventId, d.EndpointId)
		}
		dead[d.EndpointId][d.EventId] = d.DeadReason
	}
	waitDelivered(t, recv, map[string][]string{"healthy": eventIDs, "flaky": eventIDs}, 60*time.Second)
	time.Sleep(time.Second) // room for a stray duplicate

	delivered, parked := 0, 0
	for _, name := range names {
		got := recv.Received(name)
		for _, id := range eventIDs {
			reason, isDead := dead["ep_"+name][id]
			switch n := got[id]; {
			case n == 1 && !isDead:
				delivered++
			case n == 0 && isDead && reason != "":
				parked++
			default:
				t.Errorf("%s → %s: delivered %d times, dead %v (reason %q)", id, name, n, isDead, reason)
			}
		}
	}
	t.Logf("%d (event, endpoint) pairs: %d delivered, %d dead with a reason", n*len(names), delivered, parked)
	if delivered != 2*n || parked != 2*n {
		t.Fatalf("%d delivered and %d dead, want %d and %d", delivered, parked, 2*n, 2*n)
	}
	for id, reason := range dead["ep_failing"] {
		if !strings.HasPrefix(reason, "exhausted: 3 attempts failed, the last with HTTP 500") {
			t.Errorf("%s: dead with reason %q", id, reason)
		}
	}
	for id, reason := range dead["ep_gone"] {
		if !strings.HasPrefix(reason, "endpoint disabled: the endpoint answered 410 Gone") {
			t.Errorf("%s: dead with reason %q", id, reason)
		}
	}
	if n := recv.BadSignatures() + recv.BadBodies(); n > 0 {
		t.Fatalf("%d webhooks failed verification", n)
	}
}
