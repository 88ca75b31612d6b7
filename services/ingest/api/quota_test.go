package api_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/sluicehq/sluice/services/ingest/api"
)

// fakeClock is a clock a test moves by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// quotaAPI is the API over the fixture's store, events going to a sink
// that takes everything, time told by clock and the operator's default
// quota perSecond.
func quotaAPI(t *testing.T, clock *fakeClock, perSecond int) (fasthttp.RequestHandler, *fakeSink) {
	t.Helper()
	box := newBox(t)
	mem, _ := fixture(t, box)
	sink := &fakeSink{}
	opts := testOptions()
	opts.Events = api.EventsOptions{Sink: sink, Topic: "sluice.events"}
	opts.Tenants.EventsPerSecond = perSecond
	opts.Now = clock.Now
	return api.New(mem, box, opts, discard).Handler(), sink
}

// quotaEvent posts one event and returns the status and Retry-After.
func quotaEvent(t *testing.T, h fasthttp.RequestHandler) (int, string) {
	t.Helper()
	resp := serveInProcess(h, "POST", "/v1/events", fuzzAPIKey, []byte(`{"type":"order.created","data":{}}`))
	checkAnswer(t, resp)
	return resp.StatusCode(), string(resp.Header.Peek("Retry-After"))
}

func quotaBatch(t *testing.T, h fasthttp.RequestHandler, n int) *fasthttp.Response {
	t.Helper()
	items := make([]string, n)
	for i := range items {
		items[i] = fmt.Sprintf(`{"type":"order.created","data":{"n":%d}}`, i)
	}
	resp := serveInProcess(h, "POST", "/v1/events/batch", fuzzAPIKey, []byte(`{"events":[`+strings.Join(items, ",")+`]}`))
	checkAnswer(t, resp)
	return resp
}

// TestIngestQuota: a tenant's events per second are bounded by a token
// bucket holding one second's worth; past it POST /v1/events and
// /v1/events/batch answer 429 with Retry-After in whole seconds, and a
// batch that does not fit whole is refused whole.
func TestIngestQuota(t *testing.T) {
	t.Run("single events", func(t *testing.T) {
		clock := newFakeClock()
		h, sink := quotaAPI(t, clock, 2)
		for i := range 2 {
			if status, _ := quotaEvent(t, h); status != http.StatusAccepted {
				t.Fatalf("event %d of the burst of 2: status %d", i+1, status)
			}
		}
		status, retry := quotaEvent(t, h)
		if status != http.StatusTooManyRequests || retry != "1" {
			t.Fatalf("third event in the same instant: status %d, Retry-After %q; want 429 and 1", status, retry)
		}
		// Half a second brings one token back at 2/s.
		clock.Advance(500 * time.Millisecond)
		if status, _ := quotaEvent(t, h); status != http.StatusAccepted {
			t.Fatalf("after 500 ms: status %d, want 202", status)
		}
		if status, _ := quotaEvent(t, h); status != http.StatusTooManyRequests {
			t.Fatalf("again after 500 ms: status %d, want 429", status)
		}
		// Idle for long, the bucket holds one second's worth, not more.
		clock.Advance(time.Hour)
		for i := range 2 {
			if status, _ := quotaEvent(t, h); status != http.StatusAccepted {
				t.Fatalf("after an hour, event %d: status %d", i+1, status)
			}
		}
		if status, _ := quotaEvent(t, h); status != http.StatusTooManyRequests {
			t.Fatalf("after an hour, event 3: status %d, want 429 (the burst is one second's worth)", status)
		}
		if n := len(sink.records()); n != 5 {
			t.Fatalf("%d events produced, want the 5 accepted", n)
		}
	})

	t.Run("a batch takes tokens for all its events or none", func(t *testing.T) {
		clock := newFakeClock()
		h, sink := quotaAPI(t, clock, 10)
		if resp := quotaBatch(t, h, 6); resp.StatusCode() != http.StatusOK {
			t.Fatalf("batch of 6 of 10: status %d: %s", resp.StatusCode(), resp.Body())
		}
		resp := quotaBatch(t, h, 5) // 4 tokens left
		if resp.StatusCode() != http.StatusTooManyRequests || string(resp.Header.Peek("Retry-After")) != "1" {
			t.Fatalf("batch of 5 with 4 tokens: status %d, Retry-After %q: %s", resp.StatusCode(), resp.Header.Peek("Retry-After"), resp.Body())
		}
		p := decodeStrict[api.Problem](t, resp.Body())
		if p.Type != api.ProblemBase+"rate-limited" || !strings.Contains(p.Detail, "10 events per second") {
			t.Fatalf("problem %+v", p)
		}
		if n := len(sink.records()); n != 6 {
			t.Fatalf("%d events produced, want only the first batch's 6: a refused batch produces none", n)
		}
		if resp := quotaBatch(t, h, 4); resp.StatusCode() != http.StatusOK {
			t.Fatalf("batch of 4 with 4 tokens: status %d: %s", resp.StatusCode(), resp.Body())
		}
		// Larger than a second's worth: never fits; the answer says so.
		clock.Advance(time.Minute)
		resp = quotaBatch(t, h, 11)
		p = decodeStrict[api.Problem](t, resp.Body())
		if resp.StatusCode() != http.StatusTooManyRequests || !strings.Contains(p.Detail, "at most 10") {
			t.Fatalf("batch of 11 with a quota of 10: status %d, %+v", resp.StatusCode(), p)
		}
	})

	t.Run("Retry-After is the wait in whole seconds", func(t *testing.T) {
		// The bucket holds a second's worth, so no admissible request
		// waits longer than a second; a shorter wait rounds up to 1.
		clock := newFakeClock()
		h, _ := quotaAPI(t, clock, 3)
		quotaBatch(t, h, 3)
		clock.Advance(100 * time.Millisecond) // 0.3 tokens back
		resp := quotaBatch(t, h, 3)
		if resp.StatusCode() != http.StatusTooManyRequests || string(resp.Header.Peek("Retry-After")) != "1" {
			t.Fatalf("status %d, Retry-After %q; want 429 and 1 (2.7 tokens at 3/s is 0.9 s, rounded up)", resp.StatusCode(), resp.Header.Peek("Retry-After"))
		}
	})

	t.Run("the tenant's own quota wins over the default", func(t *testing.T) {
		clock := newFakeClock()
		h, _ := quotaAPI(t, clock, 1)
		// The admin gives the tenant 3 a second, then no limit.
		for _, tc := range []struct {
			body   string
			accept int
		}{{`{"events_per_second":3}`, 3}, {`{"events_per_second":0}`, 50}, {`{"events_per_second":null}`, 1}} {
			resp := serveInProcess(h, "PATCH", "/v1/tenants/"+fuzzTenant, adminKey, []byte(tc.body))
			if resp.StatusCode() != http.StatusOK {
				t.Fatalf("PATCH %s: %d %s", tc.body, resp.StatusCode(), resp.Body())
			}
			clock.Advance(time.Minute)
			for i := range tc.accept {
				if status, _ := quotaEvent(t, h); status != http.StatusAccepted {
					t.Fatalf("%s: event %d: status %d, want 202", tc.body, i+1, status)
				}
			}
			if tc.accept < 50 {
				if status, _ := quotaEvent(t, h); status != http.StatusTooManyRequests {
					t.Fatalf("%s: event %d: status %d, want 429", tc.body, tc.accept+1, status)
				}
			}
		}
	})
}
