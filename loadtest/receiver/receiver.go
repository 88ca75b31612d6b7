// Package receiver is a webhook receiver for tests, the demo and the load
// test: it records every webhook-id it is sent, per endpoint, so a run can
// count what arrived, what is missing and what came twice.
package receiver

import (
	"fmt"
	"net"
	"strings"
	"sync"

	"github.com/valyala/fasthttp"
)

// Delivery is one request as the receiver saw it.
type Delivery struct {
	Endpoint  string
	WebhookID string
	Timestamp string
	Body      []byte
}

// Receiver serves POST /e/{endpoint} and answers 204.
type Receiver struct {
	ln  net.Listener
	srv *fasthttp.Server

	mu   sync.Mutex
	seen map[string]map[string]int // endpoint → webhook-id → times received
	// OnDelivery, when set before Start, is called for every request.
	onDelivery func(Delivery)
}

// Option configures a Receiver.
type Option func(*Receiver)

// OnDelivery calls fn for every request received (from many goroutines).
func OnDelivery(fn func(Delivery)) Option { return func(r *Receiver) { r.onDelivery = fn } }

// Start listens on addr ("127.0.0.1:0" for any free port) and serves.
func Start(addr string, opts ...Option) (*Receiver, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("receiver: listening on %s: %w", addr, err)
	}
	r := &Receiver{ln: ln, seen: map[string]map[string]int{}}
	for _, o := range opts {
		o(r)
	}
	r.srv = &fasthttp.Server{Handler: r.handle, Name: "sluice-receiver"}
	go func() { _ = r.srv.Serve(ln) }()
	return r, nil
}

// URL is the address to give an endpoint named name.
func (r *Receiver) URL(name string) string { return "http://" + r.ln.Addr().String() + "/e/" + name }

// Close stops the receiver.
func (r *Receiver) Close() error { return r.srv.Shutdown() }

func (r *Receiver) handle(ctx *fasthttp.RequestCtx) {
	endpoint, ok := strings.CutPrefix(string(ctx.Path()), "/e/")
	if !ok || !ctx.IsPost() {
		ctx.SetStatusCode(fasthttp.StatusNotFound)
		return
	}
	id := string(ctx.Request.Header.Peek("webhook-id"))
	if id == "" {
		ctx.SetStatusCode(fasthttp.StatusBadRequest)
		ctx.SetBodyString("missing webhook-id")
		return
	}
	r.mu.Lock()
	ids := r.seen[endpoint]
	if ids == nil {
		ids = map[string]int{}
		r.seen[endpoint] = ids
	}
	ids[id]++
	r.mu.Unlock()
	if r.onDelivery != nil {
		r.onDelivery(Delivery{Endpoint: endpoint, WebhookID: id,
			Timestamp: string(ctx.Request.Header.Peek("webhook-timestamp")),
			Body:      append([]byte(nil), ctx.Request.Body()...)})
	}
	ctx.SetStatusCode(fasthttp.StatusNoContent)
}

// Received returns, for endpoint, how many times each webhook-id arrived.
func (r *Receiver) Received(endpoint string) map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int, len(r.seen[endpoint]))
	for k, v := range r.seen[endpoint] {
		out[k] = v
	}
	return out
}

// Tally compares what endpoint received with the ids expected.
type Tally struct {
	Missing    []string // expected, never received
	Duplicates int      // receptions beyond the first
	Unexpected []string // received, never expected
}

// Tally counts endpoint's receptions against want.
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
