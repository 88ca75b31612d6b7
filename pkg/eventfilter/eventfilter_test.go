package eventfilter_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/pkg/eventfilter"
)

func TestValidateType(t *testing.T) {
	for name, tc := range map[string]struct {
		in      string
		wantMsg string // "" means valid
	}{
		"two segments":          {in: "order.created"},
		"underscore":            {in: "invoice.payment_failed"},
		"three segments":        {in: "sluice.endpoint.disabled"},
		"one segment":           {in: "ping"},
		"one character":         {in: "a"},
		"dash and digits":       {in: "v2.user-signed-up.0"},
		"upper case":            {in: "Order.Created"},
		"all underscores":       {in: "_._"},
		"exactly 128 bytes":     {in: strings.Repeat("a", 128)},
		"128 bytes of segments": {in: strings.Repeat("a.", 63) + "ab"},

		"empty":       {in: "", wantMsg: `invalid event type "": empty, want 1 to 128 bytes`},
		"129 bytes":   {in: strings.Repeat("a", 129), wantMsg: "type too long: 129 bytes, at most 128"},
		"130 bytes":   {in: strings.Repeat("a", 130), wantMsg: "type too long: 130 bytes, at most 128"},
		"long quoted": {in: strings.Repeat("x", 1<<20), wantMsg: `"` + strings.Repeat("x", 48) + `"…: type too long`},
		"leading dot": {in: ".order", wantMsg: `type ".order": empty segment at position 1 (leading dot)`},
		"trailing dot": {
			in: "order.created.", wantMsg: `type "order.created.": empty segment at position 3 (trailing dot)`,
		},
		"double dot":  {in: "order..x", wantMsg: `type "order..x": empty segment at position 2 (two dots in a row)`},
		"only a dot":  {in: ".", wantMsg: "empty segment at position 1 (leading dot)"},
		"wildcard":    {in: "order.*", wantMsg: `segment "*": '*' is only allowed in filters, not in event types (position 2)`},
		"star inside": {in: "ord*", wantMsg: `segment "ord*": '*' is only allowed in filters`},
		"space": {
			in: "order.cre ated", wantMsg: `segment "cre ated": ' ' is not allowed; use A-Z a-z 0-9 _ - (position 2)`,
		},
		"slash":         {in: "order/created", wantMsg: `'/' is not allowed`},
		"colon":         {in: "order:created", wantMsg: `':' is not allowed`},
		"non-ASCII":     {in: "commande.créée", wantMsg: `segment "créée": 'é' is not allowed`},
		"invalid UTF-8": {in: "order.\xff", wantMsg: `byte 0xff is not allowed`},
		"NUL":           {in: "order\x00", wantMsg: `'\x00' is not allowed`},
		"newline":       {in: "order\n", wantMsg: `'\n' is not allowed`},
	} {
		t.Run(name, func(t *testing.T) {
			checkErr(t, eventfilter.ValidateType(tc.in), eventfilter.ErrInvalidType, tc.wantMsg)
		})
	}
}

func TestValidateFilter(t *testing.T) {
	for name, tc := range map[string]struct {
		in      string
		wantMsg string // "" means valid
	}{
		"literal":             {in: "order.created"},
		"everything":          {in: "*"},
		"trailing wildcard":   {in: "order.*"},
		"leading wildcard":    {in: "*.created"},
		"middle wildcard":     {in: "a.*.c"},
		"two wildcards":       {in: "*.*"},
		"wildcards and names": {in: "*.b.*"},
		"exactly 128 bytes":   {in: strings.Repeat("a", 126) + ".*"},

		"empty":         {in: "", wantMsg: `invalid event filter "": empty`},
		"130 bytes":     {in: strings.Repeat("a", 130), wantMsg: "filter too long: 130 bytes, at most 128"},
		"double dot":    {in: "order..x", wantMsg: `filter "order..x": empty segment at position 2`},
		"leading dot":   {in: ".*", wantMsg: "empty segment at position 1 (leading dot)"},
		"trailing dot":  {in: "order.*.", wantMsg: "empty segment at position 3 (trailing dot)"},
		"partial":       {in: "ord*", wantMsg: `segment "ord*": '*' must be a whole segment (position 1)`},
		"partial later": {in: "order.cre*", wantMsg: `segment "cre*": '*' must be a whole segment (position 2)`},
		"star first":    {in: "*order", wantMsg: `segment "*order": '*' must be a whole segment`},
		"double star":   {in: "**", wantMsg: `segment "**": '*' must be a whole segment`},
		"double star segment": {
			in: "order.**", wantMsg: `segment "**": '*' must be a whole segment (position 2)`,
		},
		"question mark": {in: "order.?", wantMsg: `segment "?": '?' is not allowed`},
		"regexp":        {in: "order.(created|paid)", wantMsg: `'(' is not allowed`},
		"space":         {in: "order. *", wantMsg: `segment " *": ' ' is not allowed`},
	} {
		t.Run(name, func(t *testing.T) {
			checkErr(t, eventfilter.ValidateFilter(tc.in), eventfilter.ErrInvalidFilter, tc.wantMsg)
		})
	}
}

// checkErr asserts err is nil when wantMsg is empty, else that it wraps
// sentinel and contains wantMsg.
func checkErr(tb testing.TB, err, sentinel error, wantMsg string) {
	tb.Helper()
	switch {
	case wantMsg == "" && err != nil:
		tb.Fatalf("unexpected error: %v", err)
	case wantMsg == "":
	case err == nil:
		tb.Fatalf("no error, want one containing %q", wantMsg)
	case !errors.Is(err, sentinel):
		tb.Fatalf("error %v does not wrap %v", err, sentinel)
	case !strings.Contains(err.Error(), wantMsg):
		tb.Fatalf("error %q does not contain %q", err, wantMsg)
	}
}

func TestMatch(t *testing.T) {
	for name, tc := range map[string]struct {
		filter, typ string
		want        bool
	}{
		"exact":                               {"order.created", "order.created", true},
		"reserved type by name":               {"sluice.endpoint.disabled", "sluice.endpoint.disabled", true},
		"reserved types by sluice.*":          {"sluice.*", "sluice.delivery.exhausted", true},
		"star does not match reserved":        {"*", "sluice.endpoint.disabled", false},
		"star prefix does not match reserved": {"*.endpoint.disabled", "sluice.endpoint.disabled", false},
		"exact one segment":                   {"ping", "ping", true},
		"different name":                      {"order.created", "order.updated", false},
		"filter longer":                       {"order.created.v2", "order.created", false},
		"type longer":                         {"order.created", "order.created.v2", false},
		"prefix of a segment is not a match":  {"order.create", "order.created", false},
		"segment boundary respected":          {"order", "orders", false},
		"dots are not wildcards":              {"order.created", "order_created", false},
		"types are case-sensitive":            {"order.created", "Order.created", false},
		"case-sensitive in last segment":      {"order.created", "order.CREATED", false},
		"wildcard filter keeps literal case":  {"Order.*", "order.created", false},
		"star alone matches one segment":      {"*", "ping", true},
		"star alone matches two segments":     {"*", "order.created", true},
		"star alone matches many":             {"*", "billing.invoice.payment.failed", true},
		"trailing star one more":              {"order.*", "order.created", true},
		"trailing star two more":              {"order.*", "order.item.created", true},
		"trailing star needs one":             {"order.*", "order", false},
		"trailing star other prefix":          {"order.*", "invoice.created", false},
		"trailing star prefix boundary":       {"order.*", "orders.created", false},
		"trailing star deep":                  {"a.b.*", "a.b.c.d.e", true},
		"trailing star deep too short":        {"a.b.*", "a.b", false},
		"leading star one":                    {"*.created", "order.created", true},
		"leading star not two":                {"*.created", "order.item.created", false},
		"leading star not zero":               {"*.created", "created", false},
		"leading star last differs":           {"*.created", "order.paid", false},
		"middle star":                         {"a.*.c", "a.b.c", true},
		"middle star not zero":                {"a.*.c", "a.c", false},
		"middle star not two":                 {"a.*.c", "a.b.b.c", false},
		"middle star wrong end":               {"a.*.c", "a.b.d", false},
		"middle star wrong start":             {"a.*.c", "x.b.c", false},
		"star star needs two":                 {"*.*", "ping", false},
		"star star two":                       {"*.*", "order.created", true},
		"star star three":                     {"*.*", "order.item.created", true},
		"star in middle then trailing":        {"a.*.*", "a.b.c.d", true},
		"star in middle then trailing short":  {"a.*.*", "a.b", false},
	} {
		t.Run(name, func(t *testing.T) {
			if err := eventfilter.ValidateFilter(tc.filter); err != nil {
				t.Fatalf("bad test: %v", err)
			}
			if err := eventfilter.ValidateType(tc.typ); err != nil {
				t.Fatalf("bad test: %v", err)
			}
			if got := eventfilter.Match(tc.filter, tc.typ); got != tc.want {
				t.Fatalf("Match(%q, %q) = %t, want %t", tc.filter, tc.typ, got, tc.want)
			}
			if got := reference(tc.filter, tc.typ); got != tc.want {
				t.Fatalf("reference(%q, %q) = %t, want %t: the test's model is wrong", tc.filter, tc.typ, got, tc.want)
			}
		})
	}
}

// reference is the matching rules written the obvious way, with splits and
// allocations, to check Match against.
func reference(filter, typ string) bool {
	if strings.HasPrefix(typ, "sluice.") && !strings.HasPrefix(filter, "sluice.") {
		return false // reserved types match only filters naming them
	}
	f, t := strings.Split(filter, "."), strings.Split(typ, ".")
	if f[len(f)-1] == "*" {
		// Final '*': one or more remaining segments.
		if len(t) < len(f) {
			return false
		}
		f, t = f[:len(f)-1], t[:len(f)-1]
	} else if len(t) != len(f) {
		return false
	}
	for i := range f {
		if f[i] != "*" && f[i] != t[i] {
			return false
		}
	}
	return true
}

// Invalid inputs give unspecified answers but must not panic.
func TestMatchInvalidDoesNotPanic(t *testing.T) {
	in := []string{"", ".", "..", "*", "*.", ".*", "a.", ".a", "a..b", "**", "a.*.", "\xff"}
	for _, f := range in {
		for _, typ := range in {
			_ = eventfilter.Match(f, typ)
		}
	}
}

func TestSet(t *testing.T) {
	for name, tc := range map[string]struct {
		filters []string
		match   []string
		noMatch []string
	}{
		"nil set matches all but reserved types": {filters: nil, match: []string{"order.created", "ping"},
			noMatch: []string{"sluice.endpoint.disabled"}},
		"empty set matches all": {filters: []string{}, match: []string{"order.created", "ping"},
			noMatch: []string{"sluice.delivery.exhausted"}},
		"star matches all but reserved types": {filters: []string{"*"}, match: []string{"order.created"},
			noMatch: []string{"sluice.endpoint.recovered"}},
		"reserved types by name or by sluice.*": {filters: []string{"*", "sluice.endpoint.*"},
			match:   []string{"order.created", "sluice.endpoint.disabled", "sluice.endpoint.recovered"},
			noMatch: []string{"sluice.delivery.exhausted"}},
		"one filter": {
			filters: []string{"order.*"},
			match:   []string{"order.created", "order.item.created"},
			noMatch: []string{"order", "invoice.paid"},
		},
		"any of": {
			filters: []string{"order.created", "invoice.*", "*.deleted"},
			match:   []string{"order.created", "invoice.paid", "invoice.payment_failed", "customer.deleted"},
			noMatch: []string{"order.updated", "invoice", "customer.address.deleted", "Order.created"},
		},
		"star among others": {
			filters: []string{"order.created", "*"},
			match:   []string{"anything", "a.b.c"},
		},
		"duplicates": {
			filters: []string{"a.b", "a.b"},
			match:   []string{"a.b"},
			noMatch: []string{"a.c"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			s, err := eventfilter.Compile(tc.filters)
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			for _, typ := range tc.match {
				if !s.Matches(typ) {
					t.Errorf("Matches(%q) = false, want true", typ)
				}
			}
			for _, typ := range tc.noMatch {
				if s.Matches(typ) {
					t.Errorf("Matches(%q) = true, want false", typ)
				}
			}
			if got := s.Filters(); !slices.Equal(got, tc.filters) {
				t.Errorf("Filters() = %q, want %q", got, tc.filters)
			}
		})
	}
}

func TestZeroSetMatchesAll(t *testing.T) {
	var s eventfilter.Set
	if !s.Matches("order.created") {
		t.Fatal("the zero Set does not match")
	}
	if s.Filters() != nil {
		t.Fatalf("Filters() = %q, want nil", s.Filters())
	}
}

func TestSetOwnsItsFilters(t *testing.T) {
	in := []string{"order.created"}
	s, err := eventfilter.Compile(in)
	if err != nil {
		t.Fatal(err)
	}
	in[0] = "*"
	if s.Matches("invoice.paid") {
		t.Fatal("changing the caller's slice after Compile changed the Set")
	}
	s.Filters()[0] = "*"
	if s.Matches("invoice.paid") {
		t.Fatal("changing the slice Filters returned changed the Set")
	}
}

func TestCompileError(t *testing.T) {
	for name, tc := range map[string]struct {
		filters []string
		wantMsg string
	}{
		"first":                      {[]string{"ord*"}, `filters[0]: invalid event filter "ord*": segment "ord*": '*' must be a whole segment`},
		"third":                      {[]string{"a", "b.*", "c..d"}, `filters[2]: invalid event filter "c..d": empty segment at position 2`},
		"only the first is reported": {[]string{"ok", "", "x..y"}, `filters[1]: invalid event filter "": empty`},
	} {
		t.Run(name, func(t *testing.T) {
			s, err := eventfilter.Compile(tc.filters)
			checkErr(t, err, eventfilter.ErrInvalidFilter, tc.wantMsg)
			if strings.Contains(err.Error(), "x..y") {
				t.Errorf("error %q reports more than the first invalid filter", err)
			}
			if s.Filters() != nil {
				t.Errorf("Compile returned filters %q with its error", s.Filters())
			}
		})
	}
}

func TestMatchDoesNotAllocate(t *testing.T) {
	s, err := eventfilter.Compile([]string{"order.created", "invoice.*", "*.deleted", "a.*.c"})
	if err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		_ = eventfilter.Match("invoice.*", "invoice.payment_failed")
		_ = eventfilter.Match("a.*.c", "a.b.c")
		_ = s.Matches("customer.address.deleted")
		_ = eventfilter.ValidateType("sluice.endpoint.disabled")
		_ = eventfilter.ValidateFilter("sluice.*")
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per run, want 0", allocs)
	}
}

// seeds give the fuzzers the shapes that occur in practice and the edges
// of the syntax.
var seeds = []string{
	"order.created", "invoice.payment_failed", "sluice.endpoint.disabled", "ping",
	"*", "order.*", "*.created", "a.*.c", "*.*", "a.*.*",
	"", ".", "order..x", ".a", "a.", "ord*", "**", "a.b*", "é", "\xff", strings.Repeat("a", 129),
}

// FuzzValidateType checks that ValidateType never panics, that its errors
// wrap ErrInvalidType, and that every valid type is also a valid filter
// (the filter syntax extends the type syntax).
func FuzzValidateType(f *testing.F) {
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := eventfilter.ValidateType(s)
		if err != nil {
			if !errors.Is(err, eventfilter.ErrInvalidType) {
				t.Fatalf("ValidateType(%q) = %v, not wrapping ErrInvalidType", s, err)
			}
			return
		}
		if len(s) == 0 || len(s) > eventfilter.MaxTypeLen || strings.Contains(s, "*") {
			t.Fatalf("ValidateType accepted %q", s)
		}
		if err := eventfilter.ValidateFilter(s); err != nil {
			t.Fatalf("valid type %q is not a valid filter: %v", s, err)
		}
	})
}

// FuzzValidateFilter checks that ValidateFilter never panics, that its
// errors wrap ErrInvalidFilter, and that a valid filter without '*' is a
// valid type.
func FuzzValidateFilter(f *testing.F) {
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := eventfilter.ValidateFilter(s)
		if err != nil {
			if !errors.Is(err, eventfilter.ErrInvalidFilter) {
				t.Fatalf("ValidateFilter(%q) = %v, not wrapping ErrInvalidFilter", s, err)
			}
			return
		}
		if len(s) == 0 || len(s) > eventfilter.MaxTypeLen {
			t.Fatalf("ValidateFilter accepted %q", s)
		}
		for seg := range strings.SplitSeq(s, ".") {
			if strings.Contains(seg, "*") && seg != "*" {
				t.Fatalf("ValidateFilter accepted partial wildcard segment %q in %q", seg, s)
			}
		}
		if !strings.Contains(s, "*") {
			if err := eventfilter.ValidateType(s); err != nil {
				t.Fatalf("valid filter %q without '*' is not a valid type: %v", s, err)
			}
		}
	})
}

// FuzzMatch checks that Match never panics, on any input, and that on valid
// inputs it agrees with reference and the identities hold: "*" matches every
// type but the reserved ones, and a type, used as a filter, matches itself.
func FuzzMatch(f *testing.F) {
	for _, a := range seeds {
		for _, b := range seeds {
			f.Add(a, b)
		}
	}
	f.Fuzz(func(t *testing.T, filter, typ string) {
		got := eventfilter.Match(filter, typ)
		if eventfilter.ValidateType(typ) != nil {
			return
		}
		if eventfilter.Match("*", typ) == eventfilter.Reserved(typ) {
			t.Fatalf("Match(\"*\", %q) = %v for a type reserved: %v", typ, !eventfilter.Reserved(typ), eventfilter.Reserved(typ))
		}
		if !eventfilter.Match(typ, typ) {
			t.Fatalf("Match(%q, %q) = false", typ, typ)
		}
		if eventfilter.ValidateFilter(filter) != nil {
			return
		}
		if want := reference(filter, typ); got != want {
			t.Fatalf("Match(%q, %q) = %t, reference says %t", filter, typ, got, want)
		}
	})
}

func BenchmarkMatch(b *testing.B) {
	for _, bc := range []struct{ filter, typ string }{
		{"order.created", "order.created"},
		{"order.created", "invoice.created"},
		{"*", "sluice.endpoint.disabled"},
		{"order.*", "order.item.created"},
		{"*.created", "order.item.created"},
		{"a.*.c.*", "a.b.c.d.e.f"},
	} {
		b.Run(fmt.Sprintf("%s~%s", bc.filter, bc.typ), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = eventfilter.Match(bc.filter, bc.typ)
			}
		})
	}
}

func BenchmarkSetMatches(b *testing.B) {
	s, err := eventfilter.Compile([]string{"order.created", "order.updated", "invoice.*", "*.deleted", "customer.*.changed"})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = s.Matches("customer.address.changed") // the last filter: the worst case
	}
}

func BenchmarkValidateType(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if err := eventfilter.ValidateType("sluice.endpoint.disabled"); err != nil {
			b.Fatal(err)
		}
	}
}
