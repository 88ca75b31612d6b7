// Package tlsconf builds the TLS client side of Sluice's connections to
// Kafka and ClickHouse from files, as Kubernetes mounts Secrets: one Config,
// registered under each connection's prefix (SLUICE_KAFKA_TLS_*,
// SLUICE_CLICKHOUSE_TLS_*), validated at start, and turned into a
// *tls.Config that re-reads the client certificate at each handshake, so a
// certificate cert-manager renews in the mounted Secret is used by the next
// connection without a restart. It also names what a failed handshake
// means, so a wrong CA or server name fails fast with the setting to check.
package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"

	"github.com/sluicehq/sluice/pkg/config"
)

// Config is one connection's TLS settings.
type Config struct {
	// Enabled turns TLS on; without it the other settings must be empty.
	Enabled bool
	// CAFile is a PEM bundle of the authorities to trust instead of the
	// system roots (a private CA, Strimzi's cluster CA).
	CAFile string
	// CertFile and KeyFile are a PEM client certificate and its key for
	// mutual TLS; both or neither.
	CertFile, KeyFile string
	// ServerName is the name to verify the server's certificate against
	// instead of the host dialled (a broker reached through a tunnel or an
	// address the certificate does not list).
	ServerName string

	// name is the flag prefix the settings were registered under ("kafka"),
	// so errors name the variables a user sets.
	name string
}

// Register binds the settings to flags name-tls, name-tls-ca-file,
// name-tls-cert-file, name-tls-key-file and name-tls-server-name, and so to
// SLUICE_<NAME>_TLS and SLUICE_<NAME>_TLS_* variables.
func (c *Config) Register(l *config.Loader, name, what string) {
	c.name = name
	l.Bool(&c.Enabled, name+"-tls", false, "connect to "+what+" over TLS")
	l.String(&c.CAFile, name+"-tls-ca-file", "",
		"PEM file of the CA certificates to trust for "+what+" instead of the system roots")
	l.String(&c.CertFile, name+"-tls-cert-file", "",
		"PEM client certificate for mutual TLS with "+what+" (with the key file; re-read at each connection)")
	l.String(&c.KeyFile, name+"-tls-key-file", "", "PEM private key of the client certificate")
	l.String(&c.ServerName, name+"-tls-server-name", "",
		"name to verify "+what+"'s certificates against instead of the host dialled")
}

// Var is the environment variable of one of the settings: Var("ca-file")
// is SLUICE_KAFKA_TLS_CA_FILE for a Config registered as "kafka". A Config
// built in code (not registered) names the flag's suffix alone.
func (c Config) Var(setting string) string {
	flag := "tls"
	if setting != "" {
		flag += "-" + setting
	}
	if c.name == "" {
		return flag
	}
	return config.EnvName(c.name + "-" + flag)
}

// Named returns c as registered under name, for a Config built in code
// whose errors should still name the variables.
func (c Config) Named(name string) Config { c.name = name; return c }

// Validate checks that the files named exist and parse, that certificate
// and key come together, and that no file is given with TLS off (a
// forgotten SLUICE_*_TLS=true would otherwise send credentials in clear).
func (c Config) Validate() error {
	if !c.Enabled {
		for _, s := range []struct{ v, setting string }{
			{c.CAFile, "ca-file"}, {c.CertFile, "cert-file"}, {c.KeyFile, "key-file"}, {c.ServerName, "server-name"},
		} {
			if s.v != "" {
				return fmt.Errorf("%s is set but %s is false: turn TLS on or leave it empty", c.Var(s.setting), c.Var(""))
			}
		}
		return nil
	}
	if c.CAFile != "" {
		if _, err := loadCA(c.CAFile); err != nil {
			return fmt.Errorf("%s: %w", c.Var("ca-file"), err)
		}
	}
	switch {
	case c.CertFile != "" && c.KeyFile == "":
		return fmt.Errorf("%s is set without %s: a client certificate needs its key", c.Var("cert-file"), c.Var("key-file"))
	case c.CertFile == "" && c.KeyFile != "":
		return fmt.Errorf("%s is set without %s: a key needs its client certificate", c.Var("key-file"), c.Var("cert-file"))
	case c.CertFile != "":
		if _, err := loadPair(c.CertFile, c.KeyFile); err != nil {
			return fmt.Errorf("%s and %s: %w", c.Var("cert-file"), c.Var("key-file"), err)
		}
	}
	return nil
}

// Build returns the client TLS configuration, or nil when TLS is off. TLS
// 1.2 is the floor: every managed Kafka and ClickHouse offers it, and
// older versions have known weaknesses. The client certificate is read
// from its files at each handshake (GetClientCertificate): connections are
// few and long-lived, so reading two small files per connection costs
// nothing, and a renewed certificate takes effect without a restart.
func (c Config) Build() (*tls.Config, error) {
	if !c.Enabled {
		return nil, nil
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.ServerName}
	if c.CAFile != "" {
		pool, err := loadCA(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.Var("ca-file"), err)
		}
		tc.RootCAs = pool
	}
	if c.CertFile != "" {
		certFile, keyFile := c.CertFile, c.KeyFile
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return loadPair(certFile, keyFile)
		}
	}
	return tc, nil
}

// loadCA reads a PEM bundle holding at least one certificate.
func loadCA(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}

func loadPair(certFile, keyFile string) (*tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("loading the client certificate %s and key %s: %w", certFile, keyFile, err)
	}
	return &cert, nil
}

// Refusal explains a failed TLS handshake that retrying will not cure: the
// server is reachable, but its certificate is not one we trust for the
// address, it refused ours, or it does not speak TLS at all. Reason names
// the cause with addr; Check lists the settings to look at.
type Refusal struct {
	Reason string
	Check  []string
}

// Diagnose reports whether err, from a handshake with addr, is a lasting
// refusal, and why. Network failures (refused, reset, timed out) are not:
// they are a server that is down or restarting, and waited for.
func (c Config) Diagnose(err error, addr string) (Refusal, bool) {
	var (
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		verify   *tls.CertificateVerificationError
		record   tls.RecordHeaderError
		remote   *net.OpError
	)
	switch {
	case errors.As(err, &unknown):
		return Refusal{fmt.Sprintf("certificate of %s is not signed by a trusted authority (%v)", addr, unknown),
			[]string{c.Var("ca-file")}}, true
	case errors.As(err, &hostname):
		name := c.ServerName
		if name == "" {
			name, _, _ = net.SplitHostPort(addr)
		}
		return Refusal{fmt.Sprintf("certificate of %s is not valid for the name %q (%v)", addr, name, hostname),
			[]string{c.Var("server-name")}}, true
	case errors.As(err, &invalid):
		return Refusal{fmt.Sprintf("certificate of %s is not usable (%v)", addr, invalid), []string{c.Var("ca-file")}}, true
	case errors.As(err, &verify):
		return Refusal{fmt.Sprintf("certificate of %s does not verify (%v)", addr, verify), []string{c.Var("ca-file")}}, true
	case errors.As(err, &record):
		return Refusal{fmt.Sprintf("%s does not speak TLS (%v): is it a plaintext port?", addr, record),
			[]string{c.Var(""), "the address"}}, true
	case errors.As(err, &remote) && remote.Op == "remote error":
		// The server sent an alert: with mutual TLS this is nearly always
		// our certificate (missing, from an unknown CA, expired). Under TLS
		// 1.3 it arrives with the first read after the handshake.
		return Refusal{fmt.Sprintf("%s refused the handshake (%v)", addr, remote.Err),
			[]string{c.Var("cert-file"), c.Var("key-file")}}, true
	}
	return Refusal{}, false
}

// AuthError is a connection that its server (Kafka, ClickHouse) refused
// and that waiting will not cure: credentials it does not accept, a
// certificate we do not trust, a mechanism it does not offer, a port that
// does not speak TLS. Services exit on it at start with its message, which
// names the cause and the settings to check. kafkax and clickhousex each
// classify their client's errors into it (their Fatal).
type AuthError struct {
	// Dependency is "kafka" or "clickhouse".
	Dependency string
	// What names the cause: `SASL SCRAM-SHA-512 authentication as "sluice"
	// refused by 127.0.0.1:19094`, `TLS: certificate of … is not signed by
	// a trusted authority (…)`.
	What string
	// Check lists the settings to look at.
	Check []string
	Err   error
}

func (e *AuthError) Error() string {
	msg := e.Dependency + ": " + e.What
	if h := Hint(e.Check...); h != "" {
		msg += ": " + h
	}
	return msg
}

func (e *AuthError) Unwrap() error { return e.Err }

// Hint is "check A and B" for the settings of a refusal.
func Hint(settings ...string) string {
	switch len(settings) {
	case 0:
		return ""
	case 1:
		return "check " + settings[0]
	}
	return "check " + strings.Join(settings[:len(settings)-1], ", ") + " and " + settings[len(settings)-1]
}

// ReadSecretFile reads a password or token file, without the line ending
// an editor or `echo` leaves. limit bounds what is read, so a mistaken
// path (a log file) is refused instead of read whole at every connection.
// An empty file is an error: an empty password would only be refused
// later, with less said.
func ReadSecretFile(path string, limit int) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, int64(limit)+1))
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	if len(b) > limit {
		return "", fmt.Errorf("%s is larger than %d bytes: is it the right file?", path, limit)
	}
	v := strings.TrimRight(string(b), "\r\n")
	if v == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return v, nil
}
