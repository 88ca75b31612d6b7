package dispatch_test

// What the dispatcher leaves behind when it stops: nothing running, and
// everything finished committed.

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/metric/noop"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/pkg/kafkax"
	"github.com/sluicehq/sluice/services/sender/dispatch"
)

// slowConfig is a configuration view whose writes block until their
// context ends, saying when they returned.
type slowConfig struct {
	*endpoints
	mu       sync.Mutex
	entered  bool
	returned []string // "write" when a write returned
}

func (c *slowConfig) UpdateEndpoint(ctx context.Context, _ string, _ func(*sluicev1.Endpoint) bool) (*sluicev1.Endpoint, error) {
	c.mu.Lock()
	c.entered = true
	c.mu.Unlock()
	<-ctx.Done()
	c.mu.Lock()
	c.returned = append(c.returned, "write")
	c.mu.Unlock()
	return nil, ctx.Err()
}

// TestRunWaitsForTheWritesItStarted (11b): a 410 makes the dispatcher
// disable the endpoint, a configuration write that does not return until
// its context ends. Stopped, Run returns only after that write did, once
// the work context ended: nothing it started outlives it. Before, the
// write ran in a goroutine of its own that Run never waited for.
func TestRunWaitsForTheWritesItStarted(t *testing.T) {
	k := onePartition(t)
	clock := newFakeClock()
	cfg := &slowConfig{endpoints: newEndpoints(&sluicev1.Endpoint{Id: "ep_gone", TenantId: "ten_test"})}
	a := newAttempter(clock)
	a.failFirst["ep_gone"], a.status["ep_gone"] = -1, 410
	produce(t, k, k.Names.Deliveries, delivery("ep_gone"))
	opts := defaults(clock)
	opts.Kafka, opts.Names, opts.Group = k.Config, k.Names, k.Prefix+"sender"
	producer, err := kafkax.NewProducer(k.Config)
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	ctx, cancel := context.WithCancel(context.Background())
	work, cancelWork := context.WithCancel(context.Background())
	defer cancelWork()
	d, err := dispatch.New(work, opts, cfg, a, producer, quiet, noop.NewMeterProvider().Meter("test"))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ran := make(chan error, 1)
	go func() { ran <- d.Run(ctx) }()
	waitFor(t, "the endpoint's disable under way", func() bool {
		cfg.mu.Lock()
		defer cfg.mu.Unlock()
		return cfg.entered && d.Stats().Finished == 1
	})
	cancel()
	// The work context ends when Run returns or a while after the stop,
	// whichever is first; the order of what returned is the test.
	select {
	case err := <-ran:
		ran <- err
	case <-time.After(2 * time.Second):
	}
	cancelWork()
	if err := <-ran; err != nil {
		t.Fatalf("Run: %v", err)
	}
	cfg.mu.Lock()
	cfg.returned = append(cfg.returned, "run")
	got := slices.Clone(cfg.returned)
	cfg.mu.Unlock()
	if !slices.Equal(got, []string{"write", "run"}) {
		t.Fatalf("returned in the order %v, want the write before Run", got)
	}
}

// TestShutdownCommitsOnAFreshContext (review L7): deliveries finished, the
// dispatcher stops with its work context already over (the grace period
// used up). Its last commit still goes through, on a context of its own:
// Run returns no error and the group is committed past every delivery.
// Before, the commit was made on the spent work context and failed.
func TestShutdownCommitsOnAFreshContext(t *testing.T) {
	k := onePartition(t)
	clock := newFakeClock()
	eps := newEndpoints(&sluicev1.Endpoint{Id: "ep_ok"})
	a := newAttempter(clock)
	var ds []*sluicev1.Delivery
	for range 50 {
		ds = append(ds, delivery("ep_ok"))
	}
	produce(t, k, k.Names.Deliveries, ds...)
	opts := defaults(clock)
	opts.Kafka, opts.Names, opts.Group = k.Config, k.Names, k.Prefix+"sender"
	producer, err := kafkax.NewProducer(k.Config)
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	ctx, cancel := context.WithCancel(context.Background())
	work, cancelWork := context.WithCancel(context.Background())
	d, err := dispatch.New(work, opts, eps, a, producer, quiet, noop.NewMeterProvider().Meter("test"))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ran := make(chan error, 1)
	go func() { ran <- d.Run(ctx) }()
	waitFor(t, "every delivery finished", func() bool { return d.Stats().Finished == 50 })
	cancelWork()
	cancel()
	if err := <-ran; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if c := committed(t, k, k.Prefix+"sender", k.Names.Deliveries); c != 50 {
		t.Fatalf("committed %d, want 50", c)
	}
}

// forgetful is an attempter that keeps something per endpoint.
type forgetful struct {
	*attempter
	mu     sync.Mutex
	forgot []string
}

func (f *forgetful) Forget(id string) {
	f.mu.Lock()
	f.forgot = append(f.forgot, id)
	f.mu.Unlock()
}

// TestIdleEndpointsAreForgottenByTheAttempter (review L8): once an
// endpoint's queue is idle and forgotten, the attempter is told, so the
// deliverer's signer cache does not keep endpoints that were deleted.
func TestIdleEndpointsAreForgottenByTheAttempter(t *testing.T) {
	k := onePartition(t)
	clock := newFakeClock()
	eps := newEndpoints(&sluicev1.Endpoint{Id: "ep_once"})
	a := &forgetful{attempter: newAttempter(clock)}
	produce(t, k, k.Names.Deliveries, delivery("ep_once"))
	start(t, k, defaults(clock), eps, a)
	waitFor(t, "the delivery", func() bool { return a.doneCount("ep_once") == 1 })
	eps.mu.Lock()
	delete(eps.m, "ep_once")
	eps.mu.Unlock()
	waitFor(t, "the attempter told to forget the endpoint", func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return slices.Contains(a.forgot, "ep_once")
	})
}
