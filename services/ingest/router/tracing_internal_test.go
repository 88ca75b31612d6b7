package router

import (
	"context"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/pkg/telemetry"
)

const producerTraceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func routerWith(tr *telemetry.Tracing) *Router {
	return &Router{opts: Options{Tracing: tr, Group: "sluice-router"}, tracer: tr.Tracer("test")}
}

// TestProcessWithTracingOffCostsNothing: an event without a traceparent,
// tracing off: no span, no allocation.
func TestProcessWithTracingOffCostsNothing(t *testing.T) {
	r := routerWith(telemetry.Disabled())
	rec := &kgo.Record{Topic: "sluice.events", Headers: []kgo.RecordHeader{{Key: "sluice-tenant", Value: []byte("ten_1")}}}
	ctx := context.Background()
	if n := testing.AllocsPerRun(100, func() {
		if _, span := r.startProcess(ctx, rec); span != nil {
			t.Fatal("a span with tracing off")
		}
	}); n != 0 {
		t.Fatalf("%v allocations per event for tracing that is off", n)
	}
}

// TestProcessWithTracingOffPassesTheProducersContextOn: a Kafka producer's
// traceparent header reaches the deliveries as it came.
func TestProcessWithTracingOffPassesTheProducersContextOn(t *testing.T) {
	r := routerWith(telemetry.Disabled())
	rec := &kgo.Record{Topic: "sluice.events", Headers: []kgo.RecordHeader{{Key: "traceparent", Value: []byte(producerTraceparent)}}}
	ctx, span := r.startProcess(context.Background(), rec)
	if span != nil {
		t.Fatal("a span with tracing off")
	}
	var d sluicev1.Delivery
	setTrace(ctx, &d)
	if d.Traceparent != producerTraceparent {
		t.Fatalf("delivery traceparent %q, want the producer's %q", d.Traceparent, producerTraceparent)
	}
}

// TestProcessSpan: with tracing on, the processing span continues the
// record's traceparent, carries the messaging attributes, and is what the
// deliveries carry on.
func TestProcessSpan(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	r := routerWith(telemetry.NewTracingWith(tp))
	rec := &kgo.Record{Topic: "sluice.events", Partition: 3, Offset: 42,
		Headers: []kgo.RecordHeader{{Key: "traceparent", Value: []byte(producerTraceparent)}}}
	ctx, span := r.startProcess(context.Background(), rec)
	var d sluicev1.Delivery
	setTrace(ctx, &d)
	span.End()
	spans := exp.GetSpans()
	if len(spans) != 1 {
		t.Fatalf("%d spans", len(spans))
	}
	s := spans[0]
	if s.Name != "sluice.events process" || s.SpanKind != trace.SpanKindConsumer || s.Parent.SpanID().String() != "00f067aa0ba902b7" ||
		s.SpanContext.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Fatalf("span %q kind %v parent %s trace %s", s.Name, s.SpanKind, s.Parent.SpanID(), s.SpanContext.TraceID())
	}
	if want := telemetry.Traceparent(s.SpanContext); d.Traceparent != want {
		t.Fatalf("delivery traceparent %q, want the process span's %q", d.Traceparent, want)
	}
	attrs := map[string]string{}
	for _, kv := range s.Attributes {
		attrs[string(kv.Key)] = kv.Value.String()
	}
	for k, v := range map[string]string{
		"messaging.system": "kafka", "messaging.destination.name": "sluice.events", "messaging.destination.partition.id": "3",
		"messaging.kafka.offset": "42", "messaging.consumer.group.name": "sluice-router", "messaging.operation.type": "process",
	} {
		if attrs[k] != v {
			t.Errorf("%s = %q, want %q", k, attrs[k], v)
		}
	}
}
