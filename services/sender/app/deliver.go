package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/pkg/ids"
)

// endpoints is what the deliverer needs of the config view.
type endpoints interface {
	Endpoint(id string) (*sluicev1.Endpoint, bool)
}

// deliverer makes one HTTP attempt of a delivery and records it.
type deliverer struct {
	http          *fasthttp.Client
	endpoints     endpoints
	producer      *kgo.Client
	attemptsTopic string
	timeout       time.Duration
	excerpt       int
	userAgent     string
	log           *slog.Logger
	attempts      metric.Int64Counter
	latency       metric.Float64Histogram
}

// newHTTPClient sets no ReadTimeout or WriteTimeout: fasthttp applies the
// shorter of those and the request's own timeout, so a client-wide one would
// cut short every endpoint whose timeout is longer than the default. Every
// attempt goes through DoTimeout with a positive timeout, which bounds the
// write, the read and the streamed body.
func newHTTPClient(maxInFlight int) *fasthttp.Client {
	return &fasthttp.Client{
		// Connections per host never exceed the requests the process can
		// have in flight at once; more could never be used.
		MaxConnsPerHost: maxInFlight,
		// A connection idle this long is closed: receivers commonly drop
		// keep-alive connections after 60 s or more, and reusing one they
		// are closing fails the request.
		MaxIdleConnDuration: 30 * time.Second,
		// The body is read only up to the excerpt limit; a receiver sending
		// megabytes must not cost us megabytes.
		StreamResponseBody:            true,
		NoDefaultUserAgentHeader:      true,
		DisableHeaderNamesNormalizing: false,
	}
}

// deliver decodes r, attempts it once and produces the attempt record; it
// returns once the record is acknowledged, so a committed delivery always
// has its attempt in Kafka.
func (d *deliverer) deliver(ctx context.Context, r *kgo.Record) {
	var dl sluicev1.Delivery
	if err := proto.Unmarshal(r.Value, &dl); err != nil || dl.SchemaVersion != sluicev1.SchemaVersion {
		d.log.Error("skipping undecodable delivery", "partition", r.Partition, "offset", r.Offset,
			"err", err, "schema_version", dl.SchemaVersion)
		return
	}
	a := d.attempt(&dl)
	d.attempts.Add(ctx, 1, metric.WithAttributes(attribute.String("outcome", a.Outcome.Label())))
	b, err := proto.Marshal(a)
	if err != nil {
		d.log.Error("encoding attempt", "attempt_id", a.AttemptId, "err", err)
		return
	}
	rec := &kgo.Record{Topic: d.attemptsTopic, Key: []byte(dl.EndpointId), Value: b}
	if err := d.producer.ProduceSync(ctx, rec).FirstErr(); err != nil {
		d.log.Error("producing attempt record", "attempt_id", a.AttemptId, "err", err)
	}
}

// attempt makes the HTTP request of dl and describes it.
func (d *deliverer) attempt(dl *sluicev1.Delivery) *sluicev1.Attempt {
	start := time.Now()
	a := &sluicev1.Attempt{
		SchemaVersion: sluicev1.SchemaVersion,
		AttemptId:     ids.NewAt(ids.Attempt, start),
		DeliveryId:    dl.DeliveryId,
		TenantId:      dl.TenantId,
		EndpointId:    dl.EndpointId,
		EventId:       dl.EventId,
		EventType:     dl.EventType,
		AttemptNumber: dl.AttemptsMade + 1,
		Origin:        dl.Origin,
		StartedAtUs:   start.UnixMicro(),
	}
	ep, ok := d.endpoints.Endpoint(dl.EndpointId)
	if !ok {
		a.Outcome = sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_NETWORK_ERROR
		a.Error = "endpoint " + dl.EndpointId + " is unknown"
		return a
	}
	a.Url = ep.Url
	timeout := d.timeout
	if ep.TimeoutMs > 0 {
		timeout = time.Duration(ep.TimeoutMs) * time.Millisecond
	}

	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(fasthttp.MethodPost)
	req.SetRequestURI(ep.Url)
	req.Header.SetContentType("application/json")
	req.Header.SetUserAgent(d.userAgent)
	for k, v := range ep.Headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("webhook-id", dl.EventId)
	req.Header.Set("webhook-timestamp", webhookTimestamp(start))
	req.SetBody(appendBody(req.Body()[:0], dl))

	// Do never follows redirects: a 3xx is an answer like any other.
	err := d.http.DoTimeout(req, resp, timeout)
	a.LatencyUs = time.Since(start).Microseconds()
	d.latency.Record(context.Background(), time.Since(start).Seconds())
	switch {
	case errors.Is(err, fasthttp.ErrTimeout):
		a.Outcome = sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_TIMEOUT
		a.Error = fmt.Sprintf("no answer within %v", timeout)
	case err != nil:
		a.Outcome = sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_NETWORK_ERROR
		a.Error = err.Error()
	default:
		a.StatusCode = uint32(resp.StatusCode())
		a.ResponseExcerpt = d.readExcerpt(resp)
		if a.StatusCode >= 200 && a.StatusCode < 300 {
			a.Outcome = sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCESS
		} else {
			a.Outcome = sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_HTTP_ERROR
			a.Error = fmt.Sprintf("HTTP %d", a.StatusCode)
		}
	}
	return a
}

// readExcerpt reads at most the configured number of body bytes.
func (d *deliverer) readExcerpt(resp *fasthttp.Response) []byte {
	if d.excerpt == 0 {
		return nil
	}
	if s := resp.BodyStream(); s != nil {
		b, _ := io.ReadAll(io.LimitReader(s, int64(d.excerpt)))
		return b
	}
	b := resp.Body()
	if len(b) > d.excerpt {
		b = b[:d.excerpt]
	}
	return append([]byte(nil), b...)
}
