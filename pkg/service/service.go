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
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/sluicehq/sluice/pkg/config"
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
	// leaves 5 s for the commit and the exit.
	ShutdownTimeout time.Duration
}

// Register binds the common settings; service names the Kafka client.
func (c *Common) Register(l *config.Loader, service string) {
	c.Kafka.Register(l, service)
	l.String(&c.TopicPrefix, "topic-prefix", topics.DefaultPrefix, "prefix of every Kafka topic name")
	l.String(&c.OpsAddr, "ops-addr", ":8081", "listen address of /healthz, /readyz and /metrics")
	l.String(&c.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	l.Duration(&c.ShutdownTimeout, "shutdown-timeout", 25*time.Second,
		"how long in-flight work may take to finish after SIGTERM")
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
	return nil
}

// Runtime is what a running service is given: its logger, metrics and ops
// listener.
type Runtime struct {
	Name    string
	Log     *slog.Logger
	Metrics *telemetry.Metrics
	Ops     *ops.Server
	// Names are the topic names under the configured prefix.
	Names  topics.Names
	common Common
}

// Start builds the logger (writing to logOut), the metrics and the ops
// listener. The caller runs Serve and finally Close.
func Start(name string, c Common, logOut io.Writer) (*Runtime, error) {
	log, err := telemetry.NewLogger(logOut, name, c.LogLevel)
	if err != nil {
		return nil, err
	}
	m, err := telemetry.NewMetrics(name)
	if err != nil {
		return nil, err
	}
	srv, err := ops.Listen(c.OpsAddr, m.Handler, log)
	if err != nil {
		return nil, err
	}
	return &Runtime{Name: name, Log: log, Metrics: m, Ops: srv, Names: topics.NewNames(c.TopicPrefix), common: c}, nil
}

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

// Run serves the ops listener and runs the workers until ctx ends or one
// fails. When ctx ends, /readyz reports draining at once while the workers
// finish their in-flight work; the ops listener stops only after the last
// worker returned, so probes keep answering during the drain.
func (r *Runtime) Run(ctx context.Context, workers ...func(context.Context) error) error {
	opsCtx, stopOps := context.WithCancel(context.WithoutCancel(ctx))
	opsDone := make(chan error, 1)
	go func() { opsDone <- r.Ops.Serve(opsCtx) }()
	stopDrain := context.AfterFunc(ctx, r.Ops.Drain)
	defer stopDrain()

	g, gctx := errgroup.WithContext(ctx)
	for _, w := range workers {
		g.Go(func() error { return w(gctx) })
	}
	err := g.Wait()
	stopOps()
	if opsErr := <-opsDone; err == nil {
		err = opsErr
	}
	return err
}

// Close releases the ops listener, whether or not Run served it, and
// flushes metrics.
func (r *Runtime) Close(ctx context.Context) {
	r.Ops.Close()
	if err := r.Metrics.Shutdown(ctx); err != nil {
		r.Log.Warn("flushing metrics", "err", err)
	}
}

// Main is a service's whole main function: load the configuration from
// os.Args and the environment, run until SIGTERM or SIGINT, exit 0 on a clean
// stop, 2 on a configuration error, 1 otherwise.
func Main[C any](name string, load func(args []string, env config.LookupEnv) (C, error), run func(context.Context, C) error) {
	cfg, err := load(os.Args[1:], os.LookupEnv)
	if errors.Is(err, config.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "sluice-%s: configuration: %v\n", name, err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintf(os.Stderr, "sluice-%s: %v\n", name, err)
		os.Exit(1)
	}
}

// Validator is a service Config.
type Validator interface{ Validate() error }

// Load binds a service's settings with register, applies the environment and
// args, and validates the result. On -h it prints every setting to stdout
// and returns config.ErrHelp.
func Load[C Validator](name string, args []string, env config.LookupEnv, register func(*C, *config.Loader)) (C, error) {
	var c C
	l := config.NewLoader("sluice-"+name, env)
	register(&c, l)
	if err := l.Parse(args); err != nil {
		if errors.Is(err, config.ErrHelp) {
			l.Usage(os.Stdout)
		}
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

// RequireTopics fails, naming them, if any of the topics does not exist:
// services never create topics (sluice-topics does), so a missing one is a
// deployment error to report at start, not a hang.
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
