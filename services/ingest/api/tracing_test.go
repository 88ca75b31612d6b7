package api_test

import (
	"context"
	"testing"

	"github.com/valyala/fasthttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluicehq/sluice/pkg/telemetry"
	"github.com/sluicehq/sluice/services/ingest/api"
)

// TestTracedOffCostsNothing: with tracing off, a request without a
// traceparent goes straight to the handler, allocating nothing.
func TestTracedOffCostsNothing(t *testing.T) {
	calls := 0
	h := api.Traced(func(*fasthttp.RequestCtx) { calls++ }, telemetry.Disabled())
	var rc fasthttp.RequestCtx
	rc.Request.SetRequestURI("/v1/events")
	rc.Request.Header.SetMethod("POST")
	if n := testing.AllocsPerRun(100, func() { h(&rc) }); n != 0 {
		t.Fatalf("%v allocations per request for tracing that is off", n)
	}
	if calls == 0 {
		t.Fatal("the handler was not called")
	}
}

// TestTracedServerSpan: a request with a traceparent gets a server span,
// its child, with the HTTP attributes and the answer's status.
func TestTracedServerSpan(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	var inner trace.SpanContext
	h := api.Traced(func(rc *fasthttp.RequestCtx) {
		inner = trace.SpanContextFromContext(rc.Value(api.TraceKey).(context.Context))
		// What dispatch does once a route matches.
		rc.SetUserValue(api.RouteKey, "/v1/endpoints/{endpoint_id}")
		rc.SetStatusCode(fasthttp.StatusAccepted)
	}, telemetry.NewTracingWith(tp))
	var rc fasthttp.RequestCtx
	rc.Request.SetRequestURI("http://sluice.example/v1/endpoints/ep_1")
	rc.Request.Header.SetMethod("POST")
	rc.Request.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	h(&rc)
	spans := exp.GetSpans()
	if len(spans) != 1 {
		t.Fatalf("%d spans", len(spans))
	}
	s := spans[0]
	if s.SpanKind != trace.SpanKindServer || s.Parent.SpanID().String() != "00f067aa0ba902b7" ||
		s.SpanContext.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" || !inner.Equal(s.SpanContext) {
		t.Fatalf("span kind %v parent %s trace %s; the handler saw %v", s.SpanKind, s.Parent.SpanID(), s.SpanContext.TraceID(), inner)
	}
	attrs := map[string]string{}
	for _, kv := range s.Attributes {
		attrs[string(kv.Key)] = kv.Value.String()
	}
	if s.Name != "POST /v1/endpoints/{endpoint_id}" {
		t.Errorf("span name %q, want the method and the route pattern", s.Name)
	}
	for k, v := range map[string]string{"http.request.method": "POST", "url.path": "/v1/endpoints/ep_1",
		"http.route": "/v1/endpoints/{endpoint_id}", "http.response.status_code": "202"} {
		if attrs[k] != v {
			t.Errorf("%s = %q, want %q", k, attrs[k], v)
		}
	}
}
