package api_test

import (
	"context"
	"testing"

	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"
	"github.com/sluicehq/sluice/services/ingest/api"
)

// TestHTTPMetrics: every request is counted under its route pattern (never
// its path), its method and its status; unknown paths and methods collapse
// into one value each; no request stays active after its answer.
func TestHTTPMetrics(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	hm, err := api.NewHTTPMetrics(mp.Meter("test"))
	if err != nil {
		t.Fatal(err)
	}
	a := api.New(&memStore{objects: map[string]*sluicev1.ConfigRecord{}}, devBox(t), testOptions(), discard)
	h := hm.Wrap(a.Handler())

	calls := []struct{ method, path string }{
		{"GET", "/openapi.json"},
		{"GET", "/v1/endpoints/ep_1"}, // no key: 401
		{"GET", "/v1/endpoints/ep_2"},
		{"GET", "/no/such/path/42"}, // 404
		{"PUT", "/v1/events"},       // 405
		{"BREW", "/v1/events"},      // an invented method
	}
	for _, c := range calls {
		var rc fasthttp.RequestCtx
		rc.Request.Header.SetMethod(c.method)
		rc.Request.SetRequestURI(c.path)
		h(&rc)
	}

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	type key struct {
		method, route string
		status        int64
	}
	got := map[key]uint64{}
	active := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Histogram[float64]:
				if m.Name != "http.server.request.duration" || m.Unit != "s" {
					t.Errorf("unexpected histogram %s (%s)", m.Name, m.Unit)
				}
				for _, p := range d.DataPoints {
					method, _ := p.Attributes.Value(attribute.Key("http.request.method"))
					route, _ := p.Attributes.Value(attribute.Key("http.route"))
					status, _ := p.Attributes.Value(attribute.Key("http.response.status_code"))
					if p.Attributes.Len() != 3 {
						t.Errorf("duration point has attributes %v, want exactly method, route, status", p.Attributes.ToSlice())
					}
					got[key{method.AsString(), route.AsString(), status.AsInt64()}] += p.Count
				}
			case metricdata.Sum[int64]:
				if m.Name != "http.server.active_requests" {
					t.Errorf("unexpected sum %s", m.Name)
				}
				for _, p := range d.DataPoints {
					method, _ := p.Attributes.Value(attribute.Key("http.request.method"))
					active[method.AsString()] += p.Value
				}
			}
		}
	}
	want := map[key]uint64{
		{"GET", "/openapi.json", 200}:               1,
		{"GET", "/v1/endpoints/{endpoint_id}", 401}: 2,
		{"GET", api.UnmatchedRoute, 404}:            1,
		{"PUT", "/v1/events", 405}:                  1,
		{"_OTHER", "/v1/events", 405}:               1,
	}
	if len(got) != len(want) {
		t.Errorf("series %v, want %v", got, want)
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("requests %+v: %d, want %d (all: %v)", k, got[k], n, got)
		}
	}
	for m, n := range active {
		if n != 0 {
			t.Errorf("active requests of %s: %d after every answer, want 0", m, n)
		}
	}
	if len(active) == 0 {
		t.Error("http.server.active_requests was never recorded")
	}
}
