package api

import (
	"encoding/base64"
	"regexp"
	"strconv"

	"github.com/valyala/fasthttp"
)

const (
	defaultLimit = 50
	// maxLimit bounds one page: an endpoint is at most ~48 KiB of JSON,
	// so a page stays under ~12 MiB even at the limits.
	maxLimit = 250
)

// page is the answer of every list: the items and, when there are more,
// the cursor of the next page. Lists are ordered by id; ids are
// time-ordered, so a cursor stays valid and stable while objects are added.
type page[T any] struct {
	Data       []T    `json:"data"`
	NextCursor string `json:"next_cursor,omitempty"`
}

var idPattern = regexp.MustCompile(`^[A-Za-z0-9_]{1,64}$`)

// pageParams reads limit and cursor. The cursor is the last id of the
// previous page, base64url-encoded so clients treat it as opaque.
func pageParams(ctx *fasthttp.RequestCtx) (limit int, after string, errs []FieldError) {
	limit = defaultLimit
	args := ctx.QueryArgs()
	if v := args.Peek("limit"); v != nil {
		n, err := strconv.Atoi(string(v))
		if err != nil || n < 1 || n > maxLimit {
			errs = append(errs, FieldError{"limit", "must be an integer from 1 to " + strconv.Itoa(maxLimit)})
		}
		limit = n
	}
	if v := args.Peek("cursor"); v != nil {
		b, err := base64.RawURLEncoding.DecodeString(string(v))
		if err != nil || !idPattern.Match(b) {
			errs = append(errs, FieldError{"cursor", "is not a cursor this API returned"})
		}
		after = string(b)
	}
	return limit, after, errs
}

// paginate cuts items (sorted by id) to the page after the cursor.
func paginate[T any](items []T, id func(T) string, limit int, after string) page[T] {
	start := 0
	if after != "" {
		for start < len(items) && id(items[start]) <= after {
			start++
		}
	}
	end := min(start+limit, len(items))
	p := page[T]{Data: items[start:end]}
	if p.Data == nil {
		p.Data = []T{}
	}
	if end < len(items) {
		p.NextCursor = base64.RawURLEncoding.EncodeToString([]byte(id(items[end-1])))
	}
	return p
}
