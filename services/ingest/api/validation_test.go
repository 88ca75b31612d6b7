package api_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/sluicehq/sluice/services/ingest/api"
)

// endpointBody is a valid endpoint body with extra members set, as JSON.
func endpointBody(extra string) string {
	if extra == "" {
		return `{"url":"https://example.com/hooks"}`
	}
	return `{"url":"https://example.com/hooks",` + extra + `}`
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func jsonList(n int, item string) string {
	items := make([]string, n)
	for i := range items {
		items[i] = jsonString(item)
	}
	return "[" + strings.Join(items, ",") + "]"
}

func testEndpointValidation(t *testing.T, e *env) {
	_, key := newTenant(t, e.server, "Validation")
	secret8 := "whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 8))
	secret65 := "whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 65))
	headers21 := map[string]string{}
	for i := range 21 {
		headers21[fmt.Sprintf("X-H%02d", i)] = "v"
	}
	h21, _ := json.Marshal(headers21)

	for _, tc := range []struct {
		desc  string
		body  string
		field string
		// createOnly marks bodies that PATCH accepts or cannot carry.
		createOnly bool
	}{
		{desc: "url missing", body: `{}`, field: "url", createOnly: true},
		{desc: "url empty", body: `{"url":""}`, field: "url"},
		{desc: "url relative", body: `{"url":"/hooks"}`, field: "url"},
		{desc: "url without host", body: `{"url":"https:///hooks"}`, field: "url"},
		{desc: "url with only a port", body: `{"url":"https://:443/hooks"}`, field: "url"},
		{desc: "url ftp", body: `{"url":"ftp://example.com/hooks"}`, field: "url"},
		{desc: "url javascript", body: `{"url":"javascript:alert(1)"}`, field: "url"},
		{desc: "url with credentials", body: `{"url":"https://user:pass@example.com/hooks"}`, field: "url"},
		{desc: "url with a user only", body: `{"url":"https://user@example.com/hooks"}`, field: "url"},
		{desc: "url with a fragment", body: `{"url":"https://example.com/hooks#frag"}`, field: "url"},
		{desc: "url of 3000 bytes", body: `{"url":"https://example.com/` + strings.Repeat("a", 3000-20) + `"}`, field: "url"},
		{desc: "url with a space in the host", body: `{"url":"https://exa mple.com/"}`, field: "url"},
		{desc: "url with a control character", body: `{"url":"https://example.com/\u0001"}`, field: "url"},
		{desc: "description of 513 bytes", body: endpointBody(`"description":` + jsonString(strings.Repeat("d", 513))), field: "description"},
		{desc: "partial wildcard filter", body: endpointBody(`"events":["ord*"]`), field: "events[0]"},
		{desc: "filter with two dots", body: endpointBody(`"events":["order.created","a..b"]`), field: "events[1]"},
		{desc: "empty filter", body: endpointBody(`"events":[""]`), field: "events[0]"},
		{desc: "null filter", body: endpointBody(`"events":[null]`), field: "events[0]"},
		{desc: "65 filters", body: endpointBody(`"events":` + jsonList(65, "order.created")), field: "events"},
		{desc: "33 metadata entries", body: endpointBody(`"metadata":` + jsonMap(33, "v")), field: "metadata"},
		{desc: "metadata key of 65 bytes", body: endpointBody(`"metadata":{"` + strings.Repeat("k", 65) + `":"v"}`), field: "metadata." + strings.Repeat("k", 64) + "…"},
		{desc: "empty metadata key", body: endpointBody(`"metadata":{"":"v"}`), field: "metadata."},
		{desc: "metadata value of 513 bytes", body: endpointBody(`"metadata":{"k":` + jsonString(strings.Repeat("v", 513)) + `}`), field: "metadata.k"},
		{desc: "header Host", body: endpointBody(`"headers":{"Host":"evil.example"}`), field: "headers.Host"},
		{desc: "header content-length", body: endpointBody(`"headers":{"content-length":"0"}`), field: "headers.content-length"},
		{desc: "header Content-Type", body: endpointBody(`"headers":{"Content-Type":"text/plain"}`), field: "headers.Content-Type"},
		{desc: "header Webhook-Signature", body: endpointBody(`"headers":{"Webhook-Signature":"v1,forged"}`), field: "headers.Webhook-Signature"},
		{desc: "header webhook-id in lower case", body: endpointBody(`"headers":{"webhook-id":"x"}`), field: "headers.webhook-id"},
		{desc: "header Proxy-Authorization", body: endpointBody(`"headers":{"Proxy-Authorization":"Basic x"}`), field: "headers.Proxy-Authorization"},
		{desc: "header Transfer-Encoding", body: endpointBody(`"headers":{"Transfer-Encoding":"chunked"}`), field: "headers.Transfer-Encoding"},
		{desc: "header name with a space", body: endpointBody(`"headers":{"X Team":"billing"}`), field: "headers.X Team"},
		{desc: "header name with a colon", body: endpointBody(`"headers":{"X-Team:":"billing"}`), field: "headers.X-Team:"},
		{desc: "empty header name", body: endpointBody(`"headers":{"":"v"}`), field: "headers."},
		{desc: "header value with CRLF", body: endpointBody(`"headers":{"X-Team":"a\r\nX-Injected: 1"}`), field: "headers.X-Team"},
		{desc: "header value with NUL", body: endpointBody(`"headers":{"X-Team":"a\u0000b"}`), field: "headers.X-Team"},
		{desc: "header value of 1025 bytes", body: endpointBody(`"headers":{"X-Team":` + jsonString(strings.Repeat("v", 1025)) + `}`), field: "headers.X-Team"},
		{desc: "21 headers", body: endpointBody(`"headers":` + string(h21)), field: "headers"},
		{desc: "max_in_flight 0", body: endpointBody(`"max_in_flight":0`), field: "max_in_flight"},
		{desc: "max_in_flight 1001", body: endpointBody(`"max_in_flight":1001`), field: "max_in_flight"},
		{desc: "max_in_flight past uint32", body: endpointBody(`"max_in_flight":4294967297`), field: "max_in_flight"},
		{desc: "max_in_flight fractional", body: endpointBody(`"max_in_flight":1.5`), field: "max_in_flight"},
		{desc: "rate_limit 0", body: endpointBody(`"rate_limit":0`), field: "rate_limit"},
		{desc: "rate_limit -1", body: endpointBody(`"rate_limit":-1`), field: "rate_limit"},
		{desc: "rate_limit 10001", body: endpointBody(`"rate_limit":10001`), field: "rate_limit"},
		{desc: "rate_limit past float64", body: endpointBody(`"rate_limit":1e400`), field: "rate_limit"},
		// Below the floor of 0.001/s: at 1e-12/s the sender's wait for a
		// token overflows time.Duration (review M1).
		{desc: "rate_limit 1e-12", body: endpointBody(`"rate_limit":1e-12`), field: "rate_limit"},
		{desc: "rate_limit just under 0.001", body: endpointBody(`"rate_limit":0.00099`), field: "rate_limit"},
		{desc: "timeout_ms 999", body: endpointBody(`"timeout_ms":999`), field: "timeout_ms"},
		{desc: "timeout_ms 60001", body: endpointBody(`"timeout_ms":60001`), field: "timeout_ms"},
		{desc: "retry wait under 1 s", body: endpointBody(`"retry_schedule_ms":[5000,999]`), field: "retry_schedule_ms[1]"},
		{desc: "retry wait over 24 h", body: endpointBody(`"retry_schedule_ms":[86400001]`), field: "retry_schedule_ms[0]"},
		{desc: "21 retry waits", body: endpointBody(`"retry_schedule_ms":[` + strings.TrimSuffix(strings.Repeat("1000,", 21), ",") + `]`), field: "retry_schedule_ms"},
		{desc: "retry schedule not a list", body: endpointBody(`"retry_schedule_ms":"5s"`), field: "retry_schedule_ms"},
		{desc: "secret without prefix", body: endpointBody(`"secret":"nope"`), field: "secret", createOnly: true},
		{desc: "secret of 8 bytes", body: endpointBody(`"secret":"` + secret8 + `"`), field: "secret", createOnly: true},
		{desc: "secret of 65 bytes", body: endpointBody(`"secret":"` + secret65 + `"`), field: "secret", createOnly: true},
		{desc: "secret not base64", body: endpointBody(`"secret":"whsec_!!!!"`), field: "secret", createOnly: true},
		{desc: "unknown field", body: endpointBody(`"colour":"blue"`), field: "colour"},
		// encoding/json matches names in any case; a second url in
		// another case must not override the documented one.
		{desc: "field name in another case", body: `{"URL":"https://example.com/hooks"}`, field: "URL"},
		{desc: "field twice in two cases", body: endpointBody(`"URL":"https://evil.example/"`), field: "URL"},
		{desc: "field name in title case", body: endpointBody(`"Max_In_Flight":5`), field: "Max_In_Flight"},
		{desc: "url a number", body: `{"url":5}`, field: "url"},
		{desc: "events a string", body: endpointBody(`"events":"order.*"`), field: "events"},
		{desc: "metadata value a number", body: endpointBody(`"metadata":{"a":1}`), field: "metadata"},
		{desc: "ordered a string", body: endpointBody(`"ordered":"yes"`), field: "ordered"},
		{desc: "max_in_flight a string", body: endpointBody(`"max_in_flight":"10"`), field: "max_in_flight"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			p := callProblem(t, e.server, 400, "invalid-request", "POST", "/v1/endpoints", key, tc.body)
			wantFieldError(t, "create", p, tc.field)
		})
	}

	// Every invalid field is listed, not only the first.
	p := callProblem(t, e.server, 400, "invalid-request", "POST", "/v1/endpoints", key,
		`{"url":"ftp://x","max_in_flight":0,"timeout_ms":1,"headers":{"Host":"x"}}`)
	fields := map[string]bool{}
	for _, fe := range p.Errors {
		fields[fe.Field] = true
	}
	for _, f := range []string{"url", "max_in_flight", "timeout_ms", "headers.Host"} {
		if !fields[f] {
			t.Fatalf("errors %+v do not name %s", p.Errors, f)
		}
	}

	// None of it was written.
	list, _, _ := call[page[api.EndpointJSON]](t, e.server, 200, "GET", "/v1/endpoints", key, nil)
	if len(list.Data) != 0 {
		t.Fatalf("refused bodies created %d endpoints", len(list.Data))
	}

	t.Run("the same bodies as a patch", func(t *testing.T) {
		ep := newEndpoint(t, e.server, key, endpointBody(""))
		for _, tc := range []struct{ desc, body, field string }{
			{"url relative", `{"url":"/hooks"}`, "url"},
			{"url with credentials", `{"url":"https://user:pass@example.com/hooks"}`, "url"},
			{"partial wildcard filter", `{"events":["ord*"]}`, "events[0]"},
			{"65 filters", `{"events":` + jsonList(65, "a") + `}`, "events"},
			{"33 metadata entries", `{"metadata":` + jsonMap(33, "v") + `}`, "metadata"},
			{"header Host", `{"headers":{"Host":"x"}}`, "headers.Host"},
			{"21 headers", `{"headers":` + string(h21) + `}`, "headers"},
			{"max_in_flight 1001", `{"max_in_flight":1001}`, "max_in_flight"},
			{"rate_limit -1", `{"rate_limit":-1}`, "rate_limit"},
			{"rate_limit 1e-12", `{"rate_limit":1e-12}`, "rate_limit"},
			{"timeout_ms 60001", `{"timeout_ms":60001}`, "timeout_ms"},
			{"retry wait of 0", `{"retry_schedule_ms":[0]}`, "retry_schedule_ms[0]"},
			{"description of 513 bytes", `{"description":` + jsonString(strings.Repeat("d", 513)) + `}`, "description"},
			{"unknown field", `{"colour":"blue"}`, "colour"},
			{"field name in another case", `{"Description":"x"}`, "Description"},
			{"url a number", `{"url":5}`, "url"},
			{"max_in_flight a string", `{"max_in_flight":"10"}`, "max_in_flight"},
			{"rate_limit an object", `{"rate_limit":{}}`, "rate_limit"},
		} {
			p := callProblem(t, e.server, 400, "invalid-request", "PATCH", "/v1/endpoints/"+ep.ID, key, tc.body)
			wantFieldError(t, tc.desc, p, tc.field)
		}
		got, _, _ := call[api.EndpointJSON](t, e.server, 200, "GET", "/v1/endpoints/"+ep.ID, key, nil)
		ep.Secret = ""
		wantEndpoint(t, got, ep)
	})

	t.Run("edges that are valid", func(t *testing.T) {
		secret64 := "whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 64))
		for _, body := range []string{
			endpointBody(`"max_in_flight":1,"rate_limit":10000,"timeout_ms":1000`),
			endpointBody(`"max_in_flight":1000,"rate_limit":0.001,"timeout_ms":60000`),
			endpointBody(`"retry_schedule_ms":[1000,86400000,` + strings.TrimSuffix(strings.Repeat("1000,", 18), ",") + `]`),
			endpointBody(`"events":` + jsonList(64, "order.*") + `,"metadata":` + jsonMap(32, strings.Repeat("v", 512))),
			endpointBody(`"headers":{"X-Api-Key":"` + strings.Repeat("v", 1024) + `","Authorization":"Bearer x"}`),
			endpointBody(`"secret":"` + secret64 + `"`),
			`{"url":"https://example.com/` + strings.Repeat("a", 2048-20) + `"}`,
			`{"url":"http://127.0.0.1:8080/hooks"}`,
			`{"url":"https://[::1]:8443/hooks?x=1"}`,
		} {
			status, _, raw := e.do(t, "POST", "/v1/endpoints", key, body)
			if status != 201 {
				t.Fatalf("status %d, want 201, for %.200s; answer %s", status, body, raw)
			}
		}
	})
}

func testRequestDecoding(t *testing.T, e *env) {
	_, key := newTenant(t, e.server, "Decoding")
	ep := newEndpoint(t, e.server, key, endpointBody(""))
	for _, tc := range []struct {
		desc, method, path string
		body               any
		contentType        string
		status             int
		kind               string
	}{
		{"trailing garbage", "POST", "/v1/endpoints", endpointBody("") + " x", "", 400, "malformed-json"},
		{"two objects", "POST", "/v1/endpoints", endpointBody("") + endpointBody(""), "", 400, "malformed-json"},
		{"a closing brace too many", "POST", "/v1/endpoints", endpointBody("") + "}", "", 400, "malformed-json"},
		{"empty body", "POST", "/v1/endpoints", "", "", 400, "malformed-json"},
		{"only spaces", "POST", "/v1/endpoints", "  \n ", "", 400, "malformed-json"},
		{"cut short", "POST", "/v1/endpoints", `{"url":`, "", 400, "malformed-json"},
		{"not JSON", "POST", "/v1/endpoints", `url=https://example.com`, "", 400, "malformed-json"},
		{"single quotes", "POST", "/v1/endpoints", `{'url':'https://example.com'}`, "", 400, "malformed-json"},
		{"an array", "POST", "/v1/endpoints", `[{"url":"https://example.com"}]`, "", 400, "malformed-json"},
		{"a string", "POST", "/v1/endpoints", `"https://example.com"`, "", 400, "malformed-json"},
		{"null", "POST", "/v1/endpoints", `null`, "", 400, "malformed-json"},
		{"patch of null", "PATCH", "/v1/endpoints/" + ep.ID, ` null `, "", 400, "malformed-json"},
		{"disable with null", "POST", "/v1/endpoints/" + ep.ID + "/disable", `null`, "", 400, "malformed-json"},
		{"rotate with null", "POST", "/v1/endpoints/" + ep.ID + "/rotate-secret", `null`, "", 400, "malformed-json"},
		{"patch with trailing garbage", "PATCH", "/v1/endpoints/" + ep.ID, `{"description":"x"}]`, "", 400, "malformed-json"},
		{"patch cut short", "PATCH", "/v1/endpoints/" + ep.ID, `{"description":"x`, "", 400, "malformed-json"},
		{"text/plain", "POST", "/v1/endpoints", endpointBody(""), "text/plain", 415, "unsupported-media-type"},
		{"form", "POST", "/v1/endpoints", `url=https://example.com`, "application/x-www-form-urlencoded", 415, "unsupported-media-type"},
		{"no content type", "POST", "/v1/endpoints", endpointBody(""), "-", 415, "unsupported-media-type"},
		{"application/jsonx", "POST", "/v1/endpoints", endpointBody(""), "application/jsonx", 415, "unsupported-media-type"},
		{"patch as text/plain", "PATCH", "/v1/endpoints/" + ep.ID, `{"description":"x"}`, "text/plain", 415, "unsupported-media-type"},
		{"body over 64 KiB", "POST", "/v1/endpoints", `{"url":"https://example.com","description":"` + strings.Repeat("d", 64<<10) + `"}`, "", 413, "payload-too-large"},
		{"PUT on the endpoint list", "PUT", "/v1/endpoints", endpointBody(""), "", 405, "method-not-allowed"},
		{"unknown route", "GET", "/v1/webhooks", nil, "", 404, "not-found"},
		{"too deep", "GET", "/v1/endpoints/" + ep.ID + "/secret", nil, "", 404, "not-found"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			var headers []string
			switch tc.contentType {
			case "":
			case "-":
				headers = []string{"Content-Type", ""}
			default:
				headers = []string{"Content-Type", tc.contentType}
			}
			callProblem(t, e.server, tc.status, tc.kind, tc.method, tc.path, key, tc.body, headers...)
		})
	}

	p := callProblem(t, e.server, 400, "malformed-json", "POST", "/v1/tenants", adminKey, `name=x`)
	if !strings.Contains(p.Detail, "invalid JSON") {
		t.Fatalf("detail %q", p.Detail)
	}
	p = callProblem(t, e.server, 400, "malformed-json", "POST", "/v1/tenants", adminKey, `null`)
	if p.Detail != "the body must be a JSON object, not null" {
		t.Fatalf("detail %q", p.Detail)
	}

	for _, tc := range []struct{ desc, method, path, allow string }{
		{"PUT on the endpoint list", "PUT", "/v1/endpoints", "GET, POST"},
		{"DELETE on the endpoint list", "DELETE", "/v1/endpoints", "GET, POST"},
		{"PUT on an endpoint", "PUT", "/v1/endpoints/" + ep.ID, "DELETE, GET, PATCH"},
		{"GET on rotate-secret", "GET", "/v1/endpoints/" + ep.ID + "/rotate-secret", "POST"},
		{"DELETE on the tenant list", "DELETE", "/v1/tenants", "GET, POST"},
		{"PATCH on an API key", "PATCH", "/v1/tenants/ten_x/api-keys/key_x", "DELETE"},
	} {
		t.Run("Allow of "+tc.desc, func(t *testing.T) {
			status, hdr, raw := e.do(t, tc.method, tc.path, "", nil)
			wantProblem(t, tc.desc, status, hdr, raw, 405, "method-not-allowed")
			if got := hdr.Get("Allow"); got != tc.allow {
				t.Fatalf("Allow %q, want %q", got, tc.allow)
			}
		})
	}

	t.Run("JSON content types that are accepted", func(t *testing.T) {
		for _, ct := range []string{"application/json; charset=utf-8", "Application/JSON", " application/json "} {
			status, _, raw := e.do(t, "PATCH", "/v1/endpoints/"+ep.ID, key, `{"description":"ok"}`, "Content-Type", ct)
			if status != 200 {
				t.Fatalf("content type %q: status %d, want 200; answer %s", ct, status, raw)
			}
		}
	})
}

func testHTTPSOnly(t *testing.T, e *env) {
	opts := testOptions()
	opts.RequireHTTPS = true
	strict := serve(t, e.store, e.box, opts)
	strict.secrets = e.secrets // the same topic
	_, key := newTenant(t, strict, "HTTPS only")

	p := callProblem(t, strict, 400, "invalid-request", "POST", "/v1/endpoints", key, `{"url":"http://example.com/hooks"}`)
	wantFieldError(t, "http endpoint", p, "url")
	if !strings.Contains(p.Detail, "https") {
		t.Fatalf("detail %q does not say https is needed", p.Detail)
	}
	ep := newEndpoint(t, strict, key, `{"url":"https://example.com/hooks"}`)
	p = callProblem(t, strict, 400, "invalid-request", "PATCH", "/v1/endpoints/"+ep.ID, key, `{"url":"http://example.com/hooks"}`)
	wantFieldError(t, "http patch", p, "url")

	// The same store without the option takes http.
	newEndpoint(t, e.server, key, `{"url":"http://example.com/hooks"}`)
}

func testConcurrentPatches(t *testing.T, e *env) {
	_, key := newTenant(t, e.server, "Racers")
	ep := newEndpoint(t, e.server, key, endpointBody(""))
	etag := ep.Etag
	for round := range 3 {
		type result struct {
			status int
			body   []byte
			err    error
		}
		var wg sync.WaitGroup
		results := make([]result, 2)
		start := make(chan struct{})
		for i := range results {
			wg.Go(func() {
				<-start
				status, _, raw, err := e.send("PATCH", "/v1/endpoints/"+ep.ID, key,
					fmt.Sprintf(`{"description":"round %d writer %d"}`, round, i), "If-Match", quoted(etag))
				results[i] = result{status, raw, err}
			})
		}
		close(start)
		wg.Wait()
		var winner *api.EndpointJSON
		statuses := map[int]int{}
		for i, r := range results {
			if r.err != nil {
				t.Fatal(r.err)
			}
			statuses[r.status]++
			switch r.status {
			case 200:
				w := decodeStrict[api.EndpointJSON](t, r.body)
				if w.Description != fmt.Sprintf("round %d writer %d", round, i) {
					t.Fatalf("writer %d got back %q", i, w.Description)
				}
				winner = &w
			case 412:
				var p api.Problem
				if err := json.Unmarshal(r.body, &p); err != nil || p.Type != api.ProblemBase+"precondition-failed" {
					t.Fatalf("the loser's answer: %s", r.body)
				}
			}
		}
		if statuses[200] != 1 || statuses[412] != 1 {
			t.Fatalf("round %d: statuses %v, want one 200 and one 412", round, statuses)
		}
		got, _, _ := call[api.EndpointJSON](t, e.server, 200, "GET", "/v1/endpoints/"+ep.ID, key, nil)
		if got.Etag != winner.Etag || got.Description != winner.Description {
			t.Fatalf("round %d: stored %q with etag %s, want the winner's %q, %s", round, got.Description, got.Etag, winner.Description, winner.Etag)
		}
		etag = got.Etag
	}
}
