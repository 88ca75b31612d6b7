package configstore_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/pkg/configstore"
	"github.com/sluicehq/sluice/pkg/kafkax"
	"github.com/sluicehq/sluice/pkg/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// open starts a Store on topic and stops it when the test ends: cancel, wait
// for Run to return, then Close.
func open(t testing.TB, k *testenv.Kafka, topic string) *configstore.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := configstore.Open(ctx, k.Config, topic, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("opening store: %v", err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v, want nil after cancel", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Run did not return within 10s of cancel")
		}
		s.Close()
	})
	if err := s.WaitCaughtUp(ctx); err != nil {
		t.Fatal(err)
	}
	return s
}

func endpoint(id, url string) *sluicev1.ConfigRecord {
	return &sluicev1.ConfigRecord{Object: &sluicev1.ConfigRecord_Endpoint{Endpoint: &sluicev1.Endpoint{
		Id: id, TenantId: "ten_acme", Url: url, Description: "orders webhook",
		EventTypes: []string{"order.created", "order.paid"}, Status: sluicev1.EndpointStatus_ENDPOINT_STATUS_ENABLED,
		Headers: map[string]string{"X-Team": "billing"}, MaxInFlight: 8, RateLimit: 50,
		TimeoutMs: 15000, CreatedAtMs: 1_700_000_000_000, UpdatedAtMs: 1_700_000_000_000, Etag: "e1",
	}}}
}

func wantEndpoint(t testing.TB, s *configstore.Store, id string, want *sluicev1.Endpoint) {
	t.Helper()
	got, ok := s.Endpoint(id)
	if !ok {
		t.Fatalf("Endpoint(%q) not found, want %v", id, want)
	}
	if !proto.Equal(got, want) {
		t.Fatalf("Endpoint(%q) = %v, want %v", id, got, want)
	}
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestPutReadsOwnWritesAndReplicasConverge(t *testing.T) {
	k := testenv.NewKafka(t)
	ctx := ctxT(t)
	a := open(t, k, k.Names.Config)

	if _, ok := a.Endpoint("ep_1"); ok {
		t.Fatal("ep_1 exists before it was written")
	}
	v1 := endpoint("ep_1", "https://example.com/hooks/1")
	if err := a.Put(ctx, "ep_1", v1); err != nil {
		t.Fatal(err)
	}
	// No waiting: Put returns only once this Store shows the write.
	wantEndpoint(t, a, "ep_1", v1.GetEndpoint())
	v2 := endpoint("ep_1", "https://example.com/hooks/1-moved")
	if err := a.Put(ctx, "ep_1", v2); err != nil {
		t.Fatal(err)
	}
	wantEndpoint(t, a, "ep_1", v2.GetEndpoint())
	other := endpoint("ep_2", "https://example.org/in")
	if err := a.Put(ctx, "ep_2", other); err != nil {
		t.Fatal(err)
	}

	// A replica started now (or this one after a restart) rebuilds the same
	// view from the topic alone: the latest version of every object.
	b := open(t, k, k.Names.Config)
	wantEndpoint(t, b, "ep_1", v2.GetEndpoint())
	wantEndpoint(t, b, "ep_2", other.GetEndpoint())

	if err := a.Delete(ctx, "ep_1"); err != nil {
		t.Fatal(err)
	}
	if _, ok := a.Endpoint("ep_1"); ok {
		t.Fatal("ep_1 still in the writing store right after Delete returned")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, ok := b.Endpoint("ep_1"); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the second store still shows ep_1 10s after its tombstone")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The tombstone removed only its own key.
	wantEndpoint(t, a, "ep_2", other.GetEndpoint())
	wantEndpoint(t, b, "ep_2", other.GetEndpoint())
}

func TestUnreadableRecordKeepsPreviousVersion(t *testing.T) {
	k := testenv.NewKafka(t)
	ctx := ctxT(t)
	s := open(t, k, k.Names.Config)
	good := endpoint("ep_1", "https://example.com/hooks/1")
	if err := s.Put(ctx, "ep_1", good); err != nil {
		t.Fatal(err)
	}

	future := endpoint("ep_1", "https://example.com/from-a-newer-writer")
	future.SchemaVersion = sluicev1.SchemaVersion + 1
	futureBytes, err := proto.Marshal(future)
	if err != nil {
		t.Fatal(err)
	}
	p, err := kafkax.NewProducer(k.Config)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for _, tc := range []struct {
		desc  string
		value []byte
	}{
		{"unknown schema version", futureBytes},
		// 'n' is field 13 with wire type 6, which does not exist.
		{"garbage bytes", []byte("not a protobuf")},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			rec := &kgo.Record{Topic: k.Names.Config, Key: []byte("ep_1"), Value: tc.value}
			if err := p.ProduceSync(ctx, rec).FirstErr(); err != nil {
				t.Fatal(err)
			}
			// The config topic has one partition: once a later write is
			// visible, the bad record before it has been applied (or not).
			if err := s.Put(ctx, "marker", endpoint("marker", "https://example.com/m")); err != nil {
				t.Fatal(err)
			}
			wantEndpoint(t, s, "ep_1", good.GetEndpoint())
		})
	}

	// A store rebuilding from the topic skips them too.
	fresh := open(t, k, k.Names.Config)
	wantEndpoint(t, fresh, "ep_1", good.GetEndpoint())
}
