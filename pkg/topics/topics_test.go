package topics_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/topics"
)

func TestNamesFollowPrefix(t *testing.T) {
	n := topics.NewNames("acme.")
	for _, name := range n.All() {
		if !strings.HasPrefix(name, "acme.") {
			t.Errorf("topic %q does not start with the prefix", name)
		}
	}
	want := []string{"acme.retry.5s", "acme.retry.5m", "acme.retry.30m", "acme.retry.2h", "acme.retry.5h", "acme.retry.10h"}
	if strings.Join(n.Retry, ",") != strings.Join(want, ",") {
		t.Errorf("retry topics = %v, want %v", n.Retry, want)
	}
}

func TestTierName(t *testing.T) {
	for d, want := range map[time.Duration]string{
		5 * time.Second: "5s", 90 * time.Second: "90s", 5 * time.Minute: "5m", 10 * time.Hour: "10h",
	} {
		if got := topics.TierName(d); got != want {
			t.Errorf("TierName(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestSpecs(t *testing.T) {
	n := topics.NewNames(topics.DefaultPrefix)
	specs := topics.Specs(n, topics.DefaultPartitions(), topics.Production)
	if n.Ordered != "sluice.ordered" {
		t.Errorf("ordered topic %q, want sluice.ordered", n.Ordered)
	}
	if len(specs) != len(n.All()) {
		t.Fatalf("%d specs for %d topics", len(specs), len(n.All()))
	}
	for _, s := range specs {
		if s.ReplicationFactor != 3 {
			t.Errorf("%s: replication factor %d", s.Name, s.ReplicationFactor)
		}
		policy := s.Configs["cleanup.policy"]
		switch {
		case s.Name == n.Config:
			if policy != "compact" || s.Partitions != 1 {
				t.Errorf("config topic: policy %q, %d partitions; want compact, 1", policy, s.Partitions)
			}
		case s.Name == n.Dedup:
			if policy != "compact,delete" || s.Partitions != topics.DefaultPartitions().Events {
				t.Errorf("dedup topic: policy %q, %d partitions; want compact,delete and as many as events", policy, s.Partitions)
			}
		case s.Name == n.Ordered:
			if policy != "delete" || s.Partitions != topics.DefaultPartitions().Deliveries ||
				s.Configs["retention.ms"] != strconv.FormatInt((7*24*time.Hour).Milliseconds(), 10) {
				t.Errorf("ordered topic: policy %q, %d partitions, retention %s ms; want delete, as many as deliveries, 7 days",
					policy, s.Partitions, s.Configs["retention.ms"])
			}
		case policy != "delete":
			t.Errorf("%s: cleanup.policy %q, want delete", s.Name, policy)
		}
	}
}

func TestPartitionsValidate(t *testing.T) {
	p := topics.DefaultPartitions()
	if err := p.Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	p.Deliveries = 0
	if err := p.Validate(); err == nil || !strings.Contains(err.Error(), "deliveries") {
		t.Fatalf("Validate() = %v, want an error naming deliveries", err)
	}
}
