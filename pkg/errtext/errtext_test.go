package errtext_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/sluicehq/sluice/pkg/errtext"
)

func TestQuote(t *testing.T) {
	for _, tc := range []struct{ desc, in, want string }{
		{"short", "order.created", `"order.created"`},
		{"exactly the limit", strings.Repeat("a", 48), `"` + strings.Repeat("a", 48) + `"`},
		{"long is cut", strings.Repeat("a", 100), `"` + strings.Repeat("a", 48) + `"…`},
		{"cut on a rune boundary", strings.Repeat("a", 47) + "é" + "zz", `"` + strings.Repeat("a", 47) + `"…`},
		{"control characters escaped", "a\nb", `"a\nb"`},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			if got := errtext.Quote(tc.in); got != tc.want {
				t.Fatalf("Quote = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestDescribe(t *testing.T) {
	for _, tc := range []struct{ desc, in, want string }{
		{"ascii", "*x", `'*'`},
		{"a whole rune", "éx", `'é'`},
		{"an invalid byte", "\xffx", "byte 0xff"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			if got := errtext.Describe(tc.in); got != tc.want {
				t.Fatalf("Describe = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestTruncate(t *testing.T) {
	for desc, tc := range map[string]struct {
		in   string
		max  int
		want string
	}{
		"short text is kept":                 {"refused", 20, "refused"},
		"exactly the limit is kept":          {"abcdef", 6, "abcdef"},
		"long text is cut with a mark":       {"abcdefghij", 6, "abc…"},
		"a cut never splits a rune":          {"aé€x", 6, "aé…"},
		"a cut inside a rune backs off":      {"aé€x", 5, "a…"},
		"invalid UTF-8 becomes U+FFFD":       {"a\xffb", 20, "a\uFFFDb"},
		"a limit below the mark has no mark": {"abcdef", 2, "ab"},
		"zero keeps nothing":                 {"abc", 0, ""},
	} {
		t.Run(desc, func(t *testing.T) {
			got := errtext.Truncate(tc.in, tc.max)
			if got != tc.want {
				t.Fatalf("Truncate(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
			}
			if len(got) > tc.max || !utf8.ValidString(got) {
				t.Fatalf("Truncate(%q, %d) = %q: %d bytes, valid %v", tc.in, tc.max, got, len(got), utf8.ValidString(got))
			}
		})
	}
}

func FuzzTruncate(f *testing.F) {
	f.Add("x509: certificate is valid for a, b, c", 10)
	f.Add("\xff\xfe€€", 4)
	f.Fuzz(func(t *testing.T, s string, max int) {
		if max < 0 || max > 1<<20 {
			return
		}
		got := errtext.Truncate(s, max)
		if len(got) > max || !utf8.ValidString(got) {
			t.Fatalf("Truncate(%q, %d) = %q", s, max, got)
		}
		if utf8.ValidString(s) && len(s) <= max && got != s {
			t.Fatalf("Truncate changed %q, which fits", s)
		}
	})
}
