package api_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"net/http"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/pkg/secretbox"
	"github.com/sluicehq/sluice/services/ingest/api"
)

// memStore is an in-memory api.Store with configstore's semantics: Update
// runs fn on a clone of the current record, serialised with other writes,
// and stores what fn returns after a protobuf round trip (so a record Kafka
// could not carry fails here too).
type memStore struct {
	writeMu sync.Mutex
	mu      sync.RWMutex
	objects map[string]*sluicev1.ConfigRecord
}

var _ api.Store = (*memStore)(nil)

func (s *memStore) Get(key string) (*sluicev1.ConfigRecord, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, ok := s.objects[key]
	return r, ok
}

func (s *memStore) Tenants() []*sluicev1.Tenant {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []*sluicev1.Tenant
	for _, r := range s.objects {
		if t := r.GetTenant(); t != nil {
			out = append(out, t)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Id < out[j].Id })
	return out
}

func (s *memStore) TenantObjects(tenant string) []*sluicev1.ConfigRecord {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var ids []string
	for id, r := range s.objects {
		if owner := r.GetEndpoint().GetTenantId() + r.GetApiKey().GetTenantId() + r.GetRecoverJob().GetTenantId(); owner != "" && owner == tenant {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	out := make([]*sluicev1.ConfigRecord, len(ids))
	for i, id := range ids {
		out[i] = s.objects[id]
	}
	return out
}

func (s *memStore) APIKeyByHash(hash [32]byte) (*sluicev1.APIKey, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, r := range s.objects {
		if k := r.GetApiKey(); k != nil && bytes.Equal(k.KeyHash, hash[:]) {
			return k, true
		}
	}
	return nil, false
}

func (s *memStore) Update(_ context.Context, key string,
	fn func(cur *sluicev1.ConfigRecord) (*sluicev1.ConfigRecord, error)) (*sluicev1.ConfigRecord, error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	cur, _ := s.Get(key)
	if cur != nil {
		cur = proto.Clone(cur).(*sluicev1.ConfigRecord)
	}
	next, err := fn(cur)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if next == nil {
		delete(s.objects, key)
		return nil, nil
	}
	next.SchemaVersion = sluicev1.SchemaVersion
	b, err := proto.Marshal(next)
	if err != nil {
		return nil, errors.New("encoding: " + err.Error())
	}
	stored := new(sluicev1.ConfigRecord)
	if err := proto.Unmarshal(b, stored); err != nil {
		return nil, err
	}
	s.objects[key] = stored
	return next, nil
}

// Fixed ids and keys of the fuzz fixture.
const (
	fuzzTenant   = "ten_01JD3K6Z8WQ4V0M5T7E9RXN2BC"
	fuzzKeyID    = "key_01JD3K6Z8WQ4V0M5T7E9RXN2BD"
	fuzzEndpoint = "ep_01JD3K6Z8WQ4V0M5T7E9RXN2BE"
	fuzzAPIKey   = "sk_fuzzing-key-of-the-fixture-tenant"
	fuzzEtag     = "0011223344556677"
	fuzzURL      = "https://example.com/fixture"
)

// fixture is an API over a fresh memStore holding one tenant, its API key
// and one endpoint with every field set.
func fixture(tb testing.TB, box *secretbox.Box) (*memStore, fasthttp.RequestHandler) {
	tb.Helper()
	h := sha256.Sum256([]byte(fuzzAPIKey))
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	s := &memStore{objects: map[string]*sluicev1.ConfigRecord{
		fuzzTenant: {SchemaVersion: sluicev1.SchemaVersion, Object: &sluicev1.ConfigRecord_Tenant{Tenant: &sluicev1.Tenant{
			Id: fuzzTenant, Name: "Fuzz", CreatedAtMs: now, UpdatedAtMs: now, Etag: fuzzEtag}}},
		fuzzKeyID: {SchemaVersion: sluicev1.SchemaVersion, Object: &sluicev1.ConfigRecord_ApiKey{ApiKey: &sluicev1.APIKey{
			Id: fuzzKeyID, TenantId: fuzzTenant, Name: "k", KeyHash: h[:], Prefix: fuzzAPIKey[:10], CreatedAtMs: now, Etag: fuzzEtag}}},
		fuzzEndpoint: {SchemaVersion: sluicev1.SchemaVersion, Object: &sluicev1.ConfigRecord_Endpoint{Endpoint: &sluicev1.Endpoint{
			Id: fuzzEndpoint, TenantId: fuzzTenant, Url: fuzzURL, Description: "fixture", EventTypes: []string{"order.*"},
			Status: sluicev1.EndpointStatus_ENDPOINT_STATUS_ENABLED, SecretSealed: box.Seal(make([]byte, 32), fuzzEndpoint),
			Metadata: map[string]string{"team": "a"}, Headers: map[string]string{"X-Team": "a"},
			MaxInFlight: 3, RateLimit: 5, Ordered: true, TimeoutMs: 2000, CreatedAtMs: now, UpdatedAtMs: now, Etag: fuzzEtag}}},
	}}
	opts := testOptions()
	// Events are taken by a sink that acknowledges everything, so every
	// route answers without Kafka.
	opts.Events = api.EventsOptions{Sink: &fakeSink{}, Topic: "sluice.events"}
	return s, api.New(s, box, opts, discard).Handler()
}

// serveInProcess runs one request through h and returns the response.
func serveInProcess(h fasthttp.RequestHandler, method, uri, key string, body []byte) *fasthttp.Response {
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.SetMethod(method)
	ctx.Request.SetRequestURI(uri)
	ctx.Request.Header.SetContentType("application/json")
	if key != "" {
		ctx.Request.Header.Set("Authorization", "Bearer "+key)
	}
	ctx.Request.SetBody(body)
	h(&ctx)
	resp := new(fasthttp.Response)
	ctx.Response.CopyTo(resp)
	return resp
}

// racingStore is a memStore on which another writer commits a change just
// before the API's next write: what a request racing a DELETE on another
// replica sees.
type racingStore struct {
	*memStore
	once sync.Once
	race func(objects map[string]*sluicev1.ConfigRecord)
}

func (s *racingStore) Update(ctx context.Context, key string,
	fn func(cur *sluicev1.ConfigRecord) (*sluicev1.ConfigRecord, error)) (*sluicev1.ConfigRecord, error) {
	s.once.Do(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.race(s.objects)
	})
	return s.memStore.Update(ctx, key, fn)
}

// TestNoObjectOutlivesItsTenant races a create against the deletion of its
// tenant (its key and endpoint deleted, then itself): the create must see
// the deletion, whichever replica made it, and write nothing.
func TestNoObjectOutlivesItsTenant(t *testing.T) {
	box := newBox(t)
	deleteTenant := func(objects map[string]*sluicev1.ConfigRecord) {
		delete(objects, fuzzEndpoint)
		delete(objects, fuzzKeyID)
		delete(objects, fuzzTenant)
	}
	for _, tc := range []struct {
		desc, path, key, body string
		status                int
	}{
		// The admin named a tenant that is gone.
		{"API key", "/v1/tenants/" + fuzzTenant + "/api-keys", adminKey, `{"name":"late"}`, http.StatusNotFound},
		// The caller's key was valid when the request began.
		{"endpoint", "/v1/endpoints", fuzzAPIKey, `{"url":"https://example.com/late"}`, http.StatusConflict},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			mem, _ := fixture(t, box)
			store := &racingStore{memStore: mem, race: deleteTenant}
			h := api.New(store, box, testOptions(), discard).Handler()
			resp := serveInProcess(h, "POST", tc.path, tc.key, []byte(tc.body))
			checkAnswer(t, resp)
			if resp.StatusCode() != tc.status {
				t.Fatalf("status %d, want %d; body %s", resp.StatusCode(), tc.status, resp.Body())
			}
			if objs := mem.TenantObjects(fuzzTenant); len(objs) != 0 {
				t.Fatalf("the deleted tenant has %d objects: %v", len(objs), objs)
			}
		})
	}
}
