package kafkax_test

import (
	"context"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/sluicehq/sluice/pkg/kafkax"
	"github.com/sluicehq/sluice/pkg/telemetry"
	"github.com/sluicehq/sluice/pkg/testenv"
)

// scrape returns what m's /metrics serves.
func scrape(t *testing.T, m *telemetry.Metrics) string {
	rec := httptest.NewRecorder()
	m.Handler.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	b, _ := io.ReadAll(rec.Body)
	return string(b)
}

// TestInstrumentCountsKafkaTraffic: a client built with Instrument's hooks
// reports franz-go's client metrics (kotel's names) on /metrics, and with
// tracing off adds no trace headers to what it produces.
func TestInstrumentCountsKafkaTraffic(t *testing.T) {
	k := testenv.NewKafka(t)
	m, err := telemetry.NewMetrics("test")
	if err != nil {
		t.Fatal(err)
	}
	cfg := k.Config
	cfg.Hooks = kafkax.Instrument(noop.NewTracerProvider(), telemetry.Propagator, false, m.Provider)
	cl, err := kafkax.NewProducer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rec := &kgo.Record{Topic: k.Names.Events, Value: []byte(`{}`)}
	if err := cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if kafkax.HasHeader(rec, "traceparent") {
		t.Fatal("a traceparent header with tracing off")
	}
	// kotel's instruments as the Prometheus exporter names them: the byte
	// counters have unit By, which the exporter appends as _by.
	want := []string{
		`messaging_kafka_connects_count_total{node_id="`,
		`messaging_kafka_write_bytes_by_total{node_id="`,
		`messaging_kafka_read_bytes_count_by_total{node_id="`,
		`messaging_kafka_produce_records_count_total{node_id="`,
		`messaging_kafka_produce_bytes_count_by_total{node_id="`,
	}
	missing := func(body string) []string {
		var out []string
		for _, name := range want {
			if !strings.Contains(body, name) {
				out = append(out, name)
			}
		}
		return out
	}
	// franz-go calls the produce-batch hook once the batch's response is
	// handled, which may be just after ProduceSync's promise has fired.
	body := scrape(t, m)
	for deadline := time.Now().Add(10 * time.Second); len(missing(body)) > 0 && time.Now().Before(deadline); body = scrape(t, m) {
		time.Sleep(20 * time.Millisecond)
	}
	for _, name := range missing(body) {
		t.Errorf("/metrics has no %s", name)
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", body)
	}
}

// TestInstrumentTracesProducedRecords: with tracing on, a produced record
// gets a publish span, child of the record's context, whose traceparent is
// written into the record's headers.
func TestInstrumentTracesProducedRecords(t *testing.T) {
	k := testenv.NewKafka(t)
	m, err := telemetry.NewMetrics("test")
	if err != nil {
		t.Fatal(err)
	}
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	cfg := k.Config
	cfg.Hooks = kafkax.Instrument(tp, telemetry.Propagator, true, m.Provider)
	cl, err := kafkax.NewProducer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pctx, parent := tp.Tracer("test").Start(ctx, "parent")
	rec := &kgo.Record{Topic: k.Names.Events, Value: []byte(`{}`)}
	if err := cl.ProduceSync(pctx, rec).FirstErr(); err != nil {
		t.Fatal(err)
	}
	parent.End()
	var publish tracetest.SpanStub
	for _, s := range exp.GetSpans() {
		if s.Name == k.Names.Events+" publish" {
			publish = s
		}
	}
	if publish.SpanKind != trace.SpanKindProducer || publish.Parent.SpanID() != parent.SpanContext().SpanID() {
		t.Fatalf("publish span %+v, want a producer span under the parent", publish)
	}
	want := telemetry.Traceparent(publish.SpanContext)
	var got string
	for _, h := range rec.Headers {
		if h.Key == "traceparent" {
			got = string(h.Value)
		}
	}
	if got != want {
		t.Fatalf("record traceparent %q, want the publish span's %q", got, want)
	}
}
