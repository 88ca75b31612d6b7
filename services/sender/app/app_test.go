package app_test

import (
	"context"
	"sort"
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
	"github.com/sluicehq/sluice/services/sender/dispatch"
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
		{desc: "tenant share as large as the process", env: map[string]string{"SLUICE_MAX_IN_FLIGHT": "8", "SLUICE_TENANT_MAX_IN_FLIGHT": "8"}},
		{desc: "tenant share above the process", env: map[string]string{"SLUICE_MAX_IN_FLIGHT": "8", "SLUICE_TENANT_MAX_IN_FLIGHT": "9"},
			want: "tenant-max-in-flight must be between 0 (a quarter of max-in-flight) and max-in-flight (8), got 9"},
		{desc: "negative tenant share", env: map[string]string{"SLUICE_TENANT_MAX_IN_FLIGHT": "-1"}, want: "tenant-max-in-flight"},
		{desc: "no excerpt", env: map[string]string{"SLUICE_RESPONSE_EXCERPT_BYTES": "0"}},
		{desc: "largest excerpt", env: map[string]string{"SLUICE_RESPONSE_EXCERPT_BYTES": "65536"}},
		{desc: "negative excerpt", env: map[string]string{"SLUICE_RESPONSE_EXCERPT_BYTES": "-1"},
			want: "response-excerpt-bytes must be between 0 and 65536, got -1"},
		{desc: "excerpt above 64 KiB", env: map[string]string{"SLUICE_RESPONSE_EXCERPT_BYTES": "70000"},
			want: "response-excerpt-bytes must be between 0 and 65536, got 70000"},
		{desc: "empty group", env: map[string]string{"SLUICE_GROUP": ""}, want: "group must not be empty"},
		{desc: "endpoint concurrency zero", env: map[string]string{"SLUICE_ENDPOINT_MAX_IN_FLIGHT": "0"},
			want: "endpoint-max-in-flight must be between 1 and 1000, got 0"},
		{desc: "endpoint queue zero", env: map[string]string{"SLUICE_ENDPOINT_QUEUE": "0"}, want: "endpoint-queue"},
		{desc: "queue wait too short", env: map[string]string{"SLUICE_MAX_QUEUE_WAIT": "10ms"},
			want: "max-queue-wait must be between 100ms and 1m, got 10ms"},
		{desc: "memory budget too small", env: map[string]string{"SLUICE_MEMORY_BUDGET_BYTES": "1000"},
			want: "memory-budget-bytes"},
		{desc: "smallest ordered memory budget", env: map[string]string{"SLUICE_ORDERED_MEMORY_BUDGET_BYTES": "1048576"}},
		{desc: "ordered memory budget too small", env: map[string]string{"SLUICE_ORDERED_MEMORY_BUDGET_BYTES": "1048575"},
			want: "ordered-memory-budget-bytes must be from 1048576 to 68719476736, got 1048575"},
		{desc: "revoke grace too long", env: map[string]string{"SLUICE_REVOKE_GRACE": "1m"}, want: "revoke-grace"},
		{desc: "attempt log buffer too small", env: map[string]string{"SLUICE_ATTEMPT_LOG_BUFFER": "10"},
			want: "attempt-log-buffer"},
		{desc: "allow-list of loopback", env: map[string]string{"SLUICE_EGRESS_ALLOW": "127.0.0.1/32,::1"}},
		{desc: "allow-list with a bad CIDR", env: map[string]string{"SLUICE_EGRESS_ALLOW": "10.0.0.0/33"},
			want: "egress-allow"},
		{desc: "no secrets key", env: map[string]string{"SLUICE_INSECURE_DEV_SECRETS_KEY": "false"},
			want: "SLUICE_SECRETS_KEY"},
		{desc: "empty user agent", env: map[string]string{"SLUICE_USER_AGENT": ""}, want: "user-agent"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			env := map[string]string{"SLUICE_INSECURE_DEV_SECRETS_KEY": "true"}
			for k, v := range tc.env {
				env[k] = v
			}
			_, err := app.LoadConfig(nil, lookup(env))
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("LoadConfig = %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("LoadConfig = %v, want an error containing %q", err, tc.want)
			}
		})
	}
	t.Run("a flag wins over the environment", func(t *testing.T) {
		cfg, err := app.LoadConfig([]string{"-max-in-flight", "7"}, lookup(map[string]string{"SLUICE_MAX_IN_FLIGHT": "0",
			"SLUICE_INSECURE_DEV_SECRETS_KEY": "true"}))
		if err != nil || cfg.MaxInFlight != 7 {
			t.Fatalf("LoadConfig = %+v, %v; want max-in-flight 7 and no error", cfg.MaxInFlight, err)
		}
	})
}

// TestRunParksWhatItCannotDeliverAndCommits: the sender service, run as
// main runs it, parks a delivery for an endpoint that does not exist and an
// undecodable record in sluice.dead with their reasons, makes no attempt,
// and commits both, so neither is redelivered.
func TestRunParksWhatItCannotDeliverAndCommits(t *testing.T) {
	k := testenv.NewKafka(t)
	ctx, cancelAll := context.WithTimeout(context.Background(), 90*time.Second)
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
		"SLUICE_KAFKA_BROKERS":            strings.Join(k.Config.Brokers, ","),
		"SLUICE_TOPIC_PREFIX":             k.Prefix,
		"SLUICE_GROUP":                    group,
		"SLUICE_OPS_ADDR":                 "127.0.0.1:0",
		"SLUICE_LOG_LEVEL":                "warn",
		"SLUICE_SHUTDOWN_TIMEOUT":         "10s",
		"SLUICE_INSECURE_DEV_SECRETS_KEY": "true",
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

	dead := k.Read(t, k.Names.Dead, 2)
	var reasons []string
	for _, r := range dead {
		if string(r.Key) != endpoint {
			t.Errorf("dead letter keyed %q, want the endpoint id %q", r.Key, endpoint)
		}
		var d sluicev1.Delivery
		if err := proto.Unmarshal(r.Value, &d); err == nil && d.DeliveryId == dl.DeliveryId {
			reasons = append(reasons, d.DeadReason)
			continue
		}
		for _, h := range r.Headers {
			if h.Key == dispatch.DeadReasonHeader {
				reasons = append(reasons, string(h.Value))
			}
		}
	}
	sort.Strings(reasons)
	if len(reasons) != 2 || !strings.HasPrefix(reasons[0], "endpoint "+endpoint+" does not exist") ||
		!strings.HasPrefix(reasons[1], "undecodable delivery record") {
		t.Fatalf("dead letters with reasons %q, want the unknown endpoint and the undecodable record", reasons)
	}

	// Both deliveries records are committed: the group's offsets on every
	// partition equal the partition's end.
	dEnds, err := k.Admin.ListEndOffsets(ctx, k.Names.Deliveries)
	if err != nil || dEnds.Error() != nil {
		t.Fatalf("listing delivery end offsets: %v %v", err, dEnds.Error())
	}
	for {
		committed, err := k.Admin.FetchOffsets(ctx, group)
		if err != nil || committed.Error() != nil {
			t.Fatalf("fetching offsets of %s: %v %v", group, err, committed.Error())
		}
		behind := 0
		dEnds.Each(func(end kadm.ListedOffset) {
			if c, ok := committed.Lookup(k.Names.Deliveries, end.Partition); end.Offset > 0 && (!ok || c.At != end.Offset) {
				behind++
			}
		})
		if behind == 0 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("%d partitions not committed to their end", behind)
		}
		time.Sleep(100 * time.Millisecond)
	}
	stopSender()

	// No attempt was made.
	ends, err := k.Admin.ListEndOffsets(ctx, k.Names.Attempts)
	if err != nil || ends.Error() != nil {
		t.Fatalf("listing attempt end offsets: %v %v", err, ends.Error())
	}
	var total int64
	ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
	if total != 0 {
		t.Fatalf("%d attempt records, want none", total)
	}
}
