package clickhousex

import (
	"errors"
	"fmt"
	"strings"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/sluicehq/sluice/pkg/tlsconf"
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

// AuthError is a connection to ClickHouse that the server refused and
// that waiting will not cure (see Fatal).
type AuthError = tlsconf.AuthError

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
		return &AuthError{Dependency: "clickhouse", What: "TLS: " + r.Reason, Check: r.Check, Err: err}
	}
	var ex *clickhouse.Exception
	if errors.As(err, &ex) {
		if name, ok := authCodes[ex.Code]; ok {
			password := envPassword
			if de.cfg.PasswordFile != "" {
				password = envPasswordFile
			}
			return &AuthError{Dependency: "clickhouse",
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
