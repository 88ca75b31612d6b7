package api

// TraceKey is the user value the request's trace context is kept under.
var TraceKey any = traceKey{}
