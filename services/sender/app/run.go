package app

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/metric"

	"github.com/sluicehq/sluice/pkg/configstore"
	"github.com/sluicehq/sluice/pkg/kafkax"
	"github.com/sluicehq/sluice/pkg/service"
)

// Run runs the sender until ctx is cancelled, then finishes the deliveries
// in flight, commits and returns.
func Run(ctx context.Context, cfg Config) error {
	rt, err := service.Start(Name, cfg.Common, os.Stdout)
	if err != nil {
		return err
	}
	defer rt.Close(context.WithoutCancel(ctx))
	names := rt.Names

	if err := service.RequireTopics(ctx, cfg.Kafka, names.Deliveries, names.Attempts, names.Config); err != nil {
		return err
	}
	store, err := configstore.Open(ctx, cfg.Kafka, names.Config, rt.Log)
	if err != nil {
		return err
	}
	defer store.Close()
	producer, err := kafkax.NewProducer(cfg.Kafka)
	if err != nil {
		return err
	}
	defer producer.Close()
	consumer, err := kafkax.NewConsumer(cfg.Kafka, cfg.Group, []string{names.Deliveries})
	if err != nil {
		return err
	}
	defer consumer.Close()

	m := rt.Metrics.Meter("sluice/sender")
	d := &deliverer{
		http: newHTTPClient(cfg.MaxInFlight), endpoints: store,
		producer: producer, attemptsTopic: names.Attempts, timeout: cfg.RequestTimeout,
		excerpt: cfg.ResponseExcerpt, userAgent: cfg.UserAgent, log: rt.Log,
	}
	if d.attempts, err = m.Int64Counter("sluice.sender.attempts",
		metric.WithDescription("delivery attempts by outcome")); err != nil {
		return err
	}
	if d.latency, err = m.Float64Histogram("sluice.sender.attempt.duration", metric.WithUnit("s"),
		metric.WithDescription("duration of webhook requests")); err != nil {
		return err
	}
	rt.Ops.AddCheck("kafka", func(ctx context.Context) error { return kafkax.Ping(ctx, consumer) })
	rt.Ops.AddCheck("config", store.Ready)

	rt.Log.Info("started", "ops", rt.Ops.Addr(), "group", cfg.Group)
	err = rt.Run(ctx,
		store.Run,
		func(ctx context.Context) error {
			// Deliveries wait for the endpoints they name to be known.
			if err := store.WaitCaughtUp(ctx); err != nil {
				return nil // cancelled during start-up
			}
			return consume(ctx, consumer, d, cfg.MaxInFlight, rt.ShutdownContext)
		})
	rt.Log.Info("stopped", "err", err)
	return err
}

// consume polls deliveries and attempts each batch with at most maxInFlight
// requests at once. A batch is marked for commit only when every attempt of
// it is recorded, and the group may rebalance only between batches, so a
// commit never covers an unfinished delivery or a lost partition.
//
// This first sender waits for the slowest delivery of a batch before the
// next; per-endpoint queues that keep one slow endpoint from delaying the
// others replace it (DESIGN §6).
func consume(ctx context.Context, cl *kgo.Client, d *deliverer, maxInFlight int,
	shutdown func(context.Context) (context.Context, context.CancelFunc)) error {
	sem := make(chan struct{}, maxInFlight)
	// In-flight work runs on the shutdown context, not ctx: a SIGTERM must
	// not cut a request and its attempt record in half.
	work, cancel := shutdown(ctx)
	defer cancel()
	for ctx.Err() == nil {
		fetches := cl.PollRecords(ctx, maxInFlight)
		if errors.Is(fetches.Err0(), kgo.ErrClientClosed) {
			break
		}
		fetches.EachError(func(t string, p int32, err error) {
			if ctx.Err() == nil {
				d.log.Warn("fetching deliveries", "topic", t, "partition", p, "err", err)
			}
		})
		recs := fetches.Records()
		var wg sync.WaitGroup
		for _, r := range recs {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				d.deliver(work, r)
			})
		}
		wg.Wait()
		cl.MarkCommitRecords(recs...)
		cl.AllowRebalance()
	}
	if err := cl.CommitMarkedOffsets(work); err != nil {
		return fmt.Errorf("committing offsets on shutdown: %w", err)
	}
	return nil
}
