package app

import (
	"context"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/sluicehq/sluice/pkg/configstore"
	"github.com/sluicehq/sluice/pkg/secretbox"
	"github.com/sluicehq/sluice/pkg/service"
	"github.com/sluicehq/sluice/pkg/topics"
	"github.com/sluicehq/sluice/services/ingest/api"
)

// Run serves the API until ctx is cancelled, then lets requests in flight
// finish (up to the shutdown timeout) and returns.
func Run(ctx context.Context, cfg Config) error {
	rt, err := service.Start(Name, cfg.Common, os.Stdout)
	if err != nil {
		return err
	}
	defer rt.Close(context.WithoutCancel(ctx))
	names := topics.NewNames(cfg.TopicPrefix)

	if err := service.RequireTopics(ctx, cfg.Kafka, names.Events, names.Config); err != nil {
		return err
	}
	store, err := configstore.Open(ctx, cfg.Kafka, names.Config, rt.Log)
	if err != nil {
		return err
	}
	defer store.Close()

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
	handler := api.New(store, box, api.Options{
		AdminKey: cfg.AdminKey, RequireHTTPS: cfg.RequireHTTPS, RotationGrace: cfg.RotationGrace,
		// A config write is a few Kafka round trips; 10 s covers a leader
		// election, after which the client is told to retry.
		WriteTimeout: 10 * time.Second,
	}, rt.Log).Handler()

	ln, err := net.Listen("tcp", cfg.APIAddr)
	if err != nil {
		return fmt.Errorf("listening for the API on %s: %w", cfg.APIAddr, err)
	}
	srv := &fasthttp.Server{
		Handler:            handler,
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
	rt.Ops.AddCheck("config", store.Ready)

	rt.Log.Info("started", "api", ln.Addr().String(), "ops", rt.Ops.Addr())
	err = rt.Run(ctx,
		store.Run,
		func(ctx context.Context) error {
			errc := make(chan error, 1)
			go func() { errc <- srv.Serve(ln) }()
			select {
			case err := <-errc:
				return fmt.Errorf("serving the API: %w", err)
			case <-ctx.Done():
			}
			sctx, cancel := rt.ShutdownContext(ctx)
			defer cancel()
			return srv.ShutdownWithContext(sctx)
		})
	rt.Log.Info("stopped", "err", err)
	return err
}

type fasthttpLogger struct{ rt *service.Runtime }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.rt.Log.Warn(fmt.Sprintf(format, args...), "component", "fasthttp")
}
