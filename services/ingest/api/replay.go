package api

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/valyala/fasthttp"
	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/pkg/ids"
	"github.com/sluicehq/sluice/pkg/kafkax"
)

// DeliveriesOptions configure replay and recover, which write deliveries
// themselves; the zero value answers both 503.
type DeliveriesOptions struct {
	// Sink produces to the deliveries topic (acks=all).
	Sink EventSink
	// Topic is the deliveries topic.
	Topic string
	// Dead reads the dead-letter topic for recover.
	Dead DeadLetters
	// MaxRecover bounds the deliveries one recover job re-sends; zero or
	// less means DefaultMaxRecover.
	MaxRecover int
}

// DefaultMaxRecover is how many deliveries one recover job re-sends at
// most: a week of a busy endpoint's failures is far more, and a client
// asks again for the rest (the answer says it was truncated).
const DefaultMaxRecover = 10000

// maxRecoverWindow bounds since..until of a recover: dead letters are kept
// 30 days, and a week at a time keeps each job's scan bounded.
const maxRecoverWindow = 7 * 24 * time.Hour

// DeadLetters reads dead-lettered deliveries.
type DeadLetters interface {
	// Scan calls fn with every dead letter keyed by endpoint and parked
	// within [since, until), in order per partition, until fn returns
	// false. It reads up to where the topic ended when Scan began.
	Scan(ctx context.Context, endpoint string, since, until time.Time, fn func(*kgo.Record) bool) error
}

// ReplayRequest is the body of POST /v1/events/{id}/replay: the endpoints
// to send the event to again; absent or empty means every endpoint it was
// routed to.
type ReplayRequest struct {
	Endpoints []string `json:"endpoints"`
}

// ReplayedJSON answers a replay: one new delivery per endpoint.
type ReplayedJSON struct {
	EventID    string               `json:"event_id"`
	Deliveries []ReplayDeliveryJSON `json:"deliveries"`
}

// ReplayDeliveryJSON is one delivery a replay created.
type ReplayDeliveryJSON struct {
	EndpointID string `json:"endpoint_id"`
	DeliveryID string `json:"delivery_id"`
}

// maxReplayEndpoints bounds the endpoints of one replay request, as the
// router bounds a fan-out.
const maxReplayEndpoints = 1000

func (a *API) deliveriesReady(r *request) bool {
	if a.opts.Deliveries.Sink == nil || a.opts.Log == nil {
		WriteProblem(r.RequestCtx, fasthttp.StatusServiceUnavailable, "unavailable",
			"this server cannot write deliveries or read the delivery log")
		return false
	}
	return true
}

// replayEvent serves POST /v1/events/{event_id}/replay: new deliveries of
// a logged event, marked as replays, to all or some of its endpoints.
func (a *API) replayEvent(r *request) {
	if !a.deliveriesReady(r) {
		return
	}
	var in ReplayRequest
	if len(r.PostBody()) > 0 && !decodeBody(r.RequestCtx, &in) {
		return
	}
	if len(in.Endpoints) > maxReplayEndpoints {
		invalid(r.RequestCtx, []FieldError{{"endpoints", fmt.Sprintf("has %d ids, at most %d", len(in.Endpoints), maxReplayEndpoints)}})
		return
	}
	e, ok := a.loggedEvent(r)
	if !ok {
		return
	}
	targets := in.Endpoints
	if len(targets) == 0 {
		targets = e.EndpointIDs
	}
	var eps []*sluicev1.Endpoint
	seen := map[string]bool{}
	for i, id := range targets {
		if seen[id] {
			continue
		}
		seen[id] = true
		ep, ok := a.endpoint(r, id)
		switch {
		case ok:
			eps = append(eps, ep)
		case len(in.Endpoints) > 0:
			WriteProblem(r.RequestCtx, fasthttp.StatusNotFound, "not-found",
				fmt.Sprintf("endpoints[%d]: endpoint %s does not exist", i, trunc(id)))
			return
		}
		// Routed to an endpoint deleted since: nothing to replay to.
	}
	if len(eps) == 0 {
		invalid(r.RequestCtx, []FieldError{{"endpoints", "the event went to no endpoint that still exists; name the endpoints to replay it to"}})
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out := ReplayedJSON{EventID: e.ID, Deliveries: make([]ReplayDeliveryJSON, len(eps))}
	errs := make([]error, len(eps))
	var wg sync.WaitGroup
	for i, ep := range eps {
		d := &sluicev1.Delivery{SchemaVersion: sluicev1.SchemaVersion, DeliveryId: ids.New(ids.Delivery),
			TenantId: r.caller.tenant, EndpointId: ep.Id, EventId: e.ID, EventType: e.Type,
			EventReceivedAtMs: e.ReceivedAtMs, Data: e.Data, Origin: sluicev1.DeliveryOrigin_DELIVERY_ORIGIN_REPLAY}
		out.Deliveries[i] = ReplayDeliveryJSON{EndpointID: ep.Id, DeliveryID: d.DeliveryId}
		wg.Go(func() { errs[i] = a.publishDelivery(ctx, d) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		a.log.Warn("replaying an event", "event", e.ID, "err", err)
		r.Response.Header.Set("Retry-After", "1")
		WriteProblem(r.RequestCtx, fasthttp.StatusServiceUnavailable, "unavailable",
			"some deliveries of the replay could not be stored; replaying again may send those that were twice")
		return
	}
	sort.Slice(out.Deliveries, func(i, j int) bool { return out.Deliveries[i].EndpointID < out.Deliveries[j].EndpointID })
	writeJSON(r.RequestCtx, fasthttp.StatusAccepted, out)
}

// publishDelivery produces d to the deliveries topic, keyed by endpoint as
// the router does.
func (a *API) publishDelivery(ctx context.Context, d *sluicev1.Delivery) error {
	b, err := proto.Marshal(d)
	if err != nil {
		return fmt.Errorf("encoding delivery %s: %w", d.DeliveryId, err)
	}
	return a.opts.Deliveries.Sink.Publish(ctx, &kgo.Record{Topic: a.opts.Deliveries.Topic, Key: []byte(d.EndpointId), Value: b})
}

// KafkaDeadLetters reads the dead-letter topic with a plain client per scan.
type KafkaDeadLetters struct {
	Kafka kafkax.Config
	Topic string
}

var _ DeadLetters = KafkaDeadLetters{}

// Scan reads every partition of the topic from the first record at or
// after since (by record time) up to its end when the scan began. Dead
// letters are keyed by endpoint, so one partition holds an endpoint's; all
// are read so the scan does not depend on the producers' partitioner.
func (k KafkaDeadLetters) Scan(ctx context.Context, endpoint string, since, until time.Time, fn func(*kgo.Record) bool) error {
	adm, err := kafkax.NewAdmin(k.Kafka)
	if err != nil {
		return err
	}
	defer adm.Close()
	starts, err := adm.ListOffsetsAfterMilli(ctx, since.UnixMilli(), k.Topic)
	if err != nil {
		return fmt.Errorf("finding dead letters after %v: %w", since, err)
	}
	ends, err := adm.ListEndOffsets(ctx, k.Topic)
	if err != nil {
		return fmt.Errorf("finding the end of %s: %w", k.Topic, err)
	}
	from := map[int32]kgo.Offset{}
	left := map[int32]int64{} // partition → end offset still to reach
	starts.Each(func(o kadm.ListedOffset) {
		end, ok := ends.Lookup(k.Topic, o.Partition)
		if o.Err == nil && ok && end.Err == nil && o.Offset < end.Offset {
			from[o.Partition] = kgo.NewOffset().At(o.Offset)
			left[o.Partition] = end.Offset
		}
	})
	if len(from) == 0 {
		return nil
	}
	cl, err := kafkax.NewClient(k.Kafka, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{k.Topic: from}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		return err
	}
	defer cl.Close()
	for len(left) > 0 {
		// A transaction's commit marker can be a partition's last offset
		// and is never returned: a poll that brings nothing for 2 s means
		// everything committed up to the end has been read.
		pollCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		fs := cl.PollFetches(pollCtx)
		cancel()
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("reading dead letters: %w", err)
		}
		if fs.NumRecords() == 0 {
			return nil
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) {
				ferr = err
			}
		})
		if ferr != nil {
			return fmt.Errorf("reading dead letters: %w", ferr)
		}
		stop := false
		fs.EachRecord(func(rec *kgo.Record) {
			if stop {
				return
			}
			if end, ok := left[rec.Partition]; ok && rec.Offset+1 >= end {
				delete(left, rec.Partition)
			}
			if string(rec.Key) == endpoint && !rec.Timestamp.Before(since) && rec.Timestamp.Before(until) {
				stop = !fn(rec)
			}
		})
		if stop {
			return nil
		}
	}
	return nil
}
