package e2e_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/loadtest/receiver"
	"github.com/sluicehq/sluice/pkg/eventrecord"
	"github.com/sluicehq/sluice/pkg/testenv"
	ingest "github.com/sluicehq/sluice/services/ingest/app"
	sender "github.com/sluicehq/sluice/services/sender/app"
)

// TestHTTPEventsEndToEnd: events sent to the HTTP events API reach the
// receiver exactly once each. A repeat with the same Idempotency-Key, sent
// once the first copy was routed, is answered duplicate with the original
// id; a repeat inside a batch is too; neither is delivered again.
func TestHTTPEventsEndToEnd(t *testing.T) {
	k := testenv.NewKafka(t)
	var mu sync.Mutex
	bodies := map[string][]byte{} // webhook-id → body
	recv, err := receiver.Start("127.0.0.1:0", receiver.OnDelivery(func(d receiver.Delivery) {
		mu.Lock()
		defer mu.Unlock()
		bodies[d.WebhookID] = d.Body
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { recv.Close() })

	const adminKey = "admin-key-of-the-e2e-events-test-0123456789"
	apiAddr := freeAddr(t)
	common := commonEnv(k)
	senderSettings := common.with(senderEnv).with(env{"SLUICE_GROUP": k.Prefix + "sender"})
	ingestEnv := common.with(env{
		"SLUICE_API_ADDR":                 apiAddr,
		"SLUICE_ADMIN_KEY":                adminKey,
		"SLUICE_INSECURE_DEV_SECRETS_KEY": "true",
		"SLUICE_ROUTER_GROUP":             k.Prefix + "router",
	})
	start(t, "sender", sender.LoadConfig, sender.Run, senderSettings)
	start(t, "ingest", ingest.LoadConfig, ingest.Run, ingestEnv)

	a := &apiClient{t: t, base: "http://" + apiAddr}
	a.waitUp()
	var tenant struct{ ID string }
	a.call("POST", "/v1/tenants", adminKey, `{"name":"e2e"}`, http.StatusCreated, &tenant)
	var apiKey struct{ Key string }
	a.call("POST", "/v1/tenants/"+tenant.ID+"/api-keys", adminKey, `{"name":"e2e"}`, http.StatusCreated, &apiKey)
	key := apiKey.Key
	var created struct{ Secret string }
	a.call("POST", "/v1/endpoints", key, `{"url":"`+recv.URL("http")+`","events":["order.*"]}`, http.StatusCreated, &created)
	// The receiver verifies every webhook with the secret the API showed.
	if err := recv.SetSecret("http", created.Secret); err != nil {
		t.Fatal(err)
	}

	type accepted struct {
		ID        string `json:"id"`
		Duplicate bool   `json:"duplicate"`
	}
	// delivered waits until the receiver has every id of want, then leaves
	// room for a stray duplicate to show, and checks each arrived once.
	delivered := func(want ...string) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for len(recv.Tally("http", want).Missing) > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("not delivered within 60 s: %v", recv.Tally("http", want).Missing)
			}
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(500 * time.Millisecond)
		if tally := recv.Tally("http", want); tally.Duplicates > 0 || len(tally.Unexpected) > 0 {
			t.Fatalf("receiver: %d duplicates, unexpected %v", tally.Duplicates, tally.Unexpected)
		}
		if n, m := recv.BadSignatures(), recv.BadBodies(); n+m > 0 {
			t.Fatalf("receiver: %d webhooks with bad signatures, %d with bad bodies", n, m)
		}
	}

	// One event with an Idempotency-Key: delivered once, with its data.
	var first accepted
	a.call("POST", "/v1/events", key, `{"type":"order.created","data":{"order":"o_1"}}`, http.StatusAccepted, &first,
		"Idempotency-Key", "order-o_1-created")
	if first.Duplicate || first.ID != eventrecord.IDFromIdempotencyKey(tenant.ID, "order-o_1-created") {
		t.Fatalf("first answer %+v", first)
	}
	delivered(first.ID)
	var webhook struct {
		ID, Type string
		Data     json.RawMessage
	}
	mu.Lock()
	err = json.Unmarshal(bodies[first.ID], &webhook)
	mu.Unlock()
	if err != nil || webhook.ID != first.ID || webhook.Type != "order.created" || string(webhook.Data) != `{"order":"o_1"}` {
		t.Fatalf("webhook %+v (%v), want the event sent", webhook, err)
	}

	// The same call again, now that the first copy was routed: the original
	// id, as a duplicate, and nothing delivered again.
	var again accepted
	a.call("POST", "/v1/events", key, `{"type":"order.created","data":{"order":"o_1"}}`, http.StatusAccepted, &again,
		"Idempotency-Key", "order-o_1-created")
	if again != (accepted{ID: first.ID, Duplicate: true}) {
		t.Fatalf("repeat answered %+v, want %s as a duplicate", again, first.ID)
	}

	// An event without an id, and a batch: a new event, the first one by
	// its id (a duplicate), and one event twice (delivered once).
	var plain accepted
	a.call("POST", "/v1/events", key, `{"type":"order.paid","data":{}}`, http.StatusAccepted, &plain)
	var batch struct {
		Data []struct {
			ID        string `json:"id"`
			Duplicate *bool  `json:"duplicate"`
			Error     any    `json:"error"`
		} `json:"data"`
	}
	a.call("POST", "/v1/events/batch", key, `{"events":[
		{"type":"order.shipped","id":"ship-1","data":{"n":1}},
		{"type":"order.created","id":"`+first.ID+`","data":{"order":"o_1"}},
		{"type":"order.refunded","id":"refund-1","data":{}},
		{"type":"order.refunded","id":"refund-1","data":{}}]}`, http.StatusOK, &batch)
	var got []string
	for _, r := range batch.Data {
		if r.Error != nil || r.Duplicate == nil {
			t.Fatalf("batch results %+v", batch.Data)
		}
		got = append(got, r.ID+map[bool]string{true: "(dup)"}[*r.Duplicate])
	}
	if want := []string{"ship-1", first.ID + "(dup)", "refund-1", "refund-1(dup)"}; !slices.Equal(got, want) {
		t.Fatalf("batch results %q, want %q", got, want)
	}
	delivered(first.ID, plain.ID, "ship-1", "refund-1")
}

// freeAddr is a 127.0.0.1 address nothing listens on right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// apiClient calls the ingest API under test.
type apiClient struct {
	t    *testing.T
	base string
}

var httpClient = &http.Client{Timeout: 30 * time.Second}

// try makes one request; headers are name, value pairs.
func (a *apiClient) try(method, path, key string, body []byte, headers ...string) (int, []byte) {
	req, err := http.NewRequest(method, a.base+path, bytes.NewReader(body))
	if err != nil {
		a.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw
}

// waitUp waits until the API answers, failing after 30 s.
func (a *apiClient) waitUp() {
	a.t.Helper()
	// Authenticated routes answer 503 until the config view has caught up
	// (api.Options.ConfigReady), then 401 to a request without a key: only
	// then can a test create tenants. On a loaded machine the view takes
	// seconds after the listener answers.
	up := func() bool {
		status, _ := a.try("GET", "/v1/endpoints", "", nil)
		return status == http.StatusUnauthorized
	}
	deadline := time.Now().Add(60 * time.Second)
	for !up() {
		if time.Now().After(deadline) {
			a.t.Fatal("the ingest API did not load its configuration within 60 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// call makes a request that must answer want, decoding the answer into out
// unless it is nil.
func (a *apiClient) call(method, path, key, body string, want int, out any, headers ...string) {
	a.t.Helper()
	status, raw := a.try(method, path, key, []byte(strings.TrimSpace(body)), headers...)
	if status != want {
		a.t.Fatalf("%s %s: status %d, want %d: %s", method, path, status, want, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			a.t.Fatalf("%s %s: %v: %s", method, path, err, raw)
		}
	}
}
