package app

import (
	"context"
	"fmt"
	"os"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/pkg/clickhousex"
	"github.com/sluicehq/sluice/pkg/kafkax"
	"github.com/sluicehq/sluice/pkg/service"
	"github.com/sluicehq/sluice/services/logwriter/retention"
	"github.com/sluicehq/sluice/services/logwriter/schema"
)

// Run runs the logwriter until ctx is cancelled, then inserts what it holds,
// commits and returns. ClickHouse and Kafka that are down at start are
// waited for (the "logwriter" stage says what it waits for), never a reason
// to exit; one that refuses our credentials or certificate ends Run at once
// with the cause (service.Await).
func Run(ctx context.Context, cfg Config) error {
	rt, err := service.Start(Name, cfg.Common, os.Stdout)
	if err != nil {
		return err
	}
	defer rt.Close(context.WithoutCancel(ctx))
	// Every Kafka client below carries the runtime\'s tracing and metrics hooks.
	cfg.Kafka = rt.Kafka
	names := rt.Names
	stage := rt.Stage("logwriter")

	var conn driver.Conn
	if err := service.Await(ctx, stage, rt.Log, "clickhouse", func(ctx context.Context) error {
		c, err := clickhousex.Open(ctx, cfg.ClickHouse)
		if err != nil {
			return err
		}
		applied, err := schema.Migrate(ctx, c, cfg.ClickHouse.Database)
		if err != nil {
			c.Close()
			return fmt.Errorf("migrating the ClickHouse schema: %w", err)
		}
		rt.Log.Info("schema ready", "database", cfg.ClickHouse.Database, "applied", applied)
		conn = c
		return nil
	}); err != nil {
		return service.AwaitFailed(ctx, err)
	}
	defer conn.Close()
	if err := service.Await(ctx, stage, rt.Log, "kafka topics", func(ctx context.Context) error {
		return service.RequireTopics(ctx, cfg.Kafka, names.Attempts, names.EventLog)
	}); err != nil {
		return service.AwaitFailed(ctx, err)
	}
	lag, err := kafkax.NewLag(rt.Metrics.Meter("sluice/logwriter"), cfg.Group)
	if err != nil {
		return err
	}
	defer func() { _ = lag.Close() }()
	cl, err := kafkax.NewConsumer(cfg.Kafka, cfg.Group, []string{names.Attempts, names.EventLog},
		// This replaces franz-go's default revoke callback, so it also does
		// what that one does: commit what is marked, synchronously, before
		// the partitions move (their records are all inserted: the loop
		// allows rebalances only with nothing pending).
		kgo.OnPartitionsRevoked(func(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
			lag.Forget(revoked)
			if err := cl.CommitMarkedOffsets(ctx); err != nil {
				rt.Log.Warn("committing revoked partitions", "err", err)
			}
		}),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, lost map[string][]int32) { lag.Forget(lost) }),
	)
	if err != nil {
		return err
	}
	defer cl.Close()
	w, err := newWriter(conn, cfg.ClickHouse.Database, cl, rt.Log, rt.Metrics.Meter("sluice/logwriter"),
		names.Attempts, names.EventLog, cfg.BatchRows, cfg.BatchWait)
	if err != nil {
		return err
	}
	w.stage, w.lag = stage, lag
	w.tracer = rt.Tracing.Tracer("github.com/sluicehq/sluice/services/logwriter/app")
	// The tables of migration 0001, both PARTITION BY day.
	ret, err := retention.New(conn, cfg.ClickHouse.Database, []string{"attempts", "events"}, cfg.RetentionDays,
		rt.Log, rt.Metrics.Meter("sluice/logwriter"))
	if err != nil {
		return err
	}
	rt.Ops.AddCheck("kafka", func(ctx context.Context) error { return kafkax.Ping(ctx, cl) })
	rt.Ops.AddCheck("clickhouse", conn.Ping)

	rt.Log.Info("started", "ops", rt.Ops.Addr(), "group", cfg.Group, "retention_days", cfg.RetentionDays)
	err = rt.Run(ctx,
		func(ctx context.Context) error {
			return w.run(ctx, func() (context.Context, context.CancelFunc) { return rt.ShutdownContext(ctx) })
		},
		// Its own goroutine and pool connection: a slow or failing pass
		// never holds up the writer, and it never fails the service.
		func(ctx context.Context) error {
			ret.Run(ctx, cfg.RetentionInterval)
			return nil
		})
	rt.Log.Info("stopped", "err", err)
	return err
}
