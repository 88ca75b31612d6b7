package deliver

import (
	"io"
	"net/http"
	"net/url"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/pkg/egress"
	"github.com/sluicehq/sluice/pkg/telemetry"
)

// producerTraceparent is the context a delivery carries from the router.
const producerTraceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// tracedReceiver answers 204 and hands over each request's traceparent.
func tracedReceiver(t *testing.T) (*receiver, chan string) {
	got := make(chan string, 10)
	return newReceiver(t, map[string]http.HandlerFunc{
		"/hook": func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			got <- r.Header.Get("Traceparent")
			w.WriteHeader(http.StatusNoContent)
		},
	}), got
}

// TestAttemptContinuesTheDeliveryTraceWithTracingOff: with no tracer, the
// receiver gets the delivery's own traceparent (parent = the producer's
// span), and the attempt records its trace id.
func TestAttemptContinuesTheDeliveryTraceWithTracingOff(t *testing.T) {
	recv, got := tracedReceiver(t)
	d := newTestDeliverer(t, time.Second, 0)
	dl := delivery("ep_traced")
	dl.Traceparent = producerTraceparent
	a, _ := d.Attempt(dl, endpoint("ep_traced", recv.url("/hook")))
	if a.Outcome != sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCESS {
		t.Fatalf("outcome %v error %q", a.Outcome, a.Error)
	}
	if tp := <-got; tp != producerTraceparent {
		t.Fatalf("receiver got traceparent %q, want the delivery's %q", tp, producerTraceparent)
	}
	if a.TraceId != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Fatalf("attempt trace id %q, want the producer's", a.TraceId)
	}
}

// TestAttemptSpans: with tracing on, the attempt is a span under the
// delivery's context, its request an HTTP client span under that, and the
// receiver's traceparent names the client span; url.full has no query or
// user info.
func TestAttemptSpans(t *testing.T) {
	recv, got := tracedReceiver(t)
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(t.Context()) })
	d := New(Options{Timeout: time.Second, UserAgent: testUserAgent, MaxConnsPerHost: 16,
		Guard: egress.New(egress.WithAllow(loopback)), Box: box, Tracing: telemetry.NewTracingWith(tp)})
	dl := delivery("ep_spans")
	dl.Traceparent = producerTraceparent
	u, _ := url.Parse(recv.url("/hook"))
	u.User = url.UserPassword("user", "hunter2")
	u.RawQuery = "token=s3cret"
	a, _ := d.Attempt(dl, endpoint("ep_spans", u.String()))
	if a.Outcome != sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCESS {
		t.Fatalf("outcome %v error %q", a.Outcome, a.Error)
	}
	tpHeader := <-got
	spans := exp.GetSpans()
	if len(spans) != 2 {
		t.Fatalf("%d spans, want the attempt's and its request's: %v", len(spans), spans)
	}
	client, process := spans[0], spans[1]
	if client.SpanKind != trace.SpanKindClient || process.SpanKind != trace.SpanKindConsumer {
		t.Fatalf("span kinds %v, %v; want client then consumer", client.SpanKind, process.SpanKind)
	}
	if process.Parent.SpanID().String() != "00f067aa0ba902b7" || process.SpanContext.TraceID().String() != a.TraceId ||
		a.TraceId != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Fatalf("attempt span parent %s trace %s (attempt says %s), want the producer's span 00f067aa0ba902b7",
			process.Parent.SpanID(), process.SpanContext.TraceID(), a.TraceId)
	}
	if client.Parent.SpanID() != process.SpanContext.SpanID() {
		t.Fatalf("client span's parent %s, want the attempt span %s", client.Parent.SpanID(), process.SpanContext.SpanID())
	}
	want := "00-" + a.TraceId + "-" + client.SpanContext.SpanID().String() + "-01"
	if tpHeader != want {
		t.Fatalf("receiver got traceparent %q, want the client span's %q", tpHeader, want)
	}
	attrs := map[string]string{}
	for _, kv := range client.Attributes {
		attrs[string(kv.Key)] = kv.Value.String()
	}
	for k, v := range map[string]string{
		"http.request.method": "POST", "url.full": recv.url("/hook"), "server.address": "127.0.0.1",
		"http.response.status_code": "204",
	} {
		if attrs[k] != v {
			t.Errorf("client span %s = %q, want %q (all: %v)", k, attrs[k], v, attrs)
		}
	}
}

// TestAttemptSpansCostNothingWhenOff: with tracing off and a delivery
// without trace context, the spans allocate nothing.
func TestAttemptSpansCostNothingWhenOff(t *testing.T) {
	d := newTestDeliverer(t, time.Second, 0)
	dl, ep := delivery("ep_off"), endpoint("ep_off", "http://127.0.0.1:1/hook")
	if n := testing.AllocsPerRun(100, func() {
		p, c := d.startSpans(dl, ep)
		if c.SpanContext().IsValid() || p.IsRecording() {
			t.Fatal("a span with tracing off")
		}
	}); n != 0 {
		t.Fatalf("%v allocations per attempt for tracing that is off", n)
	}
}
