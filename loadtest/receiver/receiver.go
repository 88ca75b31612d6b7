// Package receiver is a webhook receiver for tests, the demo and the load
// test: it records every webhook-id it is sent, per endpoint, so a run can
// count what arrived, what is missing and what came twice. Per endpoint it
// can also misbehave on purpose (delay, hang, fail the first attempts),
// measure how many requests the sender has open at once, and verify
// Standard Webhooks signatures with the independent reference library, so
// a test of the sender checks it against someone else's reading of the spec.
package receiver

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"github.com/valyala/fasthttp"
)

const (
	// maxConns is fasthttp's Concurrency: the connections served at once.
	// Beyond it fasthttp answers 503 on its own, which the sender would
	// count as a receiver failure and retry, so the receiver must never be
	// the limit under test. A sender process holds at most max-in-flight
	// (256 by default) connections, so 64 Ki covers 256 such processes;
	// each served connection costs about 16 KiB (goroutine stack and 4 KiB
	// read and write buffers), so the worst case is about 1 GiB, reached
	// only by a run that also raised its file descriptor limit that far.
	maxConns = 64 * 1024
	// closeGrace is how long Close lets requests already being answered
	// finish before it closes their connections. Delayed and hanging
	// handlers are released at once, so only a client stalled in the middle
	// of sending a request can use it up.
	closeGrace = time.Second
	// maxIdleWorker is fasthttp's MaxIdleWorkerDuration; see Serve.
	maxIdleWorker = 250 * time.Millisecond
)

// Delivery is one request as the receiver saw it.
type Delivery struct {
	Endpoint  string
	WebhookID string
	Timestamp string
	Body      []byte
}

// Behavior is how an endpoint answers a request that passed verification
// (if the endpoint has a secret). The zero Behavior answers 204 at once.
type Behavior struct {
	// Delay is how long to wait before answering. A request whose client
	// gives up meanwhile is still answered and, with a 2xx, counted as
	// delivered, as by a real receiver that did the work: the sender's
	// retry then shows up as a duplicate.
	Delay time.Duration
	// Hang never answers: the request stays open until the client closes
	// the connection (its timeout) or the receiver closes, and then the
	// connection is closed without a response.
	Hang bool
	// Status, when not 0, is answered instead of 204. 2xx counts as
	// delivered; anything else as a failure.
	Status int
	// FailFirst, with Status set, answers Status only to the first
	// FailFirst requests of each webhook-id and 204 after that; 0 answers
	// Status always.
	FailFirst int
	// RetryAfter is the Retry-After header sent with a failure status.
	RetryAfter string
	// BurstEvery and BurstFor, with Status set and BurstEvery > 0, make
	// failures come and go: Status is answered during the first BurstFor
	// of every BurstEvery, counted from SetBehavior, and 204 in between.
	BurstEvery, BurstFor time.Duration
	// Reset reads the request and then resets the connection (TCP RST)
	// without answering, as a receiver that crashes mid-request does.
	Reset bool
	// SlowBody writes the answer's body (200 with a body of slowBodyBytes
	// instead of 204, or Status's) in slowBodyPieces pieces spread over this
	// long; the status line and headers go first.
	SlowBody time.Duration

	// setAt is when SetBehavior stored it: the start of the first burst.
	setAt time.Time
}

const (
	// slowBodyPieces and slowBodyBytes shape a SlowBody answer: 8 pieces of
	// 64 bytes, small enough for any excerpt limit, enough pieces to be
	// slow throughout rather than once.
	slowBodyPieces = 8
	slowBodyBytes  = 512
)

// Arrival is one request to an endpoint, in the order they arrived.
type Arrival struct {
	ID     string    // webhook-id, "" when the request had none
	At     time.Time // when the request entered the handler
	Status int       // status answered; 0 while pending or if never answered (Hang, Close)
}

// Receiver serves POST /e/{endpoint} and answers 204, or what the
// endpoint's Behavior says.
type Receiver struct {
	ln     net.Listener
	srv    *fasthttp.Server
	served chan struct{} // closed when Serve has returned
	// done is closed by Close to release delayed and hanging handlers:
	// fasthttp's Shutdown waits for every handler to return.
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error

	onDelivery   func(Delivery)
	keepArrivals bool
	now          func() time.Time // the clock of bursts; time.Now unless WithClock

	requests      atomic.Int64
	badSignatures atomic.Int64
	badBodies     atomic.Int64

	mu        sync.RWMutex
	endpoints map[string]*endpoint // grows by endpoint name, a handful per test

	// conns are the open connections, closed by Close if a client stalls
	// mid-request past closeGrace: with no read timeout nothing else would
	// end fasthttp's read.
	connMu sync.Mutex
	conns  map[net.Conn]struct{}
}

// endpoint is the state of one endpoint name.
type endpoint struct {
	inFlight    atomic.Int64
	maxInFlight atomic.Int64
	behavior    atomic.Pointer[Behavior]                 // nil answers 204 at once
	verifier    atomic.Pointer[standardwebhooks.Webhook] // nil verifies nothing

	mu sync.Mutex
	// seen counts deliveries answered 2xx per webhook-id: the sender's
	// notion of delivered, which Received and Tally compare against.
	seen map[string]int
	// failed counts failure answers per webhook-id for FailFirst; it grows
	// only while an endpoint is set to fail.
	failed   map[string]int
	arrivals []Arrival // only with KeepArrivals
}

// Option configures a Receiver.
type Option func(*Receiver)

// OnDelivery calls fn for every request answered 2xx (from many
// goroutines), before the answer is sent. Without behaviours or secrets
// that is every request with a webhook-id.
func OnDelivery(fn func(Delivery)) Option { return func(r *Receiver) { r.onDelivery = fn } }

// KeepArrivals records every request per endpoint for Arrivals. It is off
// by default because a load test sends millions of requests and needs only
// the per-id counts.
func KeepArrivals() Option { return func(r *Receiver) { r.keepArrivals = true } }

// WithClock makes the receiver read the time of bursts (BurstEvery,
// BurstFor) from now instead of time.Now, so a test can move it.
func WithClock(now func() time.Time) Option { return func(r *Receiver) { r.now = now } }

// Start listens on addr ("127.0.0.1:0" for any free port) and serves.
func Start(addr string, opts ...Option) (*Receiver, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("receiver: listening on %s: %w", addr, err)
	}
	return Serve(ln, opts...), nil
}

// Serve serves on ln, which Close closes. Start is Serve on a TCP
// listener; tests and benchmarks may pass an in-memory one.
func Serve(ln net.Listener, opts ...Option) *Receiver {
	r := &Receiver{
		ln:        ln,
		served:    make(chan struct{}),
		done:      make(chan struct{}),
		endpoints: map[string]*endpoint{},
		conns:     map[net.Conn]struct{}{},
		now:       time.Now,
	}
	for _, o := range opts {
		o(r)
	}
	r.srv = &fasthttp.Server{
		Handler:     r.handle,
		Name:        "sluice-receiver",
		Concurrency: maxConns,
		// No read or idle timeout. The receiver must never be the side
		// that gives up: the sender's timeouts (up to 60 s per endpoint)
		// are what is under test, and a receiver closing idle keep-alive
		// connections races with the sender reusing them, a failure a
		// load test would wrongly blame on the sender. Close ends them.
		ReadTimeout: 0,
		IdleTimeout: 0,
		// Keep per-connection buffers between requests: under load the
		// same connections are reused at once, and releasing buffers to
		// the pool after each request costs CPU for memory we need again.
		ReduceMemoryUsage: false,
		// Answers sent while Close runs say Connection: close, so clients
		// do not reuse a connection that is about to go.
		CloseOnShutdown: true,
		// fasthttp's worker-pool cleaner sleeps this long between rounds
		// and notices Shutdown only when it wakes, so it outlives Close
		// by up to this (10 s by default, which a leak check in a test
		// would catch). A worker serves a whole keep-alive connection, so
		// reaping idle workers sooner costs only a goroutine start per
		// new connection.
		MaxIdleWorkerDuration: maxIdleWorker,
		ConnState:             r.trackConn,
	}
	go func() {
		defer close(r.served)
		_ = r.srv.Serve(ln)
	}()
	return r
}

// URL is the address to give an endpoint named name.
func (r *Receiver) URL(name string) string { return "http://" + r.ln.Addr().String() + "/e/" + name }

// Close stops the receiver: it releases delayed and hanging requests
// (closing their connections without an answer), lets requests being
// answered finish for up to a second, and returns once every connection
// and the serving goroutine are gone; fasthttp's worker-pool cleaner ends
// within a further 250 ms. Calling it again returns the first result.
func (r *Receiver) Close() error {
	r.closeOnce.Do(func() { r.closeErr = r.close() })
	return r.closeErr
}

func (r *Receiver) close() error {
	close(r.done)
	ctx, cancel := context.WithTimeout(context.Background(), closeGrace)
	defer cancel()
	err := r.srv.ShutdownWithContext(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = r.closeConns()
	}
	<-r.served
	if err != nil {
		return fmt.Errorf("receiver: closing: %w", err)
	}
	return nil
}

// closeConns closes the connections Shutdown did not see go idle and
// waits, bounded, for fasthttp to let go of them.
func (r *Receiver) closeConns() error {
	r.connMu.Lock()
	for c := range r.conns {
		_ = c.Close()
	}
	r.connMu.Unlock()
	deadline := time.Now().Add(closeGrace)
	for {
		r.connMu.Lock()
		open := len(r.conns)
		r.connMu.Unlock()
		if open == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d connections still open", open)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// trackConn is fasthttp's ConnState hook; it runs per connection, not per
// request, for the states it acts on.
func (r *Receiver) trackConn(c net.Conn, s fasthttp.ConnState) {
	switch s {
	case fasthttp.StateNew:
		r.connMu.Lock()
		r.conns[c] = struct{}{}
		r.connMu.Unlock()
	case fasthttp.StateClosed, fasthttp.StateHijacked:
		r.connMu.Lock()
		delete(r.conns, c)
		r.connMu.Unlock()
	}
}

// SetBehavior sets how endpoint answers from now on; requests already in
// the handler keep the behaviour they arrived under.
func (r *Receiver) SetBehavior(endpoint string, b Behavior) {
	b.setAt = r.now()
	r.endpoint([]byte(endpoint)).behavior.Store(&b)
}

// SetSecret makes endpoint verify every request against secret
// ("whsec_" and base64, as Sluice issues them) with the Standard Webhooks
// library: a bad or missing signature is answered 401, a body that is not
// {"id","type","timestamp","data"} with id equal to webhook-id 400. An
// empty secret turns verification off.
func (r *Receiver) SetSecret(endpoint, secret string) error {
	ep := r.endpoint([]byte(endpoint))
	if secret == "" {
		ep.verifier.Store(nil)
		return nil
	}
	key, ok := strings.CutPrefix(secret, "whsec_")
	if !ok || key == "" {
		return fmt.Errorf("receiver: secret for endpoint %s: want whsec_ and base64", endpoint)
	}
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		return fmt.Errorf("receiver: secret for endpoint %s: %w", endpoint, err)
	}
	ep.verifier.Store(wh)
	return nil
}

// endpoint returns the state of name, creating it on first use. Looking up
// with string(name) does not allocate, so only a new endpoint does.
func (r *Receiver) endpoint(name []byte) *endpoint {
	r.mu.RLock()
	ep := r.endpoints[string(name)]
	r.mu.RUnlock()
	if ep != nil {
		return ep
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if ep = r.endpoints[string(name)]; ep == nil {
		ep = &endpoint{seen: map[string]int{}}
		r.endpoints[string(name)] = ep
	}
	return ep
}

// lookup returns the state of name, or nil if nothing was set for it and
// nothing has arrived, without creating it.
func (r *Receiver) lookup(name string) *endpoint {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.endpoints[name]
}

var endpointPrefix = []byte("/e/")

// handle serves one request. The path of a plain request allocates only
// the webhook-id string the receiver keeps: no fmt, no regexp.
func (r *Receiver) handle(ctx *fasthttp.RequestCtx) {
	r.requests.Add(1)
	name, ok := bytes.CutPrefix(ctx.Path(), endpointPrefix)
	if !ok || len(name) == 0 || !ctx.IsPost() {
		ctx.SetStatusCode(fasthttp.StatusNotFound)
		return
	}
	ep := r.endpoint(name)
	ep.enter()
	defer ep.inFlight.Add(-1)

	id := string(ctx.Request.Header.Peek(standardwebhooks.HeaderWebhookID))
	arrival := -1
	if r.keepArrivals {
		arrival = ep.arrive(id)
	}
	status, reset := r.answer(ctx, ep, id)
	switch {
	case reset:
		resetOnClose(ctx.Conn())
		ctx.HijackSetNoResponse(true)
		ctx.Hijack(func(net.Conn) {})
	case status == 0:
		// Released from a hang or delay: close the connection without a
		// response, as a receiver that never answered would.
		ctx.HijackSetNoResponse(true)
		ctx.Hijack(func(net.Conn) {})
	default:
		ctx.SetStatusCode(status)
	}
	delivered := status >= 200 && status < 300
	if delivered || arrival >= 0 {
		ep.mu.Lock()
		if delivered {
			ep.seen[id]++
		}
		if arrival >= 0 {
			ep.arrivals[arrival].Status = status
		}
		ep.mu.Unlock()
	}
	if delivered && r.onDelivery != nil {
		r.onDelivery(Delivery{Endpoint: string(name), WebhookID: id,
			Timestamp: string(ctx.Request.Header.Peek(standardwebhooks.HeaderWebhookTimestamp)),
			Body:      append([]byte(nil), ctx.Request.Body()...)})
	}
}

// resetOnClose makes closing c send a TCP RST instead of a FIN: with
// SO_LINGER 0 the kernel drops what is unsent and resets. It takes the
// server's own connection: the one a hijack hands over is a wrapper.
func resetOnClose(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
}

// answer verifies the request if the endpoint has a secret, then applies
// its Behavior. It returns the status to answer, having set any body and
// headers, or 0 when the request must not be answered; reset says the
// connection is to be reset instead.
func (r *Receiver) answer(ctx *fasthttp.RequestCtx, ep *endpoint, id string) (status int, reset bool) {
	if wh := ep.verifier.Load(); wh != nil {
		if reason := verifySignature(wh, &ctx.Request); reason != "" {
			r.badSignatures.Add(1)
			ctx.SetBodyString(reason)
			return fasthttp.StatusUnauthorized, false
		}
		if reason := checkBody(ctx.Request.Body(), id); reason != "" {
			r.badBodies.Add(1)
			ctx.SetBodyString(reason)
			return fasthttp.StatusBadRequest, false
		}
	} else if id == "" {
		ctx.SetBodyString("missing webhook-id")
		return fasthttp.StatusBadRequest, false
	}

	b := ep.behavior.Load()
	if b == nil {
		return fasthttp.StatusNoContent, false
	}
	if b.Reset {
		return 0, true
	}
	status = fasthttp.StatusNoContent
	if b.SlowBody > 0 {
		status = fasthttp.StatusOK
	}
	if b.Status != 0 && b.BurstEvery > 0 {
		if r.now().Sub(b.setAt)%b.BurstEvery < b.BurstFor {
			status = b.Status
		}
	} else if b.Status != 0 {
		status = b.Status
		if b.FailFirst > 0 {
			// Counted on arrival, so concurrent copies of one id each
			// take a failure of their own.
			ep.mu.Lock()
			if ep.failed == nil {
				ep.failed = map[string]int{}
			}
			if ep.failed[id] >= b.FailFirst {
				status = fasthttp.StatusNoContent
			} else {
				ep.failed[id]++
			}
			ep.mu.Unlock()
		}
	}
	if b.Delay > 0 && !r.sleep(b.Delay) {
		return 0, false
	}
	if b.Hang {
		r.hang(ctx.Conn())
		return 0, false
	}
	if (status < 200 || status >= 300) && b.RetryAfter != "" {
		ctx.Response.Header.Set("Retry-After", b.RetryAfter)
	}
	if b.SlowBody > 0 {
		pause := b.SlowBody / slowBodyPieces
		ctx.SetBodyStreamWriter(func(w *bufio.Writer) {
			piece := bytes.Repeat([]byte{'.'}, slowBodyBytes/slowBodyPieces)
			for range slowBodyPieces {
				// A write error is the client gone; Close ends the
				// pauses, so a slow answer never holds Close up.
				if _, err := w.Write(piece); err != nil || w.Flush() != nil || !r.sleep(pause) {
					return
				}
			}
		})
	}
	return status, false
}

// sleep waits d, or less if the receiver closes; it reports whether it
// waited the whole d.
func (r *Receiver) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.done:
		return false
	}
}

// hang returns when the client closes the connection or the receiver
// closes. fasthttp does not read from a connection while its handler runs,
// so a read here sees only the client going away (bytes it sends meanwhile
// are dropped; the connection is closed after a hang anyway). The reader is
// a goroutine so that Close can wake it with a past deadline; hang waits
// for it, so none outlives the handler.
func (r *Receiver) hang(conn net.Conn) {
	// fasthttp sets read deadlines only with a ReadTimeout, which Serve
	// leaves at 0; clearing keeps a future configuration from cutting a
	// hang short.
	if err := conn.SetReadDeadline(time.Time{}); err != nil {
		return
	}
	gone := make(chan struct{})
	go func() {
		defer close(gone)
		var b [1]byte
		for {
			if _, err := conn.Read(b[:]); err != nil {
				return
			}
		}
	}()
	select {
	case <-gone:
		return
	case <-r.done:
	}
	_ = conn.SetReadDeadline(time.Unix(1, 0))
	<-gone
}

// verifySignature checks the request with the Standard Webhooks library
// and returns "" or a short reason for the 401. The library takes an
// http.Header, so the three headers are copied into one; only signed
// endpoints pay for that.
func verifySignature(wh *standardwebhooks.Webhook, req *fasthttp.Request) string {
	h := make(http.Header, 3)
	for _, k := range [...]string{
		standardwebhooks.HeaderWebhookID,
		standardwebhooks.HeaderWebhookTimestamp,
		standardwebhooks.HeaderWebhookSignature,
	} {
		if v := req.Header.Peek(k); len(v) > 0 {
			h.Set(k, string(v))
		}
	}
	err := wh.Verify(req.Body(), h)
	switch {
	case err == nil:
		return ""
	case errors.Is(err, standardwebhooks.ErrRequiredHeaders):
		return "missing webhook-id, webhook-timestamp or webhook-signature"
	case errors.Is(err, standardwebhooks.ErrInvalidHeaders):
		return "webhook-timestamp is not Unix seconds"
	case errors.Is(err, standardwebhooks.ErrMessageTooOld):
		return "webhook-timestamp too old"
	case errors.Is(err, standardwebhooks.ErrMessageTooNew):
		return "webhook-timestamp too new"
	case errors.Is(err, standardwebhooks.ErrNoMatchingSignature):
		return "no matching signature"
	default:
		return err.Error()
	}
}

// bodyFields are the fields of a Sluice webhook body, each exactly once.
var bodyFields = [...]string{"id", "type", "timestamp", "data"}

// checkBody returns "" if body is a JSON object with exactly the fields
// id, type, timestamp and data, id equal to webhook-id, type a non-empty
// string, timestamp RFC 3339 and data any JSON value; otherwise a short
// reason for the 400. It reads tokens rather than decoding into a map so a
// repeated field, which a map would silently merge, is caught.
func checkBody(body []byte, webhookID string) string {
	dec := json.NewDecoder(bytes.NewReader(body))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return "body is not a JSON object"
	}
	var seen [len(bodyFields)]bool
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return "body is not JSON"
		}
		key, _ := t.(string) // inside an object a token is a key
		i := 0
		for i < len(bodyFields) && bodyFields[i] != key {
			i++
		}
		if i == len(bodyFields) {
			return "body has a field other than id, type, timestamp, data"
		}
		if seen[i] {
			return "body repeats field " + key
		}
		seen[i] = true
		if key == "data" {
			var raw json.RawMessage
			if err := dec.Decode(&raw); err != nil {
				return "body data is not JSON"
			}
			continue
		}
		var s string
		if err := dec.Decode(&s); err != nil {
			return "body " + key + " is not a string"
		}
		switch key {
		case "id":
			if s != webhookID {
				return "body id differs from webhook-id"
			}
		case "type":
			if s == "" {
				return "body type is empty"
			}
		case "timestamp":
			if _, err := time.Parse(time.RFC3339, s); err != nil {
				return "body timestamp is not RFC 3339"
			}
		}
	}
	if t, err := dec.Token(); err != nil || t != json.Delim('}') {
		return "body is not JSON"
	}
	if _, err := dec.Token(); err != io.EOF {
		return "body has more after the JSON object"
	}
	for i, ok := range seen {
		if !ok {
			return "body lacks field " + bodyFields[i]
		}
	}
	return ""
}

// enter counts a request into the handler and raises the maximum if it is
// a new one; exact under concurrency because each request sees the count
// its own Add produced.
func (ep *endpoint) enter() {
	n := ep.inFlight.Add(1)
	for {
		m := ep.maxInFlight.Load()
		if n <= m || ep.maxInFlight.CompareAndSwap(m, n) {
			return
		}
	}
}

// arrive records an arrival and returns its index for the final status.
func (ep *endpoint) arrive(id string) int {
	now := time.Now()
	ep.mu.Lock()
	defer ep.mu.Unlock()
	ep.arrivals = append(ep.arrivals, Arrival{ID: id, At: now})
	return len(ep.arrivals) - 1
}

// Received returns, for endpoint, how many times each webhook-id was
// delivered (answered 2xx).
func (r *Receiver) Received(endpoint string) map[string]int {
	ep := r.lookup(endpoint)
	if ep == nil {
		return map[string]int{}
	}
	ep.mu.Lock()
	defer ep.mu.Unlock()
	out := make(map[string]int, len(ep.seen))
	for k, v := range ep.seen {
		out[k] = v
	}
	return out
}

// Arrivals returns a copy of every request endpoint received, in arrival
// order; nil unless the receiver was started with KeepArrivals.
func (r *Receiver) Arrivals(endpoint string) []Arrival {
	ep := r.lookup(endpoint)
	if ep == nil {
		return nil
	}
	ep.mu.Lock()
	defer ep.mu.Unlock()
	if len(ep.arrivals) == 0 {
		return nil
	}
	return append([]Arrival(nil), ep.arrivals...)
}

// InFlight is the number of requests to endpoint inside the handler now,
// including delayed and hanging ones.
func (r *Receiver) InFlight(endpoint string) int {
	if ep := r.lookup(endpoint); ep != nil {
		return int(ep.inFlight.Load())
	}
	return 0
}

// MaxConcurrent is the most requests to endpoint ever inside the handler
// at once: what a per-endpoint concurrency limit of the sender must bound.
func (r *Receiver) MaxConcurrent(endpoint string) int {
	if ep := r.lookup(endpoint); ep != nil {
		return int(ep.maxInFlight.Load())
	}
	return 0
}

// Requests is the number of requests received, on any path.
func (r *Receiver) Requests() int64 { return r.requests.Load() }

// BadSignatures is the number of requests to endpoints with a secret that
// failed verification or lacked a webhook-* header.
func (r *Receiver) BadSignatures() int64 { return r.badSignatures.Load() }

// BadBodies is the number of correctly signed requests whose body was not
// a Sluice webhook body for their webhook-id.
func (r *Receiver) BadBodies() int64 { return r.badBodies.Load() }

// Tally compares what endpoint received with the ids expected.
type Tally struct {
	Missing    []string // expected, never received
	Duplicates int      // receptions beyond the first
	Unexpected []string // received, never expected
}

// Tally counts endpoint's deliveries against want.
func (r *Receiver) Tally(endpoint string, want []string) Tally {
	got := r.Received(endpoint)
	var t Tally
	wanted := make(map[string]bool, len(want))
	for _, id := range want {
		wanted[id] = true
		if got[id] == 0 {
			t.Missing = append(t.Missing, id)
		}
	}
	for id, n := range got {
		if !wanted[id] {
			t.Unexpected = append(t.Unexpected, id)
		}
		if n > 1 {
			t.Duplicates += n - 1
		}
	}
	return t
}
