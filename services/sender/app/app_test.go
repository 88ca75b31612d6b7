package app_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/pkg/ids"
	"github.com/sluicehq/sluice/pkg/kafkax"
	"github.com/sluicehq/sluice/pkg/testenv"
	"github.com/sluicehq/sluice/services/sender/app"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func lookup(vars map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
}

func TestLoadConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		desc string
		env  map[string]string
		want string // substring of the error; "" means valid
	}{
		{desc: "defaults are valid", env: map[string]string{}},
		{desc: "smallest request timeout", env: map[string]string{"SLUICE_REQUEST_TIMEOUT": "100ms"}},
		{desc: "largest request timeout", env: map[string]string{"SLUICE_REQUEST_TIMEOUT": "5m"}},
		{desc: "request timeout too short", env: map[string]string{"SLUICE_REQUEST_TIMEOUT": "50ms"},
			want: "request-timeout must be between 100ms and 5m, got 50ms"},
		{desc: "request timeout too long", env: map[string]string{"SLUICE_REQUEST_TIMEOUT": "6m"},
			want: "request-timeout"},
		{desc: "request timeout not a duration", env: map[string]string{"SLUICE_REQUEST_TIMEOUT": "soon"},
			want: "SLUICE_REQUEST_TIMEOUT"},
		{desc: "one request in flight", env: map[string]string{"SLUICE_MAX_IN_FLIGHT": "1"}},
		{desc: "no request in flight", env: map[string]string{"SLUICE_MAX_IN_FLIGHT": "0"},
			want: "max-in-flight must be between 1 and 10000, got 0"},
		{desc: "too many in flight", env: map[string]string{"SLUICE_MAX_IN_FLIGHT": "10001"},
			want: "max-in-flight"},
		{desc: "no excerpt", env: map[string]string{"SLUICE_RESPONSE_EXCERPT_BYTES": "0"}},
		{desc: "largest excerpt", env: map[string]string{"SLUICE_RESPONSE_EXCERPT_BYTES": "65536"}},
		{desc: "negative excerpt", env: map[string]string{"SLUICE_RESPONSE_EXCERPT_BYTES": "-1"},
			want: "response-excerpt-bytes must be between 0 and 65536, got -1"},
		{desc: "excerpt above 64 KiB", env: map[string]string{"SLUICE_RESPONSE_EXCERPT_BYTES": "70000"},
			want: "response-excerpt-bytes must be between 0 and 65536, got 70000"},
		{desc: "empty group", env: map[string]string{"SLUICE_GROUP": ""}, want: "group must not be empty"},
		{desc: "empty user agent", env: map[string]string{"SLUICE_USER_AGENT": ""}, want: "user-agent"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			_, err := app.LoadConfig(nil, lookup(tc.env))
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("LoadConfig = %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("LoadConfig = %v, want an error containing %q", err, tc.want)
			}
		})
	}
	t.Run("a flag wins over the environment", func(t *testing.T) {
		cfg, err := app.LoadConfig([]string{"-max-in-flight", "7"}, lookup(map[string]string{"SLUICE_MAX_IN_FLIGHT": "0"}))
		if err != nil || cfg.MaxInFlight != 7 {
			t.Fatalf("LoadConfig = %+v, %v; want max-in-flight 7 and no error", cfg.MaxInFlight, err)
		}
	})
}

// TestUnknownEndpointIsRecordedAndCommitted: a delivery for an endpoint the
// config topic does not know gets exactly one NETWORK_ERROR attempt naming
// the endpoint, and its offset is committed; an undecodable record next to
// it gets no attempt but is committed too, so neither is redelivered.
func TestUnknownEndpointIsRecordedAndCommitted(t *testing.T) {
	k := testenv.NewKafka(t)
	ctx, cancelAll := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancelAll()
	group := k.Prefix + "sender"

	endpoint := ids.New(ids.Endpoint)
	dl := &sluicev1.Delivery{
		SchemaVersion: sluicev1.SchemaVersion, DeliveryId: ids.New(ids.Delivery), TenantId: "ten_test",
		EndpointId: endpoint, EventId: ids.New(ids.Event), EventType: "order.created",
		EventReceivedAtMs: time.Now().UnixMilli(), Data: []byte(`{"order":1}`),
		Origin: sluicev1.DeliveryOrigin_DELIVERY_ORIGIN_ROUTER,
	}
	b, err := proto.Marshal(dl)
	if err != nil {
		t.Fatal(err)
	}
	producer, err := kafkax.NewProducer(k.Config)
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	if err := producer.ProduceSync(ctx,
		&kgo.Record{Topic: k.Names.Deliveries, Key: []byte(endpoint), Value: []byte("not a delivery")},
		&kgo.Record{Topic: k.Names.Deliveries, Key: []byte(endpoint), Value: b},
	).FirstErr(); err != nil {
		t.Fatal(err)
	}

	cfg, err := app.LoadConfig(nil, lookup(map[string]string{
		"SLUICE_KAFKA_BROKERS":    strings.Join(k.Config.Brokers, ","),
		"SLUICE_TOPIC_PREFIX":     k.Prefix,
		"SLUICE_GROUP":            group,
		"SLUICE_OPS_ADDR":         "127.0.0.1:0",
		"SLUICE_LOG_LEVEL":        "warn",
		"SLUICE_SHUTDOWN_TIMEOUT": "10s",
	}))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- app.Run(runCtx, cfg) }()
	stopped := false
	stopSender := func() {
		t.Helper()
		stopped = true
		stop()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Run returned %v after cancel, want nil", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("Run did not return within 20 s of cancel")
		}
	}
	t.Cleanup(func() {
		if !stopped {
			stopSender()
		}
	})

	// Wait for the attempt record.
	attempts, err := kafkax.NewClient(k.Config, kgo.ConsumeTopics(k.Names.Attempts))
	if err != nil {
		t.Fatal(err)
	}
	defer attempts.Close()
	var got []*kgo.Record
	for len(got) == 0 {
		select {
		case err := <-done:
			stopped = true
			t.Fatalf("Run returned before the attempt was recorded: %v", err)
		default:
		}
		pollCtx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		fetches := attempts.PollFetches(pollCtx)
		cancel()
		if ctx.Err() != nil {
			t.Fatal("no attempt record within 60 s")
		}
		got = append(got, fetches.Records()...)
	}
	stopSender()

	// Exactly one attempt: the attempts topic ends at one record in all.
	ends, err := k.Admin.ListEndOffsets(ctx, k.Names.Attempts)
	if err != nil || ends.Error() != nil {
		t.Fatalf("listing attempt end offsets: %v %v", err, ends.Error())
	}
	var total int64
	ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
	if total != 1 {
		t.Fatalf("%d attempt records, want exactly 1", total)
	}
	r := got[0]
	if string(r.Key) != endpoint {
		t.Errorf("attempt record key %q, want the endpoint id %q", r.Key, endpoint)
	}
	var a sluicev1.Attempt
	if err := proto.Unmarshal(r.Value, &a); err != nil {
		t.Fatalf("decoding the attempt: %v", err)
	}
	if a.Outcome != sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_NETWORK_ERROR {
		t.Errorf("outcome %v, want NETWORK_ERROR", a.Outcome)
	}
	if !strings.Contains(a.Error, endpoint) {
		t.Errorf("error %q does not name the endpoint %s", a.Error, endpoint)
	}
	if a.DeliveryId != dl.DeliveryId || a.EventId != dl.EventId || a.EndpointId != endpoint || a.AttemptNumber != 1 {
		t.Errorf("attempt %v does not belong to delivery %v", &a, dl)
	}

	// Both deliveries records are committed: the group's offsets on every
	// partition equal the partition's end.
	dEnds, err := k.Admin.ListEndOffsets(ctx, k.Names.Deliveries)
	if err != nil || dEnds.Error() != nil {
		t.Fatalf("listing delivery end offsets: %v %v", err, dEnds.Error())
	}
	committed, err := k.Admin.FetchOffsets(ctx, group)
	if err != nil || committed.Error() != nil {
		t.Fatalf("fetching offsets of %s: %v %v", group, err, committed.Error())
	}
	var records int64
	dEnds.Each(func(end kadm.ListedOffset) {
		records += end.Offset
		c, ok := committed.Lookup(k.Names.Deliveries, end.Partition)
		switch {
		case end.Offset == 0 && ok && c.At != 0:
			t.Errorf("empty partition %d has committed offset %d", end.Partition, c.At)
		case end.Offset > 0 && (!ok || c.At != end.Offset):
			t.Errorf("partition %d: committed %v (found %v), end %d", end.Partition, c.At, ok, end.Offset)
		}
	})
	if records != 2 {
		t.Fatalf("deliveries topic holds %d records, want the 2 produced", records)
	}
}
