// Package service is what the three Sluice services share around their own
// work: the settings every process has, its logger, metrics and ops
// listener, and the main function that loads a Config, runs until SIGTERM
// and exits with a status that tells what happened.
package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"golang.org/x/sync/errgroup"

	"github.com/sluicehq/sluice/pkg/clickhousex"
	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/health"
	"github.com/sluicehq/sluice/pkg/kafkax"
	"github.com/sluicehq/sluice/pkg/ops"
	"github.com/sluicehq/sluice/pkg/telemetry"
	"github.com/sluicehq/sluice/pkg/topics"
)

// Common are the settings of every service: each one talks to Kafka, so
// the connection and the topic names are here too.
type Common struct {
	Kafka kafkax.Config
	// TopicPrefix starts every topic name (see Runtime.Names).
	TopicPrefix string
	// OpsAddr serves /healthz, /readyz and /metrics.
	OpsAddr string
	// LogLevel is debug, info, warn or error.
	LogLevel string
	// ShutdownTimeout bounds how long in-flight work may take to finish after
	// SIGTERM; Kubernetes' default grace period is 30 s, so the default
	// leaves 5 s for the commit and the exit. Main ends the process
	// ShutdownMargin after it whatever a stage is doing.
	ShutdownTimeout time.Duration
	// StuckAfter is how long a stage may hold work without progress, or its
	// loop go without coming round, before /healthz fails (package health).
	StuckAfter time.Duration
	// Tracing, when set in code (tests, which run several services in one
	// process, each over its own in-memory exporter), replaces the tracing
	// built from the OTEL_* variables; its owner shuts it down. Not a
	// setting.
	Tracing *telemetry.Tracing
}

// ShutdownMargin is what a process gets beyond ShutdownTimeout to commit,
// leave its groups and exit before Main ends it: a commit and a LeaveGroup
// are a round trip each, far below it even on a loaded broker.
const ShutdownMargin = 5 * time.Second

// ShutdownBudget is the longest a process may take from SIGTERM to exit.
func (c Common) ShutdownBudget() time.Duration { return c.ShutdownTimeout + ShutdownMargin }

// Register binds the common settings; service names the Kafka client.
func (c *Common) Register(l *config.Loader, service string) {
	c.Kafka.Register(l, service)
	l.String(&c.TopicPrefix, "topic-prefix", topics.DefaultPrefix, "prefix of every Kafka topic name")
	l.String(&c.OpsAddr, "ops-addr", ":8081", "listen address of /healthz, /readyz and /metrics")
	l.String(&c.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	l.Duration(&c.ShutdownTimeout, "shutdown-timeout", 25*time.Second,
		"how long in-flight work may take to finish after SIGTERM; the process exits at most 5s later")
	l.Duration(&c.StuckAfter, "stuck-after", health.DefaultStuckAfter,
		"how long a stage may hold work without progress before /healthz fails and the pod is restarted")
}

// Validate checks the common settings.
func (c Common) Validate() error {
	if err := c.Kafka.Validate(); err != nil {
		return err
	}
	if c.OpsAddr == "" {
		return errors.New("ops-addr must not be empty")
	}
	if c.ShutdownTimeout <= 0 {
		return fmt.Errorf("shutdown-timeout must be positive, got %v", c.ShutdownTimeout)
	}
	// Below 30 s a healthy stage waiting out a routing transaction (20 s)
	// or a group rebalance would count as stuck.
	if c.StuckAfter < 30*time.Second || c.StuckAfter > time.Hour {
		return fmt.Errorf("stuck-after must be from 30s to 1h, got %v", c.StuckAfter)
	}
	return nil
}

// Runtime is what a running service is given: its logger, metrics, stages
// and ops listener.
type Runtime struct {
	Name    string
	Log     *slog.Logger
	Metrics *telemetry.Metrics
	Ops     *ops.Server
	// Health holds the service's stages, which /readyz and /healthz judge.
	Health *health.Registry
	// Tracing is the service's tracer provider (OTEL_* variables; a no-op
	// one when they ask for no traces), shut down by Close.
	Tracing *telemetry.Tracing
	// Kafka is the connection settings with franz-go's tracing and metrics
	// hooks (kafkax.Instrument) added: every client of the service is built
	// from it, so Run starts with cfg.Kafka = rt.Kafka.
	Kafka kafkax.Config
	// Names are the topic names under the configured prefix.
	Names  topics.Names
	common Common
	// ownTracing is set when Start built Tracing and Close shuts it down.
	ownTracing bool

	stopOps func()
	opsDone chan error
}

// Start builds the logger (writing to logOut), the metrics and the ops
// listener, and serves the ops listener at once: probes answer while the
// service waits for its dependencies, before Run. Close stops it.
func Start(name string, c Common, logOut io.Writer) (*Runtime, error) {
	log, err := telemetry.NewLogger(logOut, name, c.LogLevel)
	if err != nil {
		return nil, err
	}
	m, err := telemetry.NewMetrics(name)
	if err != nil {
		return nil, err
	}
	tr, own := c.Tracing, false
	if tr == nil {
		if tr, err = telemetry.NewTracing(context.Background(), name); err != nil {
			return nil, err
		}
		own = true
	}
	kcfg := c.Kafka
	kcfg.Hooks = append(append([]kgo.Hook(nil), kcfg.Hooks...),
		kafkax.Instrument(tr.Provider, tr.Propagator, tr.Enabled(), m.Provider)...)
	stuckAfter := c.StuckAfter
	if stuckAfter <= 0 {
		stuckAfter = health.DefaultStuckAfter
	}
	reg := health.NewRegistry(stuckAfter, nil)
	err = stageGauges(m.Meter("sluice/service"), reg)
	var srv *ops.Server
	if err == nil {
		srv, err = ops.Listen(c.OpsAddr, m.Handler, reg, log)
	}
	if err != nil {
		if own {
			_ = tr.Shutdown(context.Background())
		}
		return nil, err
	}
	rt := &Runtime{Name: name, Log: log, Metrics: m, Tracing: tr, Kafka: kcfg, Ops: srv, Health: reg,
		Names: topics.NewNames(c.TopicPrefix), common: c, ownTracing: own, opsDone: make(chan error, 1)}
	opsCtx, stop := context.WithCancel(context.Background())
	rt.stopOps = stop
	go func() { rt.opsDone <- srv.Serve(opsCtx) }()
	return rt, nil
}

// stageGauges reports each stage as /readyz and /healthz judge it, as
// sluice.stage.ready and sluice.stage.stuck (0 or 1, attribute sluice.stage):
// a probe only says that the pod failed, these say which stage and since
// when. They are read at each scrape.
func stageGauges(m metric.Meter, reg *health.Registry) error {
	ready, err := m.Int64ObservableGauge("sluice.stage.ready",
		metric.WithDescription("1 when the stage runs and serves, 0 while it waits for a dependency, starts or has stopped"))
	if err != nil {
		return err
	}
	stuck, err := m.Int64ObservableGauge("sluice.stage.stuck",
		metric.WithDescription("1 when the stage holds work without progress, or its loop has not come round, for stuck-after"))
	if err != nil {
		return err
	}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for _, st := range reg.Statuses() {
			attrs := metric.WithAttributeSet(attribute.NewSet(attribute.String("sluice.stage", st.Name)))
			o.ObserveInt64(ready, b2i(st.State == "running"), attrs)
			o.ObserveInt64(stuck, b2i(st.Stuck), attrs)
		}
		return nil
	}, ready, stuck)
	return err
}

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// Stage returns the service's stage called name (package health).
func (r *Runtime) Stage(name string) *health.Stage { return r.Health.Stage(name) }

// ShutdownContext returns the context in-flight work runs on: it keeps
// ctx's values but not its cancellation, and ends ShutdownTimeout after ctx
// ends (at once if ctx is already over that long). Work started before a
// SIGTERM thus gets the whole grace period to finish, and no more.
func (r *Runtime) ShutdownContext(ctx context.Context) (context.Context, context.CancelFunc) {
	work, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(r.common.ShutdownTimeout, cancel)
		context.AfterFunc(work, func() { t.Stop() })
	})
	return work, func() { stop(); cancel() }
}

// Run runs the workers until ctx ends or one fails. When ctx ends, /readyz
// reports draining at once while the workers finish their in-flight work;
// the ops listener stops only at Close, after the last worker returned, so
// probes keep answering during the drain.
func (r *Runtime) Run(ctx context.Context, workers ...func(context.Context) error) error {
	stopDrain := context.AfterFunc(ctx, r.Ops.Drain)
	defer stopDrain()

	g, gctx := errgroup.WithContext(ctx)
	for _, w := range workers {
		g.Go(func() error { return w(gctx) })
	}
	return g.Wait()
}

// Close stops the ops listener and flushes metrics and the spans not yet
// exported. The spans get at most TraceFlushTimeout: a collector that is
// down must not hold the exit past the shutdown budget.
func (r *Runtime) Close(ctx context.Context) {
	r.Ops.Drain()
	r.stopOps()
	if err := <-r.opsDone; err != nil {
		r.Log.Warn("stopping the ops listener", "err", err)
	}
	r.Ops.Close()
	if err := r.Metrics.Shutdown(ctx); err != nil {
		r.Log.Warn("flushing metrics", "err", err)
	}
	if r.ownTracing {
		tctx, cancel := context.WithTimeout(ctx, TraceFlushTimeout)
		defer cancel()
		if err := r.Tracing.Shutdown(tctx); err != nil {
			r.Log.Warn("flushing spans", "err", err)
		}
	}
}

// TraceFlushTimeout bounds the export of the last spans at exit: one OTLP
// request, well inside the ShutdownMargin left after the work's own
// ShutdownTimeout.
const TraceFlushTimeout = 3 * time.Second

// Await runs try until it succeeds, reporting stage as waiting with the
// reason meanwhile: a dependency that is down at start (Kafka, ClickHouse,
// topics not created yet) is waited for, never a reason to exit (DESIGN
// §10). Each try gets tryTimeout; failures back off from 100 ms, doubling
// with jitter, to 10 s, and are logged at the first failure and then at most
// every 30 s, so an outage does not flood the log.
//
// A dependency that answers and refuses us is another matter: wrong
// credentials or a certificate we do not trust (kafkax.Fatal,
// clickhousex.Fatal) will not get better by waiting, and a pod that waits
// on them looks merely unready while the cause hides in its log. Await
// returns such a refusal at once, so the service exits non-zero with a
// message naming the cause and the setting to check.
//
// Await returns nil once try succeeded, the refusal, or ctx's error if ctx
// ends first; AwaitFailed turns the last two into Run's result.
func Await(ctx context.Context, stage *health.Stage, log *slog.Logger, what string, try func(context.Context) error) error {
	const tryTimeout = 10 * time.Second
	backoff := 100 * time.Millisecond
	var lastLog time.Time
	for attempt := 1; ; attempt++ {
		tctx, cancel := context.WithTimeout(ctx, tryTimeout)
		err := try(tctx)
		cancel()
		if err == nil {
			if attempt > 1 {
				log.Info("dependency back", "waited_for", what, "attempts", attempt)
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if refusal := Refusal(err); refusal != nil {
			stage.Stopped(what + ": " + refusal.Error())
			log.Error("a dependency refused this process; not retrying", "waiting_for", what, "err", refusal)
			return refusal
		}
		stage.Waiting(what + ": " + err.Error())
		if time.Since(lastLog) >= 30*time.Second {
			log.Warn("waiting for a dependency; retrying", "waiting_for", what, "attempt", attempt, "err", err)
			lastLog = time.Now()
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		backoff = min(2*backoff, 10*time.Second)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

// Refusal returns err's refusal by Kafka or ClickHouse (an *kafkax.AuthError
// or *clickhousex.AuthError), nil when err is something to wait out.
func Refusal(err error) error {
	if f := kafkax.Fatal(err); f != nil {
		return f
	}
	return clickhousex.Fatal(err)
}

// AwaitFailed is what Run returns after an Await that did not succeed: nil
// when ctx ended (the service was stopped while waiting: a clean stop), the
// refusal otherwise (the process exits 1 with its message).
func AwaitFailed(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// Budgeted is a service Config: it says how long the process may take from
// SIGTERM to exit (Common.ShutdownBudget).
type Budgeted interface{ ShutdownBudget() time.Duration }

// Main is a service's whole main function: load the configuration from
// os.Args and the environment, run until SIGTERM or SIGINT, exit 0 on a clean
// stop (or after answering -help or -version), 2 on a configuration error,
// 1 otherwise.
//
// SIGTERM always ends the process within the config's ShutdownBudget,
// whatever state a stage is in: run is given that long to finish its
// in-flight work and commit, and if it has not returned by then the process
// exits 1 saying so. Work it did not commit is redone by whoever owns its
// partitions next, as after a crash.
func Main[C Budgeted](name string, load func(args []string, env config.LookupEnv) (C, error), run func(context.Context, C) error) {
	cfg, err := load(os.Args[1:], os.LookupEnv)
	if config.Answered(err) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "sluice-%s: configuration: %v\n", name, err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	budget := cfg.ShutdownBudget()
	stopWatchdog := context.AfterFunc(ctx, func() {
		time.AfterFunc(budget, func() {
			fmt.Fprintf(os.Stderr, "sluice-%s: still running %v after the stop signal; exiting without finishing (uncommitted work is redone by the next owner)\n", name, budget)
			os.Exit(1)
		})
	})
	defer stopWatchdog()
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintf(os.Stderr, "sluice-%s: %v\n", name, err)
		os.Exit(1)
	}
}

// Validator is a service Config.
type Validator interface{ Validate() error }

// Load binds a service's settings with register, applies the environment and
// args, and validates the result. On -help it prints every setting to stdout
// and returns config.ErrHelp; on -version it prints "sluice-<name> <version>
// (<revision>)" and returns config.ErrVersion.
func Load[C Validator](name string, args []string, env config.LookupEnv, register func(*C, *config.Loader)) (C, error) {
	var c C
	l := config.NewLoader("sluice-"+name, env)
	register(&c, l)
	if err := l.ParseOrAnswer(args, os.Stdout); err != nil {
		return c, err
	}
	return c, c.Validate()
}

// Knobs lists the settings register binds, for documentation and its tests.
func Knobs[C any](register func(*C, *config.Loader)) []config.Knob {
	var c C
	l := config.NewLoader("knobs", func(string) (string, bool) { return "", false })
	register(&c, l)
	return l.Knobs()
}

// RequireTopics fails, naming them, if any of the topics does not exist.
// Services never create topics (sluice-topics does); they wait for them with
// Await, so a service started before the topics job ran comes up once it
// has, and /readyz names what is missing meanwhile.
func RequireTopics(ctx context.Context, kcfg kafkax.Config, names ...string) error {
	adm, err := kafkax.NewAdmin(kcfg)
	if err != nil {
		return err
	}
	defer adm.Close()
	if err := kafkax.CheckTopics(ctx, adm, names...); err != nil {
		return fmt.Errorf("%w (create them with sluice-topics)", err)
	}
	return nil
}
