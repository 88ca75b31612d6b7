package api_test

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/valyala/fasthttp"

	"github.com/sluicehq/sluice/pkg/kafkax"
	"github.com/sluicehq/sluice/pkg/testenv"
	"github.com/sluicehq/sluice/services/ingest/api"
)

// benchEvents serves the events API over the real broker and returns the
// server and a tenant key.
func benchEvents(b *testing.B) (*server, string) {
	k := testenv.NewKafka(b)
	producer, err := kafkax.NewProducer(k.Config, kgo.MaxBufferedBytes(64<<20))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(producer.Close)
	opts := testOptions()
	opts.Events = api.EventsOptions{Sink: api.NewKafkaSink(producer), Topic: k.Names.Events}
	rep := startReplica(b, k, newBox(b), opts)
	_, key := newTenant(b, rep.server, "Bench")
	return rep.server, key
}

// post runs b.N requests from 64 concurrent callers (32 per core), each
// answered only after Kafka acknowledged its events, and reports events/s.
func post(b *testing.B, s *server, key, path string, body func(i int64) string, eventsPerRequest int, want int) {
	c := &fasthttp.Client{MaxConnsPerHost: 128}
	var seq atomic.Int64
	b.SetParallelism(32)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.Header.SetMethod("POST")
		req.SetRequestURI(s.base + path)
		req.Header.SetContentType("application/json")
		req.Header.Set("Authorization", "Bearer "+key)
		for pb.Next() {
			req.SetBodyString(body(seq.Add(1)))
			if err := c.Do(req, resp); err != nil || resp.StatusCode() != want {
				b.Errorf("%s: %v %d %s", path, err, resp.StatusCode(), resp.Body())
				return
			}
		}
	})
	elapsed := time.Since(start)
	b.ReportMetric(float64(b.N*eventsPerRequest)/elapsed.Seconds(), "events/s")
}

// BenchmarkPostEvent: one event per request (1 KiB of data).
func BenchmarkPostEvent(b *testing.B) {
	s, key := benchEvents(b)
	data := `{"pad":"` + strings.Repeat("x", 1000) + `"}`
	post(b, s, key, "/v1/events", func(i int64) string {
		return fmt.Sprintf(`{"type":"order.created","id":"evt_b_%d","data":%s}`, i, data)
	}, 1, 202)
}

// BenchmarkPostEventBatch: 100 events per request (1 KiB of data each).
func BenchmarkPostEventBatch(b *testing.B) {
	s, key := benchEvents(b)
	data := `{"pad":"` + strings.Repeat("x", 1000) + `"}`
	post(b, s, key, "/v1/events/batch", func(i int64) string {
		var sb strings.Builder
		sb.WriteString(`{"events":[`)
		for j := range 100 {
			if j > 0 {
				sb.WriteByte(',')
			}
			fmt.Fprintf(&sb, `{"type":"order.created","id":"evt_b_%d_%d","data":%s}`, i, j, data)
		}
		sb.WriteString(`]}`)
		return sb.String()
	}, 100, 200)
}
