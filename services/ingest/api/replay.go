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
	// Topic is the deliveries topic; OrderedTopic the topic of ordered
	// endpoints' deliveries (sluice.ordered), the only one the sender sends
	// them from. Empty means Topic.
	Topic, OrderedTopic string
	// Dead finds where recover jobs read the dead-letter topic.
	Dead DeadLetters
	// MaxRecover bounds the deliveries one recover job re-sends; zero or
	// less means DefaultMaxRecover.
	MaxRecover int
	// MaxRecoverJobs bounds the recover jobs of one tenant running at
	// once; zero or less means DefaultMaxRecoverJobs.
	MaxRecoverJobs int
}

func (o DeliveriesOptions) maxRecover() int {
	if o.MaxRecover <= 0 {
		return DefaultMaxRecover
	}
	return o.MaxRecover
}

func (o DeliveriesOptions) maxRecoverJobs() int {
	if o.MaxRecoverJobs <= 0 {
		return DefaultMaxRecoverJobs
	}
	return o.MaxRecoverJobs
}

// DefaultMaxRecover is how many deliveries one recover job re-sends at
// most: a week of a busy endpoint's failures is far more, and a client
// asks again for the rest (the answer says it was truncated).
const DefaultMaxRecover = 10000

// maxRecoverWindow bounds since..until of a recover: dead letters are kept
// 30 days, and a week at a time keeps each job's scan bounded.
const maxRecoverWindow = 7 * 24 * time.Hour

// DeadLetters says where a recover job reads the dead-letter topic.
type DeadLetters interface {
	// Bounds returns, for every partition holding records parked at or
	// after since, the first such offset (as start and next) and the
	// partition's end now.
	Bounds(ctx context.Context, since time.Time) ([]*sluicev1.RecoverPartition, error)
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

// publishDelivery produces d to its endpoint's deliveries topic, keyed by
// endpoint as the router does.
func (a *API) publishDelivery(ctx context.Context, d *sluicev1.Delivery) error {
	b, err := proto.Marshal(d)
	if err != nil {
		return fmt.Errorf("encoding delivery %s: %w", d.DeliveryId, err)
	}
	topic := deliveryTopic(a.store, d.EndpointId, a.opts.Deliveries.Topic, a.opts.Deliveries.OrderedTopic)
	return a.opts.Deliveries.Sink.Publish(ctx, &kgo.Record{Topic: topic, Key: []byte(d.EndpointId), Value: b})
}

// deliveryTopic is where a delivery to endpoint goes: the ordered topic
// for an ordered endpoint, when there is one, else the deliveries topic.
// The sender moves a delivery it finds on the wrong one, so a change of
// the endpoint in between costs a hop, not its order.
func deliveryTopic(store interface {
	Get(string) (*sluicev1.ConfigRecord, bool)
}, endpoint, topic, ordered string) string {
	if rec, ok := store.Get(endpoint); ok && ordered != "" && rec.GetEndpoint().GetOrdered() {
		return ordered
	}
	return topic
}

// KafkaDeadLetters reads the dead-letter topic: Bounds for the API, a
// reader per job for the RecoverRunner.
type KafkaDeadLetters struct {
	Kafka kafkax.Config
	Topic string
}

var _ DeadLetterReader = KafkaDeadLetters{}

// Bounds lists every partition from the first record at or after since
// (by record time) to its high watermark now. Dead letters are keyed by
// endpoint, so one partition holds an endpoint's; all are listed so a job
// does not depend on the producers' partitioner.
func (k KafkaDeadLetters) Bounds(ctx context.Context, since time.Time) ([]*sluicev1.RecoverPartition, error) {
	adm, err := kafkax.NewAdmin(k.Kafka)
	if err != nil {
		return nil, err
	}
	defer adm.Close()
	starts, err := adm.ListOffsetsAfterMilli(ctx, since.UnixMilli(), k.Topic)
	if err != nil {
		return nil, fmt.Errorf("finding dead letters after %v: %w", since, err)
	}
	ends, err := adm.ListEndOffsets(ctx, k.Topic)
	if err != nil {
		return nil, fmt.Errorf("finding the end of %s: %w", k.Topic, err)
	}
	var out []*sluicev1.RecoverPartition
	var ferr error
	starts.Each(func(o kadm.ListedOffset) {
		end, ok := ends.Lookup(k.Topic, o.Partition)
		switch {
		case o.Err != nil:
			ferr = errors.Join(ferr, fmt.Errorf("partition %d: %w", o.Partition, o.Err))
		case !ok || end.Err != nil:
			ferr = errors.Join(ferr, fmt.Errorf("partition %d has no end offset: %v", o.Partition, end.Err))
		case o.Offset < end.Offset:
			out = append(out, &sluicev1.RecoverPartition{Partition: o.Partition, StartOffset: o.Offset,
				NextOffset: o.Offset, EndOffset: end.Offset})
		}
	})
	if ferr != nil {
		return nil, fmt.Errorf("listing the offsets of %s: %w", k.Topic, ferr)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Partition < out[j].Partition })
	return out, nil
}

// Reader consumes the partitions of from, each from its offset, with
// read_committed (an aborted write is not a dead letter) and transaction
// markers kept: a job sees where a partition ends even when its last
// offset is a marker, as dedup.Rebuild does. Each fetch is bounded, so a
// job buffers at most a few MiB however large the topic is.
func (k KafkaDeadLetters) Reader(from map[int32]int64) (*kgo.Client, error) {
	offsets := make(map[int32]kgo.Offset, len(from))
	for p, o := range from {
		offsets[p] = kgo.NewOffset().At(o)
	}
	return kafkax.NewClient(k.Kafka,
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{k.Topic: offsets}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(),
		// 4 MiB a fetch (1 MiB a partition, the default); franz-go has at
		// most one fetch in flight per broker and buffers it until
		// polled: 4 MiB per broker per running job, and a replica runs at
		// most 4 jobs.
		kgo.FetchMaxBytes(4<<20),
	)
}
