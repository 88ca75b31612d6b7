package errtext_test

import (
	"strings"
	"testing"

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
