package telemetry_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/sluicehq/sluice/pkg/telemetry"
)

func TestTracingEnabled(t *testing.T) {
	for name, tc := range map[string]struct {
		env  map[string]string
		want bool
	}{
		"nothing set":              {nil, false},
		"an OTLP endpoint":         {map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, true},
		"a traces endpoint":        {map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, true},
		"an exporter named":        {map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, true},
		"exporter none":            {map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, false},
		"SDK disabled":             {map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, false},
		"SDK disabled in any case": {map[string]string{"OTEL_SDK_DISABLED": "TRUE", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, false},
		"SDK not disabled":         {map[string]string{"OTEL_SDK_DISABLED": "false", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, true},
	} {
		t.Run(name, func(t *testing.T) {
			got := telemetry.TracingEnabled(func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok })
			if got != tc.want {
				t.Fatalf("TracingEnabled = %v, want %v", got, tc.want)
			}
		})
	}
}

// clearOTEL unsets the variables that turn tracing on, for the test.
func clearOTEL(t *testing.T) {
	for _, k := range []string{"OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
		"OTEL_SDK_DISABLED", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_EXPORTER_OTLP_PROTOCOL",
		"OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG"} {
		t.Setenv(k, "")
	}
}

func TestNewTracingIsNoopWhenUnset(t *testing.T) {
	clearOTEL(t)
	tr, err := telemetry.NewTracing(t.Context(), "test")
	if err != nil {
		t.Fatal(err)
	}
	if tr.Enabled() {
		t.Fatal("tracing on with no OTEL_* variable set")
	}
	// A no-op span keeps its parent's context, so a traceparent received is
	// passed on.
	parent, ok := telemetry.ParseTraceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "")
	if !ok {
		t.Fatal("a valid traceparent does not parse")
	}
	ctx, span := tr.Tracer("x").Start(trace.ContextWithRemoteSpanContext(context.Background(), parent), "op")
	if span.IsRecording() || !trace.SpanContextFromContext(ctx).Equal(parent) {
		t.Fatalf("no-op span recording=%v context %v, want the parent's", span.IsRecording(), trace.SpanContextFromContext(ctx))
	}
	if got := telemetry.Traceparent(parent); got != "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" {
		t.Fatalf("Traceparent = %q", got)
	}
}

func TestParseTraceparentRefusesMalformed(t *testing.T) {
	for _, tp := range []string{"", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"} {
		if _, ok := telemetry.ParseTraceparent(tp, ""); ok {
			t.Errorf("ParseTraceparent(%q) accepted", tp)
		}
	}
}

// TestNewTracingExportsOverOTLPHTTP: configured by OTEL_* variables only,
// spans reach an OTLP/HTTP receiver, under the service's default name and
// the resource attributes of the environment.
func TestNewTracingExportsOverOTLPHTTP(t *testing.T) {
	clearOTEL(t)
	got := make(chan *coltrace.ExportTraceServiceRequest, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		req := new(coltrace.ExportTraceServiceRequest)
		if err != nil || r.URL.Path != "/v1/traces" || proto.Unmarshal(body, req) != nil {
			http.Error(w, "not an OTLP/HTTP protobuf trace export", http.StatusBadRequest)
			return
		}
		got <- req
		w.Header().Set("Content-Type", "application/x-protobuf")
		b, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
		_, _ = w.Write(b)
	}))
	t.Cleanup(srv.Close)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=test")

	tr, err := telemetry.NewTracing(t.Context(), "test")
	if err != nil {
		t.Fatal(err)
	}
	if !tr.Enabled() {
		t.Fatal("tracing off with OTEL_EXPORTER_OTLP_ENDPOINT set")
	}
	_, span := tr.Tracer("x").Start(context.Background(), "the span")
	span.End()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tr.Shutdown(ctx); err != nil {
		t.Fatalf("shutting down (exporting the queued span): %v", err)
	}
	var req *coltrace.ExportTraceServiceRequest
	select {
	case req = <-got:
	default:
		t.Fatal("the receiver got no export by the end of Shutdown")
	}
	rs := req.GetResourceSpans()
	if len(rs) != 1 || len(rs[0].GetScopeSpans()) != 1 || len(rs[0].GetScopeSpans()[0].GetSpans()) != 1 {
		t.Fatalf("export %v, want one span", req)
	}
	if name := rs[0].GetScopeSpans()[0].GetSpans()[0].GetName(); name != "the span" {
		t.Fatalf("span %q", name)
	}
	attrs := map[string]string{}
	for _, kv := range rs[0].GetResource().GetAttributes() {
		attrs[kv.GetKey()] = kv.GetValue().GetStringValue()
	}
	if attrs["service.name"] != "sluice-test" || attrs["deployment.environment.name"] != "test" {
		t.Fatalf("resource %v, want service.name sluice-test and the environment's attributes", attrs)
	}
}
