package kafkax_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/pkg/kafkax"
	"github.com/sluicehq/sluice/pkg/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		desc    string
		cfg     kafkax.Config
		wantIs  error
		wantMsg string
	}{
		{desc: "valid", cfg: kafkax.Config{Brokers: []string{"127.0.0.1:9092", "kafka-1:9092"}}},
		{desc: "no brokers", cfg: kafkax.Config{}, wantIs: kafkax.ErrNoBrokers},
		{desc: "empty broker list", cfg: kafkax.Config{Brokers: []string{}}, wantIs: kafkax.ErrNoBrokers},
		{desc: "broker without port", cfg: kafkax.Config{Brokers: []string{"127.0.0.1:9092", "nohostport"}},
			wantMsg: `"nohostport" is not host:port`},
		{desc: "empty port", cfg: kafkax.Config{Brokers: []string{"kafka:"}}, wantMsg: `"kafka:" has no valid port`},
		{desc: "port out of range", cfg: kafkax.Config{Brokers: []string{"kafka:70000"}}, wantMsg: `"kafka:70000" has no valid port`},
		{desc: "empty host", cfg: kafkax.Config{Brokers: []string{":9092"}}, wantMsg: `":9092" is not host:port`},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			err := tc.cfg.Validate()
			switch {
			case tc.wantIs == nil && tc.wantMsg == "":
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
			case tc.wantIs != nil:
				if !errors.Is(err, tc.wantIs) {
					t.Fatalf("Validate() = %v, want %v", err, tc.wantIs)
				}
			default:
				if err == nil || !strings.Contains(err.Error(), tc.wantMsg) {
					t.Fatalf("Validate() = %v, want it to contain %q", err, tc.wantMsg)
				}
			}
			// Every constructor refuses what Validate refuses.
			if err != nil {
				if cl, cerr := kafkax.NewProducer(tc.cfg); cerr == nil {
					cl.Close()
					t.Errorf("NewProducer accepted a config Validate refuses")
				}
			}
		})
	}
}

func TestEnsureTopics(t *testing.T) {
	k := testenv.NewKafka(t)
	ctx := ctxT(t, 30*time.Second)
	compacted, deleted := k.Prefix+"ensure.compacted", k.Prefix+"ensure.deleted"
	t.Cleanup(func() {
		if err := kafkax.DeleteTopics(context.Background(), k.Admin, compacted, deleted); err != nil {
			t.Logf("cleaning up: %v", err)
		}
	})
	specs := []kafkax.TopicSpec{
		{Name: compacted, Partitions: 1, ReplicationFactor: 1, Configs: map[string]string{"cleanup.policy": "compact"}},
		{Name: deleted, Partitions: 3, ReplicationFactor: 1,
			Configs: map[string]string{"cleanup.policy": "delete", "retention.ms": "3600000"}},
	}
	if err := kafkax.EnsureTopics(ctx, k.Admin, specs); err != nil {
		t.Fatalf("first EnsureTopics: %v", err)
	}
	if err := kafkax.EnsureTopics(ctx, k.Admin, specs); err != nil {
		t.Fatalf("second EnsureTopics with the same specs: %v", err)
	}
	// An existing topic is never altered, even when the spec changed.
	grown := []kafkax.TopicSpec{{Name: deleted, Partitions: 6, ReplicationFactor: 1,
		Configs: map[string]string{"cleanup.policy": "compact"}}}
	if err := kafkax.EnsureTopics(ctx, k.Admin, grown); err != nil {
		t.Fatalf("EnsureTopics over an existing topic: %v", err)
	}
	// Creation returns before every broker's metadata knows the topics.
	if err := kafkax.WaitTopics(ctx, k.Admin, compacted, deleted); err != nil {
		t.Fatal(err)
	}

	details, err := k.Admin.ListTopics(ctx, compacted, deleted)
	if err != nil {
		t.Fatal(err)
	}
	configs, err := k.Admin.DescribeTopicConfigs(ctx, compacted, deleted)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range specs {
		d, ok := details[s.Name]
		if !ok || d.Err != nil {
			t.Fatalf("topic %s not listed (err %v)", s.Name, d.Err)
		}
		if got := int32(len(d.Partitions)); got != s.Partitions {
			t.Errorf("%s has %d partitions, want %d", s.Name, got, s.Partitions)
		}
		rc, err := configs.On(s.Name, nil)
		if err != nil || rc.Err != nil {
			t.Fatalf("configs of %s: %v %v", s.Name, err, rc.Err)
		}
		got := map[string]string{}
		for _, c := range rc.Configs {
			if c.Value != nil {
				got[c.Key] = *c.Value
			}
		}
		for key, want := range s.Configs {
			if got[key] != want {
				t.Errorf("%s: %s = %q, want %q", s.Name, key, got[key], want)
			}
		}
	}
}

func TestCheckTopics(t *testing.T) {
	k := testenv.NewKafka(t)
	ctx := ctxT(t, 30*time.Second)
	if err := kafkax.CheckTopics(ctx, k.Admin, k.Names.All()...); err != nil {
		t.Fatalf("CheckTopics over existing topics: %v", err)
	}
	missing := k.Prefix + "nope"
	err := kafkax.CheckTopics(ctx, k.Admin, k.Names.Attempts, missing, k.Names.EventLog)
	if !errors.Is(err, kafkax.ErrTopicsMissing) {
		t.Fatalf("CheckTopics = %v, want ErrTopicsMissing", err)
	}
	if !strings.Contains(err.Error(), missing) {
		t.Errorf("error %q does not name the missing topic %s", err, missing)
	}
	if strings.Contains(err.Error(), k.Names.Attempts) {
		t.Errorf("error %q names %s, which exists", err, k.Names.Attempts)
	}
	// Checking must not create it (auto-creation would hide a missing topic).
	if err := kafkax.CheckTopics(ctx, k.Admin, missing); !errors.Is(err, kafkax.ErrTopicsMissing) {
		t.Fatalf("second CheckTopics = %v, want ErrTopicsMissing", err)
	}
}

// consume polls cl until n records arrived or ctx ends.
func consume(t testing.TB, ctx context.Context, cl *kgo.Client, n int) []*kgo.Record {
	t.Helper()
	var got []*kgo.Record
	for len(got) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("got %d of %d records before %v", len(got), n, ctx.Err())
		}
		fs.EachError(func(topic string, p int32, err error) { t.Errorf("fetching %s/%d: %v", topic, p, err) })
		got = append(got, fs.Records()...)
	}
	return got
}

func TestProduceConsumeCommit(t *testing.T) {
	k := testenv.NewKafka(t)
	ctx := ctxT(t, 60*time.Second)
	topic := k.Names.Attempts // two partitions
	group := k.Prefix + "group"

	p, err := kafkax.NewProducer(k.Config)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	const n = 100
	recs := make([]*kgo.Record, n)
	for i := range recs {
		recs[i] = &kgo.Record{Topic: topic, Key: fmt.Appendf(nil, "key-%d", i), Value: fmt.Appendf(nil, "value-%d", i)}
	}
	if err := p.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	c1, err := kafkax.NewConsumer(k.Config, group, []string{topic})
	if err != nil {
		t.Fatal(err)
	}
	got := consume(t, ctx, c1, n)
	seen := map[string]int{}
	for _, r := range got {
		seen[string(r.Value)]++
	}
	for i := range n {
		if v := fmt.Sprintf("value-%d", i); seen[v] != 1 {
			t.Errorf("%s consumed %d times, want once", v, seen[v])
		}
	}
	if len(got) != n {
		t.Errorf("consumed %d records, want %d", len(got), n)
	}
	c1.MarkCommitRecords(got...)
	if err := c1.CommitMarkedOffsets(ctx); err != nil {
		t.Fatal(err)
	}
	c1.AllowRebalance()
	c1.Close()

	// The group's committed offsets are the ends of both partitions.
	ends, err := k.Admin.ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	committed, err := k.Admin.FetchOffsets(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	ends.Each(func(o kadm.ListedOffset) {
		c, ok := committed.Lookup(topic, o.Partition)
		if !ok || c.Err != nil {
			t.Errorf("no commit for %s/%d (err %v)", topic, o.Partition, c.Err)
			return
		}
		if c.At != o.Offset {
			t.Errorf("%s/%d committed at %d, end is %d", topic, o.Partition, c.At, o.Offset)
		}
		total += c.At
	})
	if total != n {
		t.Errorf("committed offsets sum to %d, want %d", total, n)
	}

	last := &kgo.Record{Topic: topic, Key: []byte("key-last"), Value: []byte("value-last")}
	if err := p.ProduceSync(ctx, last).FirstErr(); err != nil {
		t.Fatal(err)
	}
	c2, err := kafkax.NewConsumer(k.Config, group, []string{topic})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	again := consume(t, ctx, c2, 1)
	// Anything committed would come back before or beside the new record;
	// give it a short while to show up.
	quiet, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	again = append(again, c2.PollFetches(quiet).Records()...)
	if len(again) != 1 || string(again[0].Value) != "value-last" {
		vals := make([]string, len(again))
		for i, r := range again {
			vals[i] = string(r.Value)
		}
		t.Fatalf("after reopening the group got %v, want only [value-last]", vals)
	}
	c2.AllowRebalance()
}
