package clickhousex

import (
	"errors"
	"fmt"
	"strings"

	"github.com/ClickHouse/clickhouse-go/v2"
)

// ClickHouse exception codes that mean "these credentials will not do":
// which one a wrong password gets depends on the server's version (18.16
// says 193 WRONG_PASSWORD or 192 UNKNOWN_USER; 20.x and later say 516
// AUTHENTICATION_FAILED for both, so as not to tell which was wrong), 194
// is a user that needs a password and got none, 195 a user not allowed
// from this address.
var authCodes = map[int32]string{
	192: "UNKNOWN_USER", 193: "WRONG_PASSWORD", 194: "REQUIRED_PASSWORD",
	195: "IP_ADDRESS_NOT_ALLOWED", 516: "AUTHENTICATION_FAILED",
}

// AuthError is a connection to ClickHouse that the server refused and that
// waiting will not cure: credentials it does not accept, a certificate we
// do not trust, a port that does not speak TLS. The logwriter exits on it
// at start with its message, which names the cause and what to check.
type AuthError struct {
	// What names the cause: `authentication as "sluice" refused by
	// 127.0.0.1:9440 (code 516: …)`, `TLS: certificate of … is not signed
	// by a trusted authority (…)`.
	What string
	// Check lists the settings to look at.
	Check []string
	Err   error
}

func (e *AuthError) Error() string {
	msg := "clickhouse: " + e.What
	if len(e.Check) > 0 {
		msg += ": check " + joinAnd(e.Check)
	}
	return msg
}

func (e *AuthError) Unwrap() error { return e.Err }

func joinAnd(s []string) string {
	if len(s) < 2 {
		return strings.Join(s, "")
	}
	return strings.Join(s[:len(s)-1], ", ") + " and " + s[len(s)-1]
}

// dialError is a failed connection to addr with the settings used; its
// text is the cause's alone.
type dialError struct {
	addr string
	cfg  Config
	err  error
}

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// Fatal returns err as an *AuthError when the server refused us in a way
// waiting will not cure (credentials, certificates), nil otherwise: a
// server that is down or restarting is waited for (DESIGN §10).
func Fatal(err error) error {
	if err == nil {
		return nil
	}
	var ae *AuthError
	if errors.As(err, &ae) {
		return ae
	}
	var de *dialError
	if !errors.As(err, &de) {
		return nil
	}
	if r, ok := de.cfg.tls().Diagnose(de.err, de.addr); ok {
		return &AuthError{What: "TLS: " + r.Reason, Check: r.Check, Err: err}
	}
	var ex *clickhouse.Exception
	if errors.As(err, &ex) {
		if name, ok := authCodes[ex.Code]; ok {
			password := envPassword
			if de.cfg.PasswordFile != "" {
				password = envPasswordFile
			}
			return &AuthError{
				What: fmt.Sprintf("authentication as %q refused by %s (code %d %s: %s)",
					de.cfg.Username, de.addr, ex.Code, name, firstLine(ex.Message)),
				Check: []string{envUsername, password}, Err: err}
		}
	}
	return nil
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}
