// Command sluice-topics creates Sluice's Kafka topics (DESIGN §3) that do
// not exist yet, with the given partition counts. Existing topics are left
// as they are. The dev stack runs it; operators can run it before a deploy.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/kafkax"
	"github.com/sluicehq/sluice/pkg/topics"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		if config.Answered(err) {
			return
		}
		fmt.Fprintf(os.Stderr, "sluice-topics: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	var (
		kc     kafkax.Config
		prefix string
		rf     int
		p      = topics.DefaultPartitions()
		parts  = map[string]*int32{
			"events": &p.Events, "deliveries": &p.Deliveries, "retry": &p.Retry,
			"dead": &p.Dead, "attempts": &p.Attempts, "eventlog": &p.EventLog,
		}
		counts = map[string]*int{}
	)
	l := config.NewLoader("sluice-topics", os.LookupEnv)
	kc.Register(l, "topics")
	l.String(&prefix, "topic-prefix", topics.DefaultPrefix, "prefix of every topic name")
	l.Int(&rf, "replication-factor", 1, "replicas of each topic (3 in production)")
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
		return err
	}
	for name, n := range counts {
		*parts[name] = int32(*n)
	}
	if err := p.Validate(); err != nil {
		return err
	}
	if rf < 1 || rf > 32767 {
		return fmt.Errorf("replication-factor must be between 1 and 32767, got %d", rf)
	}
	adm, err := kafkax.NewAdmin(kc)
	if err != nil {
		return err
	}
	defer adm.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	names := topics.NewNames(prefix)
	if err := kafkax.EnsureTopics(ctx, adm, topics.Specs(names, p, int16(rf))); err != nil {
		return err
	}
	if err := kafkax.WaitTopics(ctx, adm, names.All()...); err != nil {
		return err
	}
	fmt.Printf("sluice-topics: %d topics present under prefix %q\n", len(names.All()), prefix)
	return nil
}
