package e2e_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/loadtest/receiver"
	"github.com/sluicehq/sluice/pkg/testenv"
	ingestapi "github.com/sluicehq/sluice/services/ingest/api"
)

// logStack runs ingest, sender and logwriter on the test's topics and
// database, with the API on a free port; it returns an admin client.
func logStack(t *testing.T) (*testenv.Kafka, *testenv.ClickHouse, *apiClient, string) {
	t.Helper()
	k := senderKafka(t)
	ch := testenv.NewClickHouse(t)
	const adminKey = "admin-key-of-the-e2e-log-test-0123456789abc"
	apiAddr := freeAddr(t)
	startLogwriter(t, k, ch)
	startSender(t, k, env{"SLUICE_CIRCUIT_MIN_ATTEMPTS": "1000"})
	startIngest(t, k, env{
		"SLUICE_API_ADDR":            apiAddr,
		"SLUICE_ADMIN_KEY":           adminKey,
		"SLUICE_CLICKHOUSE_ADDRS":    ch.Config.Addrs[0],
		"SLUICE_CLICKHOUSE_DATABASE": ch.Config.Database,
	})
	a := &apiClient{t: t, base: "http://" + apiAddr}
	a.waitUp()
	return k, ch, a, adminKey
}

// newTenant makes a tenant and returns its API key.
func newTenant(a *apiClient, adminKey, name string) string {
	var tenant struct{ ID string }
	a.call("POST", "/v1/tenants", adminKey, `{"name":"`+name+`"}`, http.StatusCreated, &tenant)
	var key struct{ Key string }
	a.call("POST", "/v1/tenants/"+tenant.ID+"/api-keys", adminKey, `{"name":"e2e"}`, http.StatusCreated, &key)
	return key.Key
}

// eventually retries check until it passes or a minute is up.
func eventually(t *testing.T, what string, check func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !check() {
		if time.Now().After(deadline) {
			t.Fatalf("waited a minute for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestDeliveryLogAPIReplayAndRecover runs the whole stack: events sent over
// HTTP reach a receiver; the log API then shows exactly the events and the
// attempts the receiver saw, to their tenant only; a replay delivers an
// event again; a recover re-sends an endpoint's dead letters once the
// endpoint works again.
func TestDeliveryLogAPIReplayAndRecover(t *testing.T) {
	_, _, a, adminKey := logStack(t)
	recv := startReceiver(t)
	keyA, keyB := newTenant(a, adminKey, "Tenant A"), newTenant(a, adminKey, "Tenant B")

	type endpoint struct{ ID, Secret string }
	var good, broken endpoint
	a.call("POST", "/v1/endpoints", keyA, `{"url":"`+recv.URL("good")+`","events":["order.*"]}`, http.StatusCreated, &good)
	a.call("POST", "/v1/endpoints", keyA, `{"url":"`+recv.URL("broken")+`","events":["order.paid"],"retry_schedule_ms":[1000]}`,
		http.StatusCreated, &broken)
	for name, ep := range map[string]endpoint{"good": good, "broken": broken} {
		if err := recv.SetSecret(name, ep.Secret); err != nil {
			t.Fatal(err)
		}
	}
	recv.SetBehavior("broken", receiver.Behavior{Status: 500})

	// 10 order.created (good only) and 5 order.paid (good and broken).
	var created, paid []string
	for i := range 15 {
		typ := "order.created"
		if i >= 10 {
			typ = "order.paid"
		}
		var acc ingestapi.EventAccepted
		a.call("POST", "/v1/events", keyA, fmt.Sprintf(`{"type":%q,"data":{"n":%d}}`, typ, i), http.StatusAccepted, &acc)
		if typ == "order.created" {
			created = append(created, acc.ID)
		} else {
			paid = append(paid, acc.ID)
		}
	}
	all := append(append([]string(nil), created...), paid...)
	waitDelivered(t, recv, map[string][]string{"good": all}, 60*time.Second)

	// The broken endpoint's 5 fail twice (1 retry) and end dead; the log
	// then holds one attempt row per request the receiver saw.
	eventually(t, "the log to hold every attempt the receiver saw", func() bool {
		var page struct{ Data []ingestapi.AttemptJSON }
		a.call("GET", "/v1/attempts?limit=250", keyA, "", http.StatusOK, &page)
		return int64(len(page.Data)) == recv.Requests() && recv.Requests() == 15+10
	})
	var page struct {
		Data       []ingestapi.AttemptJSON
		NextCursor string `json:"next_cursor"`
	}
	a.call("GET", "/v1/endpoints/"+broken.ID+"/attempts?status_class=5xx", keyA, "", http.StatusOK, &page)
	if len(page.Data) != 10 {
		t.Fatalf("%d 5xx attempts of the broken endpoint, want 10 (5 deliveries × 2 attempts)", len(page.Data))
	}
	// Paging the good endpoint's 15 attempts 4 at a time: each once.
	seen := map[string]bool{}
	cursor := ""
	for {
		path := "/v1/endpoints/" + good.ID + "/attempts?limit=4"
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		var p struct {
			Data       []ingestapi.AttemptJSON
			NextCursor string `json:"next_cursor"`
		}
		a.call("GET", path, keyA, "", http.StatusOK, &p)
		for _, at := range p.Data {
			if seen[at.ID] || at.Outcome != "success" || at.EndpointID != good.ID {
				t.Fatalf("attempt %+v twice or wrong", at)
			}
			seen[at.ID] = true
		}
		if p.NextCursor == "" {
			break
		}
		cursor = p.NextCursor
	}
	if len(seen) != 15 {
		t.Fatalf("paged %d attempts of the good endpoint, want 15", len(seen))
	}

	// Events: one row per accepted event, with payload and status.
	var events struct{ Data []ingestapi.LoggedEventJSON }
	// Every accepted event once: the 15 sent, and the 5
	// sluice.delivery.exhausted events Sluice emitted into the tenant's
	// stream for the broken endpoint's dead letters.
	eventually(t, "the log to hold every event", func() bool {
		a.call("GET", "/v1/events?limit=250", keyA, "", http.StatusOK, &events)
		return len(events.Data) == 20
	})
	a.call("GET", "/v1/events?type=sluice.delivery.exhausted", keyA, "", http.StatusOK, &events)
	if len(events.Data) != 5 || events.Data[0].Source != "system" {
		t.Fatalf("exhausted events %+v, want 5 from the system", events.Data)
	}
	a.call("GET", "/v1/events?type=order.paid", keyA, "", http.StatusOK, &events)
	if len(events.Data) != 5 {
		t.Fatalf("%d order.paid events, want 5", len(events.Data))
	}
	var detail ingestapi.LoggedEventDetailJSON
	eventually(t, "the paid event's deliveries to settle", func() bool {
		a.call("GET", "/v1/events/"+paid[0], keyA, "", http.StatusOK, &detail)
		st := map[string]string{}
		for _, d := range detail.Deliveries {
			st[d.EndpointID] = d.Status
		}
		return st[good.ID] == "delivered" && st[broken.ID] == "failed"
	})
	if string(detail.Data) != `{"n":10}` {
		t.Fatalf("event data %s", detail.Data)
	}

	var stats ingestapi.EndpointStatsJSON
	a.call("GET", "/v1/endpoints/"+good.ID+"/stats?window=1h", keyA, "", http.StatusOK, &stats)
	if stats.Attempts != 15 || stats.Successes != 15 || stats.SuccessRate == nil || *stats.SuccessRate != 1 || len(stats.PerMinute) == 0 {
		t.Fatalf("stats %+v", stats)
	}

	// Tenant B sees none of it.
	a.call("GET", "/v1/events", keyB, "", http.StatusOK, &events)
	a.call("GET", "/v1/attempts", keyB, "", http.StatusOK, &page)
	if len(events.Data) != 0 || len(page.Data) != 0 {
		t.Fatalf("tenant B sees %d events and %d attempts of tenant A", len(events.Data), len(page.Data))
	}
	for _, path := range []string{"/v1/events/" + paid[0], "/v1/endpoints/" + good.ID + "/attempts",
		"/v1/endpoints/" + good.ID + "/stats"} {
		if status, raw := a.try("GET", path, keyB, nil); status != http.StatusNotFound {
			t.Errorf("tenant B GET %s: %d %s, want 404", path, status, raw)
		}
	}
	if status, _ := a.try("POST", "/v1/events/"+paid[0]+"/replay", keyB, nil); status != http.StatusNotFound {
		t.Errorf("tenant B replays tenant A's event: %d, want 404", status)
	}

	// Hostile parameters: refused, or bound and matching nothing.
	for _, q := range []string{
		"event_id=" + url.QueryEscape(`' OR 1=1 --`),
		"endpoint_id=" + url.QueryEscape(`x') OR tenant_id != ('`),
		"outcome=" + url.QueryEscape(`success' OR '1'='1`),
		"status=" + url.QueryEscape(`200 OR 1=1`),
		"since=" + url.QueryEscape(`2026-01-01'; DROP TABLE attempts; --`),
		"limit=1000000", "limit=-1", "cursor=" + url.QueryEscape(`';--`),
		"event_id=" + strings.Repeat("x", 5000),
		"nonsense=1",
	} {
		status, raw := a.try("GET", "/v1/attempts?"+q, keyA, nil)
		var p struct{ Data []ingestapi.AttemptJSON }
		switch status {
		case http.StatusBadRequest:
		case http.StatusOK:
			if err := json.Unmarshal(raw, &p); err != nil || len(p.Data) != 0 {
				t.Errorf("?%.60s: 200 with %d attempts", q, len(p.Data))
			}
		default:
			t.Errorf("?%.60s: status %d %s, want 400 or an empty page", q, status, raw)
		}
	}

	// Replay one created event to the good endpoint: it arrives again.
	var replayed ingestapi.ReplayedJSON
	a.call("POST", "/v1/events/"+created[0]+"/replay", keyA, "", http.StatusAccepted, &replayed)
	if len(replayed.Deliveries) != 1 || replayed.Deliveries[0].EndpointID != good.ID {
		t.Fatalf("replay created %+v", replayed)
	}
	eventually(t, "the replayed webhook", func() bool { return recv.Received("good")[created[0]] == 2 })

	// Recover: the broken endpoint works now; its 5 dead letters go out.
	recv.SetBehavior("broken", receiver.Behavior{})
	since := time.Now().Add(-10 * time.Minute).UTC().Format(time.RFC3339)
	until := time.Now().Add(time.Minute).UTC().Format(time.RFC3339)
	var job ingestapi.RecoverJobJSON
	a.call("POST", "/v1/endpoints/"+broken.ID+"/recover", keyA, `{"since":"`+since+`","until":"`+until+`"}`,
		http.StatusAccepted, &job)
	eventually(t, "the recover job", func() bool {
		a.call("GET", "/v1/endpoints/"+broken.ID+"/recover/"+job.ID, keyA, "", http.StatusOK, &job)
		return job.Status != "running"
	})
	if job.Status != "done" || job.Recovered != 5 || job.Scanned != 5 {
		t.Fatalf("recover job %+v, want 5 recovered", job)
	}
	waitDelivered(t, recv, map[string][]string{"broken": paid}, 60*time.Second)
	if n := recv.BadSignatures() + recv.BadBodies(); n > 0 {
		t.Fatalf("%d webhooks failed verification", n)
	}
	// Recover's bounds.
	for _, body := range []string{`{}`, `{"since":"` + until + `","until":"` + since + `"}`,
		`{"since":"2026-01-01T00:00:00Z","until":"2026-03-01T00:00:00Z"}`, `{"since":"x"}`} {
		if status, raw := a.try("POST", "/v1/endpoints/"+broken.ID+"/recover", keyA, []byte(body)); status != http.StatusBadRequest {
			t.Errorf("recover %s: %d %s, want 400", body, status, raw)
		}
	}
}
