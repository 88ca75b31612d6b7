package clickhousex_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/clickhousex"
	"github.com/sluicehq/sluice/pkg/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func TestValidatePassword(t *testing.T) {
	file := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(file, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := clickhousex.Config{Addrs: []string{"127.0.0.1:9440"}, Database: "sluice", DialTimeout: time.Second}
	for _, tc := range []struct {
		desc string
		edit func(*clickhousex.Config)
		want string
	}{
		{"password", func(c *clickhousex.Config) { c.Password = "secret" }, ""},
		{"password file", func(c *clickhousex.Config) { c.PasswordFile = file }, ""},
		{"both", func(c *clickhousex.Config) { c.Password, c.PasswordFile = "secret", file },
			"SLUICE_CLICKHOUSE_PASSWORD and SLUICE_CLICKHOUSE_PASSWORD_FILE are both set"},
		{"file missing", func(c *clickhousex.Config) { c.PasswordFile = "/nonexistent/password" },
			"SLUICE_CLICKHOUSE_PASSWORD_FILE: reading /nonexistent/password"},
		{"TLS file with TLS off", func(c *clickhousex.Config) { c.TLS.CAFile = file },
			"SLUICE_CLICKHOUSE_TLS_CA_FILE is set but SLUICE_CLICKHOUSE_TLS is false"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			c := base
			tc.edit(&c)
			err := c.Validate()
			if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("Validate() = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestQueryOverTLS(t *testing.T) {
	ch := testenv.NewClickHouse(t)
	sec := testenv.SecureStack(t)
	cfg := sec.ClickHouse(ch)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := clickhousex.Open(ctx, cfg)
	if err != nil {
		t.Fatalf("opening over TLS as %s: %v", cfg.Username, err)
	}
	defer conn.Close()
	// A table written over TLS is read back over the plain port: the same
	// server, reached through its other door.
	if err := conn.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+cfg.Database); err != nil {
		t.Fatal(err)
	}
	if err := conn.Exec(ctx, "CREATE TABLE "+cfg.Database+".t (n UInt32) ENGINE = Memory"); err != nil {
		t.Fatal(err)
	}
	// A batch insert, as the logwriter writes: compressed blocks over TLS.
	batch, err := conn.PrepareBatch(ctx, "INSERT INTO "+cfg.Database+".t (n)")
	if err != nil {
		t.Fatal(err)
	}
	if err := batch.Append(uint32(7)); err != nil {
		t.Fatal(err)
	}
	if err := batch.Send(); err != nil {
		t.Fatalf("inserting over TLS: %v", err)
	}
	var n uint32
	if err := ch.Conn.QueryRow(ctx, "SELECT n FROM "+cfg.Database+".t").Scan(&n); err != nil || n != 7 {
		t.Fatalf("reading back over the plain port: %d, %v", n, err)
	}
	// 18.16 has no currentUser(); the query sees itself in system.processes.
	var user string
	if err := conn.QueryRow(ctx, "SELECT user FROM system.processes WHERE query LIKE '%sluice-tls-probe%'").Scan(&user); err != nil || user != cfg.Username {
		t.Fatalf("the TLS connection runs as %q (%v), want %s", user, err, cfg.Username)
	}
}

// refused opens cfg and requires a refusal saying every part of want.
func refused(t *testing.T, cfg clickhousex.Config, want ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := clickhousex.Open(ctx, cfg)
	if err == nil {
		conn.Close()
		t.Fatal("opened")
	}
	var ae *clickhousex.AuthError
	if !errors.As(err, &ae) || clickhousex.Fatal(err) == nil {
		t.Fatalf("Open = %v, want a *clickhousex.AuthError", err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("refusal %q does not say %q", err, w)
		}
	}
	t.Log(err)
}

func TestRefusals(t *testing.T) {
	ch := testenv.NewClickHouse(t)
	sec := testenv.SecureStack(t)
	t.Run("wrong password", func(t *testing.T) {
		cfg := sec.ClickHouse(ch)
		cfg.PasswordFile = filepath.Join(t.TempDir(), "password")
		if err := os.WriteFile(cfg.PasswordFile, []byte("wrong"), 0o600); err != nil {
			t.Fatal(err)
		}
		refused(t, cfg, `clickhouse: authentication as "`+cfg.Username+`" refused by `+sec.ClickHouseAddr+" (code 19",
			"check SLUICE_CLICKHOUSE_USERNAME and SLUICE_CLICKHOUSE_PASSWORD_FILE")
	})
	t.Run("untrusted CA", func(t *testing.T) {
		cfg := sec.ClickHouse(ch)
		cfg.TLS.CAFile = sec.OtherCAFile
		refused(t, cfg, "clickhouse: TLS: certificate of "+sec.ClickHouseAddr+" is not signed by a trusted authority (x509: ",
			"check SLUICE_CLICKHOUSE_TLS_CA_FILE")
	})
	t.Run("TLS to the plain port", func(t *testing.T) {
		cfg := sec.ClickHouse(ch)
		cfg.Addrs = ch.Config.Addrs
		refused(t, cfg, ch.Config.Addrs[0]+" does not speak TLS", "SLUICE_CLICKHOUSE_TLS")
	})
	t.Run("server down is no refusal", func(t *testing.T) {
		cfg := sec.ClickHouse(ch)
		cfg.Addrs = []string{"127.0.0.1:1"}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := clickhousex.Open(ctx, cfg)
		if err == nil || clickhousex.Fatal(err) != nil {
			t.Fatalf("Open of a closed port = %v, want an error that is not a refusal", err)
		}
	})
}
