package kafkax

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/sluicehq/sluice/pkg/tlsconf"
)

// Fatal returns err as an *AuthError when it is a refusal that waiting
// will not cure, and nil when it is not (a broker that is down, restarting
// or slow, which services wait for: DESIGN §10):
//
//   - the broker refused our SASL credentials (SASL_AUTHENTICATION_FAILED,
//     or its verdict in the exchange itself, as OAUTHBEARER gives it);
//   - the broker does not offer the mechanism configured;
//   - the TLS handshake failed on a certificate (not signed by a trusted
//     authority, not valid for the name, expired), on the broker refusing
//     ours, or on a port that does not speak TLS.
//
// A connection the broker closes without a word is not among them: a
// broker shutting down does the same, and franz-go's own error then asks
// whether SASL or TLS is missing.
func Fatal(err error) error {
	if err == nil {
		return nil
	}
	var ae *AuthError
	if errors.As(err, &ae) {
		return ae
	}
	var de *dialError
	if errors.As(err, &de) {
		if r, ok := de.tls.Diagnose(de.err, de.addr); ok {
			return &AuthError{Dependency: "kafka", What: "TLS: " + r.Reason, Check: r.Check, Err: err}
		}
	}
	switch {
	case errors.Is(err, kerr.SaslAuthenticationFailed):
		a := lastAuth.Load()
		if a == nil {
			a = &authAttempt{mechanism: "", addr: "the broker"}
		}
		return authRefused(a, err, brokerMessage(err, kerr.SaslAuthenticationFailed))
	case errors.Is(err, kerr.UnsupportedSaslMechanism):
		what := "the broker does not offer the SASL mechanism configured"
		if a := lastAuth.Load(); a != nil {
			what = "SASL mechanism " + a.mechanism + " is not enabled on " + a.addr
		}
		return &AuthError{Dependency: "kafka", What: what, Check: []string{envMechanism}, Err: err}
	}
	return nil
}

// dialError is a failed dial to addr; its text is the cause's alone, so
// franz-go's messages and retry decisions (which unwrap it) are unchanged.
type dialError struct {
	addr string
	tls  tlsconf.Config
	err  error
}

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// dialTimeout is franz-go's default: a TCP connect plus a TLS handshake to
// a broker answering at all take far less.
const dialTimeout = 10 * time.Second

// tlsDialer dials brokers over TLS like kgo.DialTLSConfig (the server name
// defaults to the host dialled), and keeps the address with a failed
// dial's error so Fatal can say which broker's certificate was refused.
func tlsDialer(settings tlsconf.Config, tc *tls.Config) func(ctx context.Context, network, host string) (net.Conn, error) {
	nd := &net.Dialer{Timeout: dialTimeout}
	return func(ctx context.Context, network, host string) (net.Conn, error) {
		c := tc.Clone()
		if c.ServerName == "" {
			server, _, err := net.SplitHostPort(host)
			if err != nil {
				return nil, &dialError{addr: host, tls: settings, err: err}
			}
			c.ServerName = server
		}
		conn, err := (&tls.Dialer{NetDialer: nd, Config: c}).DialContext(ctx, network, host)
		if err != nil {
			return nil, &dialError{addr: host, tls: settings, err: err}
		}
		return &alertConn{Conn: conn, addr: host, tls: settings}, nil
	}
}

// alertConn keeps the address with a TLS alert the broker sends after the
// handshake: under TLS 1.3 the client's side of the handshake is over
// before the broker has checked our certificate, so its refusal arrives
// with the first read. Other read errors pass unchanged (franz-go compares
// some with ==).
type alertConn struct {
	net.Conn
	addr string
	tls  tlsconf.Config
}

func (c *alertConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "remote error" {
			err = &dialError{addr: c.addr, tls: c.tls, err: err}
		}
	}
	return n, err
}
