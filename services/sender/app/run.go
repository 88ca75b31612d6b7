package app

import (
	"context"
	"os"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/pkg/configstore"
	"github.com/sluicehq/sluice/pkg/egress"
	"github.com/sluicehq/sluice/pkg/kafkax"
	"github.com/sluicehq/sluice/pkg/secretbox"
	"github.com/sluicehq/sluice/pkg/service"
	"github.com/sluicehq/sluice/services/sender/deliver"
	"github.com/sluicehq/sluice/services/sender/dispatch"
	"github.com/sluicehq/sluice/services/sender/retry"
)

// Run runs the sender until ctx is cancelled, then finishes the requests
// in flight, commits and returns. Kafka that is down, or topics not created
// yet, are waited for at start (the stages say so on /readyz), never a
// reason to exit; a cluster that refuses our credentials or certificate
// ends Run at once with the cause (service.Await).
func Run(ctx context.Context, cfg Config) error {
	rt, err := service.Start(Name, cfg.Common, os.Stdout)
	if err != nil {
		return err
	}
	defer rt.Close(context.WithoutCancel(ctx))
	// Every Kafka client below carries the runtime\'s tracing and metrics hooks.
	cfg.Kafka = rt.Kafka
	names := rt.Names
	cfgStage, dispatchStage := rt.Stage("config"), rt.Stage("dispatcher")

	box, err := secretbox.New(cfg.Secrets)
	if err != nil {
		return err
	}
	if box.Insecure() {
		rt.Log.Warn("using the insecure development secrets key; never do this in production")
	}
	allow, err := egress.ParseAllowList(cfg.EgressAllow)
	if err != nil {
		return err
	}
	need := append([]string{names.Deliveries, names.Ordered, names.Dead, names.Attempts, names.Config, names.Events}, names.Retry...)
	if err := service.Await(ctx, cfgStage, rt.Log, "kafka topics", func(ctx context.Context) error {
		return service.RequireTopics(ctx, cfg.Kafka, need...)
	}); err != nil {
		return service.AwaitFailed(ctx, err)
	}
	var store *configstore.Store
	if err := service.Await(ctx, cfgStage, rt.Log, "config topic", func(ctx context.Context) (err error) {
		store, err = configstore.Open(ctx, cfg.Kafka, names.Config, rt.Log)
		return err
	}); err != nil {
		return service.AwaitFailed(ctx, err)
	}
	defer store.Close()
	store.ReportTo(cfgStage)
	producer, err := kafkax.NewProducer(cfg.Kafka,
		// The bound on records waiting for Kafka: attempt records are
		// produced asynchronously, and when the log lags by this many, new
		// requests wait instead of memory growing.
		kgo.MaxBufferedRecords(cfg.AttemptLogBuffer),
		// Nothing waits on these records but the commit of their delivery;
		// 10 ms of linger batches a busy sender's attempt records into a
		// few produce requests per second per partition instead of one per
		// request, which the broker (sharing the cores) pays for.
		kgo.ProducerLinger(10*time.Millisecond))
	if err != nil {
		return err
	}
	defer producer.Close()

	dv := deliver.New(deliver.Options{
		Timeout: cfg.RequestTimeout, Excerpt: cfg.ResponseExcerpt, UserAgent: cfg.UserAgent,
		MaxConnsPerHost: cfg.MaxInFlight, Guard: egress.New(egress.WithAllow(allow...)), Box: box,
		Tracing: rt.Tracing,
	})
	// In-flight work runs on the shutdown context, not ctx: a SIGTERM must
	// not cut a request and its attempt record in half.
	work, cancelWork := rt.ShutdownContext(ctx)
	defer cancelWork()
	d, err := dispatch.New(work, dispatch.Options{
		Kafka: cfg.Kafka, Names: names, Group: cfg.Group,
		MaxInFlight: cfg.MaxInFlight, TenantInFlight: cfg.TenantMaxInFlight, EndpointInFlight: cfg.EndpointMaxInFlight,
		QueueCap: cfg.EndpointQueue, MaxQueueWait: cfg.MaxQueueWait,
		MemoryBudget: int64(cfg.MemoryBudget), OrderedBudget: int64(cfg.OrderedMemoryBudget),
		RevokeGrace: cfg.RevokeGrace,
		// One poll takes at most a few fetches' worth; the memory budget,
		// not this, bounds what is held.
		PollRecords: 1000,
		Breaker: retry.BreakerConfig{Window: cfg.Circuit.Window, MinAttempts: cfg.Circuit.MinAttempts,
			FailureRatio: float64(cfg.CircuitFailurePercent) / 100, OpenFor: cfg.Circuit.OpenFor},
		DisableAfter: cfg.DisableAfter,
		Stage:        dispatchStage,
		RecordKey:    box.RecordKey(),
	}, store, dv, producer, rt.Log, rt.Metrics.Meter("sluice/sender"))
	if err != nil {
		return err
	}
	defer d.Close()
	rt.Ops.AddCheck("kafka", func(ctx context.Context) error { return kafkax.Ping(ctx, d.Consumer()) })

	rt.Log.Info("started", "ops", rt.Ops.Addr(), "group", cfg.Group, "egress_allow", cfg.EgressAllow)
	err = rt.Run(ctx,
		store.Run,
		func(ctx context.Context) error {
			// Deliveries wait for the endpoints they name to be known.
			dispatchStage.Waiting("waiting for the config view to catch up")
			if err := store.WaitCaughtUp(ctx); err != nil {
				return nil // cancelled during start-up
			}
			return d.Run(ctx)
		})
	rt.Log.Info("stopped", "err", err)
	return err
}
