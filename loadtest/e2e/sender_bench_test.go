package e2e_test

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/loadtest/receiver"
	"github.com/sluicehq/sluice/pkg/testenv"
	"github.com/sluicehq/sluice/pkg/topics"
)

// BenchmarkSenderAgainstRawPOST measures, in one run against one receiver:
//   - raw: fasthttp POSTs of a webhook-sized body straight to the receiver,
//     64 at a time — the ceiling for this machine;
//   - sender: the sender service draining pre-produced deliveries for 100
//     endpoints on the same receiver: signing, flow control, attempt records
//     to Kafka and watermark commits included;
//
// and prints both rates, their ratio, and heap allocations per delivery
// (whole process: the receiver's and Kafka client's included, so the raw
// figure is the baseline to subtract).
func BenchmarkSenderAgainstRawPOST(b *testing.B) {
	const n, endpoints, rawConcurrency = 20000, 100, 64
	var arrived atomic.Int64
	var mu sync.Mutex
	var first, last time.Time
	recv, err := receiver.Start("127.0.0.1:0", receiver.OnDelivery(func(receiver.Delivery) {
		now := time.Now()
		mu.Lock()
		if first.IsZero() {
			first = now
		}
		last = now
		mu.Unlock()
		arrived.Add(1)
	}))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { recv.Close() })

	for b.Loop() {
		// Raw: the same body and headers as a webhook, no Sluice.
		body := []byte(`{"id":"evt_01JD3K6Z8WQ4V0M5T7E9RXN2BC","type":"order.created","timestamp":"2026-11-22T08:26:40.123Z","data":{"order":"o_1"}}`)
		cl := &fasthttp.Client{MaxConnsPerHost: rawConcurrency}
		var next atomic.Int64
		var wg sync.WaitGroup
		m0 := mallocs()
		began := time.Now()
		for w := range rawConcurrency {
			wg.Go(func() {
				req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
				defer fasthttp.ReleaseRequest(req)
				defer fasthttp.ReleaseResponse(resp)
				for i := next.Add(1); i <= n; i = next.Add(1) {
					req.Reset()
					req.Header.SetMethod(fasthttp.MethodPost)
					req.SetRequestURI(recv.URL(fmt.Sprintf("raw%d", w)))
					req.Header.SetContentType("application/json")
					req.Header.Set("webhook-id", fmt.Sprintf("raw_%d", i))
					req.Header.Set("webhook-timestamp", "1763800000")
					req.Header.Set("webhook-signature", "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=")
					req.SetBody(body)
					if err := cl.Do(req, resp); err != nil || resp.StatusCode() != fasthttp.StatusNoContent {
						b.Errorf("raw POST: %v %d", err, resp.StatusCode())
						return
					}
				}
			})
		}
		wg.Wait()
		rawSecs := time.Since(began).Seconds()
		rawAllocs := float64(mallocs()-m0) / n
		rawRate := n / rawSecs

		// Sender: deliveries produced first, then drained.
		k := testenv.NewKafka(b, testenv.WithPartitions(topics.Partitions{
			Events: 1, Deliveries: 8, Retry: 2, Dead: 1, Attempts: 4, EventLog: 1}))
		want := map[string][]string{}
		var ds []*sluicev1.Delivery
		for i := range n {
			name := fmt.Sprintf("b%d", i%endpoints)
			d := newDelivery("ep_" + name)
			want[name] = append(want[name], d.EventId)
			ds = append(ds, d)
		}
		for i := range endpoints {
			name := fmt.Sprintf("b%d", i)
			endpointAt(b, k, "ep_"+name, recv.URL(name), nil)
		}
		produceDeliveries(b, k, ds...)
		arrived.Store(0)
		mu.Lock()
		first, last = time.Time{}, time.Time{}
		mu.Unlock()
		m0 = mallocs()
		stop := startSender(b, k, nil)
		for arrived.Load() < n {
			time.Sleep(5 * time.Millisecond)
		}
		senderAllocs := float64(mallocs()-m0) / n
		stop()
		mu.Lock()
		senderSecs := last.Sub(first).Seconds()
		mu.Unlock()
		senderRate := n / senderSecs
		missing, dups := 0, 0
		for ep, ids := range want {
			tally := recv.Tally(ep, ids)
			missing += len(tally.Missing)
			dups += tally.Duplicates
		}
		if missing > 0 {
			b.Fatalf("%d deliveries missing", missing)
		}

		b.ReportMetric(rawRate, "raw-posts/s")
		b.ReportMetric(senderRate, "deliveries/s")
		b.ReportMetric(senderRate/rawRate, "ratio")
		b.ReportMetric(rawAllocs, "raw-allocs/post")
		b.ReportMetric(senderAllocs, "allocs/delivery")
		b.Logf("raw fasthttp POST: %.0f/s (%d at a time); sender: %.0f deliveries/s over %d endpoints (%.2f of raw); "+
			"heap allocations per delivery %.1f (raw POST %.1f, so the sender adds %.1f); %d duplicates, 0 missing",
			rawRate, rawConcurrency, senderRate, endpoints, senderRate/rawRate, senderAllocs, rawAllocs, senderAllocs-rawAllocs, dups)
	}
}

func mallocs() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.Mallocs
}
