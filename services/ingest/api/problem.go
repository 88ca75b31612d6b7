// Package api is the public HTTP API of Sluice on fasthttp. Errors are
// application/problem+json (RFC 9457) with a stable type URI, the status and
// a detail a human can act on.
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
}

// WriteProblem answers with a problem document; kind is the last segment of
// its type URI (not-found, invalid-request, …).
func WriteProblem(ctx *fasthttp.RequestCtx, status int, kind, detail string) {
	b, _ := json.Marshal(Problem{Type: ProblemBase + kind, Title: fasthttp.StatusMessage(status),
		Status: status, Detail: detail})
	ctx.Response.Header.SetContentType("application/problem+json")
	ctx.SetStatusCode(status)
	ctx.SetBody(b)
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

// Handler routes API requests. It knows no routes yet: every request gets a
// 404 problem naming what was asked for.
func Handler() fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		WriteProblem(ctx, fasthttp.StatusNotFound, "not-found",
			"no route for "+string(ctx.Method())+" "+string(ctx.Path()))
	}
}
