// Package deliver makes one webhook attempt: it builds the body, signs it
// (Standard Webhooks), POSTs it with fasthttp through the egress guard and
// describes what happened as an attempt record (DESIGN §6).
package deliver

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/pkg/egress"
	"github.com/sluicehq/sluice/pkg/errtext"
	"github.com/sluicehq/sluice/pkg/ids"
	"github.com/sluicehq/sluice/pkg/secretbox"
	"github.com/sluicehq/sluice/pkg/signing"
	"github.com/sluicehq/sluice/pkg/telemetry"
)

// MaxErrorBytes bounds an attempt's error text. Errors can carry text the
// receiver controls (a certificate's names: up to 256 KiB), and the text
// travels in the attempt record and, 20 attempts deep, in every retry and
// dead letter of the delivery; 1 KiB says what went wrong.
const MaxErrorBytes = 1 << 10

// Options are the deliverer's settings; app.Config documents each.
type Options struct {
	// Timeout bounds an attempt of an endpoint that sets no timeout.
	Timeout time.Duration
	// Excerpt is how many response body bytes are kept for the log.
	Excerpt int
	// UserAgent is sent with every webhook.
	UserAgent string
	// MaxConnsPerHost bounds the connections to one host.
	MaxConnsPerHost int
	// Guard refuses internal addresses.
	Guard *egress.Guard
	// Box opens the endpoints' sealed signing secrets and custom headers.
	Box *secretbox.Box
	// Now tells the time; nil means time.Now.
	Now func() time.Time
	// Tracing makes the span of each attempt and of its HTTP request; nil
	// is tracing off.
	Tracing *telemetry.Tracing
}

// Deliverer makes attempts; it is safe for concurrent use.
type Deliverer struct {
	opts Options
	http *fasthttp.Client
	now  func() time.Time

	tracing *telemetry.Tracing
	tracer  trace.Tracer

	mu      sync.RWMutex
	signers map[string]*signers // by endpoint id
}

// signers are the reusable signers of one endpoint's secrets as of one
// version (etag) of the endpoint.
type signers struct {
	etag string
	// until is when the previous secret stops signing: the set must be
	// rebuilt then. Zero when there is no previous secret.
	until time.Time
	err   error // the secrets could not be opened
	pool  sync.Pool
}

// New builds a deliverer.
func New(opts Options) *Deliverer {
	d := &Deliverer{opts: opts, now: opts.Now, signers: map[string]*signers{}}
	if d.now == nil {
		d.now = time.Now
	}
	d.tracing = opts.Tracing
	if d.tracing == nil {
		d.tracing = telemetry.Disabled()
	}
	d.tracer = d.tracing.Tracer("github.com/sluicehq/sluice/services/sender/deliver")
	d.http = &fasthttp.Client{
		// Dialing goes through the guard: it resolves the host itself and
		// connects only to the address it checked.
		DialTimeout: opts.Guard.DialTimeout,
		// Connections to one host: the process never has more than
		// MaxConnsPerHost (its request limit) in flight, so this many can
		// all be busy at once and a request never waits for a connection;
		// per-endpoint limits keep any one endpoint far below it.
		MaxConnsPerHost: opts.MaxConnsPerHost,
		// A connection idle this long is closed: receivers commonly drop
		// keep-alive connections after 60 s or more, and reusing one they
		// are closing fails the request.
		MaxIdleConnDuration: 30 * time.Second,
		// No ReadTimeout or WriteTimeout: fasthttp applies the shorter of
		// those and the request's own, so a client-wide one would cut short
		// every endpoint whose timeout is longer. Every attempt goes through
		// DoTimeout, which bounds the write, the read and the streamed body.
		//
		// The body is read only up to the excerpt limit: a receiver sending
		// megabytes must not cost us megabytes.
		StreamResponseBody: true,
		// Response headers up to 16 KiB (default 4 KiB): some frameworks
		// answer with large cookies or CSP headers, and a webhook must not
		// fail for that.
		ReadBufferSize:           16 << 10,
		NoDefaultUserAgentHeader: true,
		// The endpoint's URL is sent exactly as configured.
		DisablePathNormalizing: true,
		TLSConfig: &tls.Config{
			// TLS 1.0 and 1.1 are broken and deprecated (RFC 8996);
			// certificates are verified against the system roots.
			MinVersion: tls.VersionTLS12,
		},
	}
	return d
}

// Attempt POSTs d to ep once and describes the attempt, returning also the
// answer's Retry-After header (empty if none). It never follows a redirect:
// a 3xx is an answer like any other.
func (dv *Deliverer) Attempt(d *sluicev1.Delivery, ep *sluicev1.Endpoint) (*sluicev1.Attempt, string) {
	start := dv.now()
	a := &sluicev1.Attempt{
		SchemaVersion: sluicev1.SchemaVersion,
		AttemptId:     ids.NewAt(ids.Attempt, start),
		DeliveryId:    d.DeliveryId,
		TenantId:      d.TenantId,
		EndpointId:    d.EndpointId,
		EventId:       d.EventId,
		EventType:     d.EventType,
		AttemptNumber: d.AttemptsMade + 1,
		Origin:        d.Origin,
		StartedAtUs:   start.UnixMicro(),
		Url:           ep.Url,
	}
	sg, err := dv.signersOf(ep, start)
	if err != nil {
		a.Outcome = sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_BLOCKED
		a.Error = errtext.Truncate("not sent: "+err.Error(), MaxErrorBytes)
		return a, ""
	}
	timeout := dv.opts.Timeout
	if ep.TimeoutMs > 0 {
		timeout = time.Duration(ep.TimeoutMs) * time.Millisecond
	}

	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(fasthttp.MethodPost)
	req.SetRequestURI(ep.Url)
	// Custom headers: in clear only for endpoints written before values
	// were sealed; sealed ones are opened here, each bound to this
	// endpoint and name. An AES-GCM open of a short value takes about a
	// microsecond, at most 20 per attempt, next to a network round trip.
	for k, v := range ep.Headers {
		req.Header.Set(k, v)
	}
	for k, sealed := range ep.HeadersSealed {
		v, err := dv.opts.Box.Open(sealed, sluicev1.HeaderSealAAD(ep.Id, k))
		if err != nil {
			a.Outcome = sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_BLOCKED
			a.Error = fmt.Sprintf("not sent: the custom header %s of endpoint %s cannot be opened "+
				"(is the secrets key the one ingest uses?): %v", k, ep.Id, err)
			return a, ""
		}
		req.Header.SetBytesV(k, v)
	}
	// Set after the custom headers: these cannot be overridden.
	req.Header.SetContentType("application/json")
	req.Header.SetUserAgent(dv.opts.UserAgent)
	req.SetBody(appendBody(req.Body()[:0], d))
	ts := start.Unix()
	req.Header.Set("webhook-id", d.EventId)
	req.Header.Set("webhook-timestamp", webhookTimestamp(start))
	s := sg.pool.Get().(*signing.Signer)
	var buf [256]byte
	req.Header.SetBytesV("webhook-signature", s.AppendSignature(buf[:0], d.EventId, ts, req.Body()))
	sg.pool.Put(s)
	process, client := dv.startSpans(d, ep)
	switch sc := client.SpanContext(); {
	case client.IsRecording():
		// The receiver's spans are children of this request's span.
		a.TraceId = sc.TraceID().String()
		dv.tracing.Propagator.Inject(trace.ContextWithSpan(context.Background(), client), headerCarrier{&req.Header})
	case sc.IsValid():
		// Tracing off, but the event came with a trace: the receiver
		// continues it, its parent the producer's span.
		a.TraceId = sc.TraceID().String()
		req.Header.Set("traceparent", d.Traceparent)
		if d.Tracestate != "" {
			req.Header.Set("tracestate", d.Tracestate)
		}
	default:
		tid := traceID(d)
		a.TraceId = hex.EncodeToString(tid[:])
		req.Header.SetBytesV("traceparent", traceparent(buf[:0], tid))
	}

	err = dv.http.DoTimeout(req, resp, timeout)
	defer endSpans(process, client, resp, err)
	var retryAfter string
	a.LatencyUs = dv.now().Sub(start).Microseconds()
	var blocked *egress.BlockedError
	switch {
	case errors.As(err, &blocked):
		a.Outcome = sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_BLOCKED
		a.Error = errtext.Truncate(blocked.Error(), MaxErrorBytes)
	case errors.Is(err, fasthttp.ErrTimeout) || errors.Is(err, fasthttp.ErrDialTimeout):
		a.Outcome = sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_TIMEOUT
		a.Error = fmt.Sprintf("no answer within %v", timeout)
	case err != nil:
		a.Outcome = sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_NETWORK_ERROR
		a.Error = errtext.Truncate(err.Error(), MaxErrorBytes)
	default:
		a.StatusCode = uint32(resp.StatusCode())
		retryAfter = string(resp.Header.Peek("Retry-After"))
		a.ResponseExcerpt = dv.readExcerpt(resp)
		if a.StatusCode >= 200 && a.StatusCode < 300 {
			a.Outcome = sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCESS
		} else {
			a.Outcome = sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_HTTP_ERROR
			a.Error = fmt.Sprintf("HTTP %d", a.StatusCode)
		}
	}
	return a, retryAfter
}

// Forget drops what the deliverer keeps for endpoint id, its signers: the
// dispatcher calls it when it forgets an idle endpoint, so the cache keeps
// no deleted endpoint (review L8). A next attempt opens the secrets again.
func (dv *Deliverer) Forget(id string) {
	dv.mu.Lock()
	delete(dv.signers, id)
	dv.mu.Unlock()
}

// signersOf returns the signers of ep's current secrets, opening them only
// when the endpoint changed (a new etag) or its previous secret expired.
func (dv *Deliverer) signersOf(ep *sluicev1.Endpoint, now time.Time) (*signers, error) {
	dv.mu.RLock()
	sg := dv.signers[ep.Id]
	dv.mu.RUnlock()
	if sg != nil && sg.etag == ep.Etag && (sg.until.IsZero() || now.Before(sg.until)) {
		return sg, sg.err
	}
	sg = &signers{etag: ep.Etag}
	keys, until, err := dv.open(ep, now)
	sg.until, sg.err = until, err
	sg.pool.New = func() any { return signing.NewSigner(keys...) }
	dv.mu.Lock()
	dv.signers[ep.Id] = sg
	dv.mu.Unlock()
	return sg, err
}

// open unseals ep's current secret and, within its grace period, the
// previous one.
func (dv *Deliverer) open(ep *sluicev1.Endpoint, now time.Time) ([][]byte, time.Time, error) {
	cur, err := dv.opts.Box.Open(ep.SecretSealed, ep.Id)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("the signing secret of endpoint %s cannot be opened (is the secrets key the one ingest uses?): %w", ep.Id, err)
	}
	keys := [][]byte{cur}
	var until time.Time
	if exp := time.UnixMilli(ep.PreviousSecretExpiresAtMs); len(ep.PreviousSecretSealed) > 0 && now.Before(exp) {
		prev, err := dv.opts.Box.Open(ep.PreviousSecretSealed, ep.Id)
		if err != nil {
			return nil, time.Time{}, fmt.Errorf("the previous signing secret of endpoint %s cannot be opened: %w", ep.Id, err)
		}
		keys, until = append(keys, prev), exp
	}
	return keys, until, nil
}

// startSpans starts the span of this attempt and, under it, of its HTTP
// request, continuing the delivery's trace context (the router's span).
// With tracing off both are no-op spans whose context is the delivery's
// (invalid when it has none), and nothing is allocated when it has none.
func (dv *Deliverer) startSpans(d *sluicev1.Delivery, ep *sluicev1.Endpoint) (process, client trace.Span) {
	ctx := context.Background()
	if d.Traceparent != "" {
		if sc, ok := telemetry.ParseTraceparent(d.Traceparent, d.Tracestate); ok {
			ctx = trace.ContextWithRemoteSpanContext(ctx, sc)
		}
	}
	if !dv.tracing.Enabled() {
		s := trace.SpanFromContext(ctx)
		return s, s
	}
	ctx, process = dv.tracer.Start(ctx, "sluice delivery process", trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(
		semconv.MessagingSystemKafka,
		semconv.MessagingOperationTypeProcess,
		attribute.String("sluice.delivery.id", d.DeliveryId),
		attribute.String("sluice.endpoint.id", d.EndpointId),
		attribute.Int("sluice.attempt.number", int(d.AttemptsMade+1)),
	))
	attrs := []attribute.KeyValue{semconv.HTTPRequestMethodKey.String(fasthttp.MethodPost)}
	if u, err := url.Parse(ep.Url); err == nil {
		attrs = append(attrs, semconv.URLFull(RedactURL(u)), semconv.ServerAddress(u.Hostname()))
		if p, err := strconv.Atoi(u.Port()); err == nil {
			attrs = append(attrs, semconv.ServerPort(p))
		}
	}
	_, client = dv.tracer.Start(ctx, fasthttp.MethodPost, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
	return process, client
}

// RedactURL is u as a span shows it: no user info, no query string and no
// fragment, where endpoints commonly carry tokens.
func RedactURL(u *url.URL) string {
	c := *u
	c.User, c.RawQuery, c.ForceQuery, c.Fragment, c.RawFragment = nil, "", false, "", ""
	return c.String()
}

// endSpans ends an attempt's spans with its outcome.
func endSpans(process, client trace.Span, resp *fasthttp.Response, err error) {
	if !client.IsRecording() {
		return
	}
	if err != nil {
		client.SetStatus(codes.Error, err.Error())
		client.SetAttributes(attribute.String("error.type", fmt.Sprintf("%T", err)))
		process.SetStatus(codes.Error, err.Error())
	} else {
		status := resp.StatusCode()
		client.SetAttributes(semconv.HTTPResponseStatusCode(status))
		if status >= 400 {
			client.SetStatus(codes.Error, "")
			client.SetAttributes(attribute.String("error.type", strconv.Itoa(status)))
			process.SetStatus(codes.Error, "HTTP "+strconv.Itoa(status))
		}
	}
	client.End()
	process.End()
}

// headerCarrier writes a fasthttp request's headers for a propagator.
type headerCarrier struct{ h *fasthttp.RequestHeader }

func (c headerCarrier) Get(key string) string { return string(c.h.Peek(key)) }
func (c headerCarrier) Set(key, value string) { c.h.Set(key, value) }
func (c headerCarrier) Keys() []string        { return nil }

// traceID is the W3C trace id of a delivery without a trace context of its
// own: derived from the tenant and event, so every attempt to every endpoint of one event shares a trace and
// a receiver's traces join up with the attempt log's trace_id.
func traceID(d *sluicev1.Delivery) [16]byte {
	var stack [128]byte
	b := append(append(append(stack[:0], d.TenantId...), '/'), d.EventId...)
	sum := sha256.Sum256(b)
	return [16]byte(sum[:16])
}

// traceparent appends a W3C traceparent header value: version 00, the
// trace id, a new span id for this attempt, sampled.
func traceparent(dst []byte, trace [16]byte) []byte {
	var span [8]byte
	for span == [8]byte{} { // an all-zero span id is invalid
		v := rand.Uint64()
		for i := range span {
			span[i] = byte(v >> (8 * i))
		}
	}
	dst = append(dst, "00-"...)
	dst = hex.AppendEncode(dst, trace[:])
	dst = append(dst, '-')
	dst = hex.AppendEncode(dst, span[:])
	return append(dst, "-01"...)
}

// readExcerpt reads at most the configured number of body bytes.
func (dv *Deliverer) readExcerpt(resp *fasthttp.Response) []byte {
	if dv.opts.Excerpt == 0 {
		return nil
	}
	if s := resp.BodyStream(); s != nil {
		b, _ := io.ReadAll(io.LimitReader(s, int64(dv.opts.Excerpt)))
		return b
	}
	b := resp.Body()
	if len(b) > dv.opts.Excerpt {
		b = b[:dv.opts.Excerpt]
	}
	return append([]byte(nil), b...)
}
