package api_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/sluicehq/sluice/pkg/testenv"
	"github.com/sluicehq/sluice/services/ingest/api"
)

// TestEndpointsPerTenantAreBounded: a tenant has at most the operator's
// default of 1000 endpoints (review H2); the endpoint past it is refused
// with a problem that says the limit and how to raise it, and is not
// written.
func TestEndpointsPerTenantAreBounded(t *testing.T) {
	mem, h := fixture(t, newBox(t)) // the fixture's tenant has 1 endpoint
	for i := 1; i < 1000; i++ {
		resp := serveInProcess(h, "POST", "/v1/endpoints", fuzzAPIKey, []byte(fmt.Sprintf(`{"url":"https://example.com/%d"}`, i)))
		if resp.StatusCode() != http.StatusCreated {
			t.Fatalf("endpoint %d of 1000: status %d: %s", i+1, resp.StatusCode(), resp.Body())
		}
	}
	resp := serveInProcess(h, "POST", "/v1/endpoints", fuzzAPIKey, []byte(`{"url":"https://example.com/one-too-many"}`))
	checkAnswer(t, resp)
	if resp.StatusCode() != http.StatusConflict {
		t.Fatalf("endpoint 1001: status %d, want 409: %s", resp.StatusCode(), resp.Body())
	}
	p := decodeStrict[api.Problem](t, resp.Body())
	if p.Type != api.ProblemBase+"limit-exceeded" || !strings.Contains(p.Detail, "1000") ||
		!strings.Contains(p.Detail, "max_endpoints") {
		t.Fatalf("problem %+v, want limit-exceeded naming the limit (1000) and max_endpoints", p)
	}
	if n := len(mem.TenantObjects(fuzzTenant)); n != 1001 { // 1000 endpoints and the key
		t.Fatalf("the tenant has %d objects, want 1001", n)
	}
}

// TestTenantEndpointQuota: an admin sets a tenant's max_endpoints, and the
// count is checked where config writes are serialised, so two creates
// racing on two replicas for the last place cannot both get it.
func TestTenantEndpointQuota(t *testing.T) {
	t.Parallel()
	k := testenv.NewKafka(t)
	box := newBox(t)
	a := startReplica(t, k, box, testOptions())
	b := startReplica(t, k, box, testOptions())

	ten, _, raw := call[api.TenantJSON](t, a.server, 201, "POST", "/v1/tenants", adminKey, `{"name":"Quota","max_endpoints":2}`)
	if ten.MaxEndpoints == nil || *ten.MaxEndpoints != 2 {
		t.Fatalf("created with max_endpoints 2: %s", raw)
	}
	apiKey, _, _ := call[api.APIKeyJSON](t, a.server, 201, "POST", "/v1/tenants/"+ten.ID+"/api-keys", adminKey, `{"name":"k"}`)
	key := apiKey.Key
	newEndpoint(t, a.server, key, endpointBody(""))
	eventually(t, "the key on b", func() bool {
		status, _, _ := b.do(t, "GET", "/v1/endpoints", key, nil)
		return status == 200
	})

	for round := range 3 {
		var wg sync.WaitGroup
		statuses := make([]int, 2)
		bodies := make([][]byte, 2)
		errs := make([]error, 2)
		start := make(chan struct{})
		for i, r := range []*replica{a, b} {
			wg.Go(func() {
				<-start
				statuses[i], _, bodies[i], errs[i] = r.send("POST", "/v1/endpoints", key, endpointBody(fmt.Sprintf(`"description":"round %d replica %d"`, round, i)))
			})
		}
		close(start)
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		created := -1
		for i, st := range statuses {
			if st == 201 {
				created = i
			}
		}
		if created < 0 || statuses[1-created] != 409 {
			t.Fatalf("round %d: statuses %v through a and b, want one 201 and one 409", round, statuses)
		}
		p := decodeStrict[api.Problem](t, bodies[1-created])
		if p.Type != api.ProblemBase+"limit-exceeded" || !strings.Contains(p.Detail, "at most 2 (set on the tenant)") {
			t.Fatalf("round %d: refusal %+v", round, p)
		}
		list, _, _ := call[page[api.EndpointJSON]](t, a.server, 200, "GET", "/v1/endpoints", key, nil)
		if len(list.Data) != 2 {
			t.Fatalf("round %d: the tenant has %d endpoints, want 2", round, len(list.Data))
		}
		// Make room again for the next round.
		if status, _, raw := a.do(t, "DELETE", "/v1/endpoints/"+list.Data[1].ID, key, nil); status != 204 {
			t.Fatalf("delete: %d %s", status, raw)
		}
	}

	// Raised: a third fits. Back to the default (null): 1000.
	path := "/v1/tenants/" + ten.ID
	raised, _, _ := call[api.TenantJSON](t, a.server, 200, "PATCH", path, adminKey, `{"max_endpoints":3}`)
	if raised.MaxEndpoints == nil || *raised.MaxEndpoints != 3 {
		t.Fatalf("patched to 3: %+v", raised)
	}
	newEndpoint(t, a.server, key, endpointBody(""))
	newEndpoint(t, a.server, key, endpointBody(""))
	callProblem(t, a.server, 409, "limit-exceeded", "POST", "/v1/endpoints", key, endpointBody(""))
	dflt, _, raw := call[api.TenantJSON](t, a.server, 200, "PATCH", path, adminKey, `{"max_endpoints":null}`)
	if dflt.MaxEndpoints != nil || !strings.Contains(string(raw), `"max_endpoints":null`) {
		t.Fatalf("patched to null: %s", raw)
	}
	newEndpoint(t, a.server, key, endpointBody(""))
	// Zero: no new endpoint at all.
	call[api.TenantJSON](t, a.server, 200, "PATCH", path, adminKey, `{"max_endpoints":0}`)
	callProblem(t, a.server, 409, "limit-exceeded", "POST", "/v1/endpoints", key, endpointBody(""))

	for _, body := range []string{`{"max_endpoints":10001}`, `{"max_endpoints":-1}`, `{"max_endpoints":"5"}`, `{"max_endpoints":1.5}`} {
		p := callProblem(t, a.server, 400, "invalid-request", "PATCH", path, adminKey, body)
		wantFieldError(t, body, p, "max_endpoints")
		p = callProblem(t, a.server, 400, "invalid-request", "POST", "/v1/tenants", adminKey, `{"name":"x",`+body[1:])
		wantFieldError(t, body, p, "max_endpoints")
	}
}
