package api

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/valyala/fasthttp"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/pkg/eventfilter"
	"github.com/sluicehq/sluice/pkg/ids"
	"github.com/sluicehq/sluice/pkg/signing"
)

// maxRotationGrace bounds how long a rotated-out secret may keep signing.
const maxRotationGrace = 7 * 24 * time.Hour

// EndpointJSON is an endpoint as the API shows it. Secret is set only in
// the answers that create a secret (create and rotate-secret).
type EndpointJSON struct {
	ID             string            `json:"id"`
	Tenant         string            `json:"tenant"`
	URL            string            `json:"url"`
	Description    string            `json:"description"`
	Events         []string          `json:"events"`
	Status         string            `json:"status"`
	DisabledReason string            `json:"disabled_reason,omitempty"`
	Metadata       map[string]string `json:"metadata"`
	// Headers are the custom headers' names with their values redacted
	// (redactHeader): the values carry receivers' credentials.
	Headers map[string]string `json:"headers"`
	// MaxInFlight and TimeoutMs are null when the endpoint sets none: the
	// sender's SLUICE_ENDPOINT_MAX_IN_FLIGHT and SLUICE_REQUEST_TIMEOUT
	// then apply, as they are when it sends.
	MaxInFlight   *uint32    `json:"max_in_flight"`
	RateLimit     *float64   `json:"rate_limit"`
	Ordered       bool       `json:"ordered"`
	TimeoutMs     *int64     `json:"timeout_ms"`
	RetrySchedule []int64    `json:"retry_schedule_ms"`
	FailingSince  *time.Time `json:"failing_since,omitempty"`
	Created       time.Time  `json:"created"`
	Updated       time.Time  `json:"updated"`
	Etag          string     `json:"etag"`
	Secret        string     `json:"secret,omitempty"`
}

func (a *API) endpointJSON(e *sluicev1.Endpoint) EndpointJSON {
	out := EndpointJSON{
		ID: e.Id, Tenant: e.TenantId, URL: e.Url, Description: e.Description, Events: e.EventTypes,
		Status: "enabled", DisabledReason: e.DisabledReason, Metadata: e.Metadata, Headers: a.redactedHeaders(e),
		Ordered: e.Ordered, RetrySchedule: e.RetryScheduleMs, Created: fromMs(e.CreatedAtMs), Updated: fromMs(e.UpdatedAtMs), Etag: e.Etag,
	}
	if out.RetrySchedule == nil {
		out.RetrySchedule = []int64{}
	}
	if e.FailingSinceMs != 0 {
		t := fromMs(e.FailingSinceMs)
		out.FailingSince = &t
	}
	if e.Status == sluicev1.EndpointStatus_ENDPOINT_STATUS_DISABLED {
		out.Status = "disabled"
	}
	if e.RateLimit > 0 {
		rl := e.RateLimit
		out.RateLimit = &rl
	}
	if e.MaxInFlight > 0 {
		v := e.MaxInFlight
		out.MaxInFlight = &v
	}
	if e.TimeoutMs > 0 {
		v := e.TimeoutMs
		out.TimeoutMs = &v
	}
	if out.Events == nil {
		out.Events = []string{}
	}
	if out.Metadata == nil {
		out.Metadata = map[string]string{}
	}
	return out
}

// redactedMask stands for a custom header's value in answers.
const redactedMask = "********"

// redactHeader is how an answer shows a custom header value: the mask,
// and the last 4 characters of a value of 16 or more, so a user can tell
// which credential is set, as with a card number, while at least 12
// characters (over 70 bits of a random token) stay hidden. A shorter value
// shows none: 4 of 6 characters would give most of it away.
func redactHeader(v string) string {
	r := []rune(v)
	if len(r) < 16 {
		return redactedMask
	}
	return redactedMask + string(r[len(r)-4:])
}

// openHeader is the value of e's custom header name, sealed or (written
// before sealing) in clear; ok is false when there is none or it does not
// open (another secrets key).
func (a *API) openHeader(e *sluicev1.Endpoint, name string) (string, bool) {
	if e == nil {
		return "", false
	}
	if sealed, ok := e.HeadersSealed[name]; ok {
		v, err := a.box.Open(sealed, sluicev1.HeaderSealAAD(e.Id, name))
		return string(v), err == nil
	}
	v, ok := e.Headers[name]
	return v, ok
}

// redactedHeaders are e's custom headers as answers show them. A value
// that does not open shows as the bare mask; the sender refuses to send
// it (the attempt is blocked, saying why).
func (a *API) redactedHeaders(e *sluicev1.Endpoint) map[string]string {
	out := make(map[string]string, len(e.HeadersSealed)+len(e.Headers))
	for name := range e.Headers {
		out[name] = ""
	}
	for name := range e.HeadersSealed {
		out[name] = ""
	}
	for name := range out {
		v, _ := a.openHeader(e, name)
		out[name] = redactHeader(v)
	}
	return out
}

// sealHeaders makes plain e's custom headers, sealed, replacing any it had
// (in clear too). A value equal to the current one of old, or to the
// redacted form an answer showed of it, keeps the current sealed bytes: a
// client writing back what it read keeps the credential, and a write that
// changes nothing keeps the etag. Any other value starting with the mask
// is refused: it is a redacted value that does not stand for this
// header's value (sent under another name, or the value does not open),
// and storing the mask would silently break the receiver's credential.
func (a *API) sealHeaders(e *sluicev1.Endpoint, plain map[string]string, old *sluicev1.Endpoint) []FieldError {
	var errs []FieldError
	var sealed map[string][]byte
	for name, v := range plain {
		if sealed == nil {
			sealed = make(map[string][]byte, len(plain))
		}
		cur, ok := a.openHeader(old, name)
		switch {
		case ok && (v == cur || v == redactHeader(cur)):
			if b, isSealed := old.HeadersSealed[name]; isSealed {
				sealed[name] = b
				continue
			}
			v = cur // in clear before: sealed now
		case strings.HasPrefix(v, redactedMask):
			errs = append(errs, FieldError{"headers." + trunc(name),
				"is a redacted value, not the one this header has; send the value itself"})
			continue
		}
		sealed[name] = a.box.Seal([]byte(v), sluicev1.HeaderSealAAD(e.Id, name))
	}
	e.Headers, e.HeadersSealed = nil, sealed
	return errs
}

// EndpointCreate is the body of POST /v1/endpoints.
type EndpointCreate struct {
	URL         string            `json:"url"`
	Description string            `json:"description"`
	Events      []string          `json:"events"`
	Metadata    map[string]string `json:"metadata"`
	Headers     map[string]string `json:"headers"`
	MaxInFlight *int64            `json:"max_in_flight"`
	RateLimit   *float64          `json:"rate_limit"`
	Ordered     bool              `json:"ordered"`
	TimeoutMs   *int64            `json:"timeout_ms"`
	// RetrySchedule overrides the tenant's; absent or empty inherits it.
	RetrySchedule []int64 `json:"retry_schedule_ms"`
	// Secret is optional; one is made when absent.
	Secret string `json:"secret"`
}

// apply checks every field and sets them on the endpoint e. Limits left
// out stay 0, "not set": the sender's defaults apply to them when it
// sends, so an operator changing a default changes it for every endpoint
// that did not choose its own.
func (in EndpointCreate) apply(e *sluicev1.Endpoint, requireHTTPS bool) []FieldError {
	errs := validateURL("url", in.URL, requireHTTPS)
	errs = append(errs, validateDescription(in.Description)...)
	errs = append(errs, validateFilters(in.Events)...)
	errs = append(errs, validateMetadata(in.Metadata)...)
	errs = append(errs, validateHeaders(in.Headers)...)
	e.Url, e.Description, e.EventTypes, e.Metadata, e.Headers, e.Ordered =
		in.URL, in.Description, in.Events, in.Metadata, in.Headers, in.Ordered
	if in.MaxInFlight != nil {
		errs = append(errs, validateMaxInFlight(*in.MaxInFlight)...)
		e.MaxInFlight = uint32(*in.MaxInFlight)
	}
	if in.RateLimit != nil {
		errs = append(errs, validateRateLimit(*in.RateLimit)...)
		e.RateLimit = *in.RateLimit
	}
	if in.TimeoutMs != nil {
		errs = append(errs, validateTimeout(*in.TimeoutMs)...)
		e.TimeoutMs = *in.TimeoutMs
	}
	errs = append(errs, validateRetrySchedule(in.RetrySchedule)...)
	e.RetryScheduleMs = in.RetrySchedule
	return errs
}

// EndpointPatch is the body of PATCH /v1/endpoints/{id}: fields present
// replace the stored ones; null resets a field to its default (no rate
// limit, the sender's concurrency and timeout, empty lists and maps).
type EndpointPatch struct {
	URL           Optional[string]            `json:"url"`
	Description   Optional[string]            `json:"description"`
	Events        Optional[[]string]          `json:"events"`
	Metadata      Optional[map[string]string] `json:"metadata"`
	Headers       Optional[map[string]string] `json:"headers"`
	MaxInFlight   Optional[int64]             `json:"max_in_flight"`
	RateLimit     Optional[float64]           `json:"rate_limit"`
	Ordered       Optional[bool]              `json:"ordered"`
	TimeoutMs     Optional[int64]             `json:"timeout_ms"`
	RetrySchedule Optional[[]int64]           `json:"retry_schedule_ms"`
}

func (in EndpointPatch) apply(e *sluicev1.Endpoint, requireHTTPS bool) []FieldError {
	var errs []FieldError
	if in.URL.Set {
		errs = append(errs, validateURL("url", in.URL.Value, requireHTTPS)...)
		e.Url = in.URL.Value
	}
	if in.Description.Set {
		errs = append(errs, validateDescription(in.Description.Value)...)
		e.Description = in.Description.Value
	}
	if in.Events.Set {
		errs = append(errs, validateFilters(in.Events.Value)...)
		e.EventTypes = in.Events.Value
	}
	if in.Metadata.Set {
		errs = append(errs, validateMetadata(in.Metadata.Value)...)
		e.Metadata = in.Metadata.Value
	}
	if in.Headers.Set {
		errs = append(errs, validateHeaders(in.Headers.Value)...)
		e.Headers = in.Headers.Value
	}
	if in.MaxInFlight.Set {
		e.MaxInFlight = 0
		if !in.MaxInFlight.Null {
			errs = append(errs, validateMaxInFlight(in.MaxInFlight.Value)...)
			e.MaxInFlight = uint32(in.MaxInFlight.Value)
		}
	}
	if in.RateLimit.Set {
		e.RateLimit = 0
		if !in.RateLimit.Null {
			errs = append(errs, validateRateLimit(in.RateLimit.Value)...)
			e.RateLimit = in.RateLimit.Value
		}
	}
	if in.Ordered.Set {
		e.Ordered = in.Ordered.Value
	}
	if in.TimeoutMs.Set {
		e.TimeoutMs = 0
		if !in.TimeoutMs.Null {
			errs = append(errs, validateTimeout(in.TimeoutMs.Value)...)
			e.TimeoutMs = in.TimeoutMs.Value
		}
	}
	if in.RetrySchedule.Set {
		errs = append(errs, validateRetrySchedule(in.RetrySchedule.Value)...)
		e.RetryScheduleMs = in.RetrySchedule.Value
	}
	return errs
}

// endpoint returns the caller's endpoint id; another tenant's is "not found".
func (a *API) endpoint(r *request, id string) (*sluicev1.Endpoint, bool) {
	rec, ok := a.store.Get(id)
	if !ok || rec.GetEndpoint() == nil || rec.GetEndpoint().TenantId != r.caller.tenant {
		return nil, false
	}
	return rec.GetEndpoint(), true
}

func (a *API) createEndpoint(r *request) {
	var in EndpointCreate
	if !decodeBody(r.RequestCtx, &in) {
		return
	}
	now := ms(a.now())
	e := &sluicev1.Endpoint{Id: ids.New(ids.Endpoint), TenantId: r.caller.tenant,
		Status: sluicev1.EndpointStatus_ENDPOINT_STATUS_ENABLED, CreatedAtMs: now, UpdatedAtMs: now, Etag: newEtag()}
	errs := in.apply(e, a.opts.RequireHTTPS)
	secret := signing.NewKey()
	if in.Secret != "" {
		raw, serrs := validateSecret("secret", in.Secret)
		errs = append(errs, serrs...)
		secret = raw
	}
	errs = append(errs, a.sealHeaders(e, e.Headers, nil)...)
	if len(errs) > 0 {
		invalid(r.RequestCtx, errs)
		return
	}
	e.SecretSealed = a.box.Seal(secret, e.Id)
	ctx, cancel := a.writeCtx()
	defer cancel()
	if _, err := a.store.Update(ctx, e.Id, func(cur *sluicev1.ConfigRecord) (*sluicev1.ConfigRecord, error) {
		if cur != nil {
			return nil, conflictError{"endpoint " + e.Id + " already exists"}
		}
		// The caller's tenant may have been deleted since its key was
		// checked; here no write can intervene.
		t, ok := a.tenant(e.TenantId)
		if !ok {
			return nil, conflictError{"tenant " + e.TenantId + " no longer exists"}
		}
		// Counted here, where writes are serialised, so two creates on
		// two replicas cannot both take the last place.
		if err := a.endpointRoom(t); err != nil {
			return nil, err
		}
		return endpointRecord(e), nil
	}); err != nil {
		a.writeFailed(r, "endpoint "+e.Id, err)
		return
	}
	out := a.endpointJSON(e)
	out.Secret = signing.FormatSecret(secret)
	setEtag(r, e.Etag)
	writeJSON(r.RequestCtx, fasthttp.StatusCreated, out)
}

// endpointRoom refuses one more endpoint for tenant t when it has its
// quota already: its own max_endpoints, else the operator's default.
func (a *API) endpointRoom(t *sluicev1.Tenant) error {
	limit, whose := a.opts.Tenants.maxEndpoints(), "the server's default, SLUICE_TENANT_MAX_ENDPOINTS"
	if t.MaxEndpoints != nil {
		limit, whose = int(*t.MaxEndpoints), "set on the tenant"
	}
	n := 0
	for _, rec := range a.store.TenantObjects(t.Id) {
		if rec.GetEndpoint() != nil {
			n++
		}
	}
	if n < limit {
		return nil
	}
	return limitError{fmt.Sprintf("tenant %s has %d endpoints and may have at most %d (%s); "+
		"delete one, or ask the operator to raise the tenant's max_endpoints (up to %d)", t.Id, n, limit, whose, MaxEndpointsLimit)}
}

func (a *API) listEndpoints(r *request) {
	limit, after, errs := pageParams(r.RequestCtx)
	args := r.QueryArgs()
	status := string(args.Peek("status"))
	if status != "" && status != "enabled" && status != "disabled" {
		errs = append(errs, FieldError{"status", "must be enabled or disabled"})
	}
	eventType := string(args.Peek("event_type"))
	if eventType != "" {
		if err := eventfilter.ValidateType(eventType); err != nil {
			errs = append(errs, FieldError{"event_type", err.Error()})
		}
	}
	if len(errs) > 0 {
		invalid(r.RequestCtx, errs)
		return
	}
	var eps []*sluicev1.Endpoint
	for _, rec := range a.store.TenantObjects(r.caller.tenant) {
		e := rec.GetEndpoint()
		if e == nil {
			continue
		}
		disabled := e.Status == sluicev1.EndpointStatus_ENDPOINT_STATUS_DISABLED
		if status != "" && disabled != (status == "disabled") {
			continue
		}
		if eventType != "" {
			set, err := eventfilter.Compile(e.EventTypes)
			if err != nil || !set.Matches(eventType) {
				continue
			}
		}
		eps = append(eps, e)
	}
	// Only the page is shown: showing an endpoint opens its sealed headers.
	p := paginate(eps, func(e *sluicev1.Endpoint) string { return e.Id }, limit, after)
	out := page[EndpointJSON]{Data: make([]EndpointJSON, len(p.Data)), NextCursor: p.NextCursor}
	for i, e := range p.Data {
		out.Data[i] = a.endpointJSON(e)
	}
	writeJSON(r.RequestCtx, fasthttp.StatusOK, out)
}

func (a *API) getEndpoint(r *request) {
	e, ok := a.endpoint(r, r.param("endpoint_id"))
	if !ok {
		WriteProblem(r.RequestCtx, fasthttp.StatusNotFound, "not-found", "endpoint "+r.param("endpoint_id")+" does not exist")
		return
	}
	setEtag(r, e.Etag)
	writeJSON(r.RequestCtx, fasthttp.StatusOK, a.endpointJSON(e))
}

// updateEndpoint runs change on the caller's endpoint under If-Match and
// answers with the result; change returns field errors or a conflict.
func (a *API) updateEndpoint(r *request, change func(e *sluicev1.Endpoint) error) (*sluicev1.Endpoint, bool) {
	id, tags, tenant := r.param("endpoint_id"), ifMatch(r.RequestCtx), r.caller.tenant
	ctx, cancel := a.writeCtx()
	defer cancel()
	rec, err := a.store.Update(ctx, id, func(cur *sluicev1.ConfigRecord) (*sluicev1.ConfigRecord, error) {
		e := cur.GetEndpoint()
		if e == nil || e.TenantId != tenant {
			return nil, errNotFound
		}
		if err := checkIfMatch(tags, e.Etag); err != nil {
			return nil, err
		}
		before := proto.Clone(e)
		if err := change(e); err != nil {
			return nil, err
		}
		if proto.Equal(before, e) {
			return nil, unchanged{cur}
		}
		// Headers stored in clear before sealing existed are sealed at
		// the endpoint's first write since.
		for name, v := range e.Headers {
			if _, ok := e.HeadersSealed[name]; !ok {
				if e.HeadersSealed == nil {
					e.HeadersSealed = map[string][]byte{}
				}
				e.HeadersSealed[name] = a.box.Seal([]byte(v), sluicev1.HeaderSealAAD(e.Id, name))
			}
		}
		e.Headers = nil
		e.UpdatedAtMs, e.Etag = ms(a.now()), newEtag()
		return endpointRecord(e), nil
	})
	var same unchanged
	if errors.As(err, &same) {
		return same.rec.GetEndpoint(), true
	}
	if err != nil {
		a.writeFailed(r, "endpoint "+id, err)
		return nil, false
	}
	return rec.GetEndpoint(), true
}

func (a *API) answerEndpoint(r *request, e *sluicev1.Endpoint) {
	setEtag(r, e.Etag)
	writeJSON(r.RequestCtx, fasthttp.StatusOK, a.endpointJSON(e))
}

func (a *API) patchEndpoint(r *request) {
	var in EndpointPatch
	if !decodeBody(r.RequestCtx, &in) {
		return
	}
	// Validate before writing, against a scratch endpoint, so a bad body
	// costs no write; the real change is applied to the current version.
	if errs := in.apply(&sluicev1.Endpoint{}, a.opts.RequireHTTPS); len(errs) > 0 {
		invalid(r.RequestCtx, errs)
		return
	}
	if e, ok := a.updateEndpoint(r, func(e *sluicev1.Endpoint) error {
		old := proto.CloneOf(e)
		in.apply(e, a.opts.RequireHTTPS)
		if in.Headers.Set {
			if errs := a.sealHeaders(e, in.Headers.Value, old); len(errs) > 0 {
				return invalidError{errs}
			}
		}
		return nil
	}); ok {
		a.answerEndpoint(r, e)
	}
}

func (a *API) deleteEndpoint(r *request) {
	tags, tenant := ifMatch(r.RequestCtx), r.caller.tenant
	a.deleteObject(r, r.param("endpoint_id"), "endpoint", func(cur *sluicev1.ConfigRecord) error {
		e := cur.GetEndpoint()
		if e == nil || e.TenantId != tenant {
			return errNotFound
		}
		return checkIfMatch(tags, e.Etag)
	})
}

// RotateSecret is the body of POST /v1/endpoints/{id}/rotate-secret; both
// fields are optional.
type RotateSecret struct {
	// Secret is the new secret; one is made when absent.
	Secret string `json:"secret"`
	// GracePeriodSeconds is how long the old secret keeps signing beside
	// the new one; the server's default when absent, 0 to drop it at once.
	GracePeriodSeconds *int64 `json:"grace_period_seconds"`
}

func (a *API) rotateSecret(r *request) {
	var in RotateSecret
	if len(r.PostBody()) > 0 && !decodeBody(r.RequestCtx, &in) {
		return
	}
	secret := signing.NewKey()
	var errs []FieldError
	if in.Secret != "" {
		secret, errs = validateSecret("secret", in.Secret)
	}
	grace := a.opts.RotationGrace
	if in.GracePeriodSeconds != nil {
		// Compared in seconds: converted first, a large count overflows
		// time.Duration and wraps into the allowed range.
		s := *in.GracePeriodSeconds
		if s < 0 || s > int64(maxRotationGrace/time.Second) {
			errs = append(errs, FieldError{"grace_period_seconds", fmt.Sprintf("must be from 0 to %d", int64(maxRotationGrace/time.Second))})
		}
		grace = time.Duration(s) * time.Second
	}
	if len(errs) > 0 {
		invalid(r.RequestCtx, errs)
		return
	}
	e, ok := a.updateEndpoint(r, func(e *sluicev1.Endpoint) error {
		e.PreviousSecretSealed, e.PreviousSecretExpiresAtMs = nil, 0
		if grace > 0 {
			e.PreviousSecretSealed = e.SecretSealed
			e.PreviousSecretExpiresAtMs = ms(a.now().Add(grace))
		}
		e.SecretSealed = a.box.Seal(secret, e.Id)
		return nil
	})
	if !ok {
		return
	}
	out := a.endpointJSON(e)
	out.Secret = signing.FormatSecret(secret)
	setEtag(r, e.Etag)
	writeJSON(r.RequestCtx, fasthttp.StatusOK, out)
}

// DisableEndpoint is the optional body of POST /v1/endpoints/{id}/disable.
type DisableEndpoint struct {
	Reason string `json:"reason"`
}

func (a *API) enableEndpoint(r *request) {
	if e, ok := a.updateEndpoint(r, func(e *sluicev1.Endpoint) error {
		e.Status, e.DisabledReason = sluicev1.EndpointStatus_ENDPOINT_STATUS_ENABLED, ""
		return nil
	}); ok {
		a.answerEndpoint(r, e)
	}
}

func (a *API) disableEndpoint(r *request) {
	var in DisableEndpoint
	if len(r.PostBody()) > 0 && !decodeBody(r.RequestCtx, &in) {
		return
	}
	if len(in.Reason) > maxDescriptionLen {
		invalid(r.RequestCtx, []FieldError{{"reason", fmt.Sprintf("is %d bytes, at most %d", len(in.Reason), maxDescriptionLen)}})
		return
	}
	reason := in.Reason
	if reason == "" {
		reason = "disabled through the API"
	}
	if e, ok := a.updateEndpoint(r, func(e *sluicev1.Endpoint) error {
		e.Status, e.DisabledReason = sluicev1.EndpointStatus_ENDPOINT_STATUS_DISABLED, reason
		return nil
	}); ok {
		a.answerEndpoint(r, e)
	}
}
