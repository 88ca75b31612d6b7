package receiver

import (
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// FuzzCheckBody: whatever a sender puts in a body, checkBody does not
// panic, and a body it accepts really is {"id","type","timestamp","data"}
// with id equal to the webhook-id.
func FuzzCheckBody(f *testing.F) {
	for _, seed := range []string{
		`{"id":"msg_1","type":"order.created","timestamp":"2026-01-02T03:04:05.678Z","data":{"n":1}}`,
		`{"id":"msg_1","type":"t","timestamp":"2026-01-02T03:04:05Z","data":null}`,
		`{"id":"msg_1","id":"msg_1","type":"t","timestamp":"2026-01-02T03:04:05Z","data":1}`,
		`{"id":"msg_1","type":"t","timestamp":"2026-01-02T03:04:05Z","data":{}} {}`,
		`{"id":"msg_1","type":"t","timestamp":"2026-01-02T03:04:05Z"}`,
		`[]`, `{`, ``, `"msg_1"`,
	} {
		f.Add([]byte(seed), "msg_1")
	}
	f.Fuzz(func(t *testing.T, body []byte, webhookID string) {
		if checkBody(body, webhookID) != "" {
			return
		}
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(body, &fields); err != nil {
			t.Fatalf("accepted a body that is not a JSON object: %v", err)
		}
		if len(fields) != len(bodyFields) {
			t.Fatalf("accepted fields %v", fields)
		}
		var id, typ, ts string
		for name, dst := range map[string]*string{"id": &id, "type": &typ, "timestamp": &ts} {
			if err := json.Unmarshal(fields[name], dst); err != nil {
				t.Fatalf("accepted %s %s: %v", name, fields[name], err)
			}
		}
		if _, ok := fields["data"]; !ok {
			t.Fatal("accepted a body without data")
		}
		if id != webhookID {
			t.Fatalf("accepted id %q for webhook-id %q", id, webhookID)
		}
		if _, err := time.Parse(time.RFC3339, ts); err != nil || typ == "" {
			t.Fatalf("accepted type %q timestamp %q", typ, ts)
		}
	})
}

// BenchmarkHandler measures handle alone, without fasthttp's connection
// handling or a client, for the allocations a plain delivery costs.
func BenchmarkHandler(b *testing.B) {
	r := &Receiver{endpoints: map[string]*endpoint{}, done: make(chan struct{})}
	var req fasthttp.Request
	req.SetRequestURI("http://receiver/e/bench")
	req.Header.SetMethod(fasthttp.MethodPost)
	req.SetBodyString(`{"id":"msg_0","type":"order.created","timestamp":"2026-01-02T03:04:05Z","data":{}}`)
	var ctx fasthttp.RequestCtx
	ctx.Init(&req, nil, nil)
	id := make([]byte, 0, 32)

	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		ctx.Response.Reset()
		id = strconv.AppendInt(append(id[:0], "msg_"...), int64(i), 36)
		ctx.Request.Header.SetBytesV("webhook-id", id)
		r.handle(&ctx)
		if ctx.Response.StatusCode() != fasthttp.StatusNoContent {
			b.Fatalf("status %d", ctx.Response.StatusCode())
		}
	}
}
