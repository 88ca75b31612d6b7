// Package ops serves a process's operational endpoints on their own
// listener: /healthz (the process is alive: no stage is stuck; never checks
// dependencies), /readyz (every stage runs, dependencies answer and the
// process is not draining) and /metrics. Stages report through
// package health.
package ops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/pkg/health"
)

// CheckTimeout bounds one readiness check; a probe that hangs is a failed
// probe. Kubernetes' default probe timeout is 1 s, so checks run in parallel
// and share this budget.
const CheckTimeout = 800 * time.Millisecond

// Check reports whether one dependency is usable.
type Check func(ctx context.Context) error

// Server is the ops HTTP server.
type Server struct {
	log      *slog.Logger
	ln       net.Listener
	srv      *http.Server
	draining atomic.Bool
	stages   *health.Registry

	mu     sync.Mutex
	checks map[string]Check
}

// Listen binds addr (":0" picks a free port) and returns a server ready to
// Serve. Binding early lets start-up fail fast on a taken port. stages are
// the process's stages (nil: none).
func Listen(addr string, metrics http.Handler, stages *health.Registry, log *slog.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening for ops on %s: %w", addr, err)
	}
	if stages == nil {
		stages = health.NewRegistry(health.DefaultStuckAfter, nil)
	}
	s := &Server{log: log, ln: ln, checks: map[string]Check{}, stages: stages}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	if metrics != nil {
		mux.Handle("GET /metrics", metrics)
	}
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	return s, nil
}

// Addr is the address actually bound.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// AddCheck registers a readiness check under name.
func (s *Server) AddCheck(name string, c Check) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checks[name] = c
}

// Drain makes /readyz fail from now on, so load balancers stop sending work
// while the process finishes what it has.
func (s *Server) Drain() { s.draining.Store(true) }

// Close releases the listener of a server that was never served (a service
// that failed during start-up). After Serve it is a no-op.
func (s *Server) Close() { _ = s.ln.Close() }

// Serve serves until ctx is done, then shuts the listener down.
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serving ops: %w", err)
	case <-ctx.Done():
	}
	shut, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(shut); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("stopping ops server: %w", err)
	}
	return nil
}

// healthz answers 200 while no stage is stuck and 503 naming the stuck
// stages otherwise; dependencies are never checked here (a broker outage
// must not make Kubernetes restart every pod).
func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	if err := s.stages.Live(); err != nil {
		s.log.Error("not alive", "err", err)
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "stuck", "stages": s.stages.Statuses()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "stages": s.stages.Statuses()})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if s.draining.Load() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "draining"})
		return
	}
	s.mu.Lock()
	checks := make(map[string]Check, len(s.checks))
	for k, v := range s.checks {
		checks[k] = v
	}
	s.mu.Unlock()

	ctx, cancel := context.WithTimeout(r.Context(), CheckTimeout)
	defer cancel()
	var (
		mu      sync.Mutex
		wg      sync.WaitGroup
		results = make(map[string]string, len(checks))
		ok      = true
	)
	for name, c := range checks {
		wg.Go(func() {
			err := c(ctx)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				ok = false
				results[name] = err.Error()
				return
			}
			results[name] = "ok"
		})
	}
	wg.Wait()
	for _, st := range s.stages.Statuses() {
		if st.State != "running" {
			ok = false
			results["stage "+st.Name] = st.State + ": " + st.Reason
		}
	}
	status, code := "ready", http.StatusOK
	if !ok {
		status, code = "unready", http.StatusServiceUnavailable
		s.log.Warn("not ready", "checks", results)
	}
	writeJSON(w, code, map[string]any{"status": status, "checks": results})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
