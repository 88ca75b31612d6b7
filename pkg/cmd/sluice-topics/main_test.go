package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/kafkax"
	"github.com/sluicehq/sluice/pkg/testenv"
	"github.com/sluicehq/sluice/pkg/topics"
)

func TestMain(m *testing.M) { testenv.Main(m) }

type env map[string]string

func (e env) lookup(k string) (string, bool) { v, ok := e[k]; return v, ok }

func TestLoadDefaultsAndRefusals(t *testing.T) {
	o, err := load(nil, env{}.lookup)
	if err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if o.durability != topics.Production {
		t.Errorf("default durability %+v, want %+v", o.durability, topics.Production)
	}
	for _, flag := range []string{"-help", "-version"} {
		if _, err := load([]string{flag}, env{}.lookup); !config.Answered(err) {
			t.Errorf("%s: %v, want an answered flag", flag, err)
		}
	}
	for name, tc := range map[string]struct {
		args []string
		env  env
		want string
	}{
		"min isr above rf":  {args: []string{"-replication-factor", "2", "-min-insync-replicas", "3"}, want: "min.insync.replicas must be from 1 to the replication factor (2)"},
		"min isr zero":      {env: env{"SLUICE_MIN_INSYNC_REPLICAS": "0"}, want: "min.insync.replicas"},
		"rf zero":           {args: []string{"-replication-factor", "0"}, want: "replication-factor must be from 1"},
		"partitions zero":   {env: env{"SLUICE_PARTITIONS_DELIVERIES": "0"}, want: "deliveries partitions must be at least 1"},
		"wait not positive": {args: []string{"-kafka-wait", "0s"}, want: "kafka-wait must be positive"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := load(tc.args, tc.env.lookup)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("load: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// run against the real broker: creates what is missing, is idempotent,
// warns (grouped) about a single-broker cluster and, with
// -require-durable, fails on it.
func TestRunCreatesAndAudits(t *testing.T) {
	k := testenv.NewKafka(t)
	prefix := k.Prefix + "own."
	names := topics.NewNames(prefix)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = kafkax.DeleteTopics(ctx, k.Admin, names.All()...)
	})
	o, err := load([]string{"-topic-prefix", prefix, "-replication-factor", "1", "-min-insync-replicas", "1",
		"-partitions-events", "2", "-partitions-deliveries", "3", "-partitions-retry", "1",
		"-partitions-dead", "1", "-partitions-attempts", "1", "-partitions-eventlog", "1"},
		env{"SLUICE_KAFKA_BROKERS": strings.Join(k.Config.Brokers, ",")}.lookup)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var out, errOut bytes.Buffer
	if err := run(ctx, o, &out, &errOut); err != nil {
		t.Fatalf("first run: %v\n%s", err, errOut.String())
	}
	if err := kafkax.CheckTopics(ctx, k.Admin, names.All()...); err != nil {
		t.Fatalf("after a run: %v", err)
	}
	td, err := k.Admin.ListTopics(ctx, names.Deliveries)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(td[names.Deliveries].Partitions); n != 3 {
		t.Errorf("deliveries has %d partitions, want 3", n)
	}
	rcs, err := k.Admin.DescribeTopicConfigs(ctx, names.Events)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range rcs[0].Configs {
		if c.Key == "min.insync.replicas" && c.MaybeValue() != "1" {
			t.Errorf("events min.insync.replicas %q, want 1", c.MaybeValue())
		}
	}
	// One broker: every topic keeps one copy, said once for all of them.
	warn := errOut.String()
	if strings.Count(warn, "replication factor 1: every record is on one broker") != 1 ||
		!strings.Contains(warn, names.Events) || !strings.Contains(warn, "more)") {
		t.Errorf("warnings:\n%s\nwant the single-copy risk once, naming %s and how many more", warn, names.Events)
	}

	out.Reset()
	errOut.Reset()
	if err := run(ctx, o, &out, &errOut); err != nil {
		t.Fatalf("second run over existing topics: %v", err)
	}
	o.requireDurable = true
	if err := run(ctx, o, &out, &errOut); err == nil || !strings.Contains(err.Error(), "cannot keep an acknowledged event through a broker loss") {
		t.Fatalf("-require-durable on one broker: %v, want the durability error", err)
	}
}

// A topic an operator made differently (fewer partitions, not compacted)
// is reported, not altered; a replication factor above the cluster's
// brokers fails before creating anything.
func TestAuditShapeAndTooFewBrokers(t *testing.T) {
	k := testenv.NewKafka(t)
	ctx := context.Background()
	prefix := k.Prefix + "shape."
	names := topics.NewNames(prefix)
	t.Cleanup(func() { _ = kafkax.DeleteTopics(context.Background(), k.Admin, names.All()...) })
	if err := kafkax.EnsureTopics(ctx, k.Admin, []kafkax.TopicSpec{{Name: names.Config, Partitions: 1, ReplicationFactor: 1,
		Configs: map[string]string{"cleanup.policy": "delete"}}, {Name: names.Deliveries, Partitions: 1, ReplicationFactor: 1}}); err != nil {
		t.Fatal(err)
	}
	brokers := env{"SLUICE_KAFKA_BROKERS": strings.Join(k.Config.Brokers, ",")}.lookup

	o, err := load([]string{"-topic-prefix", prefix}, brokers)
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	err = run(ctx, o, &out, &errOut)
	if !errors.Is(err, topics.ErrTooFewBrokers) || !strings.Contains(err.Error(), "-replication-factor 1") {
		t.Fatalf("replication factor 3 on one broker: %v, want ErrTooFewBrokers with the advice", err)
	}
	if err := kafkax.CheckTopics(ctx, k.Admin, names.Events); !errors.Is(err, kafkax.ErrTopicsMissing) {
		t.Fatalf("a refused run created topics anyway: %v", err)
	}

	specs := topics.Specs(names, topics.DefaultPartitions(), topics.SingleBroker)
	findings, err := topics.Audit(ctx, k.Admin, specs)
	if err != nil {
		t.Fatal(err)
	}
	var policy, parts bool
	for _, f := range findings {
		policy = policy || (f.Topic == names.Config && f.Risk == topics.RiskShape && strings.Contains(f.Message, `cleanup.policy "delete", want "compact"`))
		parts = parts || (f.Topic == names.Deliveries && f.Risk == topics.RiskShape && strings.Contains(f.Message, "1 partitions, fewer than the 24"))
		if f.Topic == names.Events {
			t.Errorf("a topic that does not exist is a finding: %v", f)
		}
	}
	if !policy || !parts {
		t.Fatalf("findings %v: want the config topic's cleanup policy and the deliveries topic's partitions", findings)
	}
}

func TestRunGivesUpOnUnreachableKafka(t *testing.T) {
	o, err := load([]string{"-kafka-wait", "1s"}, env{"SLUICE_KAFKA_BROKERS": testenv.FreeAddr(t)}.lookup)
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if err := run(context.Background(), o, &out, &errOut); err == nil || !strings.Contains(err.Error(), "did not answer within 1s") {
		t.Fatalf("run against nothing: %v, want a give-up naming the wait", err)
	}
}

func TestDurabilityArithmetic(t *testing.T) {
	for _, d := range []topics.Durability{topics.Production, topics.SingleBroker, {ReplicationFactor: 5, MinInsyncReplicas: 3}} {
		if err := d.Validate(); err != nil {
			t.Errorf("%+v: %v", d, err)
		}
		for _, s := range topics.Specs(topics.NewNames("x."), topics.DefaultPartitions(), d) {
			if s.ReplicationFactor != d.ReplicationFactor || s.Configs["min.insync.replicas"] == "" {
				t.Errorf("%s: rf %d, min.insync.replicas %q; want %d and set", s.Name, s.ReplicationFactor, s.Configs["min.insync.replicas"], d.ReplicationFactor)
			}
		}
	}
}
