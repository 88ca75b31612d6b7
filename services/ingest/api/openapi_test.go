package api_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"log/slog"
	"maps"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/services/ingest/api"
)

// The tests in this file keep openapi.json and the code in step: a route,
// a field of a request or response type, or a route's key added on one
// side only fails them.

// oaDoc is the part of an OpenAPI document the tests read.
type oaDoc struct {
	OpenAPI    string                                `json:"openapi"`
	Paths      map[string]map[string]json.RawMessage `json:"paths"`
	Components struct {
		Schemas    map[string]oaSchema    `json:"schemas"`
		Parameters map[string]oaParameter `json:"parameters"`
	} `json:"components"`
}

type oaOperation struct {
	OperationID string                     `json:"operationId"`
	Summary     string                     `json:"summary"`
	Parameters  []oaParameter              `json:"parameters"`
	Responses   map[string]json.RawMessage `json:"responses"`
	Security    *[]map[string][]string     `json:"security"`
}

type oaParameter struct {
	Ref      string `json:"$ref"`
	Name     string `json:"name"`
	In       string `json:"in"`
	Required bool   `json:"required"`
}

type oaSchema struct {
	Properties map[string]json.RawMessage `json:"properties"`
	Required   []string                   `json:"required"`
}

// oaMethods are the operation keys of a path item; its other keys
// (parameters, summary, …) are not operations.
var oaMethods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

var oaPathItemFields = []string{"$ref", "summary", "description", "servers", "parameters"}

// oaLoad reads openapi.json: its bytes, the typed view and the generic tree.
func oaLoad(t testing.TB) ([]byte, oaDoc, map[string]any) {
	t.Helper()
	raw, err := os.ReadFile("openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc oaDoc
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	var tree map[string]any
	if err := json.Unmarshal(raw, &tree); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	return raw, doc, tree
}

// oaOperations returns the document's operations keyed by "METHOD path".
func oaOperations(t testing.TB, doc oaDoc) map[string]oaOperation {
	t.Helper()
	ops := map[string]oaOperation{}
	for path, item := range doc.Paths {
		for key, v := range item {
			if slices.Contains(oaPathItemFields, key) {
				continue
			}
			if !slices.Contains(oaMethods, key) {
				t.Errorf("paths[%s]: %q is neither an HTTP method nor a path item field", path, key)
				continue
			}
			var op oaOperation
			if err := json.Unmarshal(v, &op); err != nil {
				t.Fatalf("paths[%s].%s: %v", path, key, err)
			}
			ops[strings.ToUpper(key)+" "+path] = op
		}
	}
	return ops
}

// oaResolveParam follows a parameter's $ref into components.
func oaResolveParam(t testing.TB, doc oaDoc, p oaParameter) oaParameter {
	t.Helper()
	if p.Ref == "" {
		return p
	}
	name, ok := strings.CutPrefix(p.Ref, "#/components/parameters/")
	target, found := doc.Components.Parameters[name]
	if !ok || !found {
		t.Errorf("parameter $ref %s does not resolve to components.parameters", p.Ref)
		return oaParameter{}
	}
	return target
}

// oaNewAPI builds the API as the brief of these tests allows: New touches
// neither the store nor the box.
func oaNewAPI(store api.Store, opts api.Options) *api.API {
	return api.New(store, nil, opts, slog.New(slog.DiscardHandler))
}

func TestOpenAPIVersion(t *testing.T) {
	_, doc, _ := oaLoad(t)
	if !strings.HasPrefix(doc.OpenAPI, "3.1") {
		t.Fatalf(`"openapi" is %q, want 3.1.x`, doc.OpenAPI)
	}
}

func TestOpenAPIDocumentsEveryRoute(t *testing.T) {
	_, doc, _ := oaLoad(t)
	documented := oaOperations(t, doc)
	served := map[string]bool{}
	for _, r := range oaNewAPI(nil, api.Options{}).Routes() {
		key := r[0] + " " + r[1]
		if served[key] {
			t.Errorf("route %s is in the route table twice", key)
		}
		served[key] = true
		if _, ok := documented[key]; !ok {
			t.Errorf("route %s is served but not in openapi.json", key)
		}
	}
	for _, key := range slices.Sorted(maps.Keys(documented)) {
		if !served[key] {
			t.Errorf("openapi.json documents %s, which no route serves", key)
		}
	}
}

var oaPathParam = regexp.MustCompile(`\{([^}]+)\}`)

func TestOpenAPIOperationsAreComplete(t *testing.T) {
	_, doc, _ := oaLoad(t)
	ops := oaOperations(t, doc)
	seenIDs := map[string]string{}
	for _, key := range slices.Sorted(maps.Keys(ops)) {
		op := ops[key]
		switch prev, dup := seenIDs[op.OperationID]; {
		case op.OperationID == "":
			t.Errorf("%s has no operationId", key)
		case dup:
			t.Errorf("%s and %s share the operationId %q", key, prev, op.OperationID)
		default:
			seenIDs[op.OperationID] = key
		}
		if op.Summary == "" {
			t.Errorf("%s has no summary", key)
		}
		if len(op.Responses) == 0 {
			t.Errorf("%s has no responses", key)
		}
		if op.Security == nil {
			t.Errorf("%s does not say its security (use [] for none)", key)
		}

		// Path parameters: path-level ones, then the operation's.
		path := strings.SplitN(key, " ", 2)[1]
		var shared []oaParameter
		if b, ok := doc.Paths[path]["parameters"]; ok {
			if err := json.Unmarshal(b, &shared); err != nil {
				t.Fatalf("paths[%s].parameters: %v", path, err)
			}
		}
		declared := map[string]bool{}
		for _, p := range append(shared, op.Parameters...) {
			p = oaResolveParam(t, doc, p)
			if p.In != "path" {
				continue
			}
			if !p.Required {
				t.Errorf("%s: path parameter %s must be required", key, p.Name)
			}
			declared[p.Name] = true
		}
		inPath := map[string]bool{}
		for _, m := range oaPathParam.FindAllStringSubmatch(path, -1) {
			inPath[m[1]] = true
			if !declared[m[1]] {
				t.Errorf("%s: {%s} has no `in: path` parameter", key, m[1])
			}
		}
		for name := range declared {
			if !inPath[name] {
				t.Errorf("%s: path parameter %s is not in the path", key, name)
			}
		}
	}
}

// TestOpenAPIProblemResponses checks that every error answer is a problem
// document, as every error the API writes is.
func TestOpenAPIProblemResponses(t *testing.T) {
	_, doc, tree := oaLoad(t)
	ops := oaOperations(t, doc)
	for _, key := range slices.Sorted(maps.Keys(ops)) {
		for code, raw := range ops[key].Responses {
			if code < "400" {
				continue
			}
			var resp map[string]any
			if err := json.Unmarshal(raw, &resp); err != nil {
				t.Fatal(err)
			}
			if ref, ok := resp["$ref"].(string); ok {
				target, err := oaPointer(tree, ref)
				if err != nil {
					t.Errorf("%s %s: %v", key, code, err)
					continue
				}
				resp, _ = target.(map[string]any)
			}
			content, _ := resp["content"].(map[string]any)
			media, _ := content["application/problem+json"].(map[string]any)
			schema, _ := media["schema"].(map[string]any)
			if len(content) != 1 || schema["$ref"] != "#/components/schemas/Problem" {
				t.Errorf("%s %s: want only application/problem+json with the Problem schema, got %v", key, code, content)
			}
		}
	}
}

func TestOpenAPIRefsResolve(t *testing.T) {
	_, _, tree := oaLoad(t)
	var walk func(at string, v any)
	walk = func(at string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, child := range v {
				if ref, ok := child.(string); ok && k == "$ref" {
					if !strings.HasPrefix(ref, "#/components/") {
						t.Errorf("%s: $ref %s points outside components", at, ref)
					} else if _, err := oaPointer(tree, ref); err != nil {
						t.Errorf("%s: %v", at, err)
					}
					continue
				}
				walk(at+"/"+strings.ReplaceAll(strings.ReplaceAll(k, "~", "~0"), "/", "~1"), child)
			}
		case []any:
			for _, child := range v {
				walk(at+"[]", child)
			}
		}
	}
	walk("#", tree)
}

// oaPointer resolves a local JSON pointer (RFC 6901) in tree.
func oaPointer(tree map[string]any, ref string) (any, error) {
	var cur any = tree
	for _, tok := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, errors.New("$ref " + ref + " does not resolve")
		}
		if cur, ok = m[tok]; !ok {
			return nil, errors.New("$ref " + ref + " does not resolve")
		}
	}
	return cur, nil
}

func TestOpenAPIServedDocumentIsTheFile(t *testing.T) {
	raw, _, _ := oaLoad(t)
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.SetMethod("GET")
	ctx.Request.SetRequestURI("/openapi.json")
	oaNewAPI(nil, api.Options{}).Handler()(&ctx)
	if ctx.Response.StatusCode() != fasthttp.StatusOK {
		t.Fatalf("GET /openapi.json: status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
	}
	if ct := string(ctx.Response.Header.ContentType()); ct != "application/json" {
		t.Errorf("GET /openapi.json: content type %q, want application/json", ct)
	}
	if !bytes.Equal(ctx.Response.Body(), raw) {
		t.Errorf("GET /openapi.json serves %d bytes that differ from openapi.json (%d bytes)", len(ctx.Response.Body()), len(raw))
	}
}

// TestOpenAPISchemasMatchGoTypes compares each component schema's
// properties with the JSON names of the Go type it describes. For the
// types the API answers with, a field is required in the schema exactly
// when Go always writes it (no omitempty).
func TestOpenAPISchemasMatchGoTypes(t *testing.T) {
	_, doc, _ := oaLoad(t)
	for _, tc := range []struct {
		schema   string
		goValue  any
		response bool
	}{
		{"Tenant", api.TenantJSON{}, true},
		{"APIKey", api.APIKeyJSON{}, true},
		{"Endpoint", api.EndpointJSON{}, true},
		{"Problem", api.Problem{}, true},
		{"FieldError", api.FieldError{}, true},
		{"EventAccepted", api.EventAccepted{}, true},
		{"EventResult", api.EventResult{}, true},
		{"EventBatchResult", api.EventBatchResult{}, true},
		{"LoggedEvent", api.LoggedEventJSON{}, true},
		{"LoggedEventDetail", api.LoggedEventDetailJSON{}, true},
		{"EventDelivery", api.EventDeliveryJSON{}, true},
		{"Attempt", api.AttemptJSON{}, true},
		{"EndpointStats", api.EndpointStatsJSON{}, true},
		{"Latency", api.LatencyJSON{}, true},
		{"Minute", api.MinuteJSON{}, true},
		{"Replayed", api.ReplayedJSON{}, true},
		{"ReplayDelivery", api.ReplayDeliveryJSON{}, true},
		{"RecoverJob", api.RecoverJobJSON{}, true},
		{"RecoverPartition", api.RecoverPartitionJSON{}, true},
		{"ReplayRequest", api.ReplayRequest{}, false},
		{"RecoverRequest", api.RecoverRequest{}, false},
		{"TenantCreate", api.TenantCreate{}, false},
		{"TenantPatch", api.TenantPatch{}, false},
		{"APIKeyCreate", api.APIKeyCreate{}, false},
		{"EndpointCreate", api.EndpointCreate{}, false},
		{"EndpointPatch", api.EndpointPatch{}, false},
		{"RotateSecret", api.RotateSecret{}, false},
		{"DisableEndpoint", api.DisableEndpoint{}, false},
		{"EventCreate", api.EventCreate{}, false},
		{"EventBatch", api.EventBatch{}, false},
	} {
		goType := reflect.TypeOf(tc.goValue)
		t.Run(tc.schema, func(t *testing.T) {
			schema, ok := doc.Components.Schemas[tc.schema]
			if !ok {
				t.Fatalf("components.schemas has no %s (for %s)", tc.schema, goType)
			}
			fields, always := oaJSONFields(t, goType)
			for name := range fields {
				if _, ok := schema.Properties[name]; !ok {
					t.Errorf("%s has field %q that schema %s lacks", goType, name, tc.schema)
				}
			}
			for name := range schema.Properties {
				if !fields[name] {
					t.Errorf("schema %s has property %q that %s lacks", tc.schema, name, goType)
				}
			}
			for _, name := range schema.Required {
				if _, ok := schema.Properties[name]; !ok {
					t.Errorf("schema %s requires %q, which is not one of its properties", tc.schema, name)
				}
			}
			if !tc.response {
				return
			}
			for name := range fields {
				if got, want := slices.Contains(schema.Required, name), always[name]; got != want {
					t.Errorf("schema %s: %q required=%v, but %s writes it %s", tc.schema, name, got, goType,
						map[bool]string{true: "always", false: "only when set (omitempty)"}[want])
				}
			}
		})
	}
}

// oaJSONFields returns the JSON names of t's fields and, of those, the ones
// encoding/json always writes.
func oaJSONFields(tb testing.TB, t reflect.Type) (names, always map[string]bool) {
	tb.Helper()
	names, always = map[string]bool{}, map[string]bool{}
	for f := range t.Fields() {
		if f.Anonymous {
			tb.Fatalf("%s embeds %s; teach oaJSONFields about embedded fields", t, f.Type)
		}
		if !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" && opts == "" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		names[name] = true
		always[name] = !slices.Contains(strings.Split(opts, ","), "omitempty") &&
			!slices.Contains(strings.Split(opts, ","), "omitzero")
	}
	return names, always
}

// TestOpenAPISecurityMatchesRoutes calls every documented operation with
// no key, the admin key and a tenant key, and checks that the API lets
// through exactly the callers its security names.
func TestOpenAPISecurityMatchesRoutes(t *testing.T) {
	const adminKey = "admin_0123456789abcdef0123456789abcdef"
	const tenantKey = "sk_openapi-test-key"
	store := oaStore{keyHash: sha256.Sum256([]byte(tenantKey)), tenant: "ten_OPENAPITEST"}
	handler := oaNewAPI(store, api.Options{AdminKey: adminKey}).Handler()
	_, doc, _ := oaLoad(t)
	ops := oaOperations(t, doc)
	for _, key := range slices.Sorted(maps.Keys(ops)) {
		op := ops[key]
		method, path, _ := strings.Cut(key, " ")
		var schemes []string
		for _, req := range *op.Security {
			for name := range req {
				schemes = append(schemes, name)
			}
		}
		call := func(bearer string) int {
			var ctx fasthttp.RequestCtx
			ctx.Request.Header.SetMethod(method)
			ctx.Request.SetRequestURI(oaPathParam.ReplaceAllString(path, "x_$1"))
			if bearer != "" {
				ctx.Request.Header.Set("Authorization", "Bearer "+bearer)
			}
			handler(&ctx)
			return ctx.Response.StatusCode()
		}
		for _, c := range []struct {
			caller, bearer, scheme string
		}{
			{"no key", "", ""},
			{"the admin key", adminKey, "adminKey"},
			{"a tenant key", tenantKey, "tenantKey"},
		} {
			status := call(c.bearer)
			refused := status == fasthttp.StatusUnauthorized || status == fasthttp.StatusForbidden
			allowed := len(schemes) == 0 || slices.Contains(schemes, c.scheme)
			if allowed == refused {
				t.Errorf("%s with %s: status %d, but openapi.json's security is %v", key, c.caller, status, schemes)
			}
		}
	}
}

// oaStore is an empty config store that knows one tenant and its one API
// key, and refuses every write.
type oaStore struct {
	keyHash [32]byte
	tenant  string
}

func (s oaStore) Get(key string) (*sluicev1.ConfigRecord, bool) {
	if key == s.tenant {
		return &sluicev1.ConfigRecord{Object: &sluicev1.ConfigRecord_Tenant{Tenant: &sluicev1.Tenant{Id: s.tenant}}}, true
	}
	return nil, false
}

func (s oaStore) Tenants() []*sluicev1.Tenant { return nil }

func (s oaStore) TenantObjects(string) []*sluicev1.ConfigRecord { return nil }

func (s oaStore) APIKeyByHash(h [32]byte) (*sluicev1.APIKey, bool) {
	if h != s.keyHash {
		return nil, false
	}
	return &sluicev1.APIKey{Id: "key_OPENAPITEST", TenantId: s.tenant}, true
}

func (s oaStore) Update(context.Context, string,
	func(*sluicev1.ConfigRecord) (*sluicev1.ConfigRecord, error)) (*sluicev1.ConfigRecord, error) {
	return nil, errors.New("oaStore is read-only")
}
