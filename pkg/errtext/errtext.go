// Package errtext shows outside input inside error messages: briefly, and
// so that an operator can read what was wrong with it.
package errtext

import (
	"fmt"
	"strconv"
	"unicode/utf8"
)

// MaxQuoted is how much of an input a message quotes: an over-long input
// may be megabytes, and its start is enough to find it.
const MaxQuoted = 48

// Quote quotes at most MaxQuoted bytes of s, cut on a rune boundary so the
// quoted prefix stays readable, with "…" when cut.
func Quote(s string) string {
	if len(s) <= MaxQuoted {
		return strconv.Quote(s)
	}
	cut := MaxQuoted
	for cut > MaxQuoted-utf8.UTFMax && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strconv.Quote(s[:cut]) + "…"
}

// Describe names the character at the start of s: the rune if it is valid
// UTF-8 (so an operator sees 'é', not two bytes), else the byte in hex.
func Describe(s string) string {
	r, size := utf8.DecodeRuneInString(s)
	if r == utf8.RuneError && size <= 1 {
		return fmt.Sprintf("byte 0x%02x", s[0])
	}
	return strconv.QuoteRune(r)
}
