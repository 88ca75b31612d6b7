package kafkax_test

import (
	"context"
	"maps"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/sluicehq/sluice/pkg/kafkax"
)

func fetch(topic string, partition int32, high int64, offsets ...int64) kgo.Fetch {
	fp := kgo.FetchPartition{Partition: partition, HighWatermark: high}
	for _, o := range offsets {
		fp.Records = append(fp.Records, &kgo.Record{Topic: topic, Partition: partition, Offset: o})
	}
	return kgo.Fetch{Topics: []kgo.FetchTopic{{Topic: topic, Partitions: []kgo.FetchPartition{fp}}}}
}

// lagOf collects the gauge: topic/partition → lag, each point checked for
// the group and the three attributes of the contract.
func lagOf(t *testing.T, r *sdkmetric.ManualReader, group string) map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != "sluice.kafka.consumer.lag" {
				continue
			}
			for _, p := range m.Data.(metricdata.Gauge[int64]).DataPoints {
				g, _ := p.Attributes.Value("messaging.consumer.group.name")
				topic, _ := p.Attributes.Value("messaging.destination.name")
				part, _ := p.Attributes.Value("messaging.destination.partition.id")
				if g.AsString() != group || p.Attributes.Len() != 3 {
					t.Errorf("point attributes %v, want group %s and topic and partition only", p.Attributes.ToSlice(), group)
				}
				out[topic.AsString()+"/"+part.AsString()] = p.Value
			}
		}
	}
	return out
}

func TestLag(t *testing.T) {
	r := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(r))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	l, err := kafkax.NewLag(mp.Meter("test"), "g1")
	if err != nil {
		t.Fatal(err)
	}
	if got := lagOf(t, r, "g1"); len(got) != 0 {
		t.Fatalf("lag before any poll: %v, want no series", got)
	}

	// A poll: partition 0 read up to offset 6 of 10; partition 1 caught
	// up; a partition of another topic without records says nothing.
	l.Observe(kgo.Fetches{fetch("deliveries", 0, 10, 5, 6), fetch("deliveries", 1, 4, 3), fetch("retry", 2, 100)})
	want := map[string]int64{"deliveries/0": 3, "deliveries/1": 0}
	if got := lagOf(t, r, "g1"); !maps.Equal(got, want) {
		t.Fatalf("lag %v, want %v", got, want)
	}

	// The next poll moves partition 0 on while the topic grew.
	l.Observe(kgo.Fetches{fetch("deliveries", 0, 20, 7, 8, 9)})
	want["deliveries/0"] = 10
	if got := lagOf(t, r, "g1"); !maps.Equal(got, want) {
		t.Fatalf("lag %v, want %v", got, want)
	}

	// Revoked: the series goes with the partition.
	l.Forget(map[string][]int32{"deliveries": {0}})
	delete(want, "deliveries/0")
	if got := lagOf(t, r, "g1"); !maps.Equal(got, want) {
		t.Fatalf("after revoke: lag %v, want %v", got, want)
	}

	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if got := lagOf(t, r, "g1"); len(got) != 0 {
		t.Fatalf("after Close: %v, want no series", got)
	}
}
