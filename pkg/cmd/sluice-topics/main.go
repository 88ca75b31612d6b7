// Command sluice-topics creates Sluice's Kafka topics (DESIGN §3) that do
// not exist yet, with the given partition counts, replication factor and
// min.insync.replicas, and audits the ones that exist: it warns when one
// cannot keep the promise that a 202 survives the loss of a broker
// (topics.Durability has the arithmetic). Existing topics are never
// altered. The dev stack runs it; in Kubernetes the chart runs it as a Job
// before each install and upgrade.
//
// Exit status: 0 when every topic is present (warnings go to stderr), 1
// when Kafka could not be reached within -kafka-wait, a topic could not be
// created, or -require-durable is set and a topic is at risk; 2 on a
// configuration error.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/health"
	"github.com/sluicehq/sluice/pkg/kafkax"
	"github.com/sluicehq/sluice/pkg/service"
	"github.com/sluicehq/sluice/pkg/topics"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	opts, err := load(os.Args[1:], os.LookupEnv)
	switch {
	case config.Answered(err):
		return
	case err != nil:
		fmt.Fprintf(os.Stderr, "sluice-topics: configuration: %v\n", err)
		os.Exit(2)
	}
	if err := run(ctx, opts, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "sluice-topics: %v\n", err)
		os.Exit(1)
	}
}

type options struct {
	kafka          kafkax.Config
	prefix         string
	durability     topics.Durability
	partitions     topics.Partitions
	wait           time.Duration
	requireDurable bool
}

func load(args []string, env config.LookupEnv) (options, error) {
	var (
		o     = options{partitions: topics.DefaultPartitions()}
		rf    int
		parts = map[string]*int32{
			"events": &o.partitions.Events, "deliveries": &o.partitions.Deliveries, "retry": &o.partitions.Retry,
			"dead": &o.partitions.Dead, "attempts": &o.partitions.Attempts, "eventlog": &o.partitions.EventLog,
		}
		counts = map[string]*int{}
	)
	l := config.NewLoader("sluice-topics", env)
	o.kafka.Register(l, "topics")
	l.String(&o.prefix, "topic-prefix", topics.DefaultPrefix, "prefix of every topic name")
	l.Int(&rf, "replication-factor", int(topics.Production.ReplicationFactor),
		"replicas of each topic; with -min-insync-replicas 2, 3 keeps every 202 through a broker loss and stays writable (1 for a single-broker dev cluster)")
	l.Int(&o.durability.MinInsyncReplicas, "min-insync-replicas", topics.Production.MinInsyncReplicas,
		"min.insync.replicas of each topic: replicas that must have a write before it is acknowledged (2 in production, 1 to the replication factor)")
	l.Duration(&o.wait, "kafka-wait", 5*time.Minute, "how long to wait for Kafka to answer before giving up")
	l.Bool(&o.requireDurable, "require-durable", false,
		"exit 1 when an existing topic cannot keep a 202 through a broker loss, instead of only warning")
	for name, v := range parts {
		n := new(int)
		counts[name] = n
		usage := "partitions of the " + name + " topic(s)"
		if name == "deliveries" {
			usage = "partitions of the deliveries topic and of the ordered topic (the same keys)"
		}
		l.Int(n, "partitions-"+name, int(*v), usage)
	}
	if err := l.ParseOrAnswer(args, os.Stdout); err != nil {
		return o, err
	}
	for name, n := range counts {
		*parts[name] = int32(*n)
	}
	if err := o.partitions.Validate(); err != nil {
		return o, err
	}
	if rf < 1 || rf > 32767 {
		return o, fmt.Errorf("replication-factor must be from 1 to 32767, got %d", rf)
	}
	o.durability.ReplicationFactor = int16(rf)
	if err := o.durability.Validate(); err != nil {
		return o, err
	}
	if o.wait <= 0 {
		return o, fmt.Errorf("kafka-wait must be positive, got %v", o.wait)
	}
	return o, o.kafka.Validate()
}

func run(ctx context.Context, o options, stdout, stderr io.Writer) error {
	adm, err := kafkax.NewAdmin(o.kafka)
	if err != nil {
		return err
	}
	defer adm.Close()
	// A Job started beside a Kafka that is still coming up waits for it,
	// as the services do, rather than failing the install.
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	wctx, cancel := context.WithTimeout(ctx, o.wait)
	defer cancel()
	stage := health.NewRegistry(health.DefaultStuckAfter, time.Now).Stage("kafka")
	if err := service.Await(wctx, stage, log, "kafka", func(ctx context.Context) error {
		_, err := adm.ListBrokers(ctx)
		return err
	}); err != nil {
		// A refusal (wrong credentials, an untrusted certificate) is
		// returned at once by Await and names its cause itself.
		if r := kafkax.Fatal(err); r != nil {
			return r
		}
		return fmt.Errorf("kafka %v did not answer within %v: %w", o.kafka.Brokers, o.wait, err)
	}

	tctx, tcancel := context.WithTimeout(ctx, time.Minute)
	defer tcancel()
	names := topics.NewNames(o.prefix)
	specs := topics.Specs(names, o.partitions, o.durability)
	if err := kafkax.CheckTopics(tctx, adm, names.All()...); err != nil {
		if !errors.Is(err, kafkax.ErrTopicsMissing) {
			return err
		}
		// Some topics are to be created: a cluster smaller than the
		// replication factor would refuse each one with a terse error.
		if err := topics.CheckBrokers(tctx, adm, o.durability); err != nil {
			return err
		}
	}
	if err := kafkax.EnsureTopics(tctx, adm, specs); err != nil {
		return err
	}
	if err := kafkax.WaitTopics(tctx, adm, names.All()...); err != nil {
		return err
	}
	findings, err := topics.Audit(tctx, adm, specs)
	if err != nil {
		return err
	}
	atRisk := report(stderr, findings)
	fmt.Fprintf(stdout, "sluice-topics: %d topics present under prefix %q (replication factor %d, min.insync.replicas %d for new ones)\n",
		len(names.All()), o.prefix, o.durability.ReplicationFactor, o.durability.MinInsyncReplicas)
	if atRisk > 0 && o.requireDurable {
		return fmt.Errorf("%d topics cannot keep an acknowledged event through a broker loss (-require-durable)", atRisk)
	}
	return nil
}

// report prints findings grouped by message, so a cluster where every
// topic shares one shortfall (a single-broker dev cluster) says it once,
// and returns how many topics are at risk of losing acknowledged writes.
func report(w io.Writer, findings []topics.Finding) int {
	var order []string
	byMsg := map[string][]string{}
	atRisk := map[string]bool{}
	for _, f := range findings {
		key := string(f.Risk) + ": " + f.Message
		if _, ok := byMsg[key]; !ok {
			order = append(order, key)
		}
		byMsg[key] = append(byMsg[key], f.Topic)
		if f.Risk == topics.RiskDurability {
			atRisk[f.Topic] = true
		}
	}
	for _, key := range order {
		ts := byMsg[key]
		if len(ts) > 3 {
			ts = append(ts[:3:3], fmt.Sprintf("and %d more", len(byMsg[key])-3))
		}
		fmt.Fprintf(w, "sluice-topics: warning: %s (%s)\n", key, strings.Join(ts, ", "))
	}
	return len(atRisk)
}
