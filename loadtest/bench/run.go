package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/sluicehq/sluice/loadtest/receiver"
)

// Result is one scenario's figure, its DESIGN §9 target and whether it
// meets it, and what the receiver counted.
type Result struct {
	ID     string  `json:"id"`
	Name   string  `json:"name"`
	Figure string  `json:"figure"`
	Value  float64 `json:"value"`
	Target string  `json:"target"`
	// Meets is nil for a figure without a target.
	Meets      *bool  `json:"meets,omitempty"`
	Sent       int    `json:"sent"`
	Missing    int    `json:"missing"`
	Duplicates int    `json:"duplicates"`
	Note       string `json:"note,omitempty"`
}

// Report is a whole run.
type Report struct {
	Started  time.Time `json:"started"`
	Seconds  float64   `json:"seconds"`
	Quick    bool      `json:"quick"`
	Machine  string    `json:"machine"`
	Results  []Result  `json:"results"`
	Failures []string  `json:"failures,omitempty"`
}

func yes(b bool) *bool { return &b }

// Run runs every scenario in order; a scenario that loses deliveries or
// cannot run is recorded as a failure and the run goes on.
func (r *Runner) Run(ctx context.Context, rep *Report) {
	fail := func(id string, err error) {
		r.Logf("%s failed: %v", id, err)
		rep.Failures = append(rep.Failures, fmt.Sprintf("%s: %v", id, err))
	}
	raw, rawCPU, err := r.p0(ctx, rep)
	if err != nil {
		fail("P0", err)
		return
	}
	p1, err := r.p1(ctx, rep, raw, rawCPU)
	if err != nil {
		fail("P1", err)
		return
	}
	p2p99, p2rate, err := r.p2(ctx, rep, p1)
	if err != nil {
		fail("P2", err)
	}
	if err := r.p3(ctx, rep, p2rate, p2p99); err != nil {
		fail("P3", err)
	}
	if err := r.p4(ctx, rep, raw); err != nil {
		fail("P4", err)
	}
	if err := r.p6(ctx, rep); err != nil {
		fail("P6", err)
	}
	if err := r.p7(ctx, rep); err != nil {
		fail("P7", err)
	}
}

// Scenarios are the scenarios RunOne runs alone: those that need no other
// scenario's figure.
var Scenarios = []string{"P7"}

// RunOne runs scenario id alone (one of Scenarios).
func (r *Runner) RunOne(ctx context.Context, rep *Report, id string) error {
	switch id {
	case "P7":
		if err := r.p7(ctx, rep); err != nil {
			rep.Failures = append(rep.Failures, fmt.Sprintf("P7: %v", err))
		}
		return nil
	}
	return fmt.Errorf("scenario %q cannot run alone; these can: %v", id, Scenarios)
}

var webhookBody = []byte(`{"id":"evt_01JD3K6Z8WQ4V0M5T7E9RXN2BC","type":"bench.p1.e1","timestamp":"2026-11-22T08:26:40.123Z","data":` + string(payload) + `}`)

// p0 is the ceiling: fasthttp POSTs of a webhook's body and headers
// straight to the receiver, Concurrency at a time.
func (r *Runner) p0(ctx context.Context, rep *Report) (rate, cpuPerPost float64, err error) {
	n, c := r.Size.RawPosts, r.Size.Concurrency
	r.Logf("P0: %d raw POSTs, %d at a time", n, c)
	cl := &fasthttp.Client{MaxConnsPerHost: c}
	var next atomic.Int64
	var failed atomic.Int64
	cpu0 := SelfCPU()
	start := time.Now()
	var wg sync.WaitGroup
	for range c {
		wg.Go(func() {
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			for i := next.Add(1); i <= int64(n); i = next.Add(1) {
				req.Reset()
				req.Header.SetMethod("POST")
				req.SetRequestURI(r.Recv.URL("raw"))
				req.Header.SetContentType("application/json")
				req.Header.Set("webhook-id", "raw_"+strconv.FormatInt(i, 10))
				req.Header.Set("webhook-timestamp", strconv.FormatInt(time.Now().Unix(), 10))
				req.Header.Set("webhook-signature", "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=")
				req.SetBody(webhookBody)
				if err := cl.Do(req, resp); err != nil || resp.StatusCode() != 204 {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	if failed.Load() > 0 {
		return 0, 0, fmt.Errorf("%d raw POSTs failed", failed.Load())
	}
	rate = float64(n) / secs
	cpuPerPost = (SelfCPU() - cpu0).Seconds() / float64(n)
	rep.Results = append(rep.Results, Result{ID: "P0", Name: "raw fasthttp POST ceiling", Sent: n,
		Figure: fmt.Sprintf("%.0f POST/s", rate), Value: rate, Target: "(the reference)",
		Note: fmt.Sprintf("%d at a time; %.1f µs CPU per POST (client and receiver)", c, cpuPerPost*1e6)})
	return rate, cpuPerPost, nil
}

// p1 runs the maximum-rate scenarios over 1,000 endpoints: batches over
// HTTP (with CPU per delivery and the log's completeness, P5), straight to
// Kafka, and one event per request (P1s).
func (r *Runner) p1(ctx context.Context, rep *Report, raw, rawCPU float64) (float64, error) {
	tenant, key, err := r.Tenant(ctx, "bench-p1")
	if err != nil {
		return 0, err
	}
	r.Logf("P1: making 1,000 endpoints")
	eps, err := r.Endpoints(ctx, key, "p1e", 1000, func(i int) map[string]any { return Subscribe("bench.p1.e" + strconv.Itoa(i)) })
	if err != nil {
		return 0, err
	}
	typ := func(i int) string { return "bench.p1.e" + strconv.Itoa(i%1000) }
	// Warm-up, not measured: one event per endpoint, so first contact
	// (connections, signer caches, partition leaders) is out of the
	// figures. The first round after creating 1,000 endpoints has shown a
	// stall of several seconds; its duration is reported as a note.
	warm := NewEvents(1000, typ)
	base := r.count.Load()
	warmStart := time.Now()
	if err := r.sendHTTP(ctx, key, warm, 100, 8, nil); err != nil {
		return 0, fmt.Errorf("warm-up: %w", err)
	}
	if _, ok := r.waitCount(base, 1000, 3*time.Minute, "P1 warm-up"); !ok {
		return 0, fmt.Errorf("warm-up: not all 1,000 delivered within 3 minutes")
	}
	warmSecs := time.Since(warmStart).Seconds()
	r.Logf("P1 warm-up: 1,000 events in %.1f s", warmSecs)
	want := func(evs []Event) map[string][]string {
		m := map[string][]string{}
		for i, e := range evs {
			name := eps[i%1000].Name
			m[name] = append(m[name], e.ID)
		}
		return m
	}
	var batchRate float64
	for _, v := range []struct {
		id, name, target string
		min              float64
		events           int
		send             func([]Event) error
	}{
		{"P1", "1,000 endpoints, events in HTTP batches of 100", "≥ 0.5 × P0", 0.5, r.Size.P1Events,
			func(evs []Event) error { return r.sendHTTP(ctx, key, evs, 100, 8, nil) }},
		{"P1k", "1,000 endpoints, events published straight to Kafka", "≥ 0.5 × P0", 0.5, r.Size.P1Events,
			func(evs []Event) error { return r.sendKafka(ctx, tenant, evs) }},
		{"P1s", "1,000 endpoints, one event per HTTP request", "≥ 0.2 × P0", 0.2, r.Size.P1sEvents,
			func(evs []Event) error { return r.sendHTTP(ctx, key, evs, 1, r.Size.Concurrency, nil) }},
	} {
		evs := NewEvents(v.events, typ)
		r.Logf("%s: %d events (%s)", v.id, len(evs), v.name)
		base := r.count.Load()
		cpu0 := r.cpuSnapshot()
		start := time.Now()
		if err := v.send(evs); err != nil {
			return 0, fmt.Errorf("%s: %w", v.id, err)
		}
		last, ok := r.waitCount(base, int64(len(evs)), 3*time.Minute, v.id)
		secs := last.Sub(start).Seconds()
		missing, dups := r.tally(want(evs), 10*time.Second)
		r.Logf("  %s done in %.1f s; sender: %s", v.id, secs, r.senderCounters())
		rate := float64(len(evs)) / secs
		ratio := rate / raw
		res := Result{ID: v.id, Name: v.name, Sent: len(evs), Missing: missing, Duplicates: dups,
			Figure: fmt.Sprintf("%.0f deliveries/s (%.2f × P0)", rate, ratio), Value: ratio, Target: v.target,
			Meets: yes(ratio >= v.min && missing == 0)}
		if !ok || missing > 0 {
			res.Note = fmt.Sprintf("%d deliveries missing", missing)
		}
		if v.id == "P1" {
			batchRate = rate
			// P5: the delivery log holds one success row per delivery;
			// how long after the last webhook.
			// The tenant's rows are the warm-up's and P1's.
			wantRows := uint64(len(warm) + len(evs))
			rows, lag, err := r.logComplete(ctx, tenant, wantRows, time.Minute)
			p5 := Result{ID: "P5", Name: "delivery log completeness and lag (after P1)", Sent: int(wantRows),
				Figure: fmt.Sprintf("%d of %d rows (warm-up included), complete %.1f s after the last webhook", rows, wantRows, lag.Seconds()),
				Value:  lag.Seconds(), Target: "one row per delivery", Meets: yes(err == nil && rows == wantRows)}
			if err != nil {
				p5.Note = err.Error()
			}
			cpu := cpuDelta(cpu0, r.cpuSnapshot())
			var parts []string
			total := 0.0
			for _, name := range slices.Sorted(maps.Keys(cpu)) {
				per := cpu[name] / float64(len(evs))
				total += per
				parts = append(parts, fmt.Sprintf("%s %.0f µs", name, per*1e6))
			}
			res.Note = fmt.Sprintf("after a warm-up round of 1,000 events (one per endpoint) that took %.1f s", warmSecs)
			rep.Results = append(rep.Results, res, p5, Result{ID: "CPU", Name: "CPU per delivery, all processes (during P1 and P5)",
				Sent: len(evs), Figure: fmt.Sprintf("%.0f µs (%.1f × a raw POST)", total*1e6, total/rawCPU), Value: total / rawCPU,
				Target: "≤ 3 × a raw POST", Meets: yes(total/rawCPU <= 3), Note: strings.Join(parts, ", ")})
			continue
		}
		rep.Results = append(rep.Results, res)
	}
	return batchRate, nil
}

// logComplete waits until ClickHouse holds want success rows of tenant.
func (r *Runner) logComplete(ctx context.Context, tenant string, want uint64, within time.Duration) (uint64, time.Duration, error) {
	start := time.Now()
	for {
		n, err := r.S.AttemptRows(ctx, tenant)
		if err == nil && n >= want {
			return n, time.Since(start), nil
		}
		if time.Since(start) > within {
			return n, time.Since(start), fmt.Errorf("only %d of %d rows after %v (err %v)", n, want, within, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// paced sends events of typ at rate for secs seconds, in one batch per
// 20 ms tick, and returns the events and their 202 times.
func (r *Runner) paced(ctx context.Context, key string, rate float64, secs int, typ func(i int) string) ([]Event, map[string]time.Time, error) {
	const tick = 20 * time.Millisecond
	perTick := max(1, int(rate*tick.Seconds()))
	ticks := int(time.Duration(secs) * time.Second / tick)
	evs := NewEvents(perTick*ticks, typ)
	sent := map[string]time.Time{}
	var mu sync.Mutex
	var firstErr atomic.Value
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	t := time.NewTicker(tick)
	defer t.Stop()
	for i := range ticks {
		<-t.C
		chunk := evs[i*perTick : (i+1)*perTick]
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			err := r.sendHTTP(ctx, key, chunk, len(chunk), 1, func(id string, at time.Time) {
				mu.Lock()
				sent[id] = at
				mu.Unlock()
			})
			if err != nil {
				firstErr.CompareAndSwap(nil, err)
			}
		})
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return nil, nil, err
	}
	return evs, sent, nil
}

// p2 measures latency from the 202 to the receiver at half the P1 rate.
func (r *Runner) p2(ctx context.Context, rep *Report, p1 float64) (p99 time.Duration, rate float64, err error) {
	_, key, err := r.Tenant(ctx, "bench-p2")
	if err != nil {
		return 0, 0, err
	}
	eps, err := r.Endpoints(ctx, key, "p2e", 100, func(i int) map[string]any { return Subscribe("bench.p2.e" + strconv.Itoa(i)) })
	if err != nil {
		return 0, 0, err
	}
	rate = p1 / 2
	r.Logf("P2: %.0f events/s for %d s", rate, r.Size.P2Seconds)
	r.startTracking()
	defer r.stopTracking()
	evs, sent, err := r.paced(ctx, key, rate, r.Size.P2Seconds, func(i int) string { return "bench.p2.e" + strconv.Itoa(i%100) })
	if err != nil {
		return 0, 0, err
	}
	want := map[string][]string{}
	for i, e := range evs {
		want[eps[i%100].Name] = append(want[eps[i%100].Name], e.ID)
	}
	missing, dups := r.tally(want, time.Minute)
	lat := r.latencies(sent)
	p50, p99 := percentile(lat, 0.5), percentile(lat, 0.99)
	r.Logf("  P2 router: %s", r.counters("ingest", "sluice_router_transaction_duration_seconds_sum",
		"sluice_router_transaction_duration_seconds_count", "sluice_router_transaction_events_sum"))
	rep.Results = append(rep.Results, Result{ID: "P2", Name: "latency from 202 to receipt at half the P1 rate", Sent: len(evs),
		Missing: missing, Duplicates: dups, Value: float64(p99.Microseconds()) / 1000,
		Figure: fmt.Sprintf("p50 %.1f ms, p99 %.1f ms at %.0f events/s", ms(p50), ms(p99), rate),
		Target: "p50 ≤ 10 ms, p99 ≤ 50 ms", Meets: yes(p50 <= 10*time.Millisecond && p99 <= 50*time.Millisecond && missing == 0)})
	return p99, rate, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// p3: one endpoint that never answers among 100; the others' rate and p99
// against P2's.
func (r *Runner) p3(ctx context.Context, rep *Report, rate float64, p2p99 time.Duration) error {
	_, key, err := r.Tenant(ctx, "bench-p3")
	if err != nil {
		return err
	}
	eps, err := r.Endpoints(ctx, key, "p3e", 100, func(i int) map[string]any { return Subscribe("bench.p3.e" + strconv.Itoa(i)) })
	if err != nil {
		return err
	}
	r.Recv.SetBehavior(eps[0].Name, receiver.Behavior{Hang: true})
	r.Logf("P3: %.0f events/s for %d s, endpoint %s hanging", rate, r.Size.P2Seconds, eps[0].ID)
	r.startTracking()
	defer r.stopTracking()
	start := time.Now()
	evs, sent, err := r.paced(ctx, key, rate, r.Size.P2Seconds, func(i int) string { return "bench.p3.e" + strconv.Itoa(i%100) })
	if err != nil {
		return err
	}
	want := map[string][]string{}
	others := map[string]time.Time{}
	for i, e := range evs {
		if i%100 == 0 {
			continue
		}
		want[eps[i%100].Name] = append(want[eps[i%100].Name], e.ID)
		others[e.ID] = sent[e.ID]
	}
	missing, dups := r.tally(want, time.Minute)
	elapsed := time.Since(start)
	lat := r.latencies(others)
	p99 := percentile(lat, 0.99)
	// The others' share of what was sent to them, delivered within the
	// sending time plus P2's p99: throughput kept.
	var inTime int
	for _, d := range lat {
		if d <= 2*p2p99+time.Second {
			inTime++
		}
	}
	kept := float64(inTime) / float64(len(others))
	// Stop the hanging endpoint's retries from running into later scenarios.
	_ = r.S.API(ctx, "POST", "/v1/endpoints/"+eps[0].ID+"/disable", key, map[string]any{"reason": "bench: P3 done"}, nil)
	r.Recv.SetBehavior(eps[0].Name, receiver.Behavior{})
	rep.Results = append(rep.Results, Result{ID: "P3", Name: "one endpoint hanging among 100: the others", Sent: len(others),
		Missing: missing, Duplicates: dups, Value: kept,
		Figure: fmt.Sprintf("%.1f %% delivered on time, p99 %.1f ms (P2 p99 %.1f ms) over %.0f s", kept*100, ms(p99), ms(p2p99), elapsed.Seconds()),
		Target: "≥ 95 % of throughput, p99 ≤ 2 × P2", Meets: yes(kept >= 0.95 && p99 <= 2*p2p99 && missing == 0)})
	return nil
}

// p4: one event fanned out to 100 endpoints.
func (r *Runner) p4(ctx context.Context, rep *Report, raw float64) error {
	_, key, err := r.Tenant(ctx, "bench-p4")
	if err != nil {
		return err
	}
	eps, err := r.Endpoints(ctx, key, "p4e", 100, func(int) map[string]any { return Subscribe("bench.p4") })
	if err != nil {
		return err
	}
	evs := NewEvents(r.Size.P4Events, func(int) string { return "bench.p4" })
	r.Logf("P4: %d events, each to 100 endpoints", len(evs))
	base := r.count.Load()
	start := time.Now()
	if err := r.sendHTTP(ctx, key, evs, 10, 4, nil); err != nil {
		return err
	}
	n := len(evs) * len(eps)
	last, _ := r.waitCount(base, int64(n), 3*time.Minute, "P4")
	ids := make([]string, len(evs))
	for i, e := range evs {
		ids[i] = e.ID
	}
	want := map[string][]string{}
	for _, ep := range eps {
		want[ep.Name] = ids
	}
	missing, dups := r.tally(want, 10*time.Second)
	rate := float64(n) / last.Sub(start).Seconds()
	rep.Results = append(rep.Results, Result{ID: "P4", Name: "one event fanned out to 100 endpoints", Sent: n,
		Missing: missing, Duplicates: dups, Value: rate,
		Figure: fmt.Sprintf("%.0f deliveries/s (%.2f × P0)", rate, rate/raw), Target: "(no target)", Meets: nil})
	if missing > 0 {
		return fmt.Errorf("%d deliveries missing", missing)
	}
	return nil
}

// p6: the sender's memory with a dead endpoint's backlog at 1× and 10×.
func (r *Runner) p6(ctx context.Context, rep *Report) error {
	tenant, key, err := r.Tenant(ctx, "bench-p6")
	if err != nil {
		return err
	}
	eps, err := r.Endpoints(ctx, key, "p6e", 1, func(int) map[string]any { return Subscribe("bench.p6") })
	if err != nil {
		return err
	}
	r.Recv.SetBehavior(eps[0].Name, receiver.Behavior{Hang: true})
	defer r.Recv.SetBehavior(eps[0].Name, receiver.Behavior{})
	measure := func(n int) (int64, error) {
		r.Logf("P6: %d more deliveries to a dead endpoint", n)
		if err := r.sendKafka(ctx, tenant, NewEvents(n, func(int) string { return "bench.p6" })); err != nil {
			return 0, err
		}
		time.Sleep(20 * time.Second) // the sender takes, queues and defers
		return r.heapInUse(r.S.Procs["sender"])
	}
	m1, err := measure(r.Size.P6Backlog)
	if err != nil {
		return err
	}
	m10, err := measure(9 * r.Size.P6Backlog)
	if err != nil {
		return err
	}
	ratio := float64(m10) / float64(m1)
	_ = r.S.API(ctx, "POST", "/v1/endpoints/"+eps[0].ID+"/disable", key, map[string]any{"reason": "bench: P6 done"}, nil)
	rep.Results = append(rep.Results, Result{ID: "P6", Name: "sender heap with a dead endpoint's backlog, 10× against 1×",
		Sent: 10 * r.Size.P6Backlog, Value: ratio,
		Figure: fmt.Sprintf("%.1f MiB at 1× (%d), %.1f MiB at 10× (%.2f ×)", float64(m1)/(1<<20), r.Size.P6Backlog, float64(m10)/(1<<20), ratio),
		Target: "≤ 1.2 ×", Meets: yes(ratio <= 1.2)})
	return nil
}

// counters reads the lines of a service's /metrics starting with any of
// prefixes, for the progress log.
func (r *Runner) counters(service string, prefixes ...string) string {
	resp, err := http.Get("http://" + r.S.Procs[service].Ops + "/metrics")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 8<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var out []string
	for sc.Scan() {
		line := sc.Text()
		for _, p := range prefixes {
			if strings.HasPrefix(line, p) {
				out = append(out, line)
				break
			}
		}
	}
	return strings.Join(out, "; ")
}

// senderCounters are the sender's counters that show trouble: deferrals,
// parked and exhausted deliveries, attempt outcomes.
func (r *Runner) senderCounters() string {
	return r.counters("sender", "sluice_sender_deferred_total", "sluice_sender_parked_total",
		"sluice_sender_attempts_total", "sluice_sender_exhausted_total")
}

// heapInUse reads a service's Go heap in use from its /metrics.
func (r *Runner) heapInUse(p *Proc) (int64, error) {
	resp, err := http.Get("http://" + p.Ops + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 8<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_memstats_heap_inuse_bytes "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return int64(f), err
		}
	}
	return 0, fmt.Errorf("%s /metrics has no go_memstats_heap_inuse_bytes", p.Name)
}
