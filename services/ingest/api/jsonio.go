package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"reflect"
	"slices"
	"strings"

	"github.com/valyala/fasthttp"
)

// maxConfigBody bounds a control-plane request body. The largest valid
// endpoint (a 2 KiB URL, 64 filters, 32 metadata and 20 header entries at
// their size limits) is under 48 KiB.
const maxConfigBody = 64 << 10

// decodeBody decodes the request's JSON body into dst, strictly: the content
// type must be JSON, unknown fields and trailing data are refused, and the
// problem answered names the field at fault. It reports whether dst was
// filled; when false, the answer has been written. The body may be at most
// maxConfigBody: every control-plane route uses this.
func decodeBody(ctx *fasthttp.RequestCtx, dst any) bool {
	return decodeBodyLimit(ctx, dst, maxConfigBody)
}

// decodeBodyLimit is decodeBody with the body limit of the route: the events
// routes take larger bodies than the control plane.
func decodeBodyLimit(ctx *fasthttp.RequestCtx, dst any, limit int) bool {
	body := ctx.PostBody()
	if len(body) > limit {
		WriteProblem(ctx, fasthttp.StatusRequestEntityTooLarge, "payload-too-large",
			fmt.Sprintf("the body is %d bytes; this endpoint takes at most %d", len(body), limit))
		return false
	}
	ct := string(ctx.Request.Header.ContentType())
	if mt, _, _ := strings.Cut(ct, ";"); strings.TrimSpace(strings.ToLower(mt)) != "application/json" {
		WriteProblem(ctx, fasthttp.StatusUnsupportedMediaType, "unsupported-media-type",
			fmt.Sprintf("the body must be application/json, not %q", ct))
		return false
	}
	if err := DecodeStrict(body, dst); err != nil {
		var fe *FieldDecodeError
		if errors.As(err, &fe) {
			invalid(ctx, []FieldError{{Field: fe.Field, Detail: fe.Detail}})
		} else {
			WriteProblem(ctx, fasthttp.StatusBadRequest, "malformed-json", err.Error())
		}
		return false
	}
	return true
}

// FieldDecodeError is a body that is valid JSON with a field of the wrong
// type or name.
type FieldDecodeError struct{ Field, Detail string }

func (e *FieldDecodeError) Error() string { return e.Field + ": " + e.Detail }

// DecodeStrict decodes one JSON object from b into dst, refusing unknown
// fields and anything after the object.
func DecodeStrict(b []byte, dst any) error {
	trimmed := bytes.TrimSpace(b)
	if len(trimmed) == 0 {
		return errors.New("the body is empty; send a JSON object")
	}
	// null decodes into a struct without an error and without touching it;
	// every other non-object fails below as a type error.
	if bytes.Equal(trimmed, []byte("null")) {
		return errors.New("the body must be a JSON object, not null")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		var te *json.UnmarshalTypeError
		var se *json.SyntaxError
		switch {
		case errors.As(err, &te):
			field := te.Field
			if field == "" {
				return fmt.Errorf("the body must be a JSON object, not %s", te.Value)
			}
			return &FieldDecodeError{Field: field, Detail: "must be " + jsonKind(te.Type.Kind().String()) + ", not " + te.Value}
		case errors.As(err, &se):
			return fmt.Errorf("invalid JSON at byte %d: %v", se.Offset, se)
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			return &FieldDecodeError{Field: name, Detail: "unknown field"}
		case errors.Is(err, io.ErrUnexpectedEOF):
			return errors.New("invalid JSON: the body ends in the middle of a value")
		default:
			var fe *FieldDecodeError
			if errors.As(err, &fe) {
				return fe
			}
			return fmt.Errorf("invalid JSON: %v", err)
		}
	}
	if dec.More() {
		return errors.New("invalid JSON: data after the object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("invalid JSON: data after the object")
	}
	return exactNames(b, dst)
}

// exactNames refuses members named like a field only in another case,
// which encoding/json accepts: "URL" would set url, so {"url":…,"URL":…}
// would be one request to us and another to a proxy reading the documented
// names.
func exactNames(b []byte, dst any) error {
	t := reflect.TypeOf(dst)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(b, &members); err != nil {
		return fmt.Errorf("invalid JSON: %v", err)
	}
	for _, name := range slices.Sorted(maps.Keys(members)) {
		known := false
		for i := range t.NumField() {
			if tag, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ","); tag == name {
				known = true
				break
			}
		}
		if !known {
			return &FieldDecodeError{Field: name, Detail: "unknown field"}
		}
	}
	return nil
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "a string"
	case "bool":
		return "true or false"
	case "slice", "array":
		return "an array"
	case "map", "struct":
		return "an object"
	case "float32", "float64":
		return "a number"
	default:
		return "an integer"
	}
}

// writeJSON answers status with v as JSON.
func writeJSON(ctx *fasthttp.RequestCtx, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		WriteProblem(ctx, fasthttp.StatusInternalServerError, "internal", "encoding the response failed")
		return
	}
	ctx.Response.Header.SetContentType("application/json")
	ctx.SetStatusCode(status)
	ctx.SetBody(b)
}

// Optional is a PATCH field: Set when the key was present, Null when its
// value was JSON null (reset to the default), Value otherwise.
type Optional[T any] struct {
	Set   bool
	Null  bool
	Value T
}

// UnmarshalJSON is only called when the key is present. It starts from
// scratch each time, so a repeated key counts only by its last value, as
// for every other field (a null before a value must not stick).
func (o *Optional[T]) UnmarshalJSON(b []byte) error {
	*o = Optional[T]{Set: true}
	if string(b) == "null" {
		o.Null = true
		return nil
	}
	return json.Unmarshal(b, &o.Value)
}
