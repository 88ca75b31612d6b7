package dispatch

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"
)

type instruments struct {
	// byOutcome are the attempt counter's attribute sets, made once: an
	// attribute set built per attempt would allocate on the hot path.
	byOutcome                                                 map[sluicev1.AttemptOutcome]metric.MeasurementOption
	attempts, deferred, parked, exhausted, disabled, opEvents metric.Int64Counter
	moved, rewinds                                            metric.Int64Counter
	latency, lateness                                         metric.Float64Histogram
}

func (m *instruments) init(meter metric.Meter, d *Dispatcher) error {
	var err error
	m.byOutcome = map[sluicev1.AttemptOutcome]metric.MeasurementOption{}
	for v := range sluicev1.AttemptOutcome_name {
		o := sluicev1.AttemptOutcome(v)
		m.byOutcome[o] = metric.WithAttributeSet(attribute.NewSet(attribute.String("outcome", o.Label())))
	}
	if m.attempts, err = meter.Int64Counter("sluice.sender.attempts",
		metric.WithDescription("delivery attempts by outcome")); err != nil {
		return err
	}
	if m.latency, err = meter.Float64Histogram("sluice.sender.attempt.duration", metric.WithUnit("s"),
		metric.WithDescription("duration of webhook requests")); err != nil {
		return err
	}
	if m.lateness, err = meter.Float64Histogram("sluice.sender.retry.lateness", metric.WithUnit("s"),
		metric.WithDescription("how late a retry-tier delivery was admitted after its due time, by tier")); err != nil {
		return err
	}
	if m.exhausted, err = meter.Int64Counter("sluice.sender.exhausted",
		metric.WithDescription("deliveries dead-lettered after their last attempt")); err != nil {
		return err
	}
	if m.disabled, err = meter.Int64Counter("sluice.sender.endpoints.disabled",
		metric.WithDescription("endpoints the sender disabled (410 Gone, or failing too long)")); err != nil {
		return err
	}
	if m.opEvents, err = meter.Int64Counter("sluice.sender.operational_events",
		metric.WithDescription("sluice.* events emitted into tenants' streams")); err != nil {
		return err
	}
	if m.deferred, err = meter.Int64Counter("sluice.sender.deferred",
		metric.WithDescription("deliveries handed to the first retry tier because they could not start soon, by reason")); err != nil {
		return err
	}
	if m.parked, err = meter.Int64Counter("sluice.sender.parked",
		metric.WithDescription("deliveries moved to the dead-letter topic without an attempt (endpoint disabled or deleted, record undecodable)")); err != nil {
		return err
	}
	if m.moved, err = meter.Int64Counter("sluice.sender.ordered.moved",
		metric.WithDescription("deliveries of ordered endpoints moved to the ordered topic from the deliveries topic or a retry tier")); err != nil {
		return err
	}
	if m.rewinds, err = meter.Int64Counter("sluice.sender.ordered.rewinds",
		metric.WithDescription("ordered partitions read again from a reopened lane's first skipped record")); err != nil {
		return err
	}
	_, err = meter.Int64ObservableGauge("sluice.sender.ordered.buffered",
		metric.WithUnit("By"),
		metric.WithDescription("approximate bytes of ordered deliveries held in memory; above the ordered budget lanes take no more"),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			d.mu.Lock()
			defer d.mu.Unlock()
			o.Observe(d.orderedBuffered)
			return nil
		}))
	if err != nil {
		return err
	}
	_, err = meter.Int64ObservableGauge("sluice.sender.buffered",
		metric.WithUnit("By"),
		metric.WithDescription("approximate bytes of deliveries held in memory; fetching pauses above the memory budget"),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			d.mu.Lock()
			defer d.mu.Unlock()
			o.Observe(d.buffered)
			return nil
		}))
	if err != nil {
		return err
	}
	_, err = meter.Int64ObservableGauge("sluice.sender.in_flight",
		metric.WithDescription("webhook requests in flight"),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			d.mu.Lock()
			defer d.mu.Unlock()
			o.Observe(int64(d.running))
			return nil
		}))
	return err
}

// outcome is the attempt counter's option for o.
func (m *instruments) outcome(o sluicev1.AttemptOutcome) metric.AddOption {
	if opt, ok := m.byOutcome[o]; ok {
		return opt
	}
	return metric.WithAttributes(attribute.String("outcome", o.Label()))
}
