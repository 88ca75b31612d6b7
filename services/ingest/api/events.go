package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/trace"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/pkg/dedup"
	"github.com/sluicehq/sluice/pkg/eventfilter"
	"github.com/sluicehq/sluice/pkg/eventrecord"
	"github.com/sluicehq/sluice/pkg/ids"
	"github.com/sluicehq/sluice/pkg/kafkax"
	"github.com/sluicehq/sluice/pkg/telemetry"
)

// Defaults and limits of the events routes.
const (
	// DefaultMaxBatch is how many events a batch may hold unless
	// EventsOptions says otherwise: 500 small events are one request of a
	// few hundred KiB, and a batch's events are produced concurrently, so
	// this also bounds the goroutines one request starts.
	DefaultMaxBatch = 500
	// DefaultMaxBatchBodyBytes bounds a batch's body unless EventsOptions
	// says otherwise; it is the server's default max-body-bytes.
	DefaultMaxBatchBodyBytes = 4 << 20
	// eventEnvelopeBytes is what the body of one event may hold besides its
	// data. Type and id are at most 128 bytes of ASCII each, so even fully
	// \u-escaped (6 bytes per character) they and the member names take
	// under 2 KiB; 8 KiB leaves room for whitespace.
	eventEnvelopeBytes = 8 << 10
	// defaultPublishTimeout bounds how long an event may wait to be sent
	// (a partition without a leader, Kafka unreachable) before the request
	// is answered 503. It is below the producer's 30 s delivery timeout, so
	// a client hears back before its own timeout, typically 30 s.
	defaultPublishTimeout = 10 * time.Second
	// maxIdempotencyKey is the longest Idempotency-Key accepted: the bound
	// of common APIs (Stripe's is 255), room for a UUID or a key built from
	// several ids, and far below any proxy's header limit.
	maxIdempotencyKey = 255
	// idempotencyHeader names the header that makes a single event
	// idempotent when its body has no id.
	idempotencyHeader = "Idempotency-Key"
)

// EventSink takes the records of the events API to the events topic.
type EventSink interface {
	// Publish produces rec and returns once the brokers acknowledged it
	// (acks=all), or the reason they did not. kgo.ErrMaxBuffered means the
	// producer's buffer is full and nothing was produced.
	Publish(ctx context.Context, rec *kgo.Record) error
}

// DedupView says whether the router has already routed an event, by its
// record key (eventrecord.Key).
type DedupView interface {
	Seen(key []byte, now time.Time) bool
}

var _ DedupView = (*dedup.View)(nil)

// EventsOptions are the settings of the events routes. Without a Sink the
// routes answer 503: there is nowhere to put events.
type EventsOptions struct {
	// Sink takes the records to the events topic.
	Sink EventSink
	// Seen answers repeats as duplicates without producing them; nil
	// produces every repeat (the router still routes only one copy).
	Seen DedupView
	// Topic is the events topic the records are for.
	Topic string
	// MaxDataBytes bounds an event's data; zero or less means
	// eventrecord.DefaultMaxDataBytes (256 KiB). Give the router's limit:
	// an event the API took and the router refused would never be
	// delivered.
	MaxDataBytes int
	// MaxBatch bounds the events of one batch; zero or less means
	// DefaultMaxBatch.
	MaxBatch int
	// MaxBatchBodyBytes bounds a batch's body; zero or less means
	// DefaultMaxBatchBodyBytes. Give the server's body limit.
	MaxBatchBodyBytes int
	// PublishTimeout bounds how long an event may wait to be sent; zero or
	// less means 10 s.
	PublishTimeout time.Duration
}

func (o EventsOptions) maxData() int {
	if o.MaxDataBytes <= 0 {
		return eventrecord.DefaultMaxDataBytes
	}
	return o.MaxDataBytes
}

func (o EventsOptions) maxBatch() int {
	if o.MaxBatch <= 0 {
		return DefaultMaxBatch
	}
	return o.MaxBatch
}

func (o EventsOptions) maxBatchBody() int {
	if o.MaxBatchBodyBytes <= 0 {
		return DefaultMaxBatchBodyBytes
	}
	return o.MaxBatchBodyBytes
}

func (o EventsOptions) publishTimeout() time.Duration {
	if o.PublishTimeout <= 0 {
		return defaultPublishTimeout
	}
	return o.PublishTimeout
}

// KafkaSink is the EventSink of a franz-go producer built by
// kafkax.NewProducer with kgo.MaxBufferedBytes.
type KafkaSink struct{ cl *kgo.Client }

var _ EventSink = KafkaSink{}

// NewKafkaSink publishes through cl.
func NewKafkaSink(cl *kgo.Client) KafkaSink { return KafkaSink{cl: cl} }

// Publish uses TryProduce: when the producer already buffers its maximum
// (kgo.MaxBufferedBytes or MaxBufferedRecords) it fails at once with
// kgo.ErrMaxBuffered instead of waiting for room. A burst beyond what Kafka
// takes is then refused with 503, rather than held in memory by request
// goroutines queued behind the buffer. It waits for the record's outcome,
// which franz-go always reports: by ctx's end for a record not yet sent,
// within the delivery timeout for one sent.
func (s KafkaSink) Publish(ctx context.Context, rec *kgo.Record) error {
	done := make(chan error, 1)
	s.cl.TryProduce(ctx, rec, func(_ *kgo.Record, err error) { done <- err })
	return <-done
}

// EventCreate is one event: the body of POST /v1/events and each item of a
// batch. ID is optional.
type EventCreate struct {
	Type string          `json:"type"`
	ID   *string         `json:"id"`
	Data json.RawMessage `json:"data"`
}

// EventAccepted is the answer for an event the API took: its id, and
// whether it repeats one already routed (then nothing was produced).
type EventAccepted struct {
	ID        string `json:"id"`
	Duplicate bool   `json:"duplicate"`
}

// EventBatch is the body of POST /v1/events/batch. Its events are decoded
// one by one, so one that is invalid fails alone.
type EventBatch struct {
	Events []json.RawMessage `json:"events"`
}

// EventResult is the outcome of one event of a batch: ID and Duplicate
// when it was taken (as in EventAccepted), Error when it was not.
type EventResult struct {
	ID        string   `json:"id,omitempty"`
	Duplicate *bool    `json:"duplicate,omitempty"`
	Error     *Problem `json:"error,omitempty"`
}

// EventBatchResult is the answer of a batch: one result per event, in the
// order of the request.
type EventBatchResult struct {
	Data []EventResult `json:"data"`
}

func accepted(id string, duplicate bool) EventResult {
	return EventResult{ID: id, Duplicate: &duplicate}
}

// pendingEvent is an event checked and ready to produce, unless it repeats
// one already routed.
type pendingEvent struct {
	id        string
	rec       *kgo.Record
	duplicate bool
}

// publishEvent serves POST /v1/events.
func (a *API) publishEvent(r *request) {
	ev := a.opts.Events
	if ev.Sink == nil {
		eventsDisabled(r.RequestCtx)
		return
	}
	var in EventCreate
	if !decodeBodyLimit(r.RequestCtx, &in, ev.maxData()+eventEnvelopeBytes) {
		return
	}
	key, headerErrs := idempotencyKey(r.RequestCtx)
	pe, p := a.prepareEvent(r.caller.tenant, in, key, headerErrs, a.now())
	switch {
	case p != nil:
		writeProblem(r.RequestCtx, *p)
		return
	case pe.duplicate:
		writeJSON(r.RequestCtx, fasthttp.StatusAccepted, EventAccepted{ID: pe.id, Duplicate: true})
		return
	case !a.admitEvents(r, 1):
		return
	}
	ctx, cancel := context.WithTimeout(traceContext(r.RequestCtx), ev.publishTimeout())
	defer cancel()
	if p := a.publishRecord(ctx, pe); p != nil {
		if p.Status == fasthttp.StatusServiceUnavailable {
			r.Response.Header.Set("Retry-After", "1")
		}
		writeProblem(r.RequestCtx, *p)
		return
	}
	writeJSON(r.RequestCtx, fasthttp.StatusAccepted, EventAccepted{ID: pe.id})
}

// publishEventBatch serves POST /v1/events/batch: every valid event is
// produced, concurrently, and answered after its acknowledgement; an
// invalid one gets its problem in its place of the answer. A later copy of
// an id earlier in the batch is not produced: it gets the first copy's
// result, as a duplicate.
func (a *API) publishEventBatch(r *request) {
	ev := a.opts.Events
	if ev.Sink == nil {
		eventsDisabled(r.RequestCtx)
		return
	}
	var in EventBatch
	if !decodeBodyLimit(r.RequestCtx, &in, ev.maxBatchBody()) {
		return
	}
	var errs []FieldError
	if len(r.Request.Header.PeekAll(idempotencyHeader)) > 0 {
		errs = append(errs, FieldError{idempotencyHeader,
			"is not accepted on a batch; give each event that needs idempotency its own id"})
	}
	if n, most := len(in.Events), ev.maxBatch(); n == 0 || n > most {
		errs = append(errs, FieldError{"events", fmt.Sprintf("holds %d events; send 1 to %d", n, most)})
	}
	if len(errs) > 0 {
		invalid(r.RequestCtx, errs)
		return
	}

	now := a.now()
	ctx, cancel := context.WithTimeout(traceContext(r.RequestCtx), ev.publishTimeout())
	defer cancel()
	results := make([]EventResult, len(in.Events))
	first := map[string]int{} // id → index of its first copy being produced
	copies := map[int]int{}   // index of a later copy → index of the first
	produce := map[int]pendingEvent{}
	for i, raw := range in.Events {
		item, p := decodeEventItem(raw)
		var pe pendingEvent
		if p == nil {
			pe, p = a.prepareEvent(r.caller.tenant, item, "", nil, now)
		}
		switch {
		case p != nil:
			results[i] = EventResult{Error: p}
			continue
		case pe.duplicate:
			results[i] = accepted(pe.id, true)
			continue
		}
		if j, ok := first[pe.id]; ok {
			copies[i] = j
			continue
		}
		first[pe.id] = i
		produce[i] = pe
	}
	// The events to produce take the tenant's quota together, or the
	// batch is refused whole: a partly refused batch would leave the
	// client sorting out which events to send again.
	if !a.admitEvents(r, len(produce)) {
		return
	}
	// One goroutine per event, each waiting for its record's ack: at most
	// maxBatch per request, and across requests at most one per record the
	// producer buffers (kgo.MaxBufferedRecords, 50,000 by default), since
	// TryProduce fails at once, and the goroutine ends, when it is full.
	var wg sync.WaitGroup
	for i, pe := range produce {
		wg.Go(func() {
			if p := a.publishRecord(ctx, pe); p != nil {
				results[i] = EventResult{Error: p}
			} else {
				results[i] = accepted(pe.id, false)
			}
		})
	}
	wg.Wait()
	for i, j := range copies {
		res := results[j]
		if res.Error == nil {
			res = accepted(res.ID, true)
		}
		results[i] = res
	}
	for _, res := range results {
		if res.Error != nil && res.Error.Status == fasthttp.StatusServiceUnavailable {
			r.Response.Header.Set("Retry-After", "1")
			break
		}
	}
	writeJSON(r.RequestCtx, fasthttp.StatusOK, EventBatchResult{Data: results})
}

// decodeEventItem decodes one event of a batch as strictly as a body.
func decodeEventItem(raw json.RawMessage) (EventCreate, *Problem) {
	var in EventCreate
	if kind := jsonKindOf(raw); kind != "an object" {
		p := newProblem(fasthttp.StatusBadRequest, "malformed-json", "the event is "+kind+", not a JSON object")
		return in, &p
	}
	if err := DecodeStrict(raw, &in); err != nil {
		var fe *FieldDecodeError
		var p Problem
		if errors.As(err, &fe) {
			p = invalidProblem([]FieldError{{Field: fe.Field, Detail: fe.Detail}})
		} else {
			p = newProblem(fasthttp.StatusBadRequest, "malformed-json", err.Error())
		}
		return in, &p
	}
	return in, nil
}

// prepareEvent checks one event of tenant and builds its record. The id is
// the event's own, else one derived from the Idempotency-Key key, else a
// new one; an id the dedup view has seen makes a duplicate, with no record.
// headerErrs, found in the request's headers, are reported with the
// body's. A problem is 413 for data over the limit, else 400.
func (a *API) prepareEvent(tenant string, in EventCreate, key string, headerErrs []FieldError,
	now time.Time) (pendingEvent, *Problem) {
	ev := a.opts.Events
	if n, most := len(in.Data), ev.maxData(); n > most {
		p := newProblem(fasthttp.StatusRequestEntityTooLarge, "payload-too-large",
			fmt.Sprintf("data is %d bytes; an event's data may be at most %d", n, most))
		return pendingEvent{}, &p
	}
	errs := headerErrs
	switch err := eventfilter.ValidateType(in.Type); {
	case in.Type == "":
		errs = append(errs, FieldError{"type", "is required: an event type such as order.created"})
	case err != nil:
		errs = append(errs, FieldError{"type", err.Error()})
	case eventfilter.Reserved(in.Type):
		// Sluice's operational events (sluice.endpoint.disabled); a
		// tenant cannot send them.
		errs = append(errs, FieldError{"type", "types starting with " + eventfilter.ReservedPrefix + " are reserved for events Sluice sends"})
	}
	var id string
	switch {
	case in.ID != nil:
		id = *in.ID
		if err := eventrecord.ValidateID(id); err != nil {
			errs = append(errs, FieldError{"id", err.Error()})
		}
	case key != "":
		id = eventrecord.IDFromIdempotencyKey(tenant, key)
	default:
		id = ids.New(ids.Event)
	}
	if d := checkData(in.Data); d != "" {
		errs = append(errs, FieldError{"data", d})
	}
	if len(errs) > 0 {
		p := invalidProblem(errs)
		return pendingEvent{}, &p
	}
	// A new id cannot have been seen; only a caller's can repeat.
	if (in.ID != nil || key != "") && ev.Seen != nil && ev.Seen.Seen(eventrecord.Key(tenant, id), now) {
		return pendingEvent{id: id, duplicate: true}, nil
	}
	rec, err := eventrecord.FromHTTP(ev.Topic, &sluicev1.Event{
		TenantId: tenant, EventId: id, Type: in.Type, Data: in.Data, ReceivedAtMs: now.UnixMilli()})
	if err != nil {
		// Every field was checked above; a check eventrecord adds later
		// still refuses the event rather than publishing it.
		var rej *eventrecord.RejectError
		p := newProblem(fasthttp.StatusInternalServerError, "internal", "the event could not be encoded")
		if errors.As(err, &rej) {
			p = invalidProblem([]FieldError{{"event", rej.Reason}})
		} else {
			a.log.Error("encoding an event", "tenant", tenant, "event", id, "err", err)
		}
		return pendingEvent{}, &p
	}
	return pendingEvent{id: id, rec: rec}, nil
}

// checkData says what keeps data from being an event's data, one JSON
// object in UTF-8, or "". data is a JSON value the decoder accepted, or
// empty when absent.
func checkData(data json.RawMessage) string {
	if len(data) == 0 {
		return "is required: a JSON object"
	}
	if kind := jsonKindOf(data); kind != "an object" {
		return "must be a JSON object, not " + kind
	}
	// encoding/json keeps invalid UTF-8 in a RawMessage; receivers may
	// refuse it.
	if !utf8.Valid(data) {
		return "is not valid UTF-8"
	}
	return ""
}

// jsonKindOf names the kind of the JSON value v from its first byte.
func jsonKindOf(v []byte) string {
	v = bytes.TrimLeft(v, " \t\r\n")
	if len(v) == 0 {
		return "empty"
	}
	switch v[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	default:
		return "a number"
	}
}

// publishRecord produces pe's record and returns nil once it is
// acknowledged, or the problem to answer.
//
// The record carries ctx's trace context in its headers (traceparent,
// tracestate), where the router continues it; with tracing on, the
// producer's kotel hook replaces it with its publish span's.
func (a *API) publishRecord(ctx context.Context, pe pendingEvent) *Problem {
	if trace.SpanContextFromContext(ctx).IsValid() {
		telemetry.Propagator.Inject(ctx, kafkax.HeaderCarrier(pe.rec))
	}
	err := a.opts.Events.Sink.Publish(ctx, pe.rec)
	var p Problem
	switch {
	case err == nil:
		return nil
	case errors.Is(err, kgo.ErrMaxBuffered):
		// Not logged: under overload it would be one line per request.
		p = newProblem(fasthttp.StatusServiceUnavailable, "unavailable",
			"this server's event buffer is full; retry after Retry-After")
	case errors.Is(err, kerr.MessageTooLarge):
		p = newProblem(fasthttp.StatusRequestEntityTooLarge, "payload-too-large",
			fmt.Sprintf("the event's record is %d bytes, more than Kafka accepts", len(pe.rec.Value)))
	default:
		a.log.Warn("publishing an event", "event", pe.id, "err", err)
		p = newProblem(fasthttp.StatusServiceUnavailable, "unavailable",
			"the event could not be stored, or it is not known whether it was; retry with the same id to stay idempotent")
	}
	return &p
}

// idempotencyKey reads the Idempotency-Key header: "" when absent, else 1
// to 255 printable ASCII characters, sent once.
func idempotencyKey(ctx *fasthttp.RequestCtx) (string, []FieldError) {
	vals := ctx.Request.Header.PeekAll(idempotencyHeader)
	if len(vals) == 0 {
		return "", nil
	}
	bad := func(detail string) (string, []FieldError) {
		return "", []FieldError{{idempotencyHeader, detail}}
	}
	if len(vals) > 1 {
		return bad(fmt.Sprintf("is sent %d times; send it once", len(vals)))
	}
	key := string(vals[0])
	if key == "" || len(key) > maxIdempotencyKey {
		return bad(fmt.Sprintf("is %d bytes; send 1 to %d printable ASCII characters", len(key), maxIdempotencyKey))
	}
	for i := 0; i < len(key); i++ {
		if c := key[i]; c < 0x20 || c > 0x7e {
			return bad(fmt.Sprintf("byte %d (0x%02x) is not printable ASCII", i, c))
		}
	}
	return key, nil
}

func eventsDisabled(ctx *fasthttp.RequestCtx) {
	WriteProblem(ctx, fasthttp.StatusServiceUnavailable, "unavailable", "events are not enabled on this server")
}
