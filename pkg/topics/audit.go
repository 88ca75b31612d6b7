package topics

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/sluicehq/sluice/pkg/kafkax"
)

// Risk says what a finding of Audit puts at stake.
type Risk string

const (
	// RiskDurability: an event answered 202 can be lost with one broker.
	RiskDurability Risk = "durability"
	// RiskAvailability: one broker down stops writes (ingest answers 503),
	// though nothing acknowledged is lost.
	RiskAvailability Risk = "availability"
	// RiskShape: the topic differs from how Sluice creates it (fewer
	// partitions, another cleanup policy); sluice-topics never alters a
	// live topic, so an operator has to.
	RiskShape Risk = "shape"
)

// Finding is one way an existing topic falls short of what Sluice needs.
type Finding struct {
	Topic   string
	Risk    Risk
	Message string
}

func (f Finding) String() string { return fmt.Sprintf("%s: %s: %s", f.Topic, f.Risk, f.Message) }

// internalTopics hold the consumer groups' committed offsets and the
// routers' transaction state: losing them redelivers or wedges work, so
// they are held to the same arithmetic as Sluice's own topics.
var internalTopics = []string{"__consumer_offsets", "__transaction_state"}

// Audit describes the existing topics among specs (and Kafka's internal
// topics) and reports each way one cannot keep the promise that an
// acknowledged write survives the loss of a broker (Durability), or
// differs in shape from its spec. Topics that do not exist are not
// findings: EnsureTopics creates them.
func Audit(ctx context.Context, adm *kadm.Client, specs []kafkax.TopicSpec) ([]Finding, error) {
	names := make([]string, 0, len(specs)+len(internalTopics))
	bySpec := make(map[string]kafkax.TopicSpec, len(specs))
	for _, s := range specs {
		names = append(names, s.Name)
		bySpec[s.Name] = s
	}
	names = append(names, internalTopics...)
	td, err := adm.ListTopics(ctx, names...)
	if err != nil {
		return nil, fmt.Errorf("listing topics: %w", err)
	}
	var present []string
	for _, n := range names {
		if d, ok := td[n]; ok && !errors.Is(d.Err, kerr.UnknownTopicOrPartition) && len(d.Partitions) > 0 {
			present = append(present, n)
		}
	}
	if len(present) == 0 {
		return nil, nil
	}
	rcs, err := adm.DescribeTopicConfigs(ctx, present...)
	if err != nil {
		return nil, fmt.Errorf("describing topic configs: %w", err)
	}
	configs := make(map[string]map[string]string, len(rcs))
	for _, rc := range rcs {
		if rc.Err != nil {
			return nil, fmt.Errorf("describing the configs of topic %s: %w", rc.Name, rc.Err)
		}
		m := make(map[string]string, len(rc.Configs))
		for _, c := range rc.Configs {
			m[c.Key] = c.MaybeValue()
		}
		configs[rc.Name] = m
	}
	var out []Finding
	for _, n := range present {
		d := td[n]
		cfg := configs[n]
		rf := len(d.Partitions[0].Replicas)
		for _, p := range d.Partitions {
			rf = min(rf, len(p.Replicas))
		}
		minISR, _ := strconv.Atoi(cfg["min.insync.replicas"])
		add := func(r Risk, format string, args ...any) {
			out = append(out, Finding{Topic: n, Risk: r, Message: fmt.Sprintf(format, args...)})
		}
		switch {
		case rf < 2:
			add(RiskDurability, "replication factor %d: every record is on one broker, and losing it loses what was acknowledged", rf)
		case minISR < 2:
			add(RiskDurability, "min.insync.replicas %d: a write is acknowledged once the leader alone has it when its followers lag, and losing that broker loses it (set min.insync.replicas=2)", minISR)
		case minISR >= rf:
			add(RiskAvailability, "replication factor %d with min.insync.replicas %d: one broker down stops every write to it (use a replication factor of at least %d)", rf, minISR, minISR+1)
		}
		if cfg["unclean.leader.election.enable"] == "true" {
			add(RiskDurability, "unclean.leader.election.enable=true: a replica that is behind can become leader and drop acknowledged records")
		}
		spec, ok := bySpec[n]
		if !ok {
			continue
		}
		if got := int32(len(d.Partitions)); got < spec.Partitions {
			add(RiskShape, "%d partitions, fewer than the %d asked for; sluice-topics never changes a live topic (kafka-topics.sh --alter --partitions grows it, and the events and dedup topics must grow together)", got, spec.Partitions)
		}
		if want, got := policies(spec.Configs["cleanup.policy"]), policies(cfg["cleanup.policy"]); !slices.Equal(want, got) {
			add(RiskShape, "cleanup.policy %q, want %q", cfg["cleanup.policy"], spec.Configs["cleanup.policy"])
		}
	}
	return out, nil
}

func policies(s string) []string {
	ps := strings.Split(s, ",")
	for i := range ps {
		ps[i] = strings.TrimSpace(ps[i])
	}
	sort.Strings(ps)
	return ps
}

// ErrTooFewBrokers is returned by CheckBrokers when the cluster cannot hold
// the replication factor asked for.
var ErrTooFewBrokers = errors.New("kafka: fewer brokers than the replication factor")

// CheckBrokers fails when the cluster has fewer brokers than d's
// replication factor, which Kafka would refuse topic by topic.
func CheckBrokers(ctx context.Context, adm *kadm.Client, d Durability) error {
	bs, err := adm.ListBrokers(ctx)
	if err != nil {
		return fmt.Errorf("listing brokers: %w", err)
	}
	if len(bs) < int(d.ReplicationFactor) {
		return fmt.Errorf("%w: the cluster has %d, replication factor %d needs %d (a single-broker dev cluster takes -replication-factor 1 -min-insync-replicas 1)",
			ErrTooFewBrokers, len(bs), d.ReplicationFactor, d.ReplicationFactor)
	}
	return nil
}
