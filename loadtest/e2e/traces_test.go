package e2e_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/sluicehq/sluice/pkg/kafkax"
	"github.com/sluicehq/sluice/pkg/telemetry"
	"github.com/sluicehq/sluice/pkg/testenv"
	ingestapi "github.com/sluicehq/sluice/services/ingest/api"
	ingest "github.com/sluicehq/sluice/services/ingest/app"
	logwriter "github.com/sluicehq/sluice/services/logwriter/app"
	sender "github.com/sluicehq/sluice/services/sender/app"
)

// traceRecorder is a service's tracing over an in-memory exporter: every
// span is exported as it ends.
type traceRecorder struct {
	exp *tracetest.InMemoryExporter
	tr  *telemetry.Tracing
}

func newTraceRecorder(t *testing.T) *traceRecorder {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	// Registered before the services start, so it runs after they stopped.
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return &traceRecorder{exp: exp, tr: telemetry.NewTracingWith(tp)}
}

// of returns the spans of trace id recorded so far.
func (r *traceRecorder) of(id trace.TraceID) []tracetest.SpanStub {
	var out []tracetest.SpanStub
	for _, s := range r.exp.GetSpans() {
		if s.SpanContext.TraceID() == id {
			out = append(out, s)
		}
	}
	return out
}

// hookReceiver is a webhook receiver that keeps the traceparent of each
// webhook, by webhook-id.
type hookReceiver struct {
	srv *httptest.Server
	mu  sync.Mutex
	got map[string]string
}

func startHookReceiver(t *testing.T) *hookReceiver {
	h := &hookReceiver{got: map[string]string{}}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		h.mu.Lock()
		h.got[r.Header.Get("Webhook-Id")] = r.Header.Get("Traceparent")
		h.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(h.srv.Close)
	return h
}

// traceparentOf waits for the webhook of event id and returns its
// traceparent.
func (h *hookReceiver) traceparentOf(t *testing.T, id string) string {
	t.Helper()
	var tp string
	eventually(t, "the webhook of "+id, func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		var ok bool
		tp, ok = h.got[id]
		return ok
	})
	return tp
}

// traceTenant makes a tenant, once the API has loaded its configuration,
// and returns its id and API key.
func traceTenant(t *testing.T, a *apiClient, adminKey string) (string, string) {
	a.waitUp()
	var tenant struct{ ID string }
	a.call("POST", "/v1/tenants", adminKey, `{"name":"Traced"}`, http.StatusCreated, &tenant)
	var key struct{ Key string }
	a.call("POST", "/v1/tenants/"+tenant.ID+"/api-keys", adminKey, `{"name":"e2e"}`, http.StatusCreated, &key)
	return tenant.ID, key.Key
}

// newTraceparent is a sampled W3C traceparent of a fresh trace, as a
// producer's span would send it.
func newTraceparent(t *testing.T) (string, trace.TraceID, trace.SpanID) {
	var tid trace.TraceID
	var sid trace.SpanID
	if _, err := rand.Read(tid[:]); err != nil {
		t.Fatal(err)
	}
	if _, err := rand.Read(sid[:]); err != nil {
		t.Fatal(err)
	}
	return "00-" + tid.String() + "-" + sid.String() + "-01", tid, sid
}

// find returns the one span of spans called name of kind, failing if
// there is not exactly one.
func find(t *testing.T, spans []tracetest.SpanStub, name string, kind trace.SpanKind) tracetest.SpanStub {
	t.Helper()
	var out []tracetest.SpanStub
	for _, s := range spans {
		if s.Name == name && s.SpanKind == kind {
			out = append(out, s)
		}
	}
	if len(out) != 1 {
		var names []string
		for _, s := range spans {
			names = append(names, fmt.Sprintf("%s(%v)", s.Name, s.SpanKind))
		}
		t.Fatalf("%d %v spans called %q, want 1; the trace has %v", len(out), kind, name, names)
	}
	return out[0]
}

// childOf fails unless child's parent is parent.
func childOf(t *testing.T, child, parent tracetest.SpanStub) {
	t.Helper()
	if child.Parent.SpanID() != parent.SpanContext.SpanID() || child.Parent.TraceID() != parent.SpanContext.TraceID() {
		t.Fatalf("span %q has parent %s, want %q (%s)", child.Name, child.Parent.SpanID(), parent.Name, parent.SpanContext.SpanID())
	}
}

// TestTraceFromProducerToReceiver runs ingest, sender and logwriter, each
// with its own in-memory exporter, and follows two events to the receiver:
// one POSTed with a traceparent, one produced straight to Kafka with a
// traceparent header. Each is one trace with the right parent links, the
// receiver's traceparent continues it, and the attempt row and event row in
// ClickHouse carry its id, which the log API filters on.
func TestTraceFromProducerToReceiver(t *testing.T) {
	k := senderKafka(t)
	ch := testenv.NewClickHouse(t)
	ingestSpans, senderSpans, logSpans := newTraceRecorder(t), newTraceRecorder(t), newTraceRecorder(t)
	const adminKey = "admin-key-of-the-e2e-trace-test-0123456789abc"
	apiAddr := freeAddr(t)
	start(t, "logwriter", logwriter.LoadConfig, func(ctx context.Context, c logwriter.Config) error {
		c.Tracing = logSpans.tr
		return logwriter.Run(ctx, c)
	}, commonEnv(k).with(env{
		"SLUICE_GROUP": k.Prefix + "logwriter", "SLUICE_CLICKHOUSE_ADDRS": ch.Config.Addrs[0],
		"SLUICE_CLICKHOUSE_DATABASE": ch.Config.Database, "SLUICE_BATCH_WAIT": "200ms",
	}))
	start(t, "sender", sender.LoadConfig, func(ctx context.Context, c sender.Config) error {
		c.Tracing = senderSpans.tr
		return sender.Run(ctx, c)
	}, commonEnv(k).with(senderEnv).with(env{"SLUICE_GROUP": k.Prefix + "sender", "SLUICE_SHUTDOWN_TIMEOUT": "2s"}))
	start(t, "ingest", ingest.LoadConfig, func(ctx context.Context, c ingest.Config) error {
		c.Tracing = ingestSpans.tr
		return ingest.Run(ctx, c)
	}, commonEnv(k).with(env{
		"SLUICE_API_ADDR": apiAddr, "SLUICE_INSECURE_DEV_SECRETS_KEY": "true", "SLUICE_ROUTER_GROUP": k.Prefix + "router",
		"SLUICE_ADMIN_KEY": adminKey, "SLUICE_CLICKHOUSE_ADDRS": ch.Config.Addrs[0], "SLUICE_CLICKHOUSE_DATABASE": ch.Config.Database,
	}))
	a := &apiClient{t: t, base: "http://" + apiAddr}
	a.waitUp()
	recv := startHookReceiver(t)

	tenant, key := traceTenant(t, a, adminKey)
	a.call("POST", "/v1/endpoints", key, `{"url":"`+recv.srv.URL+`/hook","events":["order.*"]}`, http.StatusCreated, nil)

	// follow checks the chain from the router on: the router's processing
	// continues receive, the sender's processing continues the router's
	// (through the delivery record), its HTTP request is a client span
	// under it, and the receiver's traceparent names that span.
	follow := func(t *testing.T, eventID string, tid trace.TraceID, receive tracetest.SpanStub) {
		tp := recv.traceparentOf(t, eventID)
		var client, process tracetest.SpanStub
		eventually(t, "the sender's spans", func() bool {
			spans := senderSpans.of(tid)
			for _, s := range spans {
				switch s.Name {
				case "POST":
					client = s
				case "sluice delivery process":
					process = s
				}
			}
			return client.SpanContext.IsValid() && process.SpanContext.IsValid()
		})
		routed := find(t, ingestSpans.of(tid), k.Names.Events+" process", trace.SpanKindConsumer)
		childOf(t, routed, receive)
		childOf(t, process, routed)
		childOf(t, client, process)
		if want := "00-" + tid.String() + "-" + client.SpanContext.SpanID().String() + "-01"; tp != want {
			t.Fatalf("the receiver got traceparent %q, want the client span's %q", tp, want)
		}
		attrs := map[string]string{}
		for _, kv := range routed.Attributes {
			attrs[string(kv.Key)] = kv.Value.String()
		}
		for name, v := range map[string]string{"messaging.system": "kafka", "messaging.destination.name": k.Names.Events,
			"messaging.consumer.group.name": k.Prefix + "router", "messaging.operation.type": "process"} {
			if attrs[name] != v {
				t.Errorf("router span %s = %q, want %q", name, attrs[name], v)
			}
		}

		// The attempt row and the event row carry the trace id, and the
		// log API finds the attempt by it.
		var page struct{ Data []ingestapi.AttemptJSON }
		eventually(t, "the attempt in the log under its trace id", func() bool {
			a.call("GET", "/v1/attempts?trace_id="+tid.String(), key, "", http.StatusOK, &page)
			return len(page.Data) > 0
		})
		if len(page.Data) != 1 || page.Data[0].EventID != eventID || page.Data[0].TraceID != tid.String() {
			t.Fatalf("attempts of trace %s: %+v, want the one of %s", tid, page.Data, eventID)
		}
		var got string
		eventually(t, "the event row", func() bool {
			return ch.Conn.QueryRow(context.Background(), "SELECT trace_id FROM "+ch.Config.Database+".events FINAL WHERE event_id = ?",
				eventID).Scan(&got) == nil
		})
		if got != tid.String() {
			t.Fatalf("event row trace_id %q, want %s", got, tid)
		}
	}

	t.Run("HTTP event with a traceparent", func(t *testing.T) {
		tp, tid, producer := newTraceparent(t)
		var acc ingestapi.EventAccepted
		a.call("POST", "/v1/events", key, `{"type":"order.created","data":{"n":1}}`, http.StatusAccepted, &acc, "traceparent", tp)
		recv.traceparentOf(t, acc.ID)
		spans := ingestSpans.of(tid)
		server := find(t, spans, "POST /v1/events", trace.SpanKindServer)
		if server.Parent.SpanID() != producer || !server.Parent.IsRemote() {
			t.Fatalf("server span's parent %s, want the caller's %s", server.Parent.SpanID(), producer)
		}
		publish := find(t, spans, k.Names.Events+" publish", trace.SpanKindProducer)
		childOf(t, publish, server)
		receive := find(t, spans, k.Names.Events+" receive", trace.SpanKindConsumer)
		childOf(t, receive, publish)
		follow(t, acc.ID, tid, receive)
	})

	t.Run("Kafka event with a traceparent header", func(t *testing.T) {
		tp, tid, producer := newTraceparent(t)
		cl, err := kafkax.NewProducer(k.Config)
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		rec := contractRecord(k.Names.Events, tenant, "order.paid", "evt_traced_kafka", `{"n":2}`)
		rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: "traceparent", Value: []byte(tp)})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
			t.Fatal(err)
		}
		recv.traceparentOf(t, "evt_traced_kafka")
		receive := find(t, ingestSpans.of(tid), k.Names.Events+" receive", trace.SpanKindConsumer)
		if receive.Parent.SpanID() != producer {
			t.Fatalf("receive span's parent %s, want the producer's %s", receive.Parent.SpanID(), producer)
		}
		follow(t, "evt_traced_kafka", tid, receive)
	})

	t.Run("a malformed trace id is a 400", func(t *testing.T) {
		for _, id := range []string{"xyz", "4BF92F3577B34DA6A3CE929D0E0E4736", "00000000000000000000000000000000"} {
			a.call("GET", "/v1/attempts?trace_id="+id, key, "", http.StatusBadRequest, nil)
		}
	})
}

// TestTraceWithTracingOff: with no OTEL_* variable set, the receiver still
// gets a traceparent continuing the producer's trace, its parent the
// producer's span, and the attempt row holds that trace id.
func TestTraceWithTracingOff(t *testing.T) {
	k := senderKafka(t)
	ch := testenv.NewClickHouse(t)
	startLogwriter(t, k, ch)
	startSender(t, k, nil)
	const adminKey = "admin-key-of-the-e2e-trace-test-0123456789abc"
	apiAddr := freeAddr(t)
	startIngest(t, k, env{"SLUICE_API_ADDR": apiAddr, "SLUICE_ADMIN_KEY": adminKey,
		"SLUICE_CLICKHOUSE_ADDRS": ch.Config.Addrs[0], "SLUICE_CLICKHOUSE_DATABASE": ch.Config.Database})
	a := &apiClient{t: t, base: "http://" + apiAddr}
	a.waitUp()
	recv := startHookReceiver(t)
	_, keyA := traceTenant(t, a, adminKey)
	a.call("POST", "/v1/endpoints", keyA, `{"url":"`+recv.srv.URL+`/hook","events":["order.*"]}`, http.StatusCreated, nil)

	tp, tid, _ := newTraceparent(t)
	var acc ingestapi.EventAccepted
	a.call("POST", "/v1/events", keyA, `{"type":"order.created","data":{"n":1}}`, http.StatusAccepted, &acc, "traceparent", tp)
	if got := recv.traceparentOf(t, acc.ID); got != tp {
		t.Fatalf("the receiver got traceparent %q, want the producer's %q", got, tp)
	}
	var page struct{ Data []ingestapi.AttemptJSON }
	eventually(t, "the attempt in the log under its trace id", func() bool {
		a.call("GET", "/v1/attempts?trace_id="+tid.String(), keyA, "", http.StatusOK, &page)
		return len(page.Data) == 1
	})
	if page.Data[0].EventID != acc.ID {
		t.Fatalf("attempt %+v, want the one of %s", page.Data[0], acc.ID)
	}
}

// TestTracesReachAnOTLPReceiver: ingest configured only through the
// standard OTEL_* variables exports its spans over OTLP/HTTP to a receiver
// the test runs.
func TestTracesReachAnOTLPReceiver(t *testing.T) {
	got := make(chan *coltrace.ExportTraceServiceRequest, 100)
	otlp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		req := new(coltrace.ExportTraceServiceRequest)
		if err != nil || r.URL.Path != "/v1/traces" || proto.Unmarshal(body, req) != nil {
			http.Error(w, "not an OTLP/HTTP protobuf trace export", http.StatusBadRequest)
			return
		}
		select {
		case got <- req:
		default:
		}
		b, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(b)
	}))
	t.Cleanup(otlp.Close)
	// Set before the service starts and restored after it stopped (the
	// cleanups run in reverse).
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.URL)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=e2e")
	// Export every 100 ms rather than every 5 s.
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "100")

	k := senderKafka(t)
	const adminKey = "admin-key-of-the-e2e-trace-test-0123456789abc"
	apiAddr := freeAddr(t)
	startIngest(t, k, env{"SLUICE_API_ADDR": apiAddr, "SLUICE_ADMIN_KEY": adminKey})
	a := &apiClient{t: t, base: "http://" + apiAddr}
	a.waitUp()
	_, keyA := traceTenant(t, a, adminKey)
	tp, tid, _ := newTraceparent(t)
	a.call("POST", "/v1/events", keyA, `{"type":"order.created","data":{"n":1}}`, http.StatusAccepted, nil, "traceparent", tp)

	want := hex.EncodeToString(tid[:])
	deadline := time.After(time.Minute)
	for {
		select {
		case req := <-got:
			for _, rs := range req.GetResourceSpans() {
				res := map[string]string{}
				for _, kv := range rs.GetResource().GetAttributes() {
					res[kv.GetKey()] = kv.GetValue().GetStringValue()
				}
				for _, ss := range rs.GetScopeSpans() {
					for _, s := range ss.GetSpans() {
						if hex.EncodeToString(s.GetTraceId()) != want || s.GetKind().String() != "SPAN_KIND_SERVER" {
							continue
						}
						if res["service.name"] != "sluice-ingest" || res["deployment.environment.name"] != "e2e" {
							t.Fatalf("server span exported under resource %v", res)
						}
						return
					}
				}
			}
		case <-deadline:
			t.Fatal("the OTLP receiver got no server span of the request's trace within a minute")
		}
	}
}
