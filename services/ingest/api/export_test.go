package api

// TraceKey is the user value the request's trace context is kept under.
var TraceKey any = traceKey{}

// RouteKey is the user value dispatch sets to the matched route pattern.
var RouteKey = routeKey{}
