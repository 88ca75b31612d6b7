package api

import (
	"time"

	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
)

// routeKey is the user value under which dispatch leaves the pattern of the
// route a request matched.
type routeKey struct{}

// UnmatchedRoute is the http.route of a request no route pattern fits (a
// 404): one value, so scanners probing random paths add no series. A
// request fasthttp refuses before any handler runs (a body over the limit,
// answered by ErrorHandler) is not counted.
const UnmatchedRoute = "unmatched"

// durationBuckets are the OpenTelemetry HTTP semantic conventions' advised
// boundaries of http.server.request.duration, in seconds.
var durationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}

// knownMethods are the methods kept as they are in http.request.method;
// any other becomes _OTHER, as the semantic conventions ask, so a client
// inventing methods cannot create series.
var knownMethods = map[string]string{
	"GET": "GET", "HEAD": "HEAD", "POST": "POST", "PUT": "PUT", "PATCH": "PATCH",
	"DELETE": "DELETE", "OPTIONS": "OPTIONS", "CONNECT": "CONNECT", "TRACE": "TRACE",
}

// HTTPMetrics records the OpenTelemetry HTTP server metrics of a fasthttp
// handler: http.server.request.duration (by method, route pattern and
// status code) and http.server.active_requests (by method). Every attribute
// is bounded: the route is one of the API's patterns or UnmatchedRoute, the
// method one of nine or _OTHER, the status a three-digit code.
type HTTPMetrics struct {
	duration metric.Float64Histogram
	active   metric.Int64UpDownCounter
}

// NewHTTPMetrics makes the instruments on m.
func NewHTTPMetrics(m metric.Meter) (*HTTPMetrics, error) {
	h := &HTTPMetrics{}
	var err error
	if h.duration, err = m.Float64Histogram("http.server.request.duration", metric.WithUnit("s"),
		metric.WithDescription("duration of HTTP server requests"),
		metric.WithExplicitBucketBoundaries(durationBuckets...)); err != nil {
		return nil, err
	}
	if h.active, err = m.Int64UpDownCounter("http.server.active_requests", metric.WithUnit("{request}"),
		metric.WithDescription("HTTP server requests being served")); err != nil {
		return nil, err
	}
	return h, nil
}

// Wrap returns next with its requests measured. The route is what the
// API's dispatch found (routeKey); a handler that sets none counts as
// UnmatchedRoute.
func (h *HTTPMetrics) Wrap(next fasthttp.RequestHandler) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		began := time.Now()
		method, ok := knownMethods[string(ctx.Method())]
		if !ok {
			method = "_OTHER"
		}
		activeAttrs := metric.WithAttributes(semconv.HTTPRequestMethodKey.String(method))
		// The request's own context is the server's, which lives as long as
		// the server; the instruments ignore it beyond exemplars.
		h.active.Add(ctx, 1, activeAttrs)
		defer h.active.Add(ctx, -1, activeAttrs)
		next(ctx)
		route, _ := ctx.UserValue(routeKey{}).(string)
		if route == "" {
			route = UnmatchedRoute
		}
		h.duration.Record(ctx, time.Since(began).Seconds(), metric.WithAttributeSet(attribute.NewSet(
			semconv.HTTPRequestMethodKey.String(method),
			semconv.HTTPRoute(route),
			semconv.HTTPResponseStatusCode(ctx.Response.StatusCode()),
		)))
	}
}
