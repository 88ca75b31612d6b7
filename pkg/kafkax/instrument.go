package kafkax

import (
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kotel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Instrument returns franz-go's OpenTelemetry hooks (plugin kotel) for
// every client of a service, to put in Config.Hooks.
//
// The meter hooks always: they count connections, bytes and records per
// broker and topic (messaging.kafka.connects.count,
// messaging.kafka.produce_records.count, messaging.kafka.fetch_bytes.count
// and the rest, as kotel names them) into mp. The tracer hooks only when
// tracing is on: they make a "<topic> publish" span for every record
// produced, child of the record's Context, and write its traceparent into
// the record's headers, and a "<topic> receive" span for every record
// fetched, continuing the context in its headers. With tracing off they
// would only start and end no-op spans for every record, so they are left
// out and cost nothing.
func Instrument(tp trace.TracerProvider, prop propagation.TextMapPropagator, tracing bool, mp metric.MeterProvider) []kgo.Hook {
	opts := []kotel.Opt{kotel.WithMeter(kotel.NewMeter(kotel.MeterProvider(mp)))}
	if tracing {
		opts = append(opts, kotel.WithTracer(kotel.NewTracer(kotel.TracerProvider(tp), kotel.TracerPropagator(prop))))
	}
	return kotel.NewKotel(opts...).Hooks()
}

// HeaderCarrier reads and writes a record's headers for a propagator
// (traceparent, tracestate, baggage), as kotel and other Kafka producers
// write them: a header set twice is replaced, not repeated.
func HeaderCarrier(r *kgo.Record) propagation.TextMapCarrier { return kotel.NewRecordCarrier(r) }

// HasHeader reports whether r has a header called key, without allocating:
// the hot path asks it before extracting a trace context.
func HasHeader(r *kgo.Record, key string) bool {
	for i := range r.Headers {
		if r.Headers[i].Key == key {
			return true
		}
	}
	return false
}
