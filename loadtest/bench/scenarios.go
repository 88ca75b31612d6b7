package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/valyala/fasthttp"

	"github.com/sluicehq/sluice/loadtest/receiver"
	"github.com/sluicehq/sluice/pkg/eventrecord"
	"github.com/sluicehq/sluice/pkg/ids"
	"github.com/sluicehq/sluice/pkg/kafkax"
)

// Size is how much each scenario sends.
type Size struct {
	RawPosts    int // P0
	P1Events    int // per P1 variant
	P1sEvents   int
	P2Seconds   int
	P4Events    int // each to 100 endpoints
	P6Backlog   int // the 1× backlog
	Concurrency int // HTTP callers
	P7Rate      int // events/s to the tenant measured in P7
	P7Slow      int // events to the slow tenant in P7, each to its 10 endpoints
}

// Full is make bench; Quick is make bench-quick.
var (
	Full  = Size{RawPosts: 60000, P1Events: 40000, P1sEvents: 15000, P2Seconds: 15, P4Events: 300, P6Backlog: 2000, Concurrency: 64, P7Rate: 400, P7Slow: 600}
	Quick = Size{RawPosts: 15000, P1Events: 8000, P1sEvents: 4000, P2Seconds: 5, P4Events: 60, P6Backlog: 500, Concurrency: 64, P7Rate: 200, P7Slow: 300}
)

// Runner holds what the scenarios share.
type Runner struct {
	S    *Stack
	Recv *receiver.Receiver
	Size Size
	Logf func(string, ...any)

	// arrivals maps a webhook-id to when it arrived, while tracking.
	mu       sync.Mutex
	track    bool
	arrivals map[string]time.Time
	count    atomic.Int64
	http     *fasthttp.Client
	producer *kgo.Client
}

// NewRunner starts the receiver, with opts beside the runner's own.
func NewRunner(s *Stack, size Size, logf func(string, ...any), opts ...receiver.Option) (*Runner, error) {
	r := &Runner{S: s, Size: size, Logf: logf, arrivals: map[string]time.Time{},
		http: &fasthttp.Client{MaxConnsPerHost: 512, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second}}
	recv, err := receiver.Start("127.0.0.1:0", append([]receiver.Option{receiver.OnDelivery(func(d receiver.Delivery) {
		r.count.Add(1)
		r.mu.Lock()
		if r.track {
			if _, seen := r.arrivals[d.WebhookID]; !seen {
				r.arrivals[d.WebhookID] = time.Now()
			}
		}
		r.mu.Unlock()
	})}, opts...)...)
	if err != nil {
		return nil, err
	}
	r.Recv = recv
	if r.producer, err = kafkax.NewProducer(s.Kafka, kgo.MaxBufferedRecords(100000), kgo.ProducerLinger(5*time.Millisecond)); err != nil {
		return nil, err
	}
	return r, nil
}

// Close stops the receiver and the producer.
func (r *Runner) Close() {
	r.producer.Close()
	r.Recv.Close()
}

// Endpoint is one endpoint made for a scenario: its id and its name at the
// receiver.
type Endpoint struct {
	ID, Name string
}

// Tenant makes a tenant and returns its id and an API key of it.
func (r *Runner) Tenant(ctx context.Context, name string) (string, string, error) {
	var t struct{ ID string }
	if err := r.S.API(ctx, "POST", "/v1/tenants", r.S.AdminKey, map[string]any{"name": name}, &t); err != nil {
		return "", "", err
	}
	var k struct{ Key string }
	if err := r.S.API(ctx, "POST", "/v1/tenants/"+t.ID+"/api-keys", r.S.AdminKey, map[string]any{"name": "bench"}, &k); err != nil {
		return "", "", err
	}
	return t.ID, k.Key, nil
}

// Subscribe is the body of an endpoint subscribed to filter, with the
// scenarios' concurrency.
func Subscribe(filter string) map[string]any {
	return map[string]any{"events": []string{filter}, "max_in_flight": 20}
}

// Endpoints makes n endpoints through the API, receiver endpoint names
// prefix+i, each created with body(i) plus its url; the receiver verifies
// each one's signatures.
func (r *Runner) Endpoints(ctx context.Context, key, prefix string, n int, body func(i int) map[string]any) ([]Endpoint, error) {
	out := make([]Endpoint, n)
	errs := make([]error, n)
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			name := prefix + strconv.Itoa(i)
			req := body(i)
			req["url"] = r.Recv.URL(name)
			var ep struct{ ID, Secret string }
			errs[i] = r.S.API(ctx, "POST", "/v1/endpoints", key, req, &ep)
			if errs[i] == nil {
				errs[i] = r.Recv.SetSecret(name, ep.Secret)
			}
			out[i] = Endpoint{ID: ep.ID, Name: name}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Event is one event to send.
type Event struct {
	ID, Type string
}

var payload = json.RawMessage(`{"order_id":"ord_123456","amount":4200,"currency":"EUR","customer":{"id":"cus_98765","email":"buyer@example.com"},"lines":[{"sku":"sku_1","qty":2},{"sku":"sku_2","qty":1}]}`)

// sendHTTP sends events in batches of batch (1: POST /v1/events) with
// concurrency callers; sent, when not nil, gets each event's 202 time.
func (r *Runner) sendHTTP(ctx context.Context, key string, evs []Event, batch, concurrency int, sent func(id string, at time.Time)) error {
	var next atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range concurrency {
		wg.Go(func() {
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			for {
				i := int(next.Add(int64(batch))) - batch
				if i >= len(evs) || ctx.Err() != nil {
					return
				}
				chunk := evs[i:min(i+batch, len(evs))]
				if err := r.post(req, resp, key, chunk, batch > 1); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				if sent != nil {
					now := time.Now()
					for _, e := range chunk {
						sent(e.ID, now)
					}
				}
			}
		})
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return err
	}
	return nil
}

// post sends one request of events, retrying those the API answers 503
// (its back-pressure) up to 50 times.
func (r *Runner) post(req *fasthttp.Request, resp *fasthttp.Response, key string, evs []Event, asBatch bool) error {
	for attempt := 0; ; attempt++ {
		EventsRequest(req, r.S.APIURL, key, evs, asBatch)
		if err := r.http.Do(req, resp); err != nil {
			return fmt.Errorf("POST %s: %w", req.URI().Path(), err)
		}
		_, again, err := Accepted(resp, evs, asBatch)
		switch {
		case err != nil:
			return err
		case len(again) > 0 && attempt < 50:
			evs = again
			time.Sleep(100 * time.Millisecond)
		case len(again) > 0:
			return fmt.Errorf("POST %s: %d events still answered 503 after %d tries", req.URI().Path(), len(again), attempt+1)
		default:
			return nil
		}
	}
}

// EventsRequest makes req a POST of evs to the events API at apiURL: one
// event (POST /v1/events, evs holding one) or a batch.
func EventsRequest(req *fasthttp.Request, apiURL, key string, evs []Event, asBatch bool) {
	type item struct {
		Type string          `json:"type"`
		ID   string          `json:"id"`
		Data json.RawMessage `json:"data"`
	}
	var body []byte
	path := "/v1/events"
	if asBatch {
		items := make([]item, len(evs))
		for i, e := range evs {
			items[i] = item{e.Type, e.ID, payload}
		}
		body, _ = json.Marshal(map[string]any{"events": items})
		path = "/v1/events/batch"
	} else {
		body, _ = json.Marshal(item{evs[0].Type, evs[0].ID, payload})
	}
	req.Reset()
	req.Header.SetMethod("POST")
	req.SetRequestURI(apiURL + path)
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.SetContentType("application/json")
	req.SetBody(body)
}

// Accepted reads the events API's answer to an EventsRequest of evs: the
// events it accepted (a 202 for one event, a result with an id for each of
// a batch; a duplicate is accepted too: it is in Kafka already) and those
// it answered 503, which a client sends again. Any other answer is an
// error.
func Accepted(resp *fasthttp.Response, evs []Event, asBatch bool) (accepted, again []Event, err error) {
	code := resp.StatusCode()
	switch {
	case code == fasthttp.StatusServiceUnavailable:
		return nil, evs, nil
	case !asBatch && code == fasthttp.StatusAccepted:
		return evs, nil, nil
	case !asBatch || code != fasthttp.StatusOK:
		return nil, nil, fmt.Errorf("POST events: %d %s", code, resp.Body())
	}
	var results struct {
		Data []struct {
			ID    string `json:"id"`
			Error *struct {
				Status int `json:"status"`
			} `json:"error"`
		} `json:"data"`
	}
	if err := json.Unmarshal(resp.Body(), &results); err != nil || len(results.Data) != len(evs) {
		return nil, nil, fmt.Errorf("POST events/batch: %d results for %d events (%v): %.200s", len(results.Data), len(evs), err, resp.Body())
	}
	for i, res := range results.Data {
		switch {
		case res.Error == nil && res.ID == evs[i].ID:
			accepted = append(accepted, evs[i])
		case res.Error != nil && res.Error.Status == fasthttp.StatusServiceUnavailable:
			again = append(again, evs[i])
		default:
			return nil, nil, fmt.Errorf("POST events/batch: event %s: %+v", evs[i].ID, res)
		}
	}
	return accepted, again, nil
}

// sendKafka publishes events straight to the events topic in the producer
// contract, as a Kafka-native producer does.
func (r *Runner) sendKafka(ctx context.Context, tenant string, evs []Event) error {
	var firstErr atomic.Value
	for _, e := range evs {
		r.producer.Produce(ctx, EventRecord(r.S.Names.Events, tenant, e), func(_ *kgo.Record, err error) {
			if err != nil {
				firstErr.CompareAndSwap(nil, err)
			}
		})
	}
	if err := r.producer.Flush(ctx); err != nil {
		return err
	}
	if err, _ := firstErr.Load().(error); err != nil {
		return fmt.Errorf("producing events: %w", err)
	}
	return nil
}

// EventRecord is e as a record of the sluice.events producer contract:
// tenant, type and id in headers, the JSON data as the value.
func EventRecord(topic, tenant string, e Event) *kgo.Record {
	return &kgo.Record{Topic: topic, Key: eventrecord.Key(tenant, e.ID), Value: payload,
		Headers: []kgo.RecordHeader{
			{Key: eventrecord.HeaderTenant, Value: []byte(tenant)},
			{Key: eventrecord.HeaderType, Value: []byte(e.Type)},
			{Key: eventrecord.HeaderID, Value: []byte(e.ID)},
		}}
}

// tally checks that every (endpoint name → event ids) arrived, waiting up
// to within; it returns missing and duplicate counts.
func (r *Runner) tally(want map[string][]string, within time.Duration) (missing, dups int) {
	deadline := time.Now().Add(within)
	for {
		missing, dups = 0, 0
		for name, evIDs := range want {
			t := r.Recv.Tally(name, evIDs)
			missing += len(t.Missing)
			dups += t.Duplicates
		}
		if missing == 0 || time.Now().After(deadline) {
			return missing, dups
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitCount waits until the receiver has counted n deliveries since base,
// printing progress, and returns when the last arrived.
func (r *Runner) waitCount(base, n int64, within time.Duration, what string) (time.Time, bool) {
	deadline := time.Now().Add(within)
	lastShown := time.Now()
	for {
		got := r.count.Load() - base
		if got >= n {
			return time.Now(), true
		}
		if time.Since(lastShown) > 2*time.Second {
			r.Logf("  %s: %d of %d delivered", what, got, n)
			lastShown = time.Now()
		}
		if time.Now().After(deadline) {
			return time.Now(), false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// cpuSnapshot reads every process's CPU time, this one's included.
func (r *Runner) cpuSnapshot() map[string]time.Duration {
	out := map[string]time.Duration{"driver": SelfCPU()}
	for name, p := range r.S.Procs {
		if c, err := p.CPU(); err == nil {
			out[name] = c
		}
	}
	return out
}

func cpuDelta(a, b map[string]time.Duration) map[string]float64 {
	out := map[string]float64{}
	for k, v := range b {
		out[k] = (v - a[k]).Seconds()
	}
	return out
}

// percentile of sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p * float64(len(sorted)-1))
	return sorted[i]
}

// latencies are arrival minus send times of ids.
func (r *Runner) latencies(sent map[string]time.Time) []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []time.Duration
	for id, at := range sent {
		if got, ok := r.arrivals[id]; ok {
			out = append(out, got.Sub(at))
		}
	}
	slices.Sort(out)
	return out
}

func (r *Runner) startTracking() {
	r.mu.Lock()
	r.track, r.arrivals = true, map[string]time.Time{}
	r.mu.Unlock()
}

func (r *Runner) stopTracking() {
	r.mu.Lock()
	r.track = false
	r.mu.Unlock()
}

func NewEvents(n int, typ func(i int) string) []Event {
	out := make([]Event, n)
	for i := range out {
		out[i] = Event{ID: ids.New(ids.Event), Type: typ(i)}
	}
	return out
}
