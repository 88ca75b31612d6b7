// Package clickhousex opens ClickHouse connections the same way everywhere
// Sluice talks to ClickHouse (the logwriter inserts, the ingest API queries).
package clickhousex

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/tlsconf"
)

// Config says how to reach ClickHouse.
type Config struct {
	// Addrs are native-protocol endpoints, host:port.
	Addrs    []string
	Database string
	Username string
	Password string
	// PasswordFile holds the password instead of Password (a mounted
	// Secret); it is read when the connection pool is opened.
	PasswordFile string
	// DialTimeout bounds connecting; queries carry their own contexts.
	DialTimeout time.Duration
	// TLS encrypts the connections (the native secure port, 9440 usually).
	TLS tlsconf.Config
}

// Register binds the settings to flags and SLUICE_CLICKHOUSE_* variables.
func (c *Config) Register(l *config.Loader) {
	l.StringList(&c.Addrs, "clickhouse-addrs", []string{"127.0.0.1:19000"},
		"ClickHouse native-protocol addresses, comma-separated host:port (the default is the dev stack's)")
	l.String(&c.Database, "clickhouse-database", "sluice", "ClickHouse database holding the delivery log")
	l.String(&c.Username, "clickhouse-username", "default", "ClickHouse user")
	l.String(&c.Password, "clickhouse-password", "", "ClickHouse password (prefer the password file)")
	l.String(&c.PasswordFile, "clickhouse-password-file", "",
		"file holding the ClickHouse password, read at start (instead of the password setting)")
	l.Duration(&c.DialTimeout, "clickhouse-dial-timeout", 5*time.Second, "how long connecting to ClickHouse may take")
	c.TLS.Register(l, "clickhouse", "ClickHouse")
}

// tls is the TLS settings under their variables' names, also when the
// Config was built in code rather than registered.
func (c Config) tls() tlsconf.Config { return c.TLS.Named("clickhouse") }

var (
	envUsername     = config.EnvName("clickhouse-username")
	envPassword     = config.EnvName("clickhouse-password")
	envPasswordFile = config.EnvName("clickhouse-password-file")
)

// identifier is what a database name may be: it is written into DDL, which
// cannot take bound parameters.
var identifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}$`)

// Validate checks the settings.
func (c Config) Validate() error {
	if len(c.Addrs) == 0 {
		return errors.New("clickhouse: no addresses configured")
	}
	if !identifier.MatchString(c.Database) {
		return fmt.Errorf("clickhouse: database name %q must be letters, digits and underscores", c.Database)
	}
	if c.DialTimeout <= 0 {
		return fmt.Errorf("clickhouse: dial timeout must be positive, got %v", c.DialTimeout)
	}
	if c.Password != "" && c.PasswordFile != "" {
		return fmt.Errorf("clickhouse: %s and %s are both set: use one", envPassword, envPasswordFile)
	}
	if c.PasswordFile != "" {
		if _, err := readPassword(c.PasswordFile); err != nil {
			return fmt.Errorf("clickhouse: %s: %w", envPasswordFile, err)
		}
	}
	if err := c.tls().Validate(); err != nil {
		return fmt.Errorf("clickhouse: %w", err)
	}
	return nil
}

// passwordLimit bounds the password file: a password is tens of bytes, and
// a mistaken path (a log file) must not be read whole.
const passwordLimit = 4 << 10

// readPassword reads the password file (tlsconf.ReadSecretFile).
func readPassword(path string) (string, error) { return tlsconf.ReadSecretFile(path, passwordLimit) }

// Open connects without selecting the database (the logwriter may have to
// create it first) and checks the server answers.
func Open(ctx context.Context, c Config) (driver.Conn, error) {
	conn, err := OpenLazy(c)
	if err != nil {
		return nil, err
	}
	if err := conn.Ping(ctx); err != nil {
		conn.Close()
		if f := Fatal(err); f != nil {
			return nil, f
		}
		return nil, fmt.Errorf("pinging clickhouse %v: %w", c.Addrs, err)
	}
	return conn, nil
}

// OpenLazy is Open without the check: connections are made when a query
// needs one, so a service whose ClickHouse is down can start and answer
// what does not need it.
func OpenLazy(c Config) (driver.Conn, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	password := c.Password
	if c.PasswordFile != "" {
		p, err := readPassword(c.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("clickhouse: %s: %w", envPasswordFile, err)
		}
		password = p
	}
	tc, err := c.tls().Build()
	if err != nil {
		return nil, fmt.Errorf("clickhouse: %w", err)
	}
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr: c.Addrs,
		Auth: clickhouse.Auth{Username: c.Username, Password: password},
		TLS:  tc,
		// The default strategy, with the address kept beside a failed
		// connection's error so Fatal can say which server refused us.
		DialStrategy: func(ctx context.Context, id int, opt *clickhouse.Options, dial clickhouse.Dial) (clickhouse.DialResult, error) {
			return clickhouse.DefaultDialStrategy(ctx, id, opt, func(ctx context.Context, addr string, opt *clickhouse.Options) (clickhouse.DialResult, error) {
				r, err := dial(ctx, addr, opt)
				if err != nil {
					err = &dialError{addr: addr, cfg: c, err: err}
				}
				return r, err
			})
		},
		// Sluice's queries are short; a small pool per process is enough and
		// keeps the server's connection count predictable across replicas.
		MaxOpenConns: 8,
		MaxIdleConns: 4,
		DialTimeout:  c.DialTimeout,
		Compression:  &clickhouse.Compression{Method: clickhouse.CompressionLZ4},
	})
	if err != nil {
		return nil, fmt.Errorf("opening clickhouse %v: %w", c.Addrs, err)
	}
	return conn, nil
}

// ValidIdentifier reports whether s can be used as a database or table name.
func ValidIdentifier(s string) bool { return identifier.MatchString(s) }
