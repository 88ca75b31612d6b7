// Package errtext shows outside input inside error messages: briefly, and
// so that an operator can read what was wrong with it.
package errtext

import (
	"fmt"
	"strconv"
	"strings"
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

// ellipsis marks a cut: three bytes of UTF-8.
const ellipsis = "…"

// Truncate returns s as valid UTF-8 of at most max bytes: invalid bytes
// become U+FFFD, and a longer s is cut on a rune boundary and ends in "…".
// Text from outside (an error a receiver's TLS certificate provoked, a
// response) goes into Kafka records and log rows only through it, so no
// record grows past what Kafka accepts because of it. max below the length
// of "…" (3) keeps at most max bytes of s, with no mark.
func Truncate(s string, max int) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if len(s) <= max {
		return s
	}
	room := max - len(ellipsis)
	mark := ellipsis
	if room < 0 {
		room, mark = max, ""
	}
	for room > 0 && !utf8.RuneStart(s[room]) {
		room--
	}
	return s[:room] + mark
}
