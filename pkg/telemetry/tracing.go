package telemetry

import (
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"strings"

	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Tracing is a service's tracer provider and the propagator its spans
// cross process boundaries with (W3C tracecontext and baggage). It belongs
// to one service Runtime, never to the process: tests run several services
// in one process, each with its own.
type Tracing struct {
	// Provider makes the service's tracers: the SDK's when tracing is on,
	// a no-op one otherwise.
	Provider trace.TracerProvider
	// Propagator reads and writes traceparent, tracestate and baggage.
	Propagator propagation.TextMapPropagator
	enabled    bool
	shutdown   func(context.Context) error
}

// Propagator is the one every Sluice process uses: W3C trace context, then
// baggage.
var Propagator propagation.TextMapPropagator = propagation.NewCompositeTextMapPropagator(
	propagation.TraceContext{}, propagation.Baggage{})

// TracingEnabled reports whether the standard OTEL_* variables of env ask
// for traces: OTEL_TRACES_EXPORTER set to anything but none, or an OTLP
// endpoint (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
// set, and OTEL_SDK_DISABLED not true.
func TracingEnabled(env func(string) (string, bool)) bool {
	get := func(k string) string { v, _ := env(k); return strings.TrimSpace(v) }
	if strings.EqualFold(get("OTEL_SDK_DISABLED"), "true") {
		return false
	}
	switch exp := get("OTEL_TRACES_EXPORTER"); {
	case strings.EqualFold(exp, "none"):
		return false
	case exp != "":
		return true
	}
	return get("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// NewTracing builds service's tracing from the standard OTEL_* variables of
// the process environment (the OpenTelemetry SDK and its exporters read
// them there): the exporter from OTEL_TRACES_EXPORTER (otlp by default,
// console, none) with OTEL_EXPORTER_OTLP_PROTOCOL (grpc or http/protobuf)
// and its endpoints; the sampler from OTEL_TRACES_SAMPLER and
// OTEL_TRACES_SAMPLER_ARG (parentbased_always_on by default); the resource
// from OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME, service.name being
// sluice-<service> unless they say otherwise.
//
// When TracingEnabled is false the provider is a no-op one: spans started
// from it cost nothing, yet keep the span context of their parent, so a
// traceparent received is still passed on.
func NewTracing(ctx context.Context, service string) (*Tracing, error) {
	if !TracingEnabled(os.LookupEnv) {
		return Disabled(), nil
	}
	exp, err := autoexport.NewSpanExporter(ctx)
	if err != nil {
		return nil, fmt.Errorf("building the trace exporter from OTEL_TRACES_EXPORTER and OTEL_EXPORTER_OTLP_*: %w", err)
	}
	if autoexport.IsNoneSpanExporter(exp) {
		return Disabled(), nil
	}
	// Later sources win: the environment overrides the default name.
	res, err := resource.New(ctx,
		resource.WithAttributes(semconv.ServiceName("sluice-"+service)),
		resource.WithTelemetrySDK(),
		resource.WithFromEnv(),
	)
	if err != nil {
		_ = exp.Shutdown(ctx)
		return nil, fmt.Errorf("reading OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME: %w", err)
	}
	// The batcher's defaults (OTEL_BSP_*: a queue of 2048 spans, exported
	// every 5 s in batches of 512) bound memory; a span that finds the
	// queue full is dropped, never waited for on the hot path.
	return NewTracingWith(sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))), nil
}

// NewTracingWith wraps a tracer provider the caller built (tests use one
// over an in-memory exporter); Shutdown shuts it down.
func NewTracingWith(tp *sdktrace.TracerProvider) *Tracing {
	return &Tracing{Provider: tp, Propagator: Propagator, enabled: true, shutdown: tp.Shutdown}
}

// Disabled is tracing off: a no-op provider, the same propagator.
func Disabled() *Tracing {
	return &Tracing{Provider: noop.NewTracerProvider(), Propagator: Propagator, shutdown: func(context.Context) error { return nil }}
}

// Enabled reports whether spans are recorded and exported.
func (t *Tracing) Enabled() bool { return t.enabled }

// Tracer returns the tracer of one instrumentation scope (a package path).
func (t *Tracing) Tracer(scope string) trace.Tracer { return t.Provider.Tracer(scope) }

// Shutdown exports the spans still queued and stops the provider; ctx
// bounds how long that may take.
func (t *Tracing) Shutdown(ctx context.Context) error { return t.shutdown(ctx) }

// Traceparent formats sc as a W3C traceparent header value, "" if sc is
// not valid.
func Traceparent(sc trace.SpanContext) string {
	if !sc.IsValid() {
		return ""
	}
	tid, sid := sc.TraceID(), sc.SpanID()
	b := make([]byte, 0, 55)
	b = append(b, "00-"...)
	b = hex.AppendEncode(b, tid[:])
	b = append(b, '-')
	b = hex.AppendEncode(b, sid[:])
	b = append(b, '-')
	b = hex.AppendEncode(b, []byte{byte(sc.TraceFlags())})
	return string(b)
}

// ParseTraceparent reads a W3C traceparent header value (and tracestate, may
// be empty) into a remote span context; ok is false when it is not a valid
// one.
func ParseTraceparent(traceparent, tracestate string) (trace.SpanContext, bool) {
	if traceparent == "" {
		return trace.SpanContext{}, false
	}
	c := propagation.MapCarrier{"traceparent": traceparent}
	if tracestate != "" {
		c["tracestate"] = tracestate
	}
	sc := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), c))
	return sc, sc.IsValid()
}
