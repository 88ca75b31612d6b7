package api_test

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"maps"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/pkg/secretbox"
	"github.com/sluicehq/sluice/services/ingest/api"
)

// TestEndpoints runs the tests of the endpoint routes on one topic set and
// ingest; each works under tenants of its own, so they run side by side.
// Then the config topic is searched for every secret they were shown.
func TestEndpoints(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	t.Run("routes", func(t *testing.T) { testEndpointRoutes(t, e) })
	t.Run("no secret in Kafka in clear", func(t *testing.T) { testNoSecretInKafka(t, e) })
}

func testEndpointRoutes(t *testing.T, e *env) {
	for _, tc := range []struct {
		desc string
		run  func(*testing.T, *env)
	}{
		{"CRUD", testEndpointCRUD},
		{"list filters", testEndpointListFilters},
		{"patch", testEndpointPatch},
		{"enable and disable", testEndpointEnableDisable},
		{"rotate secret", testRotateSecret},
		{"cross-tenant access is refused", testCrossTenantAccessIsRefused},
		{"validation", testEndpointValidation},
		{"request decoding", testRequestDecoding},
		{"https only", testHTTPSOnly},
		{"concurrent patches", testConcurrentPatches},
		{"unset limits are stored unset", testUnsetLimitsAreStoredUnset},
		{"custom headers are sealed and redacted", testHeadersSealedAndRedacted},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			tc.run(t, e)
		})
	}
}

func testEndpointCRUD(t *testing.T, e *env) {
	ten, key := newTenant(t, e.server, "Acme")
	start := time.Now().Add(-time.Second)

	// The smallest endpoint: every other field takes its default.
	minimal, hdr, raw := call[api.EndpointJSON](t, e.server, 201, "POST", "/v1/endpoints", key,
		`{"url":"https://example.com/hooks"}`)
	wantEtag(t, hdr, minimal.Etag)
	want := api.EndpointJSON{
		ID: minimal.ID, Tenant: ten.ID, URL: "https://example.com/hooks", Events: []string{}, Status: "enabled",
		Metadata: map[string]string{}, Headers: map[string]string{},
		Created: minimal.Created, Updated: minimal.Created, Etag: minimal.Etag, Secret: minimal.Secret,
	}
	wantEndpoint(t, minimal, want)
	if !strings.HasPrefix(minimal.ID, "ep_") || minimal.Created.Before(start) || minimal.Created.After(time.Now().Add(time.Second)) {
		t.Fatalf("created %s", raw)
	}
	for _, member := range []string{`"events":[]`, `"metadata":{}`, `"headers":{}`, `"rate_limit":null`, `"ordered":false`, `"description":""`,
		`"max_in_flight":null`, `"timeout_ms":null`} {
		if !strings.Contains(string(raw), member) {
			t.Fatalf("created %s, want it to contain %s", raw, member)
		}
	}
	if strings.Contains(string(raw), "disabled_reason") {
		t.Fatalf("an enabled endpoint shows a disabled_reason: %s", raw)
	}
	if n := len(secretBytes(t, minimal.Secret)); n != 32 {
		t.Fatalf("a made secret has %d bytes, want 32", n)
	}

	// Every field set, with a secret of the caller's.
	custom := "whsec_" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0xa5}, 24))
	full, _, _ := call[api.EndpointJSON](t, e.server, 201, "POST", "/v1/endpoints", key, map[string]any{
		"url": "http://hooks.example.org:8080/in?src=sluice", "description": "orders", "events": []string{"order.*", "invoice.paid"},
		"metadata": map[string]string{"team": "billing"}, "headers": map[string]string{"X-Team": "billing"},
		"max_in_flight": 3, "rate_limit": 2.5, "ordered": true, "timeout_ms": 2000, "secret": custom,
	})
	rate := 2.5
	wantEndpoint(t, full, api.EndpointJSON{
		ID: full.ID, Tenant: ten.ID, URL: "http://hooks.example.org:8080/in?src=sluice", Description: "orders",
		Events: []string{"order.*", "invoice.paid"}, Status: "enabled", Metadata: map[string]string{"team": "billing"},
		Headers: map[string]string{"X-Team": "********"}, MaxInFlight: ptr[uint32](3), RateLimit: &rate, Ordered: true, TimeoutMs: ptr[int64](2000),
		Created: full.Created, Updated: full.Created, Etag: full.Etag, Secret: custom,
	})

	// Reads never show the secret; otherwise they show what create did.
	for _, ep := range []api.EndpointJSON{minimal, full} {
		got, hdr, raw := call[api.EndpointJSON](t, e.server, 200, "GET", "/v1/endpoints/"+ep.ID, key, nil)
		wantNoSecret(t, "GET "+ep.ID, raw)
		wantEtag(t, hdr, got.Etag)
		ep.Secret = ""
		wantEndpoint(t, got, ep)
	}
	list, _, raw := call[page[api.EndpointJSON]](t, e.server, 200, "GET", "/v1/endpoints", key, nil)
	wantNoSecret(t, "the list", raw)
	if len(list.Data) != 2 || list.Data[0].ID != minimal.ID || list.Data[1].ID != full.ID || list.NextCursor != "" {
		t.Fatalf("list %s, want %s then %s", raw, minimal.ID, full.ID)
	}

	// The store holds the secret sealed under the endpoint's id, and only
	// that.
	for _, ep := range []api.EndpointJSON{minimal, full} {
		stored, ok := e.store.Endpoint(ep.ID)
		if !ok {
			t.Fatalf("endpoint %s is not in the store", ep.ID)
		}
		secret := secretBytes(t, ep.Secret)
		if bytes.Contains(stored.SecretSealed, secret) {
			t.Fatalf("the sealed secret of %s contains the secret", ep.ID)
		}
		opened, err := e.box.Open(stored.SecretSealed, ep.ID)
		if err != nil || !bytes.Equal(opened, secret) {
			t.Fatalf("opening the sealed secret of %s: %x, %v; want the secret the API showed", ep.ID, opened, err)
		}
		if len(stored.PreviousSecretSealed) != 0 || stored.PreviousSecretExpiresAtMs != 0 {
			t.Fatalf("a new endpoint has a previous secret")
		}
	}

	// Delete: 204, then it is gone for every route.
	callProblem(t, e.server, 412, "precondition-failed", "DELETE", "/v1/endpoints/"+minimal.ID, key, nil, "If-Match", `"stale"`)
	if status, _, raw := e.do(t, "DELETE", "/v1/endpoints/"+minimal.ID, key, nil, "If-Match", quoted(minimal.Etag)); status != 204 || len(raw) != 0 {
		t.Fatalf("delete: status %d, body %q; want 204 and no body", status, raw)
	}
	for _, r := range [][2]string{{"GET", ""}, {"PATCH", ""}, {"DELETE", ""}, {"POST", "/rotate-secret"}, {"POST", "/enable"}, {"POST", "/disable"}} {
		var body any
		if r[0] == "PATCH" {
			body = `{"description":"back"}`
		}
		callProblem(t, e.server, 404, "not-found", r[0], "/v1/endpoints/"+minimal.ID+r[1], key, body)
	}
	if _, ok := e.store.Endpoint(minimal.ID); ok {
		t.Fatalf("a deleted endpoint is still in the store")
	}
	list, _, _ = call[page[api.EndpointJSON]](t, e.server, 200, "GET", "/v1/endpoints", key, nil)
	if len(list.Data) != 1 || list.Data[0].ID != full.ID {
		t.Fatalf("list after the delete: %+v", list.Data)
	}
	callProblem(t, e.server, 404, "not-found", "GET", "/v1/endpoints/ep_missing", key, nil)
}

func testEndpointListFilters(t *testing.T, e *env) {
	_, key := newTenant(t, e.server, "Acme")
	orders := newEndpoint(t, e.server, key, `{"url":"https://example.com/a","events":["order.*"]}`)
	invoices := newEndpoint(t, e.server, key, `{"url":"https://example.com/b","events":["invoice.paid"]}`)
	everything := newEndpoint(t, e.server, key, `{"url":"https://example.com/c","events":[]}`)
	call[api.EndpointJSON](t, e.server, 200, "POST", "/v1/endpoints/"+invoices.ID+"/disable", key, nil)

	for _, tc := range []struct {
		desc, query string
		want        []string
	}{
		{"no filter", "", []string{orders.ID, invoices.ID, everything.ID}},
		{"order.created", "event_type=order.created", []string{orders.ID, everything.ID}},
		{"order.item.created", "event_type=order.item.created", []string{orders.ID, everything.ID}},
		{"invoice.paid", "event_type=invoice.paid", []string{invoices.ID, everything.ID}},
		{"a type no filter names", "event_type=customer.deleted", []string{everything.ID}},
		{"order alone is not order.*", "event_type=order", []string{everything.ID}},
		{"disabled", "status=disabled", []string{invoices.ID}},
		{"enabled", "status=enabled", []string{orders.ID, everything.ID}},
		{"disabled and order.created", "status=disabled&event_type=order.created", []string{}},
		{"enabled and invoice.paid", "status=enabled&event_type=invoice.paid", []string{everything.ID}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			p, _, raw := call[page[api.EndpointJSON]](t, e.server, 200, "GET", "/v1/endpoints?"+tc.query, key, nil)
			wantNoSecret(t, tc.desc, raw)
			if got := endpointIDs(p.Data); !slices.Equal(got, tc.want) || p.NextCursor != "" {
				t.Fatalf("ids %v, cursor %q; want %v and none", got, p.NextCursor, tc.want)
			}
		})
	}

	t.Run("pages of a filtered list", func(t *testing.T) {
		p1, _, _ := call[page[api.EndpointJSON]](t, e.server, 200, "GET", "/v1/endpoints?status=enabled&limit=1", key, nil)
		p2, _, _ := call[page[api.EndpointJSON]](t, e.server, 200, "GET", "/v1/endpoints?status=enabled&limit=1&cursor="+p1.NextCursor, key, nil)
		if got := endpointIDs(p1.Data); !slices.Equal(got, []string{orders.ID}) || p1.NextCursor == "" {
			t.Fatalf("first page %v, cursor %q", got, p1.NextCursor)
		}
		if got := endpointIDs(p2.Data); !slices.Equal(got, []string{everything.ID}) || p2.NextCursor != "" {
			t.Fatalf("second page %v, cursor %q", got, p2.NextCursor)
		}
		p, _, _ := call[page[api.EndpointJSON]](t, e.server, 200, "GET", "/v1/endpoints?limit=2", key, nil)
		if got := endpointIDs(p.Data); !slices.Equal(got, []string{orders.ID, invoices.ID}) || p.NextCursor == "" {
			t.Fatalf("page of 2: %v, cursor %q", got, p.NextCursor)
		}
	})

	for _, tc := range []struct{ desc, query, field string }{
		{"unknown status", "status=paused", "status"},
		{"status in capitals", "status=DISABLED", "status"},
		{"event type with a wildcard", "event_type=order.*", "event_type"},
		{"event type with two dots", "event_type=order..created", "event_type"},
		{"event type with a space", "event_type=order%20created", "event_type"},
		{"limit 0", "limit=0", "limit"},
		{"bad cursor", "cursor=***", "cursor"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			p := callProblem(t, e.server, 400, "invalid-request", "GET", "/v1/endpoints?"+tc.query, key, nil)
			wantFieldError(t, tc.desc, p, tc.field)
		})
	}
}

func testEndpointPatch(t *testing.T, e *env) {
	_, key := newTenant(t, e.server, "Acme")
	created := newEndpoint(t, e.server, key, map[string]any{
		"url": "https://example.com/hooks", "description": "orders", "events": []string{"order.*"},
		"metadata": map[string]string{"team": "billing"}, "headers": map[string]string{"X-Team": "billing"},
		"max_in_flight": 3, "rate_limit": 5, "ordered": true, "timeout_ms": 2000,
	})
	path := "/v1/endpoints/" + created.ID
	cur := created
	cur.Secret = ""

	// patch applies body under the current etag and checks the answer is
	// cur changed by change, with a new etag; cur follows.
	patch := func(desc, body string, change func(*api.EndpointJSON)) {
		t.Helper()
		got, hdr, raw := call[api.EndpointJSON](t, e.server, 200, "PATCH", path, key, body, "If-Match", quoted(cur.Etag))
		wantNoSecret(t, desc, raw)
		wantEtag(t, hdr, got.Etag)
		want := cur
		change(&want)
		// A patch that leaves the endpoint as it was writes nothing: the
		// etag stays. Any real change gets a new etag and a later update.
		if reflect.DeepEqual(want, cur) {
			if got.Etag != cur.Etag || !got.Updated.Equal(cur.Updated) {
				t.Fatalf("%s: changed nothing but the etag went %q → %q", desc, cur.Etag, got.Etag)
			}
		} else if got.Etag == cur.Etag || got.Updated.Before(cur.Updated) {
			t.Fatalf("%s: etag %q, updated %v; want a new etag and a later update than %q, %v", desc, got.Etag, got.Updated, cur.Etag, cur.Updated)
		}
		want.Etag, want.Updated = got.Etag, got.Updated
		wantEndpoint(t, got, want)
		read, _, _ := call[api.EndpointJSON](t, e.server, 200, "GET", path, key, nil)
		wantEndpoint(t, read, got)
		cur = got
	}

	patch("description only", `{"description":"all orders"}`, func(w *api.EndpointJSON) { w.Description = "all orders" })
	patch("url and ordered", `{"url":"https://other.example/in","ordered":false}`, func(w *api.EndpointJSON) {
		w.URL, w.Ordered = "https://other.example/in", false
	})
	patch("new limits", `{"max_in_flight":7,"rate_limit":0.5,"timeout_ms":60000}`, func(w *api.EndpointJSON) {
		rate := 0.5
		w.MaxInFlight, w.RateLimit, w.TimeoutMs = ptr[uint32](7), &rate, ptr[int64](60000)
	})
	patch("null resets limits to the defaults", `{"max_in_flight":null,"rate_limit":null,"timeout_ms":null}`, func(w *api.EndpointJSON) {
		w.MaxInFlight, w.RateLimit, w.TimeoutMs = nil, nil, nil
	})
	patch("own retry schedule", `{"retry_schedule_ms":[1000,60000]}`, func(w *api.EndpointJSON) {
		w.RetrySchedule = []int64{1000, 60000}
	})
	patch("null inherits the tenant's schedule again", `{"retry_schedule_ms":null}`, func(w *api.EndpointJSON) {
		w.RetrySchedule = []int64{}
	})
	patch("lists and maps replaced, not merged", `{"events":["invoice.paid"],"metadata":{"owner":"ops"},"headers":{"X-Env":"prod"}}`,
		func(w *api.EndpointJSON) {
			w.Events, w.Metadata, w.Headers = []string{"invoice.paid"}, map[string]string{"owner": "ops"}, map[string]string{"X-Env": "********"}
		})
	patch("null empties lists and maps", `{"events":null,"metadata":null,"headers":null,"description":null,"ordered":null}`,
		func(w *api.EndpointJSON) {
			w.Events, w.Metadata, w.Headers, w.Description = []string{}, map[string]string{}, map[string]string{}, ""
		})
	// An empty patch changes nothing, etag included: TestHTTPSemantics.

	// The last of a repeated member counts, as for every other JSON value.
	patch("repeated member, value last", `{"max_in_flight":null,"max_in_flight":5}`, func(w *api.EndpointJSON) { w.MaxInFlight = ptr[uint32](5) })
	patch("repeated member, null last", `{"max_in_flight":5,"max_in_flight":null}`, func(w *api.EndpointJSON) { w.MaxInFlight = nil })
	patch("repeated member, value last", `{"rate_limit":null,"rate_limit":3}`, func(w *api.EndpointJSON) {
		rate := 3.0
		w.RateLimit = &rate
	})
	patch("repeated list, null last", `{"events":["order.*"],"events":null}`, func(w *api.EndpointJSON) { w.Events = []string{} })
	patch("repeated map, last replaces", `{"metadata":{"a":"1"},"metadata":{"b":"2"}}`, func(w *api.EndpointJSON) {
		w.Metadata = map[string]string{"b": "2"}
	})

	// Preconditions.
	stale := created.Etag
	callProblem(t, e.server, 412, "precondition-failed", "PATCH", path, key, `{"description":"stale"}`, "If-Match", quoted(stale))
	callProblem(t, e.server, 412, "precondition-failed", "PATCH", path, key, `{"description":"stale"}`, "If-Match", `""`)
	got, _, _ := call[api.EndpointJSON](t, e.server, 200, "PATCH", path, key, `{"description":"any"}`, "If-Match", "*")
	if got.Description != "any" {
		t.Fatalf("PATCH with If-Match * gave %+v", got)
	}
	got, _, _ = call[api.EndpointJSON](t, e.server, 200, "PATCH", path, key, `{"description":"unconditional"}`)
	if got.Description != "unconditional" {
		t.Fatalf("PATCH without If-Match gave %+v", got)
	}

	// A refused patch writes nothing.
	for _, tc := range []struct{ desc, body, field string }{
		{"url removed", `{"url":null}`, "url"},
		{"url emptied", `{"url":""}`, "url"},
		{"max_in_flight 0", `{"max_in_flight":0}`, "max_in_flight"},
		{"bad second field", `{"description":"fine","timeout_ms":1}`, "timeout_ms"},
		{"secret is not patchable", `{"secret":"whsec_` + base64.StdEncoding.EncodeToString(make([]byte, 32)) + `"}`, "secret"},
		{"status is not patchable", `{"status":"disabled"}`, "status"},
	} {
		p := callProblem(t, e.server, 400, "invalid-request", "PATCH", path, key, tc.body)
		wantFieldError(t, tc.desc, p, tc.field)
	}
	after, _, _ := call[api.EndpointJSON](t, e.server, 200, "GET", path, key, nil)
	wantEndpoint(t, after, got)
	callProblem(t, e.server, 404, "not-found", "PATCH", "/v1/endpoints/ep_missing", key, `{"description":"x"}`)
}

func testEndpointEnableDisable(t *testing.T, e *env) {
	_, key := newTenant(t, e.server, "Acme")
	ep := newEndpoint(t, e.server, key, `{"url":"https://example.com/hooks"}`)
	path := "/v1/endpoints/" + ep.ID

	disabled, hdr, raw := call[api.EndpointJSON](t, e.server, 200, "POST", path+"/disable", key, `{"reason":"maintenance"}`,
		"If-Match", quoted(ep.Etag))
	wantNoSecret(t, "disable", raw)
	wantEtag(t, hdr, disabled.Etag)
	if disabled.Status != "disabled" || disabled.DisabledReason != "maintenance" || disabled.Etag == ep.Etag {
		t.Fatalf("disabled: %s", raw)
	}
	got, _, _ := call[api.EndpointJSON](t, e.server, 200, "GET", path, key, nil)
	wantEndpoint(t, got, disabled)

	callProblem(t, e.server, 412, "precondition-failed", "POST", path+"/enable", key, nil, "If-Match", quoted(ep.Etag))
	enabled, _, raw := call[api.EndpointJSON](t, e.server, 200, "POST", path+"/enable", key, nil, "If-Match", quoted(disabled.Etag))
	if enabled.Status != "enabled" || enabled.DisabledReason != "" || strings.Contains(string(raw), "disabled_reason") {
		t.Fatalf("enabled: %s", raw)
	}
	// Enabling an enabled endpoint is fine.
	call[api.EndpointJSON](t, e.server, 200, "POST", path+"/enable", key, nil)

	// Without a body, the reason says who did it.
	dflt, _, _ := call[api.EndpointJSON](t, e.server, 200, "POST", path+"/disable", key, nil)
	if dflt.Status != "disabled" || dflt.DisabledReason != "disabled through the API" {
		t.Fatalf("disabled without a reason: %+v", dflt)
	}
	again, _, _ := call[api.EndpointJSON](t, e.server, 200, "POST", path+"/disable", key, `{"reason":"still broken"}`)
	if again.Status != "disabled" || again.DisabledReason != "still broken" {
		t.Fatalf("disabled again: %+v", again)
	}

	p := callProblem(t, e.server, 400, "invalid-request", "POST", path+"/disable", key, `{"reason":"`+strings.Repeat("r", 513)+`"}`)
	wantFieldError(t, "long reason", p, "reason")
	p = callProblem(t, e.server, 400, "invalid-request", "POST", path+"/disable", key, `{"why":"x"}`)
	wantFieldError(t, "unknown field", p, "why")
	callProblem(t, e.server, 415, "unsupported-media-type", "POST", path+"/disable", key, `{"reason":"x"}`, "Content-Type", "text/plain")
	got, _, _ = call[api.EndpointJSON](t, e.server, 200, "GET", path, key, nil)
	wantEndpoint(t, got, again)
}

func testRotateSecret(t *testing.T, e *env) {
	_, key := newTenant(t, e.server, "Acme")
	ep := newEndpoint(t, e.server, key, `{"url":"https://example.com/hooks"}`)
	path := "/v1/endpoints/" + ep.ID + "/rotate-secret"
	first, _ := e.store.Endpoint(ep.ID)
	firstSecret := secretBytes(t, ep.Secret)

	// Rotate with the server's grace period: the old secret keeps signing
	// for 24 h beside the new one.
	before := time.Now()
	rotated, hdr, raw := call[api.EndpointJSON](t, e.server, 200, "POST", path, key, nil, "If-Match", quoted(ep.Etag))
	after := time.Now()
	wantEtag(t, hdr, rotated.Etag)
	newSecret := secretBytes(t, rotated.Secret)
	if len(newSecret) != 32 || bytes.Equal(newSecret, firstSecret) || rotated.Etag == ep.Etag {
		t.Fatalf("rotated: %s", raw)
	}
	wantSameExceptEtag(t, rotated, ep)
	_, _, raw = call[api.EndpointJSON](t, e.server, 200, "GET", "/v1/endpoints/"+ep.ID, key, nil)
	wantNoSecret(t, "GET after a rotation", raw)

	stored, _ := e.store.Endpoint(ep.ID)
	if !bytes.Equal(stored.PreviousSecretSealed, first.SecretSealed) {
		t.Fatalf("the previous secret is not the old sealed secret")
	}
	if lo, hi := before.Add(24*time.Hour).UnixMilli(), after.Add(24*time.Hour).UnixMilli(); stored.PreviousSecretExpiresAtMs < lo || stored.PreviousSecretExpiresAtMs > hi {
		t.Fatalf("the previous secret expires at %d, want from %d to %d", stored.PreviousSecretExpiresAtMs, lo, hi)
	}
	wantSealed(t, e.box, stored.SecretSealed, ep.ID, newSecret)
	wantSealed(t, e.box, stored.PreviousSecretSealed, ep.ID, firstSecret)

	// A stale etag changes nothing.
	callProblem(t, e.server, 412, "precondition-failed", "POST", path, key, nil, "If-Match", quoted(ep.Etag))
	if again, _ := e.store.Endpoint(ep.ID); again.Etag != rotated.Etag {
		t.Fatalf("a refused rotation changed the endpoint")
	}

	// A secret of the caller's, with a grace period of a minute.
	custom := "whsec_" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 64))
	before = time.Now()
	withCustom, _, _ := call[api.EndpointJSON](t, e.server, 200, "POST", path, key,
		`{"secret":"`+custom+`","grace_period_seconds":60}`)
	after = time.Now()
	if withCustom.Secret != custom {
		t.Fatalf("rotated to %q, want the caller's %q", withCustom.Secret, custom)
	}
	stored, _ = e.store.Endpoint(ep.ID)
	if lo, hi := before.Add(time.Minute).UnixMilli(), after.Add(time.Minute).UnixMilli(); stored.PreviousSecretExpiresAtMs < lo || stored.PreviousSecretExpiresAtMs > hi {
		t.Fatalf("the previous secret expires at %d, want from %d to %d", stored.PreviousSecretExpiresAtMs, lo, hi)
	}
	wantSealed(t, e.box, stored.PreviousSecretSealed, ep.ID, newSecret)
	wantSealed(t, e.box, stored.SecretSealed, ep.ID, secretBytes(t, custom))

	// A grace period of 0 drops the old secret at once.
	dropped, _, _ := call[api.EndpointJSON](t, e.server, 200, "POST", path, key, `{"grace_period_seconds":0}`)
	stored, _ = e.store.Endpoint(ep.ID)
	if len(stored.PreviousSecretSealed) != 0 || stored.PreviousSecretExpiresAtMs != 0 {
		t.Fatalf("after a rotation without grace the previous secret is kept until %d", stored.PreviousSecretExpiresAtMs)
	}
	wantSealed(t, e.box, stored.SecretSealed, ep.ID, secretBytes(t, dropped.Secret))

	for _, tc := range []struct{ desc, body, field string }{
		{"negative grace", `{"grace_period_seconds":-1}`, "grace_period_seconds"},
		{"grace over a week", `{"grace_period_seconds":604801}`, "grace_period_seconds"},
		// Seconds that overflow a time.Duration must not wrap into range.
		{"grace that wraps to a negative duration", `{"grace_period_seconds":9223372037}`, "grace_period_seconds"},
		{"grace that wraps to 0.3 s", `{"grace_period_seconds":18446744074}`, "grace_period_seconds"},
		{"largest grace", fmt.Sprintf(`{"grace_period_seconds":%d}`, int64(math.MaxInt64)), "grace_period_seconds"},
		{"grace not an integer", `{"grace_period_seconds":1.5}`, "grace_period_seconds"},
		{"secret without prefix", `{"secret":"nope"}`, "secret"},
		{"secret of 8 bytes", `{"secret":"whsec_` + base64.StdEncoding.EncodeToString(make([]byte, 8)) + `"}`, "secret"},
		{"unknown field", `{"secret_length":32}`, "secret_length"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			p := callProblem(t, e.server, 400, "invalid-request", "POST", path, key, tc.body)
			wantFieldError(t, tc.desc, p, tc.field)
		})
	}
	if last, _ := e.store.Endpoint(ep.ID); last.Etag != dropped.Etag {
		t.Fatalf("a refused rotation changed the endpoint")
	}
}

func testCrossTenantAccessIsRefused(t *testing.T, e *env) {
	_, keyA := newTenant(t, e.server, "A")
	_, keyB := newTenant(t, e.server, "B")
	epA := newEndpoint(t, e.server, keyA, `{"url":"https://a.example/hooks"}`)
	epA.Secret = ""

	// Another tenant's endpoint does not exist, even under If-Match *: 404,
	// never 403, so ids cannot be probed.
	for _, tc := range []struct{ desc, method, suffix, body string }{
		{"get", "GET", "", ""},
		{"patch", "PATCH", "", `{"url":"https://b.example/steal"}`},
		{"delete", "DELETE", "", ""},
		{"rotate", "POST", "/rotate-secret", ""},
		{"rotate with a secret", "POST", "/rotate-secret", `{"secret":"whsec_` + base64.StdEncoding.EncodeToString(make([]byte, 32)) + `"}`},
		{"enable", "POST", "/enable", ""},
		{"disable", "POST", "/disable", `{"reason":"B was here"}`},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			var body any
			if tc.body != "" {
				body = tc.body
			}
			for _, ifMatch := range []string{"", "*", quoted(epA.Etag)} {
				p := callProblem(t, e.server, 404, "not-found", tc.method, "/v1/endpoints/"+epA.ID+tc.suffix, keyB, body, "If-Match", ifMatch)
				if strings.Contains(p.Detail, "https://a.example") {
					t.Fatalf("the refusal shows A's endpoint: %+v", p)
				}
			}
		})
	}

	epB := newEndpoint(t, e.server, keyB, `{"url":"https://b.example/hooks"}`)
	listB, _, _ := call[page[api.EndpointJSON]](t, e.server, 200, "GET", "/v1/endpoints", keyB, nil)
	if got := endpointIDs(listB.Data); !slices.Equal(got, []string{epB.ID}) {
		t.Fatalf("B lists %v, want only %s", got, epB.ID)
	}
	for _, q := range []string{"?status=enabled", "?event_type=order.created", "?limit=250"} {
		l, _, _ := call[page[api.EndpointJSON]](t, e.server, 200, "GET", "/v1/endpoints"+q, keyB, nil)
		if got := endpointIDs(l.Data); !slices.Equal(got, []string{epB.ID}) {
			t.Fatalf("B lists %v with %s, want only %s", got, q, epB.ID)
		}
	}
	listA, _, _ := call[page[api.EndpointJSON]](t, e.server, 200, "GET", "/v1/endpoints", keyA, nil)
	if got := endpointIDs(listA.Data); !slices.Equal(got, []string{epA.ID}) {
		t.Fatalf("A lists %v, want only %s", got, epA.ID)
	}

	// None of B's attempts changed A's endpoint.
	got, _, _ := call[api.EndpointJSON](t, e.server, 200, "GET", "/v1/endpoints/"+epA.ID, keyA, nil)
	wantEndpoint(t, got, epA)
}

// wantEndpoint compares endpoints field by field.
func wantEndpoint(t testing.TB, got, want api.EndpointJSON) {
	t.Helper()
	same := got.ID == want.ID && got.Tenant == want.Tenant && got.URL == want.URL && got.Description == want.Description &&
		slices.Equal(got.Events, want.Events) && (got.Events == nil) == (want.Events == nil) &&
		got.Status == want.Status && got.DisabledReason == want.DisabledReason &&
		maps.Equal(got.Metadata, want.Metadata) && (got.Metadata == nil) == (want.Metadata == nil) &&
		maps.Equal(got.Headers, want.Headers) && (got.Headers == nil) == (want.Headers == nil) &&
		samePtr(got.MaxInFlight, want.MaxInFlight) && samePtr(got.RateLimit, want.RateLimit) && got.Ordered == want.Ordered &&
		samePtr(got.TimeoutMs, want.TimeoutMs) && got.Created.Equal(want.Created) && got.Updated.Equal(want.Updated) &&
		got.Etag == want.Etag && got.Secret == want.Secret
	if !same {
		t.Fatalf("endpoint\n got %s\nwant %s", fmtEndpoint(got), fmtEndpoint(want))
	}
}

// wantSameExceptEtag checks a rotation changed only the etag, the update
// time and the secret.
func wantSameExceptEtag(t testing.TB, got, before api.EndpointJSON) {
	t.Helper()
	want := before
	want.Etag, want.Updated, want.Secret = got.Etag, got.Updated, got.Secret
	wantEndpoint(t, got, want)
}

func fmtEndpoint(e api.EndpointJSON) string {
	return fmt.Sprintf("%+v max_in_flight=%s rate_limit=%s timeout_ms=%s", e, fmtPtr(e.MaxInFlight), fmtPtr(e.RateLimit), fmtPtr(e.TimeoutMs))
}

func fmtPtr[T any](p *T) string {
	if p == nil {
		return "null"
	}
	return fmt.Sprint(*p)
}

// ptr is a pointer to v, for the nullable fields of answers.
func ptr[T any](v T) *T { return &v }

// samePtr reports whether a and b are both nil or point to equal values.
func samePtr[T comparable](a, b *T) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }

// wantSealed checks sealed opens with box to secret, and not with the
// development key.
func wantSealed(t testing.TB, box *secretbox.Box, sealed []byte, id string, secret []byte) {
	t.Helper()
	opened, err := box.Open(sealed, id)
	if err != nil || !bytes.Equal(opened, secret) {
		t.Fatalf("opening the sealed secret of %s: %x, %v; want %x", id, opened, err, secret)
	}
	if _, err := devBox(t).Open(sealed, id); err == nil {
		t.Fatalf("the development key opens the sealed secret of %s", id)
	}
}

func endpointIDs(eps []api.EndpointJSON) []string {
	out := []string{}
	for _, e := range eps {
		out = append(out, e.ID)
	}
	return out
}

// testUnsetLimitsAreStoredUnset: an endpoint that sets no max_in_flight or
// timeout_ms is stored with 0 (proto: "0 means the default"), so the
// sender's SLUICE_ENDPOINT_MAX_IN_FLIGHT and SLUICE_REQUEST_TIMEOUT apply
// to it, and the API shows null; PATCH null goes back to 0 (review B2).
func testUnsetLimitsAreStoredUnset(t *testing.T, e *env) {
	_, key := newTenant(t, e.server, "Defaults")
	stored := func(id string) (uint32, int64) {
		t.Helper()
		ep, ok := e.store.Endpoint(id)
		if !ok {
			t.Fatalf("endpoint %s is not in the store", id)
		}
		return ep.MaxInFlight, ep.TimeoutMs
	}
	wantUnset := func(what string, raw []byte, id string) {
		t.Helper()
		if mif, timeout := stored(id); mif != 0 || timeout != 0 {
			t.Fatalf("%s: stored max_in_flight %d, timeout_ms %d; want 0 and 0 (the operator's defaults apply)", what, mif, timeout)
		}
		for _, member := range []string{`"max_in_flight":null`, `"timeout_ms":null`} {
			if !strings.Contains(string(raw), member) {
				t.Fatalf("%s: answer %s, want it to contain %s", what, raw, member)
			}
		}
	}
	status, _, raw := e.do(t, "POST", "/v1/endpoints", key, `{"url":"https://example.com/hooks"}`)
	if status != 201 {
		t.Fatalf("create: %d %s", status, raw)
	}
	id := decodeStrict[api.EndpointJSON](t, raw).ID
	wantUnset("created without limits", raw, id)
	_, _, raw = e.do(t, "GET", "/v1/endpoints/"+id, key, nil)
	wantUnset("read back", raw, id)

	status, _, raw = e.do(t, "PATCH", "/v1/endpoints/"+id, key, `{"max_in_flight":3,"timeout_ms":2000}`)
	if mif, timeout := stored(id); status != 200 || mif != 3 || timeout != 2000 {
		t.Fatalf("patched to 3 and 2000: status %d, stored %d and %d; answer %s", status, mif, timeout, raw)
	}
	status, _, raw = e.do(t, "PATCH", "/v1/endpoints/"+id, key, `{"max_in_flight":null,"timeout_ms":null}`)
	if status != 200 {
		t.Fatalf("patch null: %d %s", status, raw)
	}
	wantUnset("patched to null", raw, id)
}

// testHeadersSealedAndRedacted: custom header values carry receivers'
// credentials, so they are stored sealed and shown redacted (review M5):
// no answer and no stored record holds a value in clear.
func testHeadersSealedAndRedacted(t *testing.T, e *env) {
	_, key := newTenant(t, e.server, "Headers")
	const token = "Bearer sk_live_51Hx9QmKc0a1b2c3d4e5f6"
	const short = "s3cret"
	wantHidden := func(what string, raw []byte) {
		t.Helper()
		for _, v := range []string{token, short, "sk_live_51Hx9QmKc0a1b2c3d4e5f6", "51Hx9QmKc0a1b2c3"} {
			if bytes.Contains(raw, []byte(v)) {
				t.Fatalf("%s shows the header value %q: %s", what, v, raw)
			}
		}
	}
	created, _, raw := call[api.EndpointJSON](t, e.server, 201, "POST", "/v1/endpoints", key, map[string]any{
		"url": "https://example.com/hooks", "headers": map[string]string{"Authorization": token, "X-Short": short}})
	wantHidden("the create answer", raw)
	// The last 4 characters tell credentials apart; a short value shows
	// none, since 4 of 6 characters would give most of it away.
	want := map[string]string{"Authorization": "********e5f6", "X-Short": "********"}
	if !maps.Equal(created.Headers, want) {
		t.Fatalf("create shows headers %v, want %v", created.Headers, want)
	}
	path := "/v1/endpoints/" + created.ID
	got, _, raw := call[api.EndpointJSON](t, e.server, 200, "GET", path, key, nil)
	wantHidden("GET", raw)
	if !maps.Equal(got.Headers, want) {
		t.Fatalf("GET shows headers %v, want %v", got.Headers, want)
	}
	_, _, raw = call[page[api.EndpointJSON]](t, e.server, 200, "GET", "/v1/endpoints", key, nil)
	wantHidden("the list", raw)

	// Stored sealed, bound to the endpoint and the header's name.
	stored, ok := e.store.Endpoint(created.ID)
	if !ok {
		t.Fatal("the endpoint is not in the store")
	}
	b, err := proto.Marshal(stored)
	if err != nil {
		t.Fatal(err)
	}
	wantHidden("the stored record", b)
	if len(stored.Headers) != 0 || len(stored.HeadersSealed) != 2 {
		t.Fatalf("stored headers %v in clear and %d sealed, want none in clear and 2 sealed", stored.Headers, len(stored.HeadersSealed))
	}
	opened, err := e.box.Open(stored.HeadersSealed["Authorization"], sluicev1.HeaderSealAAD(created.ID, "Authorization"))
	if err != nil || string(opened) != token {
		t.Fatalf("opening the sealed Authorization: %q, %v", opened, err)
	}
	for _, wrong := range []string{sluicev1.HeaderSealAAD(created.ID, "X-Short"), sluicev1.HeaderSealAAD("ep_other", "Authorization"), created.ID} {
		if _, err := e.box.Open(stored.HeadersSealed["Authorization"], wrong); err == nil {
			t.Fatalf("the sealed Authorization opens as %q too: it could be moved there", wrong)
		}
	}

	// A PATCH sending back what GET showed keeps the stored value: a
	// read-modify-write does not replace a credential with its mask.
	patched, _, raw := call[api.EndpointJSON](t, e.server, 200, "PATCH", path, key, map[string]any{
		"headers": map[string]string{"Authorization": "********e5f6", "X-Short": "********", "X-New": "added"}})
	wantHidden("the patch answer", raw)
	after, _ := e.store.Endpoint(created.ID)
	if !bytes.Equal(after.HeadersSealed["Authorization"], stored.HeadersSealed["Authorization"]) ||
		!bytes.Equal(after.HeadersSealed["X-Short"], stored.HeadersSealed["X-Short"]) {
		t.Fatalf("sending the redacted values back changed the stored ones")
	}
	if v, err := e.box.Open(after.HeadersSealed["X-New"], sluicev1.HeaderSealAAD(created.ID, "X-New")); err != nil || string(v) != "added" {
		t.Fatalf("the added header opens to %q, %v", v, err)
	}
	if patched.Headers["X-New"] != "********" {
		t.Fatalf("patch shows %v", patched.Headers)
	}
	// The same headers again change nothing, etag included.
	again, _, _ := call[api.EndpointJSON](t, e.server, 200, "PATCH", path, key, map[string]any{
		"headers": map[string]string{"Authorization": token, "X-Short": "********", "X-New": "added"}})
	if again.Etag != patched.Etag {
		t.Fatalf("patching the same header values moved the etag %s → %s", patched.Etag, again.Etag)
	}
	// A new value replaces it.
	call[api.EndpointJSON](t, e.server, 200, "PATCH", path, key, `{"headers":{"Authorization":"Bearer rotated-token-0000000000"}}`)
	last, _ := e.store.Endpoint(created.ID)
	if v, err := e.box.Open(last.HeadersSealed["Authorization"], sluicev1.HeaderSealAAD(created.ID, "Authorization")); err != nil ||
		string(v) != "Bearer rotated-token-0000000000" || len(last.HeadersSealed) != 1 {
		t.Fatalf("after replacing the headers: %q, %v, %d headers", v, err, len(last.HeadersSealed))
	}
}
