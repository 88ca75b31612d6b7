package api_test

import (
	"net/http"
	"testing"

	"github.com/sluicehq/sluice/services/ingest/api"
)

// TestHTTPSemantics covers the RFC details: If-Match compares strongly, the
// Bearer scheme is case-insensitive, and a PATCH that changes nothing
// writes nothing (the etag stays).
func TestHTTPSemantics(t *testing.T) {
	e := newEnv(t)
	_, key := newTenant(t, e.server, "semantics")
	ep := newEndpoint(t, e.server, key, map[string]any{"url": "https://example.com/hook"})
	path := "/v1/endpoints/" + ep.ID

	t.Run("a weak If-Match tag never matches", func(t *testing.T) {
		callProblem(t, e.server, http.StatusPreconditionFailed, "precondition-failed", "PATCH", path, key,
			map[string]any{"description": "x"}, "If-Match", "W/"+quoted(ep.Etag))
	})
	t.Run("the Bearer scheme is case-insensitive", func(t *testing.T) {
		status, _, raw := e.server.do(t, "GET", path, "", nil, "Authorization", "bEaReR "+key)
		if status != http.StatusOK {
			t.Fatalf("lower-case scheme: %d %s", status, raw)
		}
	})
	t.Run("a PATCH that changes nothing keeps the etag", func(t *testing.T) {
		for _, body := range []map[string]any{{}, {"url": ep.URL}, {"max_in_flight": ep.MaxInFlight}} {
			got, hdr, _ := call[api.EndpointJSON](t, e.server, http.StatusOK, "PATCH", path, key, body,
				"If-Match", quoted(ep.Etag))
			if got.Etag != ep.Etag || !got.Updated.Equal(ep.Updated) {
				t.Fatalf("PATCH %v changed etag %s → %s or updated", body, ep.Etag, got.Etag)
			}
			wantEtag(t, hdr, ep.Etag)
		}
		call[api.EndpointJSON](t, e.server, http.StatusOK, "POST", path+"/enable", key, nil)
		if got, _, _ := call[api.EndpointJSON](t, e.server, http.StatusOK, "GET", path, key, nil); got.Etag != ep.Etag {
			t.Fatalf("enabling an enabled endpoint changed its etag")
		}
	})
}
