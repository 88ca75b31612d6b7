package api_test

import (
	"encoding/json"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/sluicehq/sluice/services/ingest/api"
)

func TestUnknownRouteIsAProblem(t *testing.T) {
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.SetMethod("GET")
	ctx.Request.SetRequestURI("/v1/nothing")
	api.Handler()(&ctx)

	if ctx.Response.StatusCode() != 404 {
		t.Fatalf("status %d, want 404", ctx.Response.StatusCode())
	}
	if ct := string(ctx.Response.Header.ContentType()); ct != "application/problem+json" {
		t.Fatalf("content type %q", ct)
	}
	var p api.Problem
	if err := json.Unmarshal(ctx.Response.Body(), &p); err != nil {
		t.Fatal(err)
	}
	if p.Type != api.ProblemBase+"not-found" || p.Status != 404 || p.Detail != "no route for GET /v1/nothing" {
		t.Fatalf("problem %+v", p)
	}
}
