package app

import (
	"context"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/sluicehq/sluice/pkg/clickhousex"
	"github.com/sluicehq/sluice/pkg/configstore"
	"github.com/sluicehq/sluice/pkg/dedup"
	"github.com/sluicehq/sluice/pkg/eventrecord"
	"github.com/sluicehq/sluice/pkg/health"
	"github.com/sluicehq/sluice/pkg/kafkax"
	"github.com/sluicehq/sluice/pkg/secretbox"
	"github.com/sluicehq/sluice/pkg/service"
	"github.com/sluicehq/sluice/pkg/topics"
	"github.com/sluicehq/sluice/services/ingest/api"
	"github.com/sluicehq/sluice/services/ingest/logquery"
	"github.com/sluicehq/sluice/services/ingest/router"
)

// Run serves the API until ctx is cancelled, then lets requests in flight
// finish (up to the shutdown timeout) and returns. Kafka that is down, or
// topics not created yet, are waited for at start (the stages say what they
// wait for on /readyz), never a reason to exit; a cluster that refuses our
// credentials or certificate ends Run at once with the cause
// (service.Await).
func Run(ctx context.Context, cfg Config) error {
	rt, err := service.Start(Name, cfg.Common, os.Stdout)
	if err != nil {
		return err
	}
	defer rt.Close(context.WithoutCancel(ctx))
	// Every Kafka client below carries the runtime\'s tracing and metrics hooks.
	cfg.Kafka = rt.Kafka
	names := rt.Names
	// Every stage this process runs is registered now, so /readyz lists
	// them all from the first probe.
	cfgStage, viewStage, apiStage := rt.Stage("config"), rt.Stage("dedup-view"), rt.Stage("api")
	var routerStage *health.Stage
	if cfg.Router.Enabled {
		routerStage = rt.Stage("router")
	}

	box, err := secretbox.New(cfg.Secrets)
	if err != nil {
		return err
	}
	if box.Insecure() {
		rt.Log.Warn("endpoint secrets are sealed with the public development key; set SLUICE_SECRETS_KEY in production")
	}
	if cfg.AdminKey == "" {
		rt.Log.Warn("no admin key configured: the tenant and API-key routes answer 401")
	}
	// Bound now, so a taken port fails at once rather than after Kafka is
	// up; served once the stages below are built.
	ln, err := net.Listen("tcp", cfg.APIAddr)
	if err != nil {
		return fmt.Errorf("listening for the API on %s: %w", cfg.APIAddr, err)
	}
	defer ln.Close()

	if err := service.Await(ctx, cfgStage, rt.Log, "kafka topics", func(ctx context.Context) error {
		return service.RequireTopics(ctx, cfg.Kafka, names.Events, names.Config, names.Dedup, names.Deliveries, names.Ordered, names.Dead)
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

	var (
		events   api.EventsOptions
		view     *dedup.View
		producer *kgo.Client
	)
	if err := service.Await(ctx, viewStage, rt.Log, "dedup changelog", func(ctx context.Context) (err error) {
		events, view, producer, err = startEvents(ctx, cfg, names, rt)
		return err
	}); err != nil {
		return service.AwaitFailed(ctx, err)
	}
	view.ReportTo(viewStage)
	if err := exportView(rt, view); err != nil {
		return err
	}
	// Closed after rt.Run has returned, so after the API's last request:
	// a request still waiting for its acknowledgement then gets an error
	// (503), never a hang.
	defer view.Close()
	defer producer.Close()
	// The delivery log is opened lazily: ingest takes events while
	// ClickHouse is down, and the log routes answer 503 until it is back.
	chConn, err := clickhousex.OpenLazy(cfg.ClickHouse)
	if err != nil {
		return err
	}
	defer chConn.Close()
	dead := api.KafkaDeadLetters{Kafka: cfg.Kafka, Topic: names.Dead}
	handler := api.New(store, box, api.Options{
		ConfigReady: func() error { return store.Ready(ctx) },
		AdminKey:    cfg.AdminKey, RequireHTTPS: cfg.RequireHTTPS, RotationGrace: cfg.RotationGrace,
		// A config write is a few Kafka round trips; 10 s covers a leader
		// election, after which the client is told to retry.
		WriteTimeout: 10 * time.Second,
		Events:       events,
		Tenants:      api.TenantLimits{MaxEndpoints: cfg.Tenants.MaxEndpoints, EventsPerSecond: cfg.Tenants.EventsPerSecond},
		Log:          logquery.New(chConn, cfg.ClickHouse.Database),
		Deliveries: api.DeliveriesOptions{Sink: api.NewKafkaSink(producer), Topic: names.Deliveries, OrderedTopic: names.Ordered,
			Dead: dead, MaxRecoverJobs: cfg.Tenants.MaxRecoverJobs},
	}, rt.Log).Handler()
	httpMetrics, err := api.NewHTTPMetrics(rt.Metrics.Meter("sluice/ingest/api"))
	if err != nil {
		return err
	}
	handler = httpMetrics.Wrap(handler)

	srv := &fasthttp.Server{
		Handler:            api.Traced(handler, rt.Tracing),
		ErrorHandler:       api.ErrorHandler,
		Name:               "sluice",
		MaxRequestBodySize: cfg.MaxBodyBytes,
		ReadTimeout:        cfg.ReadTimeout,
		// Idle keep-alive connections are closed after this; load balancers
		// usually keep theirs for 60 s, so 90 s avoids racing them.
		IdleTimeout: 90 * time.Second,
		Logger:      fasthttpLogger{rt},
	}
	rt.Ops.AddCheck("kafka", func(ctx context.Context) error { return store.Ping(ctx) })

	// Recover jobs are config objects; this replica runs its share of them.
	// The config view keeps running until the runner has stopped: at
	// shutdown the runner saves its jobs' progress and releases them, and
	// a config write needs the view to read it back.
	recoverJobs := api.NewRecoverRunner(api.RecoverRunnerOptions{Store: store, Dead: dead,
		Sink: api.NewKafkaSink(producer), Topic: names.Deliveries, OrderedTopic: names.Ordered}, rt.Log.With("component", "recover"))
	storeCtx, stopStore := context.WithCancel(context.WithoutCancel(ctx))
	defer stopStore()
	workers := []func(context.Context) error{
		func(context.Context) error { return store.Run(storeCtx) }, view.Run,
		func(ctx context.Context) error { defer stopStore(); return recoverJobs.Run(ctx) },
	}
	if cfg.Router.Enabled {
		workers = append(workers, routerWorker(cfg, names, store, rt, routerStage, box.RecordKey()))
	}

	rt.Log.Info("started", "api", ln.Addr().String(), "ops", rt.Ops.Addr(), "router", cfg.Router.Enabled)
	err = rt.Run(ctx, append(workers,
		func(ctx context.Context) error { return serveAPI(ctx, rt, srv, ln, apiStage) })...)
	rt.Log.Info("stopped", "err", err)
	return err
}

// serveAPI serves the API until ctx ends, then lets requests in flight
// finish within the shutdown timeout. The stage runs while the server does;
// fasthttp's goroutines are its own, so the stage only beats.
func serveAPI(ctx context.Context, rt *service.Runtime, srv *fasthttp.Server, ln net.Listener, stage *health.Stage) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	stage.Running()
	defer stage.Stopped("api stopped")
	beat := time.NewTicker(kafkax.PollWait)
	defer beat.Stop()
	for ctx.Err() == nil {
		select {
		case err := <-errc:
			return fmt.Errorf("serving the API: %w", err)
		case <-beat.C:
			stage.Beat()
		case <-ctx.Done():
		}
	}
	sctx, cancel := rt.ShutdownContext(ctx)
	defer cancel()
	err := srv.ShutdownWithContext(sctx)
	<-errc
	return err
}

type fasthttpLogger struct{ rt *service.Runtime }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.rt.Log.Warn(fmt.Sprintf(format, args...), "component", "fasthttp")
}

// startEvents builds what the events API publishes with: a producer of
// its own, whose buffer is bounded by events-buffer-bytes (the router's
// transactional producer and the config writer are separate clients, so a
// burst of events never holds up either), and the dedup view over every
// partition of the changelog.
//
// The view answers while it catches up: until then a repeat whose first
// copy it has not read yet is answered as new and produced, and the router
// drops it. Readiness waits for it ("dedup"), so a replica takes traffic
// only once its answers are complete.
func startEvents(ctx context.Context, cfg Config, names topics.Names, rt *service.Runtime) (
	api.EventsOptions, *dedup.View, *kgo.Client, error) {
	n, err := partitions(ctx, cfg.Kafka, names.Dedup)
	if err != nil {
		return api.EventsOptions{}, nil, nil, err
	}
	// The router keeps dedup-max-entries per partition it owns; the view
	// keeps every partition's, so it remembers as far back as the routers.
	view, err := dedup.NewView(ctx, cfg.Kafka, names.Dedup, cfg.Router.DedupWindow, n*cfg.Router.DedupMaxEntries,
		rt.Log.With("component", "dedup-view"))
	if err != nil {
		return api.EventsOptions{}, nil, nil, err
	}
	producer, err := kafkax.NewProducer(cfg.Kafka,
		// Requests are refused (TryProduce, 503) rather than buffered past
		// this; the default is unlimited.
		kgo.MaxBufferedBytes(cfg.Events.BufferBytes))
	if err != nil {
		view.Close()
		return api.EventsOptions{}, nil, nil, err
	}
	return api.EventsOptions{
		Sink: api.NewKafkaSink(producer), Seen: view, Topic: names.Events,
		MaxDataBytes: cfg.Router.MaxEventBytes, MaxBatch: cfg.Events.MaxBatch, MaxBatchBodyBytes: cfg.MaxBodyBytes,
	}, view, producer, nil
}

// exportView exports how far back the events API's dedup view still
// answers duplicates, per partition, beside the router's own figures
// (sluice.dedup.effective_window, reader "view").
func exportView(rt *service.Runtime, view *dedup.View) error {
	_, err := rt.Metrics.Meter("sluice/dedup").Float64ObservableGauge("sluice.dedup.effective_window", metric.WithUnit("s"),
		metric.WithDescription("how far back duplicates are still caught, per events partition: the dedup window unless ids were evicted within it"),
		metric.WithFloat64Callback(func(_ context.Context, o metric.Float64Observer) error {
			for _, st := range view.Stats(time.Now()) {
				o.Observe(st.EffectiveWindow.Seconds(), metric.WithAttributes(
					attribute.String("reader", "view"), attribute.Int("partition", int(st.Partition))))
			}
			return nil
		}))
	return err
}

// partitions counts the partitions of topic.
func partitions(ctx context.Context, kcfg kafkax.Config, topic string) (int, error) {
	adm, err := kafkax.NewAdmin(kcfg)
	if err != nil {
		return 0, err
	}
	defer adm.Close()
	td, err := adm.ListTopics(ctx, topic)
	if err == nil {
		err = td.Error()
	}
	if err != nil {
		return 0, fmt.Errorf("describing %s: %w", topic, err)
	}
	return len(td[topic].Partitions), nil
}

// routerWorker returns the router's worker. It waits for the router's
// topics, then routes only once the config view has caught up: an event
// routed against a partial view would miss endpoints that exist.
func routerWorker(cfg Config, names topics.Names, store *configstore.Store, rt *service.Runtime,
	stage *health.Stage, recordKey []byte) func(context.Context) error {
	return func(ctx context.Context) error {
		if err := service.Await(ctx, stage, rt.Log, "router topics", func(ctx context.Context) error {
			if err := service.RequireTopics(ctx, cfg.Kafka, names.Events, names.EventsRejected, names.Deliveries, names.Ordered,
				names.Dead, names.EventLog, names.Dedup); err != nil {
				return err
			}
			return samePartitions(ctx, cfg.Kafka, names.Events, names.Dedup)
		}); err != nil {
			return service.AwaitFailed(ctx, err)
		}
		stage.Waiting("waiting for the config view to catch up")
		if err := store.WaitCaughtUp(ctx); err != nil {
			return nil // stopped during start-up
		}
		ix := router.NewIndex(func(id string, err error) {
			rt.Log.Error("endpoint with invalid filters matches nothing", "endpoint", id, "err", err)
		})
		ix.Load(store.Subscribe(ix.Apply))
		r, err := router.New(router.Options{
			Kafka: cfg.Kafka, Names: names, Group: cfg.Router.Group,
			Limits:      eventrecord.Limits{MaxDataBytes: cfg.Router.MaxEventBytes, AuthKey: recordKey},
			DedupWindow: cfg.Router.DedupWindow, DedupMaxEntries: cfg.Router.DedupMaxEntries,
			MaxBatch: cfg.Router.MaxBatch, TxnBytes: cfg.Router.TxnBytes, Meter: rt.Metrics.Meter("sluice/router"), Stage: stage,
			Tracing: rt.Tracing,
		}, ix, rt.Log.With("component", "router"))
		if err != nil {
			return err
		}
		defer r.Close()
		return r.Run(ctx)
	}
}

// samePartitions refuses to route when the dedup topic and the events topic
// differ in partitions: each event's dedup marker lives on the partition of
// the same number, so a mismatch would silently stop duplicates being seen.
func samePartitions(ctx context.Context, kcfg kafkax.Config, events, dedup string) error {
	adm, err := kafkax.NewAdmin(kcfg)
	if err != nil {
		return err
	}
	defer adm.Close()
	td, err := adm.ListTopics(ctx, events, dedup)
	if err != nil {
		return fmt.Errorf("describing %s and %s: %w", events, dedup, err)
	}
	if a, b := len(td[events].Partitions), len(td[dedup].Partitions); a != b {
		return fmt.Errorf("%s has %d partitions and %s %d: they must be equal for deduplication", events, a, dedup, b)
	}
	return nil
}
