package api

import (
	"fmt"
	"math"
	"net/url"
	"strings"

	"github.com/sluicehq/sluice/pkg/eventfilter"
	"github.com/sluicehq/sluice/pkg/signing"
)

// Limits of an endpoint. Each bounds what one endpoint costs every service
// that keeps the configuration in memory and every webhook request.
const (
	maxURLLen         = 2048 // what browsers and most proxies accept
	maxDescriptionLen = 512
	maxFilters        = 64
	maxMetadata       = 32
	maxMetadataKey    = 64
	maxMetadataValue  = 512
	maxHeaders        = 20
	maxHeaderName     = 64
	maxHeaderValue    = 1024
	maxMaxInFlight    = 1000
	// maxRateLimit is per second; above it, a limit no longer limits.
	maxRateLimit = 10000
	// minRateLimit is per second: one request every 1000 s (about 17
	// minutes). Slower is an endpoint that is paused, which disable says
	// better; and the sender waits 1/rate for a token, which for rates
	// below about 1e-10/s overflows time.Duration into a negative wait
	// (review M1). At the floor the wait is 1000 s, far inside it.
	minRateLimit = 0.001
	minTimeoutMs = 1000
	maxTimeoutMs = 60000
)

// forbiddenHeaders are set by Sluice or by HTTP itself; an endpoint may not
// override them. Names are lower case; webhook-* and proxy-* are prefixes.
var forbiddenHeaders = map[string]bool{
	"host": true, "content-length": true, "content-type": true, "transfer-encoding": true,
	"connection": true, "keep-alive": true, "upgrade": true, "te": true, "trailer": true,
	"traceparent": true, "tracestate": true, "user-agent": true, "expect": true,
}

func validateURL(field, raw string, requireHTTPS bool) []FieldError {
	bad := func(d string) []FieldError { return []FieldError{{field, d}} }
	if raw == "" {
		return bad("is required")
	}
	if len(raw) > maxURLLen {
		return bad(fmt.Sprintf("is %d bytes, at most %d", len(raw), maxURLLen))
	}
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Host == "" || u.Hostname() == "" {
		return bad("must be an absolute http or https URL, such as https://example.com/webhooks")
	}
	switch u.Scheme {
	case "https":
	case "http":
		if requireHTTPS {
			return bad("must use https (this server refuses plain http endpoints)")
		}
	default:
		return bad(fmt.Sprintf("scheme %q is not http or https", u.Scheme))
	}
	if u.User != nil {
		return bad("must not carry credentials; use custom headers for authentication")
	}
	if u.Fragment != "" {
		return bad("must not have a #fragment")
	}
	return nil
}

func validateFilters(filters []string) []FieldError {
	if len(filters) > maxFilters {
		return []FieldError{{"events", fmt.Sprintf("has %d filters, at most %d", len(filters), maxFilters)}}
	}
	var errs []FieldError
	for i, f := range filters {
		if err := eventfilter.ValidateFilter(f); err != nil {
			errs = append(errs, FieldError{fmt.Sprintf("events[%d]", i), err.Error()})
		}
	}
	return errs
}

func validateMetadata(md map[string]string) []FieldError {
	if len(md) > maxMetadata {
		return []FieldError{{"metadata", fmt.Sprintf("has %d entries, at most %d", len(md), maxMetadata)}}
	}
	var errs []FieldError
	for k, v := range md {
		if k == "" || len(k) > maxMetadataKey {
			errs = append(errs, FieldError{"metadata." + trunc(k), fmt.Sprintf("key must be 1 to %d bytes", maxMetadataKey)})
		}
		if len(v) > maxMetadataValue {
			errs = append(errs, FieldError{"metadata." + trunc(k), fmt.Sprintf("is %d bytes, at most %d", len(v), maxMetadataValue)})
		}
	}
	return errs
}

func validateHeaders(h map[string]string) []FieldError {
	if len(h) > maxHeaders {
		return []FieldError{{"headers", fmt.Sprintf("has %d entries, at most %d", len(h), maxHeaders)}}
	}
	var errs []FieldError
	for name, v := range h {
		field := "headers." + trunc(name)
		lower := strings.ToLower(name)
		switch {
		case name == "" || len(name) > maxHeaderName || !isToken(name):
			errs = append(errs, FieldError{field, fmt.Sprintf("is not a header name (1 to %d letters, digits and !#$%%&'*+-.^_`|~)", maxHeaderName)})
		case forbiddenHeaders[lower] || strings.HasPrefix(lower, "webhook-") || strings.HasPrefix(lower, "proxy-"):
			errs = append(errs, FieldError{field, "is set by Sluice or by HTTP and cannot be overridden"})
		case len(v) > maxHeaderValue:
			errs = append(errs, FieldError{field, fmt.Sprintf("value is %d bytes, at most %d", len(v), maxHeaderValue)})
		case strings.ContainsAny(v, "\r\n\x00"):
			errs = append(errs, FieldError{field, "value must not contain CR, LF or NUL"})
		}
	}
	return errs
}

// isToken reports whether s is an RFC 9110 token.
func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0 {
			continue
		}
		return false
	}
	return true
}

func validateMaxInFlight(v int64) []FieldError {
	if v < 1 || v > maxMaxInFlight {
		return []FieldError{{"max_in_flight", fmt.Sprintf("must be from 1 to %d", maxMaxInFlight)}}
	}
	return nil
}

func validateRateLimit(v float64) []FieldError {
	if math.IsNaN(v) || v < minRateLimit || v > maxRateLimit {
		return []FieldError{{"rate_limit", fmt.Sprintf("must be from %g to %d per second, or null for none", minRateLimit, maxRateLimit)}}
	}
	return nil
}

// A retry schedule has at most 20 waits (20 retries after the first
// attempt; the default has 7), each 1 s to 24 h: shorter hammers a failing
// receiver, longer outlives the retry tiers' retention margin.
const (
	maxRetrySteps  = 20
	minRetryWaitMs = 1000
	maxRetryWaitMs = 24 * 3600 * 1000
)

// validateRetrySchedule checks a schedule of waits in milliseconds; an
// empty one means "inherit".
func validateRetrySchedule(v []int64) []FieldError {
	if len(v) > maxRetrySteps {
		return []FieldError{{"retry_schedule_ms", fmt.Sprintf("has %d waits, at most %d", len(v), maxRetrySteps)}}
	}
	for i, w := range v {
		if w < minRetryWaitMs || w > maxRetryWaitMs {
			return []FieldError{{fmt.Sprintf("retry_schedule_ms[%d]", i),
				fmt.Sprintf("must be from %d to %d (1 s to 24 h)", minRetryWaitMs, maxRetryWaitMs)}}
		}
	}
	return nil
}

func validateTimeout(v int64) []FieldError {
	if v < minTimeoutMs || v > maxTimeoutMs {
		return []FieldError{{"timeout_ms", fmt.Sprintf("must be from %d to %d", minTimeoutMs, maxTimeoutMs)}}
	}
	return nil
}

func validateDescription(d string) []FieldError {
	if len(d) > maxDescriptionLen {
		return []FieldError{{"description", fmt.Sprintf("is %d bytes, at most %d", len(d), maxDescriptionLen)}}
	}
	return nil
}

// validateSecret checks a caller-chosen secret and returns its key. The
// format is package signing's, which also signs with the key; its error
// names the format and never repeats the secret, so it is the field's message.
func validateSecret(field, s string) ([]byte, []FieldError) {
	key, err := signing.ParseSecret(s)
	if err != nil {
		return nil, []FieldError{{field, err.Error()}}
	}
	return key, nil
}

// trunc keeps user-chosen names short in messages.
func trunc(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
