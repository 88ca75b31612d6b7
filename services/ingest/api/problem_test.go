package api_test

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/sluicehq/sluice/services/ingest/api"
)

func TestErrorHandlerAnswersProblems(t *testing.T) {
	for _, tc := range []struct {
		desc   string
		err    error
		status int
		kind   string
	}{
		{"body too large", fasthttp.ErrBodyTooLarge, 413, "payload-too-large"},
		{"slow request", timeoutErr{}, 408, "request-timeout"},
		{"garbage", errors.New("cannot parse request line"), 400, "malformed-request"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			var ctx fasthttp.RequestCtx
			api.ErrorHandler(&ctx, tc.err)
			if ctx.Response.StatusCode() != tc.status {
				t.Fatalf("status %d, want %d", ctx.Response.StatusCode(), tc.status)
			}
			if ct := string(ctx.Response.Header.ContentType()); ct != "application/problem+json" {
				t.Fatalf("content type %q", ct)
			}
			var p api.Problem
			if err := json.Unmarshal(ctx.Response.Body(), &p); err != nil {
				t.Fatal(err)
			}
			if p.Type != api.ProblemBase+tc.kind || p.Status != tc.status || p.Detail == "" {
				t.Fatalf("problem %+v", p)
			}
		})
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string { return "read timeout" }
func (timeoutErr) Timeout() bool { return true }
