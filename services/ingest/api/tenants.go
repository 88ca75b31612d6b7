package api

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/valyala/fasthttp"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/pkg/ids"
)

const maxNameLen = 128

// TenantJSON is a tenant as the API shows it.
type TenantJSON struct {
	ID       string            `json:"id"`
	Name     string            `json:"name"`
	Metadata map[string]string `json:"metadata"`
	// RetrySchedule is the waits before each retry of the tenant's
	// endpoints, in milliseconds; empty means Sluice's default.
	RetrySchedule []int64 `json:"retry_schedule_ms"`
	// MaxEndpoints is the most endpoints the tenant may have; null means
	// the operator's default (SLUICE_TENANT_MAX_ENDPOINTS).
	MaxEndpoints *uint32 `json:"max_endpoints"`
	// EventsPerSecond is the tenant's ingest quota per replica, 0 for none;
	// null means the operator's default (SLUICE_TENANT_EVENTS_PER_SECOND).
	EventsPerSecond *uint32   `json:"events_per_second"`
	Created         time.Time `json:"created"`
	Updated         time.Time `json:"updated"`
	Etag            string    `json:"etag"`
}

func tenantJSON(t *sluicev1.Tenant) TenantJSON {
	md := t.Metadata
	if md == nil {
		md = map[string]string{}
	}
	rs := t.RetryScheduleMs
	if rs == nil {
		rs = []int64{}
	}
	return TenantJSON{ID: t.Id, Name: t.Name, Metadata: md, RetrySchedule: rs, MaxEndpoints: t.MaxEndpoints,
		EventsPerSecond: t.EventsPerSecond, Created: fromMs(t.CreatedAtMs), Updated: fromMs(t.UpdatedAtMs), Etag: t.Etag}
}

// TenantCreate is the body of POST /v1/tenants. The quotas are optional:
// absent or null means the operator's default.
type TenantCreate struct {
	Name            string            `json:"name"`
	Metadata        map[string]string `json:"metadata"`
	RetrySchedule   []int64           `json:"retry_schedule_ms"`
	MaxEndpoints    *int64            `json:"max_endpoints"`
	EventsPerSecond *int64            `json:"events_per_second"`
}

// TenantPatch is the body of PATCH /v1/tenants/{id}; null sets a quota
// back to the operator's default.
type TenantPatch struct {
	Name            Optional[string]            `json:"name"`
	Metadata        Optional[map[string]string] `json:"metadata"`
	RetrySchedule   Optional[[]int64]           `json:"retry_schedule_ms"`
	MaxEndpoints    Optional[int64]             `json:"max_endpoints"`
	EventsPerSecond Optional[int64]             `json:"events_per_second"`
}

// validateMaxEndpoints checks a tenant's endpoint quota. 0 is allowed: a
// tenant that may create no more endpoints.
func validateMaxEndpoints(v int64) []FieldError {
	if v < 0 || v > MaxEndpointsLimit {
		return []FieldError{{"max_endpoints", fmt.Sprintf("must be from 0 to %d, or null for the server's default", MaxEndpointsLimit)}}
	}
	return nil
}

// validateEventsPerSecond checks a tenant's ingest quota: 0 is no limit.
func validateEventsPerSecond(v int64) []FieldError {
	if v < 0 || v > MaxEventsPerSecond {
		return []FieldError{{"events_per_second", fmt.Sprintf("must be from 0 (no limit) to %d, or null for the server's default", MaxEventsPerSecond)}}
	}
	return nil
}

// optionalUint32 is v as a set proto field, or nil.
func optionalUint32(v *int64) *uint32 {
	if v == nil {
		return nil
	}
	u := uint32(*v)
	return &u
}

func validateName(name string) []FieldError {
	if name == "" || len(name) > maxNameLen {
		return []FieldError{{"name", fmt.Sprintf("must be 1 to %d bytes", maxNameLen)}}
	}
	return nil
}

func (a *API) createTenant(r *request) {
	var in TenantCreate
	if !decodeBody(r.RequestCtx, &in) {
		return
	}
	errs := append(validateName(in.Name), validateMetadata(in.Metadata)...)
	errs = append(errs, validateRetrySchedule(in.RetrySchedule)...)
	if in.MaxEndpoints != nil {
		errs = append(errs, validateMaxEndpoints(*in.MaxEndpoints)...)
	}
	if in.EventsPerSecond != nil {
		errs = append(errs, validateEventsPerSecond(*in.EventsPerSecond)...)
	}
	if len(errs) > 0 {
		invalid(r.RequestCtx, errs)
		return
	}
	now := ms(a.now())
	t := &sluicev1.Tenant{Id: ids.New(ids.Tenant), Name: in.Name, Metadata: in.Metadata, RetryScheduleMs: in.RetrySchedule,
		MaxEndpoints: optionalUint32(in.MaxEndpoints), EventsPerSecond: optionalUint32(in.EventsPerSecond), CreatedAtMs: now, UpdatedAtMs: now, Etag: newEtag()}
	ctx, cancel := a.writeCtx()
	defer cancel()
	if _, err := a.store.Update(ctx, t.Id, func(cur *sluicev1.ConfigRecord) (*sluicev1.ConfigRecord, error) {
		if cur != nil {
			return nil, conflictError{"tenant " + t.Id + " already exists"}
		}
		return tenantRecord(t), nil
	}); err != nil {
		a.writeFailed(r, "tenant "+t.Id, err)
		return
	}
	setEtag(r, t.Etag)
	writeJSON(r.RequestCtx, fasthttp.StatusCreated, tenantJSON(t))
}

func (a *API) tenant(id string) (*sluicev1.Tenant, bool) {
	rec, ok := a.store.Get(id)
	if !ok || rec.GetTenant() == nil {
		return nil, false
	}
	return rec.GetTenant(), true
}

func (a *API) listTenants(r *request) {
	limit, after, errs := pageParams(r.RequestCtx)
	if len(errs) > 0 {
		invalid(r.RequestCtx, errs)
		return
	}
	all := a.store.Tenants()
	out := make([]TenantJSON, len(all))
	for i, t := range all {
		out[i] = tenantJSON(t)
	}
	writeJSON(r.RequestCtx, fasthttp.StatusOK, paginate(out, func(t TenantJSON) string { return t.ID }, limit, after))
}

func (a *API) getTenant(r *request) {
	t, ok := a.tenant(r.param("tenant_id"))
	if !ok {
		WriteProblem(r.RequestCtx, fasthttp.StatusNotFound, "not-found", "tenant "+r.param("tenant_id")+" does not exist")
		return
	}
	setEtag(r, t.Etag)
	writeJSON(r.RequestCtx, fasthttp.StatusOK, tenantJSON(t))
}

func (a *API) patchTenant(r *request) {
	var in TenantPatch
	if !decodeBody(r.RequestCtx, &in) {
		return
	}
	var errs []FieldError
	if in.Name.Set {
		errs = append(errs, validateName(in.Name.Value)...)
	}
	if in.Metadata.Set {
		errs = append(errs, validateMetadata(in.Metadata.Value)...)
	}
	if in.RetrySchedule.Set {
		errs = append(errs, validateRetrySchedule(in.RetrySchedule.Value)...)
	}
	if in.MaxEndpoints.Set && !in.MaxEndpoints.Null {
		errs = append(errs, validateMaxEndpoints(in.MaxEndpoints.Value)...)
	}
	if in.EventsPerSecond.Set && !in.EventsPerSecond.Null {
		errs = append(errs, validateEventsPerSecond(in.EventsPerSecond.Value)...)
	}
	if len(errs) > 0 {
		invalid(r.RequestCtx, errs)
		return
	}
	id, tags := r.param("tenant_id"), ifMatch(r.RequestCtx)
	ctx, cancel := a.writeCtx()
	defer cancel()
	rec, err := a.store.Update(ctx, id, func(cur *sluicev1.ConfigRecord) (*sluicev1.ConfigRecord, error) {
		t := cur.GetTenant()
		if t == nil {
			return nil, errNotFound
		}
		if err := checkIfMatch(tags, t.Etag); err != nil {
			return nil, err
		}
		before := proto.Clone(t)
		if in.Name.Set {
			t.Name = in.Name.Value
		}
		if in.Metadata.Set {
			t.Metadata = in.Metadata.Value
		}
		if in.RetrySchedule.Set {
			t.RetryScheduleMs = in.RetrySchedule.Value
		}
		if in.MaxEndpoints.Set {
			t.MaxEndpoints = nil
			if !in.MaxEndpoints.Null {
				t.MaxEndpoints = optionalUint32(&in.MaxEndpoints.Value)
			}
		}
		if in.EventsPerSecond.Set {
			t.EventsPerSecond = nil
			if !in.EventsPerSecond.Null {
				t.EventsPerSecond = optionalUint32(&in.EventsPerSecond.Value)
			}
		}
		if proto.Equal(before, t) {
			return nil, unchanged{cur}
		}
		t.UpdatedAtMs, t.Etag = ms(a.now()), newEtag()
		return tenantRecord(t), nil
	})
	var same unchanged
	if errors.As(err, &same) {
		rec, err = same.rec, nil
	}
	if err != nil {
		a.writeFailed(r, "tenant "+id, err)
		return
	}
	setEtag(r, rec.GetTenant().Etag)
	writeJSON(r.RequestCtx, fasthttp.StatusOK, tenantJSON(rec.GetTenant()))
}

// deleteTenant refuses while the tenant still has endpoints or keys:
// deleting a customer's configuration is done object by object, on purpose.
// Its finished recover jobs do not count: they are deleted after their
// retention.
func (a *API) deleteTenant(r *request) {
	id, tags := r.param("tenant_id"), ifMatch(r.RequestCtx)
	a.deleteObject(r, id, "tenant", func(cur *sluicev1.ConfigRecord) error {
		t := cur.GetTenant()
		if t == nil {
			return errNotFound
		}
		if err := checkIfMatch(tags, t.Etag); err != nil {
			return err
		}
		n := 0
		for _, rec := range a.store.TenantObjects(id) {
			if rec.GetEndpoint() != nil || rec.GetApiKey() != nil {
				n++
			}
		}
		if n > 0 {
			return conflictError{fmt.Sprintf("tenant %s still has %d endpoints or API keys; delete them first", id, n)}
		}
		return nil
	})
}

// APIKeyJSON is an API key as the API shows it; Key is set only in the
// answer that creates it.
type APIKeyJSON struct {
	ID      string    `json:"id"`
	Tenant  string    `json:"tenant"`
	Name    string    `json:"name"`
	Prefix  string    `json:"prefix"`
	Created time.Time `json:"created"`
	Key     string    `json:"key,omitempty"`
}

func apiKeyJSON(k *sluicev1.APIKey) APIKeyJSON {
	return APIKeyJSON{ID: k.Id, Tenant: k.TenantId, Name: k.Name, Prefix: k.Prefix, Created: fromMs(k.CreatedAtMs)}
}

// APIKeyCreate is the body of POST /v1/tenants/{id}/api-keys.
type APIKeyCreate struct {
	Name string `json:"name"`
}

// newAPIKey makes a key: "sk_" and 32 random bytes, base64url. 256 bits
// cannot be guessed, and the key is stored only as its SHA-256.
func newAPIKey() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return "sk_" + base64.RawURLEncoding.EncodeToString(b[:])
}

func (a *API) createAPIKey(r *request) {
	tenantID := r.param("tenant_id")
	var in APIKeyCreate
	if !decodeBody(r.RequestCtx, &in) {
		return
	}
	if errs := validateName(in.Name); len(errs) > 0 {
		invalid(r.RequestCtx, errs)
		return
	}
	if _, ok := a.tenant(tenantID); !ok {
		WriteProblem(r.RequestCtx, fasthttp.StatusNotFound, "not-found", "tenant "+tenantID+" does not exist")
		return
	}
	key := newAPIKey()
	h := hashKey(key)
	k := &sluicev1.APIKey{Id: ids.New(ids.APIKey), TenantId: tenantID, Name: in.Name, KeyHash: h[:],
		Prefix: key[:10], CreatedAtMs: ms(a.now()), Etag: newEtag()}
	ctx, cancel := a.writeCtx()
	defer cancel()
	if _, err := a.store.Update(ctx, k.Id, func(cur *sluicev1.ConfigRecord) (*sluicev1.ConfigRecord, error) {
		if cur != nil {
			return nil, conflictError{"API key " + k.Id + " already exists"}
		}
		// Checked here, where no write can intervene, so a tenant deleted
		// a moment ago cannot be left with a key.
		if _, ok := a.tenant(tenantID); !ok {
			return nil, errNotFound
		}
		return apiKeyRecord(k), nil
	}); err != nil {
		a.writeFailed(r, "tenant "+tenantID, err)
		return
	}
	out := apiKeyJSON(k)
	out.Key = key
	writeJSON(r.RequestCtx, fasthttp.StatusCreated, out)
}

func (a *API) listAPIKeys(r *request) {
	tenantID := r.param("tenant_id")
	limit, after, errs := pageParams(r.RequestCtx)
	if len(errs) > 0 {
		invalid(r.RequestCtx, errs)
		return
	}
	if _, ok := a.tenant(tenantID); !ok {
		WriteProblem(r.RequestCtx, fasthttp.StatusNotFound, "not-found", "tenant "+tenantID+" does not exist")
		return
	}
	var out []APIKeyJSON
	for _, rec := range a.store.TenantObjects(tenantID) {
		if k := rec.GetApiKey(); k != nil {
			out = append(out, apiKeyJSON(k))
		}
	}
	writeJSON(r.RequestCtx, fasthttp.StatusOK, paginate(out, func(k APIKeyJSON) string { return k.ID }, limit, after))
}

func (a *API) deleteAPIKey(r *request) {
	tenantID := r.param("tenant_id")
	a.deleteObject(r, r.param("key_id"), "API key", func(cur *sluicev1.ConfigRecord) error {
		if k := cur.GetApiKey(); k == nil || k.TenantId != tenantID {
			return errNotFound
		}
		return nil
	})
}
