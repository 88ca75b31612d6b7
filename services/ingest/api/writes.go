package api

import (
	"errors"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"
)

// Errors an update function returns to stop a write; writeFailed turns
// them into answers.
var (
	errNotFound = errors.New("not found")
	errStale    = errors.New("stale etag")
)

// unchanged stops a write that would change nothing; the current record is
// the answer.
type unchanged struct{ rec *sluicev1.ConfigRecord }

func (unchanged) Error() string { return "unchanged" }

// conflictError refuses a write that would leave things inconsistent.
type conflictError struct{ detail string }

func (e conflictError) Error() string { return e.detail }

// limitError refuses a write that would take a tenant past a quota.
type limitError struct{ detail string }

func (e limitError) Error() string { return e.detail }

// invalidError carries field errors found against the current object.
type invalidError struct{ errs []FieldError }

func (e invalidError) Error() string { return e.errs[0].Field + ": " + e.errs[0].Detail }

// ifMatch is the request's If-Match precondition: the etags it names
// (quotes removed), "*" for any, or nil when absent.
func ifMatch(ctx *fasthttp.RequestCtx) []string {
	h := ctx.Request.Header.Peek("If-Match")
	if h == nil {
		return nil
	}
	var tags []string
	for _, t := range strings.Split(string(h), ",") {
		t = strings.TrimSpace(t)
		// If-Match compares strongly (RFC 9110 §13.1.1): a weak tag never
		// matches, so it is kept as is and cannot equal an etag.
		if !strings.HasPrefix(t, "W/") {
			t = strings.Trim(t, `"`)
		}
		tags = append(tags, t)
	}
	return tags
}

// checkIfMatch applies an If-Match precondition to the current etag;
// called inside the update function, so it is checked against the latest
// committed version on any replica.
func checkIfMatch(tags []string, current string) error {
	if tags == nil {
		return nil
	}
	for _, t := range tags {
		if t == "*" || t == current {
			return nil
		}
	}
	return errStale
}

// writeFailed answers a write that did not happen.
func (a *API) writeFailed(r *request, what string, err error) {
	var ce conflictError
	var le limitError
	var ie invalidError
	switch {
	case errors.Is(err, errNotFound):
		WriteProblem(r.RequestCtx, fasthttp.StatusNotFound, "not-found", what+" does not exist")
	case errors.Is(err, errStale):
		WriteProblem(r.RequestCtx, fasthttp.StatusPreconditionFailed, "precondition-failed",
			what+" has changed since the version named in If-Match; fetch it again and retry")
	case errors.As(err, &ce):
		WriteProblem(r.RequestCtx, fasthttp.StatusConflict, "conflict", ce.detail)
	case errors.As(err, &le):
		WriteProblem(r.RequestCtx, fasthttp.StatusConflict, "limit-exceeded", le.detail)
	case errors.As(err, &ie):
		invalid(r.RequestCtx, ie.errs)
	default:
		a.log.Error("config write failed", "object", what, "err", err)
		r.Response.Header.Set("Retry-After", "1")
		WriteProblem(r.RequestCtx, fasthttp.StatusServiceUnavailable, "unavailable",
			"the configuration could not be saved; retry shortly")
	}
}

// deleteObject deletes the object under id once check accepts its current
// version (checked where no other write can intervene) and answers 204.
func (a *API) deleteObject(r *request, id, what string, check func(cur *sluicev1.ConfigRecord) error) {
	ctx, cancel := a.writeCtx()
	defer cancel()
	if _, err := a.store.Update(ctx, id, func(cur *sluicev1.ConfigRecord) (*sluicev1.ConfigRecord, error) {
		return nil, check(cur)
	}); err != nil {
		a.writeFailed(r, what+" "+id, err)
		return
	}
	r.SetStatusCode(fasthttp.StatusNoContent)
}

// setEtag sends the object's entity tag.
func setEtag(r *request, etag string) { r.Response.Header.Set("ETag", `"`+etag+`"`) }

func ms(t time.Time) int64 { return t.UnixMilli() }

func fromMs(v int64) time.Time { return time.UnixMilli(v).UTC() }

// record wraps an object into a config record.
func tenantRecord(t *sluicev1.Tenant) *sluicev1.ConfigRecord {
	return &sluicev1.ConfigRecord{Object: &sluicev1.ConfigRecord_Tenant{Tenant: t}}
}

func apiKeyRecord(k *sluicev1.APIKey) *sluicev1.ConfigRecord {
	return &sluicev1.ConfigRecord{Object: &sluicev1.ConfigRecord_ApiKey{ApiKey: k}}
}

func endpointRecord(e *sluicev1.Endpoint) *sluicev1.ConfigRecord {
	return &sluicev1.ConfigRecord{Object: &sluicev1.ConfigRecord_Endpoint{Endpoint: e}}
}
