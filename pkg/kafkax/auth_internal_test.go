package kafkax

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// firstMessage authenticates with s's mechanism as far as the client's
// first message, which carries the PLAIN password or the OAUTHBEARER token.
func firstMessage(t *testing.T, s SASL) string {
	t.Helper()
	m, err := s.build()
	if err != nil {
		t.Fatal(err)
	}
	_, first, err := m.Authenticate(context.Background(), "127.0.0.1:9093")
	if err != nil {
		t.Fatalf("Authenticate: %v", err)
	}
	return string(first)
}

func write(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestSecretsAreReadAtEachAuthentication: a password or token rotated in
// its file (a Kubernetes Secret updated in place) is what the next
// authentication sends, without building a new client.
func TestSecretsAreReadAtEachAuthentication(t *testing.T) {
	dir := t.TempDir()
	t.Run("PLAIN", func(t *testing.T) {
		file := filepath.Join(dir, "password")
		write(t, file, "first-password\n")
		s := SASL{Mechanism: "PLAIN", Username: "sluice", PasswordFile: file}
		if got := firstMessage(t, s); got != "\x00sluice\x00first-password" {
			t.Fatalf("first authentication sent %q", got)
		}
		write(t, file, "second-password")
		if got := firstMessage(t, s); got != "\x00sluice\x00second-password" {
			t.Fatalf("after rotation sent %q, want the new password", got)
		}
	})
	t.Run("OAUTHBEARER", func(t *testing.T) {
		file := filepath.Join(dir, "token")
		write(t, file, "token-one")
		s := SASL{Mechanism: "OAUTHBEARER", OAuthTokenFile: file, OAuthExtensions: "logicalCluster=lkc-1,identityPoolId=pool-2"}
		m, err := s.build()
		if err != nil {
			t.Fatal(err)
		}
		auth := func() string {
			_, first, err := m.Authenticate(context.Background(), "127.0.0.1:9093")
			if err != nil {
				t.Fatal(err)
			}
			return string(first)
		}
		if got := auth(); !strings.Contains(got, "auth=Bearer token-one\x01") ||
			!strings.Contains(got, "\x01identityPoolId=pool-2\x01logicalCluster=lkc-1\x01") {
			t.Fatalf("first authentication sent %q, want the token and both extensions", got)
		}
		write(t, file, "token-two\n")
		if got := auth(); !strings.Contains(got, "auth=Bearer token-two\x01") {
			t.Fatalf("after rotation sent %q, want the new token", got)
		}
	})
	t.Run("SCRAM file gone", func(t *testing.T) {
		file := filepath.Join(dir, "scram")
		write(t, file, "x")
		m, err := SASL{Mechanism: "SCRAM-SHA-512", Username: "sluice", PasswordFile: file}.build()
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := m.Authenticate(context.Background(), "127.0.0.1:9093"); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(file); err != nil {
			t.Fatal(err)
		}
		_, _, err = m.Authenticate(context.Background(), "127.0.0.1:9093")
		if err == nil || !strings.Contains(err.Error(), "SLUICE_KAFKA_SASL_PASSWORD_FILE") {
			t.Fatalf("authenticating with the password file gone: %v, want an error naming the setting", err)
		}
	})
}

// TestAWSMechanismUsesTheDefaultChain: AWS_MSK_IAM signs with the
// credentials the SDK's default chain finds, here in the AWS_* variables,
// for the region in the broker's name.
func TestAWSMechanismUsesTheDefaultChain(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDSLUICETEST")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	t.Setenv("AWS_SESSION_TOKEN", "session-token")
	// Nothing else of the chain may answer: no files, no instance metadata.
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	creds, err := loadAWSCredentials(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	m := tracked{Mechanism: awsMechanism(creds)}
	if m.Name() != "AWS_MSK_IAM" {
		t.Fatalf("mechanism %s", m.Name())
	}
	_, first, err := m.Authenticate(context.Background(), "b-1.sluice.abc123.c2.kafka.eu-west-1.amazonaws.com:9098")
	if err != nil {
		t.Fatal(err)
	}
	var msg map[string]string
	if err := json.Unmarshal(first, &msg); err != nil {
		t.Fatalf("first message %q: %v", first, err)
	}
	if cred := msg["x-amz-credential"]; !strings.HasPrefix(cred, "AKIDSLUICETEST/") || !strings.Contains(cred, "/eu-west-1/kafka-cluster/") {
		t.Errorf("x-amz-credential %q, want the access key and the broker's region", cred)
	}
	if msg["x-amz-security-token"] != "session-token" || msg["action"] != "kafka-cluster:Connect" || msg["x-amz-signature"] == "" {
		t.Errorf("signed request %v lacks the session token, the action or a signature", msg)
	}
	if a := lastAuth.Load(); a == nil || a.addr != "b-1.sluice.abc123.c2.kafka.eu-west-1.amazonaws.com:9098" {
		t.Errorf("the authentication was not recorded for naming its broker: %+v", a)
	}
}
