package kafkax

import (
	"context"
	"strconv"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
)

// Lag reports sluice.kafka.consumer.lag for the partitions one group
// member owns: per partition, the records between its high watermark and
// the next offset the member will process.
//
// It costs nothing per record. Every fetch partition franz-go returns
// carries the high watermark the broker had when it answered; Observe,
// called once per poll, keeps that and the offset after the partition's
// last record. The gauge is computed when Prometheus scrapes.
//
// What it cannot see: a partition paused by its stage (a retry tier holding
// a record not yet due, the sender over its memory budget, the router
// rebuilding dedup state) is not fetched, so its lag stays at its last
// fetched value while the topic grows; and on a topic written in
// transactions a caught-up partition reads 1, the commit marker taking an
// offset no record has. Both are small beside the backlogs the alerts
// look for.
//
// A nil *Lag reports nothing, so stages built without metrics need no
// checks.
type Lag struct {
	group string
	mu    sync.Mutex
	parts map[lagKey]lagPos
	reg   metric.Registration
}

type lagKey struct {
	topic     string
	partition int32
}

type lagPos struct{ next, high int64 }

// NewLag registers the gauge of group's partitions on m (nil: a no-op
// meter). Close unregisters it.
func NewLag(m metric.Meter, group string) (*Lag, error) {
	if m == nil {
		m = noop.NewMeterProvider().Meter("kafkax")
	}
	l := &Lag{group: group, parts: map[lagKey]lagPos{}}
	g, err := m.Int64ObservableGauge("sluice.kafka.consumer.lag", metric.WithUnit("{record}"),
		metric.WithDescription("records between a partition's high watermark and the next offset its consumer will process, per partition this process owns"))
	if err != nil {
		return nil, err
	}
	l.reg, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		l.mu.Lock()
		defer l.mu.Unlock()
		for k, p := range l.parts {
			o.ObserveInt64(g, max(0, p.high-p.next), metric.WithAttributeSet(attribute.NewSet(
				semconv.MessagingConsumerGroupName(l.group),
				semconv.MessagingDestinationName(k.topic),
				semconv.MessagingDestinationPartitionID(strconv.Itoa(int(k.partition))),
			)))
		}
		return nil
	}, g)
	if err != nil {
		return nil, err
	}
	return l, nil
}

// Observe takes the positions of one poll's partitions. A partition
// without records tells nothing about the next offset and is skipped; one
// the caller has since lost must be Forgotten after this call.
func (l *Lag) Observe(fs kgo.Fetches) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	fs.EachPartition(func(p kgo.FetchTopicPartition) {
		if len(p.Records) == 0 || p.Err != nil {
			return
		}
		l.parts[lagKey{p.Topic, p.Partition}] = lagPos{next: p.Records[len(p.Records)-1].Offset + 1, high: p.HighWatermark}
	})
}

// Forget drops partitions this member no longer owns (revoked or lost):
// their lag is their next owner's to report. It never blocks, so it may be
// called from a group callback.
func (l *Lag) Forget(tps map[string][]int32) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for t, ps := range tps {
		for _, p := range ps {
			delete(l.parts, lagKey{t, p})
		}
	}
}

// Close stops reporting.
func (l *Lag) Close() error {
	if l == nil {
		return nil
	}
	return l.reg.Unregister()
}
