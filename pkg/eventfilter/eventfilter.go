// Package eventfilter defines what an event type may look like and decides
// which endpoints receive an event, from the filters each endpoint
// subscribes with.
//
// An event type is what a producer sends: dot-separated segments of
// A-Z a-z 0-9 _ -, such as order.created, invoice.payment_failed or
// sluice.endpoint.disabled; at most MaxTypeLen bytes, compared
// case-sensitively.
//
// A filter is written like an event type, except that a segment may be
// exactly '*':
//
//   - "*" alone matches every type;
//   - a '*' in the last position matches one or more remaining segments:
//     order.* matches order.created and order.item.created, but not order;
//   - a '*' anywhere else matches exactly one segment: *.created matches
//     order.created but not order.item.created, and a.*.c matches a.b.c.
//
// Partial wildcards such as ord* or ** are invalid: they would suggest a
// glob that Match does not implement.
//
// Types starting with ReservedPrefix are Sluice's own operational events
// (sluice.endpoint.disabled, sluice.delivery.exhausted,
// sluice.endpoint.recovered). Only a filter that itself starts with
// "sluice." matches them: an endpoint subscribed to everything does not get
// them unasked, and a failing catch-all endpoint is not sent news of its
// own failure.
package eventfilter

import (
	"errors"
	"fmt"
	"strings"

	"github.com/sluicehq/sluice/pkg/errtext"
)

// MaxTypeLen bounds event types and filters, in bytes. 128 is ample for the
// deepest names in use (sluice.endpoint.disabled is 24) and keeps a type
// cheap to store in every delivery log row and to index.
const MaxTypeLen = 128

// ReservedPrefix starts the types only Sluice may emit.
const ReservedPrefix = "sluice."

// Reserved reports whether eventType is one of Sluice's own.
func Reserved(eventType string) bool { return strings.HasPrefix(eventType, ReservedPrefix) }

// wildcard is the only segment besides literal names a filter may have.
const wildcard = "*"

var (
	// ErrInvalidType is wrapped by every error ValidateType returns. The
	// message says what is wrong and where; positions count segments from 1.
	ErrInvalidType = errors.New("invalid event type")
	// ErrInvalidFilter is wrapped by every error ValidateFilter and Compile
	// return, with the same kind of message as ErrInvalidType.
	ErrInvalidFilter = errors.New("invalid event filter")
)

// ValidateType checks an event type sent by a producer.
func ValidateType(t string) error {
	return validate(t, false)
}

// ValidateFilter checks a filter an endpoint subscribes with.
func ValidateFilter(f string) error {
	return validate(f, true)
}

// validate checks s as a type or, if filter, as a filter. It allocates only
// to build an error.
func validate(s string, filter bool) error {
	kind, sentinel := "type", ErrInvalidType
	if filter {
		kind, sentinel = "filter", ErrInvalidFilter
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%w %s: %s", sentinel, errtext.Quote(s), fmt.Sprintf(format, args...))
	}
	switch {
	case s == "":
		return fail("empty, want 1 to %d bytes", MaxTypeLen)
	case len(s) > MaxTypeLen:
		return fail("%s too long: %d bytes, at most %d", kind, len(s), MaxTypeLen)
	}
	rest := s
	for pos := 1; ; pos++ {
		seg, after, more := strings.Cut(rest, ".")
		if seg == "" {
			where := "two dots in a row"
			switch {
			case pos == 1:
				where = "leading dot"
			case !more:
				where = "trailing dot"
			}
			return fail("empty segment at position %d (%s)", pos, where)
		}
		if err := checkSegment(seg, filter); err != "" {
			return fail("segment %q: %s (position %d)", seg, err, pos)
		}
		if !more {
			return nil
		}
		rest = after
	}
}

// checkSegment returns what is wrong with one non-empty segment, or "".
func checkSegment(seg string, filter bool) string {
	if seg == wildcard {
		if filter {
			return ""
		}
		return "'*' is only allowed in filters, not in event types"
	}
	for i := 0; i < len(seg); i++ {
		c := seg[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_', c == '-':
		case c == '*' && filter:
			return "'*' must be a whole segment"
		case c == '*':
			return "'*' is only allowed in filters, not in event types"
		default:
			return errtext.Describe(seg[i:]) + " is not allowed; use A-Z a-z 0-9 _ -"
		}
	}
	return ""
}

// Match reports whether eventType matches filter. Both must be valid
// (ValidateFilter, ValidateType); on invalid input the answer is unspecified
// but Match does not panic. It does not allocate: it runs for every event
// against every filter of every endpoint of the tenant.
func Match(filter, eventType string) bool {
	if Reserved(eventType) && !strings.HasPrefix(filter, ReservedPrefix) {
		return false
	}
	f, t := filter, eventType
	for {
		fseg, frest, fmore := strings.Cut(f, ".")
		if fseg == wildcard && !fmore {
			// A final '*' takes one or more segments; t holds at least one
			// unless the type was invalid (empty or ending in a dot).
			return t != ""
		}
		tseg, trest, tmore := strings.Cut(t, ".")
		if fseg != wildcard && fseg != tseg {
			return false
		}
		if !fmore || !tmore {
			// Whichever ran out first, they match only if both did.
			return fmore == tmore
		}
		f, t = frest, trest
	}
}

// Set is the compiled list of filters of one endpoint. An empty Set,
// including the zero Set, matches every type: an endpoint with no filters
// receives everything.
type Set struct {
	filters []string
	// all is set when the Set has no filters or one of them is "*", so the
	// common subscribe-to-everything endpoint costs one branch per event.
	all bool
}

// Compile validates filters and returns their Set. On the first invalid
// filter it returns an error naming its index that wraps ErrInvalidFilter.
// The Set keeps its own copy of filters.
func Compile(filters []string) (Set, error) {
	s := Set{filters: make([]string, 0, len(filters)), all: len(filters) == 0}
	for i, f := range filters {
		if err := ValidateFilter(f); err != nil {
			return Set{}, fmt.Errorf("filters[%d]: %w", i, err)
		}
		if f == wildcard {
			s.all = true
		}
		s.filters = append(s.filters, f)
	}
	return s, nil
}

// Matches reports whether eventType, which must be valid, matches any filter
// of s, or s is empty (a reserved type only by a filter naming it).
func (s Set) Matches(eventType string) bool {
	if (s.all || len(s.filters) == 0) && !Reserved(eventType) {
		return true
	}
	for _, f := range s.filters {
		if Match(f, eventType) {
			return true
		}
	}
	return false
}

// Filters returns a copy of the filters s was compiled from, in their order;
// nil for an empty Set.
func (s Set) Filters() []string {
	if len(s.filters) == 0 {
		return nil
	}
	return append([]string(nil), s.filters...)
}
