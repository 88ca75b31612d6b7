package receiver_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"github.com/sluicehq/sluice/loadtest/receiver"
)

// start starts a receiver on a free loopback port, closed when the test ends.
func start(t testing.TB, opts ...receiver.Option) *receiver.Receiver {
	t.Helper()
	r, err := receiver.Start("127.0.0.1:0", opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Error(err)
		}
	})
	return r
}

// newClient is an HTTP client of its own, so a test can close its idle
// connections and count goroutines.
func newClient(t testing.TB, timeout time.Duration) *http.Client {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: timeout}
}

// post sends body to url with the given headers; an empty header value is
// left out.
func post(t testing.TB, c *http.Client, url string, header map[string]string, body string) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader([]byte(body)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		if v != "" {
			req.Header.Set(k, v)
		}
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	return resp, nil
}

// mustPost is post for requests that must be answered; it returns the status.
func mustPost(t testing.TB, c *http.Client, url string, header map[string]string, body string) *http.Response {
	t.Helper()
	resp, err := post(t, c, url, header, body)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// withID is the header of an unsigned request.
func withID(id string) map[string]string { return map[string]string{"webhook-id": id} }

// eventually polls cond every 10 ms until it holds or within has passed.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestCountsDeliveredWebhookIDs(t *testing.T) {
	r := start(t)
	r.SetBehavior("failing", receiver.Behavior{Status: http.StatusInternalServerError})
	c := newClient(t, 5*time.Second)

	for _, id := range []string{"msg_a", "msg_b", "msg_a"} {
		if got := mustPost(t, c, r.URL("first"), withID(id), `{}`).StatusCode; got != http.StatusNoContent {
			t.Fatalf("%s: status %d, want 204", id, got)
		}
	}
	if got := mustPost(t, c, r.URL("first"), nil, `{}`).StatusCode; got != http.StatusBadRequest {
		t.Errorf("without webhook-id: status %d, want 400", got)
	}
	if got := mustPost(t, c, r.URL("failing"), withID("msg_a"), `{}`).StatusCode; got != http.StatusInternalServerError {
		t.Errorf("failing endpoint: status %d, want 500", got)
	}
	resp, err := c.Get(r.URL("first"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET: status %d, want 404", resp.StatusCode)
	}

	if got, want := r.Received("first"), map[string]int{"msg_a": 2, "msg_b": 1}; !mapsEqual(got, want) {
		t.Errorf("Received(first) = %v, want %v", got, want)
	}
	if got := r.Received("failing"); len(got) != 0 {
		t.Errorf("Received(failing) = %v, want nothing: a 500 is not a delivery", got)
	}
	tally := r.Tally("first", []string{"msg_a", "msg_b", "msg_c"})
	if !slices.Equal(tally.Missing, []string{"msg_c"}) || tally.Duplicates != 1 || len(tally.Unexpected) != 0 {
		t.Errorf("Tally = %+v, want msg_c missing and 1 duplicate", tally)
	}
	if got := r.Requests(); got != 6 {
		t.Errorf("Requests() = %d, want 6", got)
	}
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestOnDeliverySeesDeliveredRequests(t *testing.T) {
	var mu sync.Mutex
	var got []receiver.Delivery
	r := start(t, receiver.OnDelivery(func(d receiver.Delivery) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, d)
	}))
	r.SetBehavior("down", receiver.Behavior{Status: http.StatusServiceUnavailable})
	c := newClient(t, 5*time.Second)
	mustPost(t, c, r.URL("down"), withID("msg_down"), `{"n":0}`)
	mustPost(t, c, r.URL("up"), map[string]string{"webhook-id": "msg_up", "webhook-timestamp": "1700000000"}, `{"n":1}`)

	mu.Lock()
	defer mu.Unlock()
	want := []receiver.Delivery{{Endpoint: "up", WebhookID: "msg_up", Timestamp: "1700000000", Body: []byte(`{"n":1}`)}}
	if len(got) != 1 || got[0].Endpoint != want[0].Endpoint || got[0].WebhookID != want[0].WebhookID ||
		got[0].Timestamp != want[0].Timestamp || !bytes.Equal(got[0].Body, want[0].Body) {
		t.Errorf("OnDelivery saw %+v, want %+v", got, want)
	}
}

func TestDelay(t *testing.T) {
	const delay = 150 * time.Millisecond
	r := start(t)
	r.SetBehavior("slow", receiver.Behavior{Delay: delay})
	c := newClient(t, 5*time.Second)

	began := time.Now()
	resp := mustPost(t, c, r.URL("slow"), withID("msg_slow"), `{}`)
	if took := time.Since(began); took < delay {
		t.Errorf("answered after %v, want at least %v", took, delay)
	}
	if resp.StatusCode != http.StatusNoContent {
		t.Errorf("status %d, want 204", resp.StatusCode)
	}
}

// TestCloseReleasesWaitingRequests: a hang lasts until the client gives up,
// and Close neither waits for hanging or delayed requests nor leaves
// goroutines behind.
func TestCloseReleasesWaitingRequests(t *testing.T) {
	// fasthttp starts a process-wide clock goroutine with its first
	// server; start one first so it is part of the baseline.
	warm := start(t)
	warmClient := newClient(t, 5*time.Second)
	mustPost(t, warmClient, warm.URL("warm"), withID("msg_warm"), `{}`)
	if err := warm.Close(); err != nil {
		t.Fatal(err)
	}
	warmClient.CloseIdleConnections()
	// The warm-up's client and fasthttp's worker-pool cleaner (250 ms)
	// end shortly after; the baseline must not count them.
	time.Sleep(500 * time.Millisecond)
	baseline := runtime.NumGoroutine()

	tr := &http.Transport{}
	r, err := receiver.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() }) // if the test stops early
	r.SetBehavior("hang", receiver.Behavior{Hang: true})
	r.SetBehavior("slow", receiver.Behavior{Delay: time.Minute})

	// A client that gives up: its timeout ends the request, and the
	// receiver notices the closed connection and lets go of the handler.
	impatient := &http.Client{Transport: tr, Timeout: 200 * time.Millisecond}
	began := time.Now()
	_, err = post(t, impatient, r.URL("hang"), withID("msg_impatient"), `{}`)
	var netErr net.Error
	if !errors.As(err, &netErr) || !netErr.Timeout() {
		t.Fatalf("hanging request: err %v, want a client timeout", err)
	}
	if took := time.Since(began); took > time.Second {
		t.Errorf("client timed out after %v, want about 200ms", took)
	}
	eventually(t, 2*time.Second, "the abandoned hang leaves the handler", func() bool { return r.InFlight("hang") == 0 })

	// Clients that would wait: Close must release them.
	patient := &http.Client{Transport: tr, Timeout: time.Minute}
	errs := make(chan error, 2)
	for _, ep := range []string{"hang", "slow"} {
		go func() {
			_, err := post(t, patient, r.URL(ep), withID("msg_patient_"+ep), `{}`)
			errs <- err
		}()
	}
	eventually(t, 2*time.Second, "both requests in the handler", func() bool {
		return r.InFlight("hang") == 1 && r.InFlight("slow") == 1
	})
	began = time.Now()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(began); took > time.Second {
		t.Errorf("Close took %v with requests open, want under 1s", took)
	}
	for range 2 {
		if err := <-errs; err == nil {
			t.Error("a released request was answered; want the connection closed without an answer")
		}
	}
	if got := r.Received("hang"); len(got) != 0 {
		t.Errorf("Received(hang) = %v, want nothing", got)
	}

	tr.CloseIdleConnections()
	eventually(t, 2*time.Second, "goroutines back to the baseline", func() bool {
		return runtime.NumGoroutine() <= baseline
	})
}

func TestFailureStatuses(t *testing.T) {
	tests := map[string]struct {
		behavior receiver.Behavior
		ids      []string
		want     []int
		retry    []string // Retry-After per answer
	}{
		"FailFirst 2 fails each webhook-id twice": {
			behavior: receiver.Behavior{Status: 503, FailFirst: 2, RetryAfter: "7"},
			ids:      []string{"msg_1", "msg_1", "msg_1", "msg_2", "msg_1"},
			want:     []int{503, 503, 204, 503, 204},
			retry:    []string{"7", "7", "", "7", ""},
		},
		"FailFirst 0 always fails": {
			behavior: receiver.Behavior{Status: 429, RetryAfter: "Wed, 21 Oct 2015 07:28:00 GMT"},
			ids:      []string{"msg_1", "msg_1", "msg_1"},
			want:     []int{429, 429, 429},
			retry:    []string{"Wed, 21 Oct 2015 07:28:00 GMT", "Wed, 21 Oct 2015 07:28:00 GMT", "Wed, 21 Oct 2015 07:28:00 GMT"},
		},
		"a 2xx status is a delivery and has no Retry-After": {
			behavior: receiver.Behavior{Status: 200, RetryAfter: "7"},
			ids:      []string{"msg_1"},
			want:     []int{200},
			retry:    []string{""},
		},
		"no RetryAfter, no header": {
			behavior: receiver.Behavior{Status: 500, FailFirst: 1},
			ids:      []string{"msg_1", "msg_1"},
			want:     []int{500, 204},
			retry:    []string{"", ""},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := start(t)
			r.SetBehavior("ep", tc.behavior)
			c := newClient(t, 5*time.Second)
			delivered := map[string]int{}
			for i, id := range tc.ids {
				resp := mustPost(t, c, r.URL("ep"), withID(id), `{}`)
				if resp.StatusCode != tc.want[i] {
					t.Errorf("request %d (%s): status %d, want %d", i, id, resp.StatusCode, tc.want[i])
				}
				if got := resp.Header.Get("Retry-After"); got != tc.retry[i] {
					t.Errorf("request %d (%s): Retry-After %q, want %q", i, id, got, tc.retry[i])
				}
				if tc.want[i] >= 200 && tc.want[i] < 300 {
					delivered[id]++
				}
			}
			if got := r.Received("ep"); !mapsEqual(got, delivered) {
				t.Errorf("Received = %v, want %v: only 2xx answers are deliveries", got, delivered)
			}
		})
	}
}

func TestBehaviorCanChangeDuringTraffic(t *testing.T) {
	r := start(t)
	c := newClient(t, 5*time.Second)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := range 50 {
				mustPost(t, c, r.URL("ep"), withID("msg_"+strconv.Itoa(i)+"_"+strconv.Itoa(j)), `{}`)
			}
		})
	}
	for i := range 50 {
		r.SetBehavior("ep", receiver.Behavior{Status: 500 + i%2})
		r.SetBehavior("ep", receiver.Behavior{})
	}
	wg.Wait()
	r.SetBehavior("ep", receiver.Behavior{Status: 503})
	if got := mustPost(t, c, r.URL("ep"), withID("msg_after"), `{}`).StatusCode; got != 503 {
		t.Errorf("after SetBehavior: status %d, want 503", got)
	}
}

func TestMaxConcurrent(t *testing.T) {
	const n = 8
	r := start(t)
	r.SetBehavior("busy", receiver.Behavior{Delay: 200 * time.Millisecond})
	c := newClient(t, 5*time.Second)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { mustPost(t, c, r.URL("busy"), withID("msg_"+strconv.Itoa(i)), `{}`) })
	}
	eventually(t, 2*time.Second, "all requests in the handler", func() bool { return r.InFlight("busy") == n })
	wg.Wait()

	if got := r.MaxConcurrent("busy"); got != n {
		t.Errorf("MaxConcurrent(busy) = %d, want %d", got, n)
	}
	if got := r.InFlight("busy"); got != 0 {
		t.Errorf("InFlight(busy) = %d after every answer, want 0", got)
	}
	if got := r.MaxConcurrent("idle"); got != 0 {
		t.Errorf("MaxConcurrent(idle) = %d, want 0", got)
	}
}

// secret is a Standard Webhooks secret as Sluice issues them.
func secret(seed byte) string {
	return "whsec_" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{seed}, 32))
}

// sign signs with the Standard Webhooks library itself, never with
// Sluice's signing, so the receiver checks Sluice against it.
func sign(t testing.TB, secret, id string, at time.Time, body string) string {
	t.Helper()
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := wh.Sign(id, at, []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

func TestSignatures(t *testing.T) {
	const id = "msg_2Xk"
	body := `{"id":"msg_2Xk","type":"order.created","timestamp":"2026-01-02T03:04:05.678Z","data":{"order":1}}`
	now := time.Now()
	good, other := secret(1), secret(2)
	signed := func(sig string) map[string]string {
		return map[string]string{"webhook-id": id, "webhook-timestamp": strconv.FormatInt(now.Unix(), 10), "webhook-signature": sig}
	}
	without := func(h map[string]string, name string) map[string]string { h[name] = ""; return h }
	signedBody := func(b string) (map[string]string, string) { return signed(sign(t, good, id, now, b)), b }

	type sigCase struct {
		header  map[string]string
		body    string
		want    int
		badSigs int64
		badBody int64
	}
	tests := map[string]sigCase{
		"valid signature": {
			header: signed(sign(t, good, id, now, body)), body: body, want: 204,
		},
		"signed with another secret": {
			header: signed(sign(t, other, id, now, body)), body: body, want: 401, badSigs: 1,
		},
		"body changed after signing": {
			header: signed(sign(t, good, id, now, body)), body: body[:len(body)-2] + "2}}", want: 401, badSigs: 1,
		},
		"two signatures, the second valid (rotation)": {
			header: signed(sign(t, other, id, now, body) + " " + sign(t, good, id, now, body)), body: body, want: 204,
		},
		"missing webhook-signature": {
			header: without(signed(sign(t, good, id, now, body)), "webhook-signature"), body: body, want: 401, badSigs: 1,
		},
		"missing webhook-id": {
			header: without(signed(sign(t, good, id, now, body)), "webhook-id"), body: body, want: 401, badSigs: 1,
		},
		"missing webhook-timestamp": {
			header: without(signed(sign(t, good, id, now, body)), "webhook-timestamp"), body: body, want: 401, badSigs: 1,
		},
		"timestamp ten minutes old": {
			header: map[string]string{"webhook-id": id, "webhook-timestamp": strconv.FormatInt(now.Add(-10*time.Minute).Unix(), 10),
				"webhook-signature": sign(t, good, id, now.Add(-10*time.Minute), body)},
			body: body, want: 401, badSigs: 1,
		},
	}
	for name, b := range map[string]string{
		"body id differs from webhook-id": `{"id":"msg_other","type":"order.created","timestamp":"2026-01-02T03:04:05Z","data":{}}`,
		"body has an extra field":         `{"id":"msg_2Xk","type":"order.created","timestamp":"2026-01-02T03:04:05Z","data":{},"x":1}`,
		"body lacks data":                 `{"id":"msg_2Xk","type":"order.created","timestamp":"2026-01-02T03:04:05Z"}`,
		"body repeats id":                 `{"id":"msg_2Xk","id":"msg_2Xk","type":"order.created","timestamp":"2026-01-02T03:04:05Z","data":{}}`,
		"body timestamp is not RFC 3339":  `{"id":"msg_2Xk","type":"order.created","timestamp":"yesterday","data":{}}`,
		"body is not JSON":                `{"id":"msg_2Xk",`,
	} {
		h, b := signedBody(b)
		tests[name] = sigCase{header: h, body: b, want: 400, badBody: 1}
	}

	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := start(t)
			if err := r.SetSecret("signed", good); err != nil {
				t.Fatal(err)
			}
			resp := mustPost(t, newClient(t, 5*time.Second), r.URL("signed"), tc.header, tc.body)
			if resp.StatusCode != tc.want {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.want)
			}
			if got := r.BadSignatures(); got != tc.badSigs {
				t.Errorf("BadSignatures() = %d, want %d", got, tc.badSigs)
			}
			if got := r.BadBodies(); got != tc.badBody {
				t.Errorf("BadBodies() = %d, want %d", got, tc.badBody)
			}
			wantDelivered := 0
			if tc.want == 204 {
				wantDelivered = 1
			}
			if got := r.Received("signed")[id]; got != wantDelivered {
				t.Errorf("Received(signed)[%s] = %d, want %d", id, got, wantDelivered)
			}
		})
	}
}

func TestSetSecret(t *testing.T) {
	r := start(t)
	c := newClient(t, 5*time.Second)
	for name, s := range map[string]string{
		"no whsec_ prefix":    base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef")),
		"nothing after it":    "whsec_",
		"not base64 after it": "whsec_!!!",
	} {
		if err := r.SetSecret("ep", s); err == nil {
			t.Errorf("%s: SetSecret(%q) accepted it", name, s)
		}
	}
	if err := r.SetSecret("ep", secret(1)); err != nil {
		t.Fatal(err)
	}
	if got := mustPost(t, c, r.URL("ep"), withID("msg_1"), `{}`).StatusCode; got != 401 {
		t.Errorf("unsigned request with a secret set: status %d, want 401", got)
	}
	if err := r.SetSecret("ep", ""); err != nil {
		t.Fatal(err)
	}
	if got := mustPost(t, c, r.URL("ep"), withID("msg_1"), `{}`).StatusCode; got != 204 {
		t.Errorf("unsigned request after the secret was removed: status %d, want 204", got)
	}
}

func TestArrivals(t *testing.T) {
	t.Run("kept in order with their statuses", func(t *testing.T) {
		r := start(t, receiver.KeepArrivals())
		r.SetBehavior("ep", receiver.Behavior{Status: 500, FailFirst: 1})
		c := newClient(t, 5*time.Second)
		began := time.Now()
		for _, id := range []string{"msg_a", "msg_a", "msg_b", "msg_b", "msg_c"} {
			mustPost(t, c, r.URL("ep"), withID(id), `{}`)
		}
		got := r.Arrivals("ep")
		want := []receiver.Arrival{{ID: "msg_a", Status: 500}, {ID: "msg_a", Status: 204},
			{ID: "msg_b", Status: 500}, {ID: "msg_b", Status: 204}, {ID: "msg_c", Status: 500}}
		if len(got) != len(want) {
			t.Fatalf("Arrivals = %+v, want %+v", got, want)
		}
		last := began
		for i := range want {
			if got[i].ID != want[i].ID || got[i].Status != want[i].Status {
				t.Errorf("arrival %d = %s %d, want %s %d", i, got[i].ID, got[i].Status, want[i].ID, want[i].Status)
			}
			if got[i].At.Before(last) {
				t.Errorf("arrival %d at %v, before the one before it (%v)", i, got[i].At, last)
			}
			last = got[i].At
		}
		got[0].ID = "changed"
		if r.Arrivals("ep")[0].ID != "msg_a" {
			t.Error("Arrivals returned the receiver's own slice, want a copy")
		}
	})
	t.Run("not kept by default", func(t *testing.T) {
		r := start(t)
		mustPost(t, newClient(t, 5*time.Second), r.URL("ep"), withID("msg_a"), `{}`)
		if got := r.Arrivals("ep"); len(got) != 0 {
			t.Errorf("Arrivals = %+v without KeepArrivals, want none", got)
		}
	})
}

// BenchmarkHandle measures a plain unsigned delivery through fasthttp in
// process, client included, each request with a new webhook-id as in a
// load test.
func BenchmarkHandle(b *testing.B) {
	ln := fasthttputil.NewInmemoryListener()
	r := receiver.Serve(ln)
	b.Cleanup(func() { _ = r.Close() })
	c := &fasthttp.Client{Dial: func(string) (net.Conn, error) { return ln.Dial() }}
	body := []byte(`{"id":"msg_0","type":"order.created","timestamp":"2026-01-02T03:04:05Z","data":{}}`)
	var seq atomic.Int64

	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.SetRequestURI(r.URL("bench"))
		req.Header.SetMethod(fasthttp.MethodPost)
		req.SetBody(body)
		id := make([]byte, 0, 32)
		for pb.Next() {
			id = strconv.AppendInt(append(id[:0], "msg_"...), seq.Add(1), 36)
			req.Header.SetBytesV("webhook-id", id)
			if err := c.DoTimeout(req, resp, 5*time.Second); err != nil {
				b.Fatal(err)
			}
			if resp.StatusCode() != fasthttp.StatusNoContent {
				b.Fatalf("status %d", resp.StatusCode())
			}
		}
	})
}

// clock is a time source a test moves by hand.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// TestBursts: failures come for BurstFor at the start of every BurstEvery
// and go in between, on the receiver's clock.
func TestBursts(t *testing.T) {
	clk := &clock{now: time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)}
	r := start(t, receiver.WithClock(clk.Now))
	r.SetBehavior("flap", receiver.Behavior{Status: 503, BurstEvery: 10 * time.Second, BurstFor: 3 * time.Second, RetryAfter: "1"})
	c := newClient(t, 5*time.Second)
	for i, step := range []struct {
		advance time.Duration // moved before the request
		want    int
	}{
		{0, 503},
		{2900 * time.Millisecond, 503},
		{100 * time.Millisecond, 204}, // 3 s: the burst is over
		{6900 * time.Millisecond, 204},
		{100 * time.Millisecond, 503}, // 10 s: the next burst
		{3 * time.Second, 204},
	} {
		clk.Add(step.advance)
		resp := mustPost(t, c, r.URL("flap"), withID("msg_"+strconv.Itoa(i)), `{}`)
		if resp.StatusCode != step.want {
			t.Errorf("request %d: status %d, want %d", i, resp.StatusCode, step.want)
		}
		if want := map[int]string{503: "1", 204: ""}[step.want]; resp.Header.Get("Retry-After") != want {
			t.Errorf("request %d: Retry-After %q, want %q", i, resp.Header.Get("Retry-After"), want)
		}
	}
	if got := r.Received("flap"); !mapsEqual(got, map[string]int{"msg_2": 1, "msg_3": 1, "msg_5": 1}) {
		t.Errorf("Received = %v, want only the requests between bursts", got)
	}
}

// TestReset: the request is read (it counts as an arrival), then the
// connection is reset without an answer and nothing is delivered.
func TestReset(t *testing.T) {
	r := start(t, receiver.KeepArrivals())
	r.SetBehavior("reset", receiver.Behavior{Reset: true})
	_, err := post(t, newClient(t, 5*time.Second), r.URL("reset"), withID("msg_reset"), `{}`)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("POST to a resetting endpoint: err %v, want connection reset by peer", err)
	}
	if got := r.Arrivals("reset"); len(got) != 1 || got[0].ID != "msg_reset" || got[0].Status != 0 {
		t.Errorf("Arrivals = %+v, want one msg_reset never answered", got)
	}
	if got := r.Received("reset"); len(got) != 0 {
		t.Errorf("Received = %v, want nothing: a reset is not a delivery", got)
	}
	// The next request, on a new connection, is served again.
	r.SetBehavior("reset", receiver.Behavior{})
	if got := mustPost(t, newClient(t, 5*time.Second), r.URL("reset"), withID("msg_after"), `{}`).StatusCode; got != 204 {
		t.Errorf("after the reset behaviour ends: status %d, want 204", got)
	}
}

// TestSlowBody: the status arrives first and the body in pieces over
// SlowBody; the request counts as delivered.
func TestSlowBody(t *testing.T) {
	const slow = 400 * time.Millisecond
	r := start(t)
	r.SetBehavior("slow", receiver.Behavior{SlowBody: slow})
	req, err := http.NewRequest(http.MethodPost, r.URL("slow"), bytes.NewReader([]byte(`{}`)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("webhook-id", "msg_slow")
	began := time.Now()
	resp, err := newClient(t, 5*time.Second).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	headers := time.Since(began)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("status %d, want 200", resp.StatusCode)
	}
	var pieces int
	buf := make([]byte, 1024)
	var body []byte
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			pieces++
			body = append(body, buf[:n]...)
		}
		if err != nil {
			break
		}
	}
	if len(body) != 512 {
		t.Errorf("body of %d bytes, want 512", len(body))
	}
	// Lower bounds only: the body cannot arrive sooner than its pauses.
	if took := time.Since(began); took < slow*7/8 {
		t.Errorf("the whole answer took %v, want at least %v", took, slow*7/8)
	}
	if pieces < 2 {
		t.Errorf("the body arrived in %d read, want it in pieces (headers after %v)", pieces, headers)
	}
	if got := r.Received("slow"); got["msg_slow"] != 1 {
		t.Errorf("Received = %v, want msg_slow delivered once", got)
	}
}
