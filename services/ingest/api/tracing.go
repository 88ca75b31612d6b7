package api

import (
	"context"
	"strconv"

	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluicehq/sluice/pkg/telemetry"
)

// traceKey is the user value of a request that holds its trace context.
type traceKey struct{}

// Traced wraps h with an HTTP server span per request (OpenTelemetry HTTP
// semantic conventions), continuing the request's traceparent when it has
// one; the events routes put that span's context into the records they
// produce, so the router, the sender and the receiver continue the trace.
//
// With tracing off, a request's traceparent is still read and passed on
// (the receiver's traceparent then continues the producer's trace), and a
// request without one costs nothing: h is called as is.
func Traced(h fasthttp.RequestHandler, tr *telemetry.Tracing) fasthttp.RequestHandler {
	tracer := tr.Tracer("github.com/sluicehq/sluice/services/ingest/api")
	prop := tr.Propagator
	on := tr.Enabled()
	return func(rc *fasthttp.RequestCtx) {
		if !on {
			if len(rc.Request.Header.Peek("traceparent")) == 0 {
				h(rc)
				return
			}
			rc.SetUserValue(traceKey{}, prop.Extract(context.Background(), headerCarrier{&rc.Request.Header}))
			h(rc)
			return
		}
		ctx := prop.Extract(context.Background(), headerCarrier{&rc.Request.Header})
		method := string(rc.Method())
		ctx, span := tracer.Start(ctx, method, trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(
			semconv.HTTPRequestMethodKey.String(method),
			semconv.URLPath(string(rc.Path())),
			semconv.URLScheme(scheme(rc)),
			semconv.ServerAddress(string(rc.Host())),
			semconv.UserAgentOriginal(string(rc.UserAgent())),
		))
		defer span.End()
		rc.SetUserValue(traceKey{}, ctx)
		h(rc)
		// The route dispatch matched (the same pattern the HTTP metrics
		// use): the span is named "POST /v1/events", per the HTTP
		// conventions, and never by the raw path.
		if route, ok := rc.UserValue(routeKey{}).(string); ok {
			span.SetName(method + " " + route)
			span.SetAttributes(semconv.HTTPRoute(route))
		}
		status := rc.Response.StatusCode()
		span.SetAttributes(semconv.HTTPResponseStatusCode(status))
		if status >= 500 {
			span.SetStatus(codes.Error, "")
			span.SetAttributes(attribute.String("error.type", strconv.Itoa(status)))
		}
	}
}

func scheme(rc *fasthttp.RequestCtx) string {
	if rc.IsTLS() {
		return "https"
	}
	return "http"
}

// traceContext is the context the request's work continues: its server
// span's (or, with tracing off, its traceparent's), else Background.
func traceContext(rc *fasthttp.RequestCtx) context.Context {
	if ctx, ok := rc.UserValue(traceKey{}).(context.Context); ok {
		return ctx
	}
	return context.Background()
}

// headerCarrier reads a fasthttp request's headers for a propagator.
type headerCarrier struct{ h *fasthttp.RequestHeader }

var _ propagation.TextMapCarrier = headerCarrier{}

func (c headerCarrier) Get(key string) string { return string(c.h.Peek(key)) }
func (c headerCarrier) Set(key, value string) { c.h.Set(key, value) }
func (c headerCarrier) Keys() []string {
	var keys []string
	for k := range c.h.All() {
		keys = append(keys, string(k))
	}
	return keys
}
