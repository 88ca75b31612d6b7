package dedup_test

import (
	"fmt"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/pkg/dedup"
)

func TestPartitioner(t *testing.T) {
	const dedupTopic, deliveries, n = "sluice.dedup", "sluice.deliveries", 12
	p := dedup.Partitioner(dedupTopic)
	kafka := kgo.StickyKeyPartitioner(nil).ForTopic(deliveries) // murmur2, as Kafka's Java client

	t.Run("other topics are partitioned by key", func(t *testing.T) {
		tp := p.ForTopic(deliveries)
		spread := map[int]bool{}
		for i := range 200 {
			key := fmt.Appendf(nil, "ep_%d", i)
			want := kafka.Partition(&kgo.Record{Key: key}, n)
			for range 3 { // same key, same partition, whatever the Partition field says
				r := &kgo.Record{Topic: deliveries, Key: key, Partition: int32(i % n)}
				if got := tp.Partition(r, n); got != want {
					t.Fatalf("key %s went to %d, want %d (murmur2)", key, got, want)
				}
			}
			spread[want] = true
		}
		if len(spread) < n/2 {
			t.Errorf("200 keys used only %d of %d partitions", len(spread), n)
		}
	})

	t.Run("dedup records keep their partition", func(t *testing.T) {
		tp := p.ForTopic(dedupTopic)
		hashedElsewhere := 0
		for part := range int32(n) {
			for i := range 20 {
				key := fmt.Appendf(nil, "ten_1/evt_%d", i)
				r := dedup.Marker(dedupTopic, part, key, t0)
				if !tp.RequiresConsistency(r) {
					t.Fatal("dedup partitioner does not require consistency: a marker could move when its partition is down")
				}
				if got := tp.Partition(r, n); got != int(part) {
					t.Fatalf("marker for partition %d went to %d", part, got)
				}
				if kafka.Partition(r, n) != int(part) {
					hashedElsewhere++
				}
			}
		}
		if hashedElsewhere == 0 {
			t.Fatal("every key hashes to its own partition; the test shows nothing")
		}
	})
}

func TestMarker(t *testing.T) {
	at := t0.Add(1234 * 1e6) // 1234 ms past t0
	r := dedup.Marker("sluice.dedup", 7, []byte("ten_1/evt_1"), at)
	if r.Topic != "sluice.dedup" || r.Partition != 7 || string(r.Key) != "ten_1/evt_1" {
		t.Fatalf("Marker = topic %q partition %d key %q", r.Topic, r.Partition, r.Key)
	}
	want := at.UnixMilli()
	got := int64(0)
	for _, b := range r.Value {
		got = got<<8 | int64(b)
	}
	if len(r.Value) != 8 || got != want {
		t.Fatalf("Marker value = %x, want 8-byte big-endian %d", r.Value, want)
	}
	// Rebuild and the View find where the window starts by the records'
	// timestamps.
	if !r.Timestamp.Equal(at) {
		t.Fatalf("Marker timestamp = %v, want its time %v", r.Timestamp, at)
	}
}
