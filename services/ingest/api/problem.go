// Package api is the public HTTP API of Sluice on fasthttp: tenants and
// their API keys (admin), endpoints and events (per tenant). Bodies are
// JSON; errors are application/problem+json (RFC 9457) with a stable type
// URI, the status and a detail a human can act on, naming the offending
// field.
package api

import (
	"encoding/json"
	"errors"

	"github.com/valyala/fasthttp"
)

// ProblemBase starts every problem type URI.
const ProblemBase = "https://sluice.dev/problems/"

// Problem is an RFC 9457 problem document.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
	// Errors lists every invalid field of a request, when there are any.
	Errors []FieldError `json:"errors,omitempty"`
}

// FieldError is one invalid field: a JSON path such as "headers.Host" or
// a query parameter name, and what is wrong with it.
type FieldError struct {
	Field  string `json:"field"`
	Detail string `json:"detail"`
}

// WriteProblem answers with a problem document; kind is the last segment of
// its type URI (not-found, invalid-request, …).
func WriteProblem(ctx *fasthttp.RequestCtx, status int, kind, detail string) {
	writeProblem(ctx, newProblem(status, kind, detail))
}

// newProblem is the problem document of status and kind, for answers that
// carry one inside (the results of a batch).
func newProblem(status int, kind, detail string) Problem {
	return Problem{Type: ProblemBase + kind, Title: fasthttp.StatusMessage(status), Status: status, Detail: detail}
}

func writeProblem(ctx *fasthttp.RequestCtx, p Problem) {
	b, _ := json.Marshal(p)
	ctx.Response.Header.SetContentType("application/problem+json")
	ctx.SetStatusCode(p.Status)
	ctx.SetBody(b)
}

// invalid answers 400 invalid-request listing every field error; the
// detail repeats the first so a human reading only it knows where to look.
func invalid(ctx *fasthttp.RequestCtx, errs []FieldError) { writeProblem(ctx, invalidProblem(errs)) }

// invalidProblem is the invalid-request problem listing errs (at least one).
func invalidProblem(errs []FieldError) Problem {
	return Problem{Type: ProblemBase + "invalid-request", Title: "Bad Request",
		Status: fasthttp.StatusBadRequest, Detail: errs[0].Field + ": " + errs[0].Detail, Errors: errs}
}

// ErrorHandler answers requests fasthttp could not read: a body over the
// size limit is 413, a request that took too long to arrive 408, anything
// else unparseable 400, each as a problem document.
func ErrorHandler(ctx *fasthttp.RequestCtx, err error) {
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		WriteProblem(ctx, fasthttp.StatusRequestEntityTooLarge, "payload-too-large",
			"the request body is larger than the server accepts")
	case isTimeout(err):
		WriteProblem(ctx, fasthttp.StatusRequestTimeout, "request-timeout", "the request did not arrive in time")
	default:
		WriteProblem(ctx, fasthttp.StatusBadRequest, "malformed-request", "the request could not be parsed: "+err.Error())
	}
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}
