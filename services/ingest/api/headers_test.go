package api_test

import (
	"bytes"
	"net/http"
	"testing"

	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/services/ingest/api"
)

// TestLegacyHeadersAreSealedAtTheNextWrite: an endpoint stored before
// headers were sealed has them in clear. Answers show them redacted, and
// the endpoint's next write seals them and clears the clear ones.
func TestLegacyHeadersAreSealedAtTheNextWrite(t *testing.T) {
	box := newBox(t)
	mem, h := fixture(t, box)
	const legacy = "Bearer legacy-credential-0123456789"
	rec, _ := mem.Get(fuzzEndpoint)
	rec = proto.CloneOf(rec)
	rec.GetEndpoint().Headers = map[string]string{"Authorization": legacy}
	mem.objects[fuzzEndpoint] = rec

	resp := serveInProcess(h, "GET", "/v1/endpoints/"+fuzzEndpoint, fuzzAPIKey, nil)
	if resp.StatusCode() != http.StatusOK || bytes.Contains(resp.Body(), []byte("legacy-credential")) {
		t.Fatalf("GET of a legacy endpoint: %d %s", resp.StatusCode(), resp.Body())
	}
	if got := decodeStrict[api.EndpointJSON](t, resp.Body()).Headers["Authorization"]; got != "********6789" {
		t.Fatalf("the legacy header shows as %q, want ********6789", got)
	}

	// Any write that changes the endpoint (here: disable) seals them.
	resp = serveInProcess(h, "POST", "/v1/endpoints/"+fuzzEndpoint+"/disable", fuzzAPIKey, nil)
	if resp.StatusCode() != http.StatusOK {
		t.Fatalf("disable: %d %s", resp.StatusCode(), resp.Body())
	}
	rec, _ = mem.Get(fuzzEndpoint)
	ep := rec.GetEndpoint()
	b, _ := proto.Marshal(ep)
	if len(ep.Headers) != 0 || bytes.Contains(b, []byte("legacy-credential")) {
		t.Fatalf("after a write the record still holds headers in clear: %v", ep.Headers)
	}
	v, err := box.Open(ep.HeadersSealed["Authorization"], sluicev1.HeaderSealAAD(fuzzEndpoint, "Authorization"))
	if err != nil || string(v) != legacy {
		t.Fatalf("the sealed legacy header opens to %q, %v", v, err)
	}
}

// TestHeadersThatDoNotOpenAreNotLost: a sealed value that does not open
// (the secrets key changed) shows as the bare mask, and sending that mask
// back is refused rather than stored as the value.
func TestHeadersThatDoNotOpenAreNotLost(t *testing.T) {
	box := newBox(t)
	mem, h := fixture(t, box)
	rec, _ := mem.Get(fuzzEndpoint)
	rec = proto.CloneOf(rec)
	other := newBox(t) // another key
	rec.GetEndpoint().Headers = nil
	rec.GetEndpoint().HeadersSealed = map[string][]byte{
		"Authorization": other.Seal([]byte("Bearer sealed-under-another-key"), sluicev1.HeaderSealAAD(fuzzEndpoint, "Authorization"))}
	mem.objects[fuzzEndpoint] = rec

	resp := serveInProcess(h, "GET", "/v1/endpoints/"+fuzzEndpoint, fuzzAPIKey, nil)
	if got := decodeStrict[api.EndpointJSON](t, resp.Body()).Headers["Authorization"]; got != "********" {
		t.Fatalf("a header that does not open shows as %q, want the bare mask", got)
	}
	resp = serveInProcess(h, "PATCH", "/v1/endpoints/"+fuzzEndpoint, fuzzAPIKey, []byte(`{"headers":{"Authorization":"********"}}`))
	checkAnswer(t, resp)
	if resp.StatusCode() != http.StatusBadRequest {
		t.Fatalf("writing the mask back over a header that does not open: %d %s", resp.StatusCode(), resp.Body())
	}
	p := decodeStrict[api.Problem](t, resp.Body())
	wantFieldError(t, "mask", p, "headers.Authorization")
	// Creating with a mask as a value is refused too.
	resp = serveInProcess(h, "POST", "/v1/endpoints", fuzzAPIKey, []byte(`{"url":"https://example.com/x","headers":{"X-Key":"********abcd"}}`))
	if resp.StatusCode() != http.StatusBadRequest {
		t.Fatalf("create with a masked value: %d %s", resp.StatusCode(), resp.Body())
	}
}
