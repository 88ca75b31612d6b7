package kafkax_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/kafkax"
)

// loaded is a Config as a service loads it from env.
func loaded(t *testing.T, env map[string]string) kafkax.Config {
	t.Helper()
	var c kafkax.Config
	l := config.NewLoader("test", func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	c.Register(l, "test")
	if err := l.Parse(nil); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSecurityValidate(t *testing.T) {
	dir := t.TempDir()
	password := filepath.Join(dir, "password")
	empty := filepath.Join(dir, "empty")
	for path, body := range map[string]string{password: "secret\n", empty: "\n"} {
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	sasl := func(kv ...string) map[string]string {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	for _, tc := range []struct {
		desc string
		env  map[string]string
		want string // "" means valid
	}{
		{"no SASL", nil, ""},
		{"none spelt out", sasl("SLUICE_KAFKA_SASL_MECHANISM", "none"), ""},
		{"SCRAM", sasl("SLUICE_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512", "SLUICE_KAFKA_SASL_USERNAME", "sluice",
			"SLUICE_KAFKA_SASL_PASSWORD_FILE", password), ""},
		{"lower-case mechanism", sasl("SLUICE_KAFKA_SASL_MECHANISM", "scram-sha-256", "SLUICE_KAFKA_SASL_USERNAME", "sluice",
			"SLUICE_KAFKA_SASL_PASSWORD_FILE", password), ""},
		{"OAUTHBEARER with extensions", sasl("SLUICE_KAFKA_SASL_MECHANISM", "OAUTHBEARER", "SLUICE_KAFKA_SASL_OAUTH_TOKEN_FILE", password,
			"SLUICE_KAFKA_SASL_OAUTH_EXTENSIONS", "logicalCluster=lkc-abc, identityPoolId=pool-x"), ""},
		{"AWS over TLS", sasl("SLUICE_KAFKA_SASL_MECHANISM", "AWS_MSK_IAM", "SLUICE_KAFKA_TLS", "true"), ""},
		{"unknown mechanism", sasl("SLUICE_KAFKA_SASL_MECHANISM", "GSSAPI"),
			`SLUICE_KAFKA_SASL_MECHANISM="GSSAPI" is not a mechanism Sluice knows; use one of none, PLAIN, SCRAM-SHA-256`},
		{"SCRAM without user", sasl("SLUICE_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512", "SLUICE_KAFKA_SASL_PASSWORD_FILE", password),
			"SASL SCRAM-SHA-512 needs a user: set SLUICE_KAFKA_SASL_USERNAME"},
		{"PLAIN without password", sasl("SLUICE_KAFKA_SASL_MECHANISM", "PLAIN", "SLUICE_KAFKA_SASL_USERNAME", "sluice"),
			"SASL PLAIN needs a password: set SLUICE_KAFKA_SASL_PASSWORD_FILE"},
		{"password file missing", sasl("SLUICE_KAFKA_SASL_MECHANISM", "PLAIN", "SLUICE_KAFKA_SASL_USERNAME", "sluice",
			"SLUICE_KAFKA_SASL_PASSWORD_FILE", "/nonexistent/password"), "SLUICE_KAFKA_SASL_PASSWORD_FILE: reading /nonexistent/password"},
		{"password file empty", sasl("SLUICE_KAFKA_SASL_MECHANISM", "PLAIN", "SLUICE_KAFKA_SASL_USERNAME", "sluice",
			"SLUICE_KAFKA_SASL_PASSWORD_FILE", empty), "is empty"},
		{"OAUTHBEARER without token", sasl("SLUICE_KAFKA_SASL_MECHANISM", "OAUTHBEARER"),
			"SASL OAUTHBEARER needs a token: set SLUICE_KAFKA_SASL_OAUTH_TOKEN_FILE"},
		{"bad extension", sasl("SLUICE_KAFKA_SASL_MECHANISM", "OAUTHBEARER", "SLUICE_KAFKA_SASL_OAUTH_TOKEN_FILE", password,
			"SLUICE_KAFKA_SASL_OAUTH_EXTENSIONS", "auth=x"), "SLUICE_KAFKA_SASL_OAUTH_EXTENSIONS"},
		{"AWS without TLS", sasl("SLUICE_KAFKA_SASL_MECHANISM", "AWS_MSK_IAM"), "AWS_MSK_IAM needs TLS: set SLUICE_KAFKA_TLS=true"},
		{"credentials without mechanism", sasl("SLUICE_KAFKA_SASL_USERNAME", "sluice"),
			"SLUICE_KAFKA_SASL_USERNAME is set but SLUICE_KAFKA_SASL_MECHANISM is empty"},
		{"token for SCRAM", sasl("SLUICE_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512", "SLUICE_KAFKA_SASL_USERNAME", "sluice",
			"SLUICE_KAFKA_SASL_PASSWORD_FILE", password, "SLUICE_KAFKA_SASL_OAUTH_TOKEN_FILE", password), "are for OAUTHBEARER"},
		{"TLS cert without key", sasl("SLUICE_KAFKA_TLS", "true", "SLUICE_KAFKA_TLS_CERT_FILE", password),
			"kafka: SLUICE_KAFKA_TLS_CERT_FILE is set without SLUICE_KAFKA_TLS_KEY_FILE"},
		{"TLS CA file missing", sasl("SLUICE_KAFKA_TLS", "true", "SLUICE_KAFKA_TLS_CA_FILE", "/nonexistent/ca.pem"),
			"SLUICE_KAFKA_TLS_CA_FILE: reading the CA file"},
		{"TLS CA file not PEM", sasl("SLUICE_KAFKA_TLS", "true", "SLUICE_KAFKA_TLS_CA_FILE", password), "holds no PEM certificate"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			err := loaded(t, tc.env).Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Validate() = %v, want an error saying %q", err, tc.want)
			}
			// Every builder refuses what Validate refuses.
			if tc.want != "" {
				if _, err := kafkax.NewClient(loaded(t, tc.env)); err == nil {
					t.Fatal("NewClient built a client from a configuration Validate refuses")
				}
			}
		})
	}
}
