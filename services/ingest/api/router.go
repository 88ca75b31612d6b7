package api

import (
	"sort"
	"strings"

	"github.com/valyala/fasthttp"
)

// access says who may call a route.
type access int

const (
	public access = iota
	adminOnly
	tenantOnly
)

// route is one method on one path pattern; segments in braces ({id}) are
// parameters.
type route struct {
	method  string
	pattern string
	access  access
	handle  func(*request)
}

// request is a routed call: the fasthttp context, the path parameters and
// who is calling.
type request struct {
	*fasthttp.RequestCtx
	params map[string]string
	caller principal
}

func (r *request) param(name string) string { return r.params[name] }

// match reports whether path fits pattern, filling params.
func match(pattern, path string, params map[string]string) bool {
	ps := strings.Split(strings.Trim(pattern, "/"), "/")
	xs := strings.Split(strings.Trim(path, "/"), "/")
	if len(ps) != len(xs) {
		return false
	}
	for i, p := range ps {
		if strings.HasPrefix(p, "{") && strings.HasSuffix(p, "}") {
			if xs[i] == "" {
				return false
			}
			params[p[1:len(p)-1]] = xs[i]
			continue
		}
		if p != xs[i] {
			return false
		}
	}
	return true
}

// dispatch finds the route of a request: 404 when no pattern fits the
// path, 405 with Allow when the path fits but not the method.
func (a *API) dispatch(ctx *fasthttp.RequestCtx) {
	path := string(ctx.Path())
	method := string(ctx.Method())
	var allowed []string
	for _, rt := range a.routes {
		params := map[string]string{}
		if !match(rt.pattern, path, params) {
			continue
		}
		// The pattern, never the path, labels the request's metrics
		// (httpmetrics.go): ids in paths would make a series per object.
		ctx.SetUserValue(routeKey{}, rt.pattern)
		if rt.method != method {
			allowed = append(allowed, rt.method)
			continue
		}
		req := &request{RequestCtx: ctx, params: params}
		if rt.access != public && a.opts.ConfigReady != nil {
			if err := a.opts.ConfigReady(); err != nil {
				ctx.Response.Header.Set("Retry-After", "1")
				WriteProblem(ctx, fasthttp.StatusServiceUnavailable, "unavailable",
					"this server is still loading its configuration; retry in a moment")
				return
			}
		}
		if rt.access != public {
			p, ok := a.authenticate(ctx)
			if !ok {
				return
			}
			switch {
			case rt.access == adminOnly && !p.admin:
				WriteProblem(ctx, fasthttp.StatusForbidden, "forbidden", "this route needs the admin key")
				return
			case rt.access == tenantOnly && p.admin:
				WriteProblem(ctx, fasthttp.StatusForbidden, "forbidden",
					"this route acts on one tenant's objects; call it with that tenant's API key")
				return
			}
			req.caller = p
		}
		rt.handle(req)
		return
	}
	if len(allowed) > 0 {
		sort.Strings(allowed)
		ctx.Response.Header.Set("Allow", strings.Join(allowed, ", "))
		WriteProblem(ctx, fasthttp.StatusMethodNotAllowed, "method-not-allowed",
			method+" is not allowed on "+path+"; use "+strings.Join(allowed, " or "))
		return
	}
	WriteProblem(ctx, fasthttp.StatusNotFound, "not-found", "no route for "+method+" "+path)
}

// Routes lists every method and path pattern the API serves, for the
// OpenAPI document's test.
func (a *API) Routes() [][2]string {
	out := make([][2]string, len(a.routes))
	for i, r := range a.routes {
		out[i] = [2]string{r.method, r.pattern}
	}
	return out
}
