// Package topics names Sluice's Kafka topics and says how each is created
// (DESIGN §3). Services and the dev stack take topic names from here only.
package topics

import (
	"fmt"
	"strconv"
	"time"

	"github.com/sluicehq/sluice/pkg/kafkax"
)

// DefaultPrefix starts every topic name unless configured otherwise.
const DefaultPrefix = "sluice."

// RetryTiers are the delays of the default retry schedule after the immediate
// first retry (DESIGN §6): one topic per distinct delay. The 10 h tier serves
// both 10 h steps.
var RetryTiers = []time.Duration{
	5 * time.Second, 5 * time.Minute, 30 * time.Minute,
	2 * time.Hour, 5 * time.Hour, 10 * time.Hour,
}

// Names are the topic names under one prefix.
type Names struct {
	Events         string
	EventsRejected string
	Config         string
	Deliveries     string
	// Ordered carries the deliveries of ordered endpoints, keyed by
	// endpoint id; the sender reads each partition as one lane per key.
	// It has as many partitions as Deliveries.
	Ordered  string
	Dead     string
	Attempts string
	EventLog string
	// Dedup is the router's changelog of event ids seen: compacted, with
	// as many partitions as Events, each marker on its event's partition.
	Dedup string
	// Retry holds one topic per entry of RetryTiers, in the same order.
	Retry []string
}

// NewNames derives every topic name from prefix ("sluice." by default).
func NewNames(prefix string) Names {
	n := Names{
		Events:         prefix + "events",
		EventsRejected: prefix + "events.rejected",
		Config:         prefix + "config",
		Deliveries:     prefix + "deliveries",
		Ordered:        prefix + "ordered",
		Dead:           prefix + "dead",
		Attempts:       prefix + "attempts",
		EventLog:       prefix + "eventlog",
		Dedup:          prefix + "dedup",
	}
	for _, d := range RetryTiers {
		n.Retry = append(n.Retry, prefix+"retry."+TierName(d))
	}
	return n
}

// All lists every topic name.
func (n Names) All() []string {
	return append([]string{n.Events, n.EventsRejected, n.Config, n.Deliveries, n.Ordered, n.Dead, n.Attempts, n.EventLog, n.Dedup}, n.Retry...)
}

// TierName is a delay written the short way: 5s, 5m, 2h.
func TierName(d time.Duration) string {
	switch {
	case d%time.Hour == 0:
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	case d%time.Minute == 0:
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	default:
		return strconv.FormatInt(int64(d/time.Second), 10) + "s"
	}
}

// Partitions are the partition counts of the topics that scale. The config
// topic always has one partition: its volume is tiny and one partition gives
// every reader the writes in one order.
type Partitions struct {
	Events     int32
	Deliveries int32
	Retry      int32
	Dead       int32
	Attempts   int32
	EventLog   int32
}

// DefaultPartitions suit one to a few dozen sender replicas. Deliveries (and
// the ordered topic, which has as many) and retry tiers bound the sender's
// parallelism across replicas, so they get the most; the rest are read by
// one or two consumers each.
func DefaultPartitions() Partitions {
	return Partitions{Events: 12, Deliveries: 24, Retry: 24, Dead: 6, Attempts: 12, EventLog: 12}
}

// Validate rejects counts below one.
func (p Partitions) Validate() error {
	for name, v := range map[string]int32{
		"events": p.Events, "deliveries": p.Deliveries, "retry": p.Retry,
		"dead": p.Dead, "attempts": p.Attempts, "eventlog": p.EventLog,
	} {
		if v < 1 {
			return fmt.Errorf("topics: %s partitions must be at least 1, got %d", name, v)
		}
	}
	return nil
}

const (
	day = 24 * time.Hour
	// The dedup window defaults to 24 h and the router must be able to
	// re-read an event within it, so events are kept a week.
	eventsRetention = 7 * day
	// Parked deliveries wait for an operator's recover; a month gives time.
	deadRetention = 30 * day
	// Deliveries and retries are consumed within seconds to hours; a week
	// covers a long sender outage. The longest retry delay is 10 h.
	deliveryRetention = 7 * day
	// The logwriter drains these in seconds; three days survive a long
	// ClickHouse outage.
	logRetention = 3 * day
	// Dedup markers only matter within the dedup window (24 h by default,
	// at most 7 days); kept a week.
	dedupRetention = 7 * day
)

func ms(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) }

// Durability is how many copies of each record the topics keep, and how
// many must have it before a write is acknowledged. Producers write with
// acks=all (pkg/kafkax), so an acknowledged record is on at least
// MinInsyncReplicas brokers: it survives the loss of MinInsyncReplicas-1 of
// them. Writes go on while at least MinInsyncReplicas of the
// ReplicationFactor replicas are in sync, so ReplicationFactor -
// MinInsyncReplicas brokers may be down before producing stops (ingest then
// answers 503). The README's promise, "a 202 survives the loss of a
// broker", needs MinInsyncReplicas ≥ 2; staying writable through that loss
// needs ReplicationFactor ≥ MinInsyncReplicas + 1. Hence 3 and 2.
type Durability struct {
	ReplicationFactor int16
	// MinInsyncReplicas is written as each topic's min.insync.replicas.
	MinInsyncReplicas int
}

// Production is the default: every acknowledged record on two brokers at
// least, and writes going on with one broker of three down.
var Production = Durability{ReplicationFactor: 3, MinInsyncReplicas: 2}

// SingleBroker is the dev stack's and the tests': one copy of everything.
// It keeps no promise through a broker loss.
var SingleBroker = Durability{ReplicationFactor: 1, MinInsyncReplicas: 1}

// Validate rejects counts that Kafka would refuse or that can never accept
// a write.
func (d Durability) Validate() error {
	if d.ReplicationFactor < 1 {
		return fmt.Errorf("topics: replication factor must be at least 1, got %d", d.ReplicationFactor)
	}
	if d.MinInsyncReplicas < 1 || d.MinInsyncReplicas > int(d.ReplicationFactor) {
		return fmt.Errorf("topics: min.insync.replicas must be from 1 to the replication factor (%d), got %d",
			d.ReplicationFactor, d.MinInsyncReplicas)
	}
	return nil
}

// Specs returns how every topic is created.
func Specs(n Names, p Partitions, d Durability) []kafkax.TopicSpec {
	rf := d.ReplicationFactor
	del := func(name string, parts int32, retention time.Duration) kafkax.TopicSpec {
		return kafkax.TopicSpec{Name: name, Partitions: parts, ReplicationFactor: rf,
			Configs: map[string]string{"cleanup.policy": "delete", "retention.ms": ms(retention)}}
	}
	events := del(n.Events, p.Events, eventsRetention)
	// The broker stamps each event as it is appended: a producer's clock
	// (or a forged CreateTime) cannot place an event in another day of
	// the log or outside the retention window.
	events.Configs["message.timestamp.type"] = "LogAppendTime"
	rejected := del(n.EventsRejected, p.Events, eventsRetention)
	// A rejected copy is the original plus its reason headers; room for a
	// largest possible original (1 MiB, the broker default) plus 64 KiB of
	// headers, so a copy never fails to produce and stalls the router.
	rejected.Configs["max.message.bytes"] = strconv.Itoa(1<<20 + 64<<10)
	specs := []kafkax.TopicSpec{
		events,
		rejected,
		{Name: n.Config, Partitions: 1, ReplicationFactor: rf,
			Configs: map[string]string{"cleanup.policy": "compact"}},
		del(n.Deliveries, p.Deliveries, deliveryRetention),
		// Ordered endpoints' deliveries, spread like the deliveries (the
		// same keys) and kept as long.
		del(n.Ordered, p.Deliveries, deliveryRetention),
		del(n.Dead, p.Dead, deadRetention),
		del(n.Attempts, p.Attempts, logRetention),
		del(n.EventLog, p.EventLog, logRetention),
		// Compacted so a rebuild reads one marker per event id, and deleted
		// after dedupRetention so the topic does not grow forever; the
		// router ignores markers older than its window anyway.
		{Name: n.Dedup, Partitions: p.Events, ReplicationFactor: rf,
			Configs: map[string]string{"cleanup.policy": "compact,delete", "retention.ms": ms(dedupRetention)}},
	}
	for _, r := range n.Retry {
		specs = append(specs, del(r, p.Retry, deliveryRetention))
	}
	for _, s := range specs {
		s.Configs["min.insync.replicas"] = strconv.Itoa(d.MinInsyncReplicas)
	}
	return specs
}
