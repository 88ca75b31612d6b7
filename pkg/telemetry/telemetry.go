// Package telemetry sets up what every Sluice process reports: structured
// JSON logs through log/slog, and OpenTelemetry metrics exported for
// Prometheus on the ops listener's /metrics.
package telemetry

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
)

// NewLogger returns a JSON logger at level (debug, info, warn, error) that
// tags every line with the service name.
func NewLogger(w io.Writer, service, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.TrimSpace(level))); err != nil {
		return nil, fmt.Errorf("log level %q: use debug, info, warn or error", level)
	}
	h := slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l})
	return slog.New(h).With("service", service), nil
}

// Metrics is a service's meter provider and the Prometheus handler that
// serves what it records.
type Metrics struct {
	Provider *sdkmetric.MeterProvider
	Handler  http.Handler
}

// NewMetrics builds an OTel meter provider whose readings are exported on a
// private Prometheus registry, together with Go runtime and process metrics.
// A private registry keeps tests that build several services in one process
// from colliding on the global one.
func NewMetrics(service string) (*Metrics, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	exp, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return nil, fmt.Errorf("building prometheus exporter: %w", err)
	}
	res := resource.NewSchemaless(semconv.ServiceName("sluice-" + service))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp), sdkmetric.WithResource(res))
	return &Metrics{
		Provider: mp,
		Handler:  promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
	}, nil
}

// Meter returns the meter for one instrumentation scope (a package path).
func (m *Metrics) Meter(scope string) metric.Meter { return m.Provider.Meter(scope) }

// Shutdown flushes and stops the meter provider.
func (m *Metrics) Shutdown(ctx context.Context) error { return m.Provider.Shutdown(ctx) }
