package chaos

import (
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/pkg/eventrecord"
)

// TestEventsPartitionIsTheProducers: the probes cover every events
// partition only if eventsPartition picks what franz-go's default
// partitioner (the events API's and the Kafka producer's) picks for a
// keyed record.
func TestEventsPartitionIsTheProducers(t *testing.T) {
	// franz-go's default (kgo/config.go); for a keyed record it hashes the
	// key and never consults the backup iterator.
	def := kgo.UniformBytesPartitioner(64<<10, true, true, nil).ForTopic("chaos.events").(kgo.TopicBackupPartitioner)
	seen := map[int32]bool{}
	for i := range 1000 {
		id := "evt_" + strconv.Itoa(i)
		want := int32(def.PartitionByBackup(&kgo.Record{Key: eventrecord.Key("ten_1", id)}, eventsPartitions, nil))
		if got := eventsPartition("ten_1", id, eventsPartitions); got != want {
			t.Fatalf("%s: eventsPartition = %d, the producer's partitioner %d", id, got, want)
		}
		seen[want] = true
	}
	if len(seen) != eventsPartitions {
		t.Errorf("1000 ids reached %d of %d partitions", len(seen), eventsPartitions)
	}
}

func TestInUncommittedWindow(t *testing.T) {
	kill := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	su := &Suite{
		stages: []*Stage{{Name: "sender", Started: kill, Recovered: kill.Add(15 * time.Second)}},
		sends:  []mark{{stage: 0, at: kill}},
	}
	for name, tc := range map[string]struct {
		first, again time.Duration // from the kill
		want         bool
	}{
		"delivered just before the kill, again after it":         {-time.Second, 5 * time.Second, true},
		"delivered 15 s before the kill":                         {-uncommittedBefore, 20 * time.Second, true},
		"delivered 16 s before the kill: committed by then":      {-16 * time.Second, 20 * time.Second, false},
		"again 30 s after the recovery":                          {-time.Second, 15*time.Second + redeliveredWithin - time.Millisecond, true},
		"again later than 30 s after the recovery":               {-time.Second, 15*time.Second + redeliveredWithin + time.Second, false},
		"both after the kill: not a redelivery of uncommitted":   {time.Second, 2 * time.Second, false},
		"both before the kill: a duplicate with no fault at all": {-3 * time.Second, -time.Second, false},
	} {
		if got := su.inUncommittedWindow(kill.Add(tc.first), kill.Add(tc.again)); got != tc.want {
			t.Errorf("%s: inUncommittedWindow = %v, want %v", name, got, tc.want)
		}
	}
}

func TestReasonClass(t *testing.T) {
	for in, want := range map[string]string{
		"exhausted: 4 attempts failed, the last with circuit_open":                                             "exhausted: 4 attempts failed, the last with circuit_open",
		"exhausted: 4 attempts failed, the last with network_error: read tcp 127.0.0.1:4242: connection reset": "exhausted: 4 attempts failed, the last with network_error",
		"endpoint disabled: by the tenant":                                                                     "endpoint disabled: by the tenant",
	} {
		if got := reasonClass(in); got != want {
			t.Errorf("reasonClass(%q) = %q, want %q", in, got, want)
		}
	}
}
