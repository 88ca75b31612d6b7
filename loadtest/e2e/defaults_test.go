package e2e_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/loadtest/receiver"
	ingestapi "github.com/sluicehq/sluice/services/ingest/api"
)

// TestOperatorDefaultsApplyToAPIEndpoints: an endpoint created through the
// HTTP API without max_in_flight takes the sender's
// SLUICE_ENDPOINT_MAX_IN_FLIGHT, measured at the receiver (review B2: the
// API used to store 10 in every endpoint, so the setting never applied).
func TestOperatorDefaultsApplyToAPIEndpoints(t *testing.T) {
	k := senderKafka(t)
	const adminKey = "admin-key-of-the-e2e-defaults-test-0123456"
	apiAddr := freeAddr(t)
	startSender(t, k, env{"SLUICE_ENDPOINT_MAX_IN_FLIGHT": "2"})
	startIngest(t, k, env{"SLUICE_API_ADDR": apiAddr, "SLUICE_ADMIN_KEY": adminKey})
	a := &apiClient{t: t, base: "http://" + apiAddr}
	a.waitUp()
	key := newTenant(a, adminKey, "Defaults")

	recv := startReceiver(t)
	// Requests that take a while, so many would overlap if allowed.
	recv.SetBehavior("defaults", receiver.Behavior{Delay: 100 * time.Millisecond})
	var ep ingestapi.EndpointJSON
	a.call("POST", "/v1/endpoints", key, `{"url":"`+recv.URL("defaults")+`"}`, http.StatusCreated, &ep)
	if ep.MaxInFlight != nil || ep.TimeoutMs != nil {
		t.Fatalf("created without limits, the endpoint shows max_in_flight %v and timeout_ms %v; want null", ep.MaxInFlight, ep.TimeoutMs)
	}
	if err := recv.SetSecret("defaults", ep.Secret); err != nil {
		t.Fatal(err)
	}

	const n = 40
	items := make([]string, n)
	for i := range items {
		items[i] = fmt.Sprintf(`{"type":"order.created","data":{"n":%d}}`, i)
	}
	var res ingestapi.EventBatchResult
	a.call("POST", "/v1/events/batch", key, `{"events":[`+strings.Join(items, ",")+`]}`, http.StatusOK, &res)
	var ids []string
	for i, r := range res.Data {
		if r.Error != nil {
			t.Fatalf("event %d refused: %+v", i, r.Error)
		}
		ids = append(ids, r.ID)
	}
	waitDelivered(t, recv, map[string][]string{"defaults": ids}, 60*time.Second)
	if got := recv.MaxConcurrent("defaults"); got != 2 {
		t.Fatalf("the receiver saw %d requests at once; SLUICE_ENDPOINT_MAX_IN_FLIGHT=2 should bound them to 2", got)
	}
	if n := recv.BadSignatures() + recv.BadBodies(); n > 0 {
		t.Fatalf("%d webhooks failed verification", n)
	}
}
