package api_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/services/ingest/api"
)

// TestTenants runs the tests of the admin routes on one topic set and
// ingest; each works on tenants of its own, so they run side by side.
func TestTenants(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, tc := range []struct {
		desc string
		run  func(*testing.T, *env)
	}{
		{"authentication", testAuthentication},
		{"tenant CRUD", testTenantCRUD},
		{"API keys", testAPIKeys},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			tc.run(t, e)
		})
	}
}

func testAuthentication(t *testing.T, e *env) {
	ten, key := newTenant(t, e.server, "Acme")

	for _, tc := range []struct {
		desc         string
		method, path string
		key          string
		headers      []string
		body         any
		status       int
		kind         string // problem kind; "" for a success
		authenticate string // the WWW-Authenticate header, for a 401
	}{
		{desc: "no Authorization on an admin route", method: "GET", path: "/v1/tenants",
			status: 401, kind: "unauthorized", authenticate: `Bearer realm="sluice"`},
		{desc: "no Authorization on a tenant route", method: "GET", path: "/v1/endpoints",
			status: 401, kind: "unauthorized", authenticate: `Bearer realm="sluice"`},
		{desc: "no Authorization on a write", method: "POST", path: "/v1/endpoints", body: `{"url":"https://example.com"}`,
			status: 401, kind: "unauthorized", authenticate: `Bearer realm="sluice"`},
		{desc: "basic instead of bearer", method: "GET", path: "/v1/endpoints", headers: []string{"Authorization", "Basic " + key},
			status: 401, kind: "unauthorized", authenticate: `Bearer realm="sluice"`},
		{desc: "bearer without a key", method: "GET", path: "/v1/endpoints", headers: []string{"Authorization", "Bearer "},
			status: 401, kind: "unauthorized", authenticate: `Bearer realm="sluice"`},
		{desc: "unknown key", method: "GET", path: "/v1/endpoints", key: "sk_not_a_key_of_anyone",
			status: 401, kind: "unauthorized", authenticate: `Bearer realm="sluice", error="invalid_token"`},
		{desc: "tenant key with one character changed", method: "GET", path: "/v1/endpoints", key: key[:len(key)-1] + "!",
			status: 401, kind: "unauthorized", authenticate: `Bearer realm="sluice", error="invalid_token"`},
		{desc: "admin key with one character changed", method: "GET", path: "/v1/tenants", key: adminKey[:len(adminKey)-1] + "!",
			status: 401, kind: "unauthorized", authenticate: `Bearer realm="sluice", error="invalid_token"`},
		{desc: "tenant key listing tenants", method: "GET", path: "/v1/tenants", key: key, status: 403, kind: "forbidden"},
		{desc: "tenant key creating a tenant", method: "POST", path: "/v1/tenants", key: key, body: `{"name":"Evil"}`,
			status: 403, kind: "forbidden"},
		{desc: "tenant key reading its own tenant", method: "GET", path: "/v1/tenants/" + ten.ID, key: key,
			status: 403, kind: "forbidden"},
		{desc: "tenant key minting API keys", method: "POST", path: "/v1/tenants/" + ten.ID + "/api-keys", key: key,
			body: `{"name":"more"}`, status: 403, kind: "forbidden"},
		{desc: "admin key listing endpoints", method: "GET", path: "/v1/endpoints", key: adminKey, status: 403, kind: "forbidden"},
		{desc: "admin key creating an endpoint", method: "POST", path: "/v1/endpoints", key: adminKey,
			body: `{"url":"https://example.com"}`, status: 403, kind: "forbidden"},
		{desc: "admin key listing tenants", method: "GET", path: "/v1/tenants", key: adminKey, status: 200},
		{desc: "tenant key listing endpoints", method: "GET", path: "/v1/endpoints", key: key, status: 200},
		{desc: "surrounding spaces around a key", method: "GET", path: "/v1/endpoints",
			headers: []string{"Authorization", "Bearer " + key + "  "}, status: 200},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			status, hdr, raw := e.do(t, tc.method, tc.path, tc.key, tc.body, tc.headers...)
			if tc.kind == "" {
				if status != tc.status {
					t.Fatalf("status %d, want %d; body %s", status, tc.status, raw)
				}
				return
			}
			wantProblem(t, tc.desc, status, hdr, raw, tc.status, tc.kind)
			if got := hdr.Get("WWW-Authenticate"); got != tc.authenticate {
				t.Fatalf("WWW-Authenticate %q, want %q", got, tc.authenticate)
			}
		})
	}

	t.Run("a deleted API key is refused", func(t *testing.T) {
		k2, _, _ := call[api.APIKeyJSON](t, e.server, 201, "POST", "/v1/tenants/"+ten.ID+"/api-keys", adminKey, `{"name":"short-lived"}`)
		if status, _, raw := e.do(t, "GET", "/v1/endpoints", k2.Key, nil); status != 200 {
			t.Fatalf("a new key: status %d, want 200; body %s", status, raw)
		}
		if status, _, raw := e.do(t, "DELETE", "/v1/tenants/"+ten.ID+"/api-keys/"+k2.ID, adminKey, nil); status != 204 {
			t.Fatalf("deleting the key: status %d, want 204; body %s", status, raw)
		}
		callProblem(t, e.server, 401, "unauthorized", "GET", "/v1/endpoints", k2.Key, nil)
		// The tenant's other key is untouched.
		if status, _, raw := e.do(t, "GET", "/v1/endpoints", key, nil); status != 200 {
			t.Fatalf("the other key: status %d, want 200; body %s", status, raw)
		}
	})

	t.Run("a tenant with API keys cannot be deleted", func(t *testing.T) {
		p := callProblem(t, e.server, 409, "conflict", "DELETE", "/v1/tenants/"+ten.ID, adminKey, nil)
		if !strings.Contains(p.Detail, "1 endpoints or API keys") {
			t.Fatalf("detail %q does not say what is left", p.Detail)
		}
		if status, _, raw := e.do(t, "GET", "/v1/endpoints", key, nil); status != 200 {
			t.Fatalf("the key after a refused delete: status %d, want 200; body %s", status, raw)
		}
	})

	t.Run("a key whose tenant is gone is refused", func(t *testing.T) {
		// The API cannot get there (the tenant delete above is refused),
		// so remove the tenant record behind its back.
		other, otherKey := newTenant(t, e.server, "Orphan")
		if err := e.store.Delete(ctxT(t), other.ID); err != nil {
			t.Fatal(err)
		}
		callProblem(t, e.server, 401, "unauthorized", "GET", "/v1/endpoints", otherKey, nil)
	})
}

func testTenantCRUD(t *testing.T, e *env) {
	start := time.Now().Add(-time.Second)

	created, hdr, raw := call[api.TenantJSON](t, e.server, 201, "POST", "/v1/tenants", adminKey,
		`{"name":"Acme","metadata":{"plan":"pro"}}`)
	wantEtag(t, hdr, created.Etag)
	if !strings.HasPrefix(created.ID, "ten_") || created.Name != "Acme" || len(created.Metadata) != 1 ||
		created.Metadata["plan"] != "pro" || !created.Created.Equal(created.Updated) ||
		created.Created.Before(start) || created.Created.After(time.Now().Add(time.Second)) {
		t.Fatalf("created %s", raw)
	}

	got, hdr, _ := call[api.TenantJSON](t, e.server, 200, "GET", "/v1/tenants/"+created.ID, adminKey, nil)
	wantEtag(t, hdr, got.Etag)
	wantSameTenant(t, got, created)

	t.Run("create refuses a bad name", func(t *testing.T) {
		for _, tc := range []struct{ desc, body, field string }{
			{"no name", `{}`, "name"},
			{"empty name", `{"name":""}`, "name"},
			{"name of 129 bytes", `{"name":"` + strings.Repeat("n", 129) + `"}`, "name"},
			{"metadata of 33 entries", `{"name":"x","metadata":` + jsonMap(33, "v") + `}`, "metadata"},
			{"unknown field", `{"name":"x","owner":"me"}`, "owner"},
			{"field name in another case", `{"Name":"x"}`, "Name"},
			{"name not a string", `{"name":5}`, "name"},
		} {
			p := callProblem(t, e.server, 400, "invalid-request", "POST", "/v1/tenants", adminKey, tc.body)
			wantFieldError(t, tc.desc, p, tc.field)
		}
	})

	// PATCH name only: the metadata stays, the etag moves.
	renamed, hdr, _ := call[api.TenantJSON](t, e.server, 200, "PATCH", "/v1/tenants/"+created.ID, adminKey,
		`{"name":"Acme Corp"}`, "If-Match", quoted(created.Etag))
	wantEtag(t, hdr, renamed.Etag)
	if renamed.Name != "Acme Corp" || renamed.Metadata["plan"] != "pro" || renamed.Etag == created.Etag ||
		!renamed.Created.Equal(created.Created) || renamed.Updated.Before(created.Updated) {
		t.Fatalf("after renaming: %+v, before %+v", renamed, created)
	}

	// A stale etag is refused, for PATCH and DELETE, and changes nothing.
	callProblem(t, e.server, 412, "precondition-failed", "PATCH", "/v1/tenants/"+created.ID, adminKey,
		`{"name":"Stale"}`, "If-Match", quoted(created.Etag))
	callProblem(t, e.server, 412, "precondition-failed", "DELETE", "/v1/tenants/"+created.ID, adminKey,
		nil, "If-Match", quoted(created.Etag))
	got, _, _ = call[api.TenantJSON](t, e.server, 200, "GET", "/v1/tenants/"+created.ID, adminKey, nil)
	wantSameTenant(t, got, renamed)

	// One of several etags matching is enough.
	md, _, _ := call[api.TenantJSON](t, e.server, 200, "PATCH", "/v1/tenants/"+created.ID, adminKey,
		`{"metadata":{"plan":"enterprise","region":"eu"}}`, "If-Match", quoted(created.Etag)+", "+quoted(renamed.Etag))
	if md.Name != "Acme Corp" || len(md.Metadata) != 2 || md.Metadata["plan"] != "enterprise" || md.Etag == renamed.Etag {
		t.Fatalf("after the metadata patch: %+v", md)
	}

	// null empties the metadata; If-Match * matches any version.
	cleared, _, raw := call[api.TenantJSON](t, e.server, 200, "PATCH", "/v1/tenants/"+created.ID, adminKey,
		`{"metadata":null}`, "If-Match", "*")
	if cleared.Name != "Acme Corp" || len(cleared.Metadata) != 0 || !strings.Contains(string(raw), `"metadata":{}`) ||
		cleared.Etag == md.Etag {
		t.Fatalf("after clearing the metadata: %s", raw)
	}

	// A retry schedule for the tenant's endpoints, checked like an
	// endpoint's; null goes back to Sluice's default.
	sched, _, raw := call[api.TenantJSON](t, e.server, 200, "PATCH", "/v1/tenants/"+created.ID, adminKey,
		`{"retry_schedule_ms":[2000,60000]}`)
	if len(sched.RetrySchedule) != 2 || sched.RetrySchedule[1] != 60000 {
		t.Fatalf("after setting a retry schedule: %s", raw)
	}
	p := callProblem(t, e.server, 400, "invalid-request", "PATCH", "/v1/tenants/"+created.ID, adminKey,
		`{"retry_schedule_ms":[500]}`)
	wantFieldError(t, "retry wait of 500 ms", p, "retry_schedule_ms[0]")
	back, _, raw := call[api.TenantJSON](t, e.server, 200, "PATCH", "/v1/tenants/"+created.ID, adminKey,
		`{"retry_schedule_ms":null}`)
	if len(back.RetrySchedule) != 0 || !strings.Contains(string(raw), `"retry_schedule_ms":[]`) {
		t.Fatalf("after resetting the retry schedule: %s", raw)
	}
	cleared = back

	// A name cannot be removed.
	for _, body := range []string{`{"name":null}`, `{"name":""}`} {
		p := callProblem(t, e.server, 400, "invalid-request", "PATCH", "/v1/tenants/"+created.ID, adminKey, body)
		wantFieldError(t, body, p, "name")
	}

	// DELETE with the current etag, then it is gone.
	if status, _, raw := e.do(t, "DELETE", "/v1/tenants/"+created.ID, adminKey, nil, "If-Match", quoted(cleared.Etag)); status != 204 || len(raw) != 0 {
		t.Fatalf("delete: status %d, body %q; want 204 and no body", status, raw)
	}
	callProblem(t, e.server, 404, "not-found", "GET", "/v1/tenants/"+created.ID, adminKey, nil)
	callProblem(t, e.server, 404, "not-found", "PATCH", "/v1/tenants/"+created.ID, adminKey, `{"name":"Back"}`)
	callProblem(t, e.server, 404, "not-found", "DELETE", "/v1/tenants/"+created.ID, adminKey, nil)
	callProblem(t, e.server, 404, "not-found", "POST", "/v1/tenants/"+created.ID+"/api-keys", adminKey, `{"name":"k"}`)
	callProblem(t, e.server, 404, "not-found", "GET", "/v1/tenants/"+created.ID+"/api-keys", adminKey, nil)
}

func TestTenantPagination(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var ids []string
	for i := range 7 {
		ten, _, _ := call[api.TenantJSON](t, e.server, 201, "POST", "/v1/tenants", adminKey, map[string]any{"name": "t" + string(rune('a'+i))})
		ids = append(ids, ten.ID)
	}
	if !slices.IsSorted(ids) {
		t.Fatalf("ids made one after the other are not in order: %v", ids)
	}

	// pages walks the list with limit 3 and returns the ids of each page;
	// before runs before fetching page i.
	pages := func(before func(i int)) [][]string {
		var out [][]string
		cursor := ""
		for i := 0; ; i++ {
			if i > 10 {
				t.Fatal("more than 10 pages")
			}
			before(i)
			path := "/v1/tenants?limit=3"
			if cursor != "" {
				path += "&cursor=" + cursor
			}
			p, _, _ := call[page[api.TenantJSON]](t, e.server, 200, "GET", path, adminKey, nil)
			var pageIDs []string
			for _, ten := range p.Data {
				pageIDs = append(pageIDs, ten.ID)
			}
			out = append(out, pageIDs)
			if p.NextCursor == "" {
				return out
			}
			if len(p.Data) != 3 {
				t.Fatalf("page %d has %d tenants and a next cursor, want 3", i, len(p.Data))
			}
			cursor = p.NextCursor
		}
	}

	got := pages(func(int) {})
	want := [][]string{ids[0:3], ids[3:6], ids[6:7]}
	if !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("pages %v, want %v", got, want)
	}

	// A tenant created while a client pages is on a later page; nothing is
	// skipped or repeated.
	var added string
	got = pages(func(i int) {
		if i == 2 {
			ten, _, _ := call[api.TenantJSON](t, e.server, 201, "POST", "/v1/tenants", adminKey, `{"name":"late"}`)
			added = ten.ID
		}
	})
	want = [][]string{ids[0:3], ids[3:6], {ids[6], added}}
	if !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("pages with a tenant added before the last %v, want %v", got, want)
	}

	all, _, _ := call[page[api.TenantJSON]](t, e.server, 200, "GET", "/v1/tenants", adminKey, nil)
	if len(all.Data) != 8 || all.NextCursor != "" {
		t.Fatalf("default page: %d tenants, cursor %q; want all 8 and no cursor", len(all.Data), all.NextCursor)
	}

	// A cursor past the end is an empty page.
	last := base64.RawURLEncoding.EncodeToString([]byte(added))
	empty, _, raw := call[page[api.TenantJSON]](t, e.server, 200, "GET", "/v1/tenants?cursor="+last, adminKey, nil)
	if len(empty.Data) != 0 || empty.NextCursor != "" || !strings.Contains(string(raw), `"data":[]`) {
		t.Fatalf("page after the last tenant: %s", raw)
	}

	for _, tc := range []struct{ desc, query, field string }{
		{"limit 0", "limit=0", "limit"},
		{"limit above 250", "limit=251", "limit"},
		{"limit not a number", "limit=ten", "limit"},
		{"negative limit", "limit=-1", "limit"},
		{"empty limit", "limit=", "limit"},
		{"cursor not base64url", "cursor=%21%21%21", "cursor"},
		{"cursor of a non-id", "cursor=" + base64.RawURLEncoding.EncodeToString([]byte("a b")), "cursor"},
	} {
		p := callProblem(t, e.server, 400, "invalid-request", "GET", "/v1/tenants?"+tc.query, adminKey, nil)
		wantFieldError(t, tc.desc, p, tc.field)
	}
}

func testAPIKeys(t *testing.T, e *env) {
	acme, _, _ := call[api.TenantJSON](t, e.server, 201, "POST", "/v1/tenants", adminKey, `{"name":"Acme"}`)
	other, _, _ := call[api.TenantJSON](t, e.server, 201, "POST", "/v1/tenants", adminKey, `{"name":"Other"}`)
	keysPath := "/v1/tenants/" + acme.ID + "/api-keys"

	k1, _, raw := call[api.APIKeyJSON](t, e.server, 201, "POST", keysPath, adminKey, `{"name":"ci"}`)
	if !strings.HasPrefix(k1.Key, "sk_") || len(k1.Key) < 40 || k1.Prefix != k1.Key[:10] ||
		!strings.HasPrefix(k1.ID, "key_") || k1.Tenant != acme.ID || k1.Name != "ci" || k1.Created.IsZero() {
		t.Fatalf("created key %s", raw)
	}
	k2, _, _ := call[api.APIKeyJSON](t, e.server, 201, "POST", keysPath, adminKey, `{"name":"deploys"}`)
	if k2.Key == k1.Key || k2.Prefix == k1.Prefix {
		t.Fatalf("two keys share a key or prefix: %q %q", k1.Key, k2.Key)
	}

	// The key is shown once: never in a list.
	list, _, raw := call[page[api.APIKeyJSON]](t, e.server, 200, "GET", keysPath, adminKey, nil)
	if len(list.Data) != 2 || list.Data[0].ID != k1.ID || list.Data[1].ID != k2.ID {
		t.Fatalf("keys %s, want %s then %s", raw, k1.ID, k2.ID)
	}
	for _, k := range []api.APIKeyJSON{k1, k2} {
		if strings.Contains(string(raw), k.Key) || strings.Contains(string(raw), k.Key[10:]) {
			t.Fatalf("the list shows a key: %s", raw)
		}
	}
	var members struct {
		Data []map[string]json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(raw, &members); err != nil {
		t.Fatal(err)
	}
	for _, m := range members.Data {
		if _, ok := m["key"]; ok {
			t.Fatalf("a listed key has a key member: %s", raw)
		}
		if len(m) != 5 {
			t.Fatalf("a listed key has members %v, want id, tenant, name, prefix, created", m)
		}
	}
	if list.Data[0].Prefix != k1.Prefix || list.Data[0].Name != "ci" || !list.Data[0].Created.Equal(k1.Created) {
		t.Fatalf("listed %+v, created %+v", list.Data[0], k1)
	}

	// The key authenticates as its tenant: what it creates is the tenant's.
	ep := newEndpoint(t, e.server, k1.Key, `{"url":"https://example.com/hooks"}`)
	if ep.Tenant != acme.ID {
		t.Fatalf("endpoint made with %s's key belongs to %q", acme.ID, ep.Tenant)
	}
	eps, _, _ := call[page[api.EndpointJSON]](t, e.server, 200, "GET", "/v1/endpoints", k2.Key, nil)
	if len(eps.Data) != 1 || eps.Data[0].ID != ep.ID {
		t.Fatalf("the tenant's second key lists %+v, want %s", eps.Data, ep.ID)
	}

	// Paging through keys.
	p1, _, _ := call[page[api.APIKeyJSON]](t, e.server, 200, "GET", keysPath+"?limit=1", adminKey, nil)
	p2, _, _ := call[page[api.APIKeyJSON]](t, e.server, 200, "GET", keysPath+"?limit=1&cursor="+p1.NextCursor, adminKey, nil)
	if len(p1.Data) != 1 || p1.Data[0].ID != k1.ID || p1.NextCursor == "" || len(p2.Data) != 1 || p2.Data[0].ID != k2.ID || p2.NextCursor != "" {
		t.Fatalf("pages of one key: %+v then %+v", p1, p2)
	}

	// A key is deleted only under its own tenant.
	callProblem(t, e.server, 404, "not-found", "DELETE", "/v1/tenants/"+other.ID+"/api-keys/"+k1.ID, adminKey, nil)
	if status, _, raw := e.do(t, "GET", "/v1/endpoints", k1.Key, nil); status != 200 {
		t.Fatalf("the key after a delete under another tenant: status %d; body %s", status, raw)
	}
	if status, _, raw := e.do(t, "DELETE", keysPath+"/"+k1.ID, adminKey, nil); status != 204 {
		t.Fatalf("deleting the key: status %d; body %s", status, raw)
	}
	callProblem(t, e.server, 404, "not-found", "DELETE", keysPath+"/"+k1.ID, adminKey, nil)
	list, _, _ = call[page[api.APIKeyJSON]](t, e.server, 200, "GET", keysPath, adminKey, nil)
	if len(list.Data) != 1 || list.Data[0].ID != k2.ID {
		t.Fatalf("keys after deleting %s: %+v", k1.ID, list.Data)
	}
	empty, _, raw := call[page[api.APIKeyJSON]](t, e.server, 200, "GET", "/v1/tenants/"+other.ID+"/api-keys", adminKey, nil)
	if len(empty.Data) != 0 || !strings.Contains(string(raw), `"data":[]`) {
		t.Fatalf("keys of a tenant without any: %s", raw)
	}

	for _, tc := range []struct{ desc, body, field string }{
		{"no name", `{}`, "name"},
		{"name of 129 bytes", `{"name":"` + strings.Repeat("k", 129) + `"}`, "name"},
		{"unknown field", `{"name":"x","scopes":["all"]}`, "scopes"},
	} {
		p := callProblem(t, e.server, 400, "invalid-request", "POST", keysPath, adminKey, tc.body)
		wantFieldError(t, tc.desc, p, tc.field)
	}
	callProblem(t, e.server, 404, "not-found", "POST", "/v1/tenants/ten_missing/api-keys", adminKey, `{"name":"x"}`)
}

func wantSameTenant(t testing.TB, got, want api.TenantJSON) {
	t.Helper()
	if got.ID != want.ID || got.Name != want.Name || got.Etag != want.Etag || !got.Created.Equal(want.Created) ||
		!got.Updated.Equal(want.Updated) || !maps.Equal(got.Metadata, want.Metadata) ||
		!samePtr(got.MaxEndpoints, want.MaxEndpoints) {
		t.Fatalf("tenant %+v, want %+v", got, want)
	}
}

// jsonMap is a JSON object of n entries, keys k00, k01, …, each value v.
func jsonMap(n int, v string) string {
	m := map[string]string{}
	for i := range n {
		m[fmt.Sprintf("k%02d", i)] = v
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// TestNotReadyWhileTheConfigLoads: until the config view has caught up,
// authenticated routes answer 503 with Retry-After, never a 401 for a key
// the view has not read yet (a client does not retry a 401: its events
// would be lost); public routes answer as usual.
func TestNotReadyWhileTheConfigLoads(t *testing.T) {
	loading := errors.New("config view still catching up")
	var ready error = loading
	opts := testOptions()
	opts.ConfigReady = func() error { return ready }
	s := serve(t, &memStore{objects: map[string]*sluicev1.ConfigRecord{}}, devBox(t), opts)
	for _, tc := range []struct{ method, path, key string }{
		{"POST", "/v1/events", "Bearer sk_not_read_yet"},
		{"GET", "/v1/endpoints", "Bearer sk_not_read_yet"},
		{"GET", "/v1/tenants", "Bearer " + adminKey},
	} {
		status, hdr, raw := s.do(t, tc.method, tc.path, tc.key, nil)
		p := wantProblem(t, tc.method+" "+tc.path+" while loading", status, hdr, raw, 503, "unavailable")
		if hdr.Get("Retry-After") != "1" || !strings.Contains(p.Detail, "still loading its configuration") {
			t.Fatalf("%s %s: Retry-After %q, detail %q", tc.method, tc.path, hdr.Get("Retry-After"), p.Detail)
		}
	}
	if status, _, _ := s.do(t, "GET", "/openapi.json", "", nil); status != 200 {
		t.Fatalf("a public route while loading: %d", status)
	}
	ready = nil
	callProblem(t, s, 401, "unauthorized", "GET", "/v1/endpoints", "Bearer sk_unknown", nil)
}
