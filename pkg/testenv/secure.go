package testenv

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/sluicehq/sluice/pkg/clickhousex"
	"github.com/sluicehq/sluice/pkg/kafkax"
	"github.com/sluicehq/sluice/pkg/tlsconf"
)

// Secure is the dev stack's secured doors to the same broker and server
// (dev/up.sh, dev/certs.sh): a SASL_SSL listener (PLAIN, SCRAM-SHA-256,
// SCRAM-SHA-512, OAUTHBEARER), an SSL listener that requires a client
// certificate, and ClickHouse's native protocol over TLS with a password
// user. It is one broker: topics a test made through NewKafka are reachable
// through these listeners too.
type Secure struct {
	// SASLBrokers is the SASL_SSL listener, MTLSBrokers the SSL one.
	SASLBrokers, MTLSBrokers string
	// CAFile signed every listener's certificate; OtherCAFile is an
	// unrelated CA, to see a certificate refused.
	CAFile, OtherCAFile string
	// CertFile and KeyFile are a client certificate the SSL listener takes.
	CertFile, KeyFile string
	// The SCRAM user (both SHA-256 and SHA-512) and the PLAIN user.
	ScramUser, ScramPasswordFile string
	PlainUser, PlainPasswordFile string
	// ClickHouseAddr is the secure native port; ClickHouseUser has the
	// password in ClickHousePasswordFile.
	ClickHouseAddr, ClickHouseUser, ClickHousePasswordFile string
}

var (
	scramOnce sync.Once
	scramErr  error
)

// SecureStack returns the secured doors of the running dev stack. The SCRAM
// user is made at format time; a dev state formatted before that existed
// has none, so it is added here (over the PLAINTEXT listener, once per test
// process, and only when missing: re-salting a password under another
// process's handshake would fail that handshake).
func SecureStack(t testing.TB) Secure {
	t.Helper()
	s := requireStack(t)
	v := s.vars
	sec := Secure{
		SASLBrokers: v["KAFKA_SASL_BROKERS"], MTLSBrokers: v["KAFKA_MTLS_BROKERS"],
		CAFile: filepath.Join(v["DEV_TLS_DIR"], "ca.pem"), OtherCAFile: filepath.Join(v["DEV_TLS_DIR"], "other-ca.pem"),
		CertFile: filepath.Join(v["DEV_TLS_DIR"], "client.pem"), KeyFile: filepath.Join(v["DEV_TLS_DIR"], "client.key"),
		ScramUser: v["KAFKA_SCRAM_USER"], ScramPasswordFile: v["KAFKA_SCRAM_PASSWORD_FILE"],
		PlainUser: v["KAFKA_PLAIN_USER"], PlainPasswordFile: v["KAFKA_PLAIN_PASSWORD_FILE"],
		ClickHouseAddr: v["CLICKHOUSE_SECURE_ADDR"], ClickHouseUser: v["CLICKHOUSE_TLS_USER"],
		ClickHousePasswordFile: v["CLICKHOUSE_TLS_PASSWORD_FILE"],
	}
	for _, addr := range []string{sec.SASLBrokers, sec.MTLSBrokers, sec.ClickHouseAddr} {
		if addr == "" || !reachable(addr) {
			t.Fatalf("testenv: the dev stack has no secured listener at %q: it was started before they existed; "+
				"restart it (dev/down.sh, then dev/up.sh)", addr)
		}
	}
	scramOnce.Do(func() { scramErr = ensureScramUser(sec) })
	if scramErr != nil {
		t.Fatalf("testenv: %v", scramErr)
	}
	return sec
}

func ensureScramUser(sec Secure) error {
	adm, err := kafkax.NewAdmin(kafkax.Config{Brokers: []string{stack.brokers}, ClientID: "testenv"})
	if err != nil {
		return err
	}
	defer adm.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	have, err := scramMechanisms(ctx, adm, sec.ScramUser)
	if err != nil {
		return err
	}
	if have[kadm.ScramSha256] && have[kadm.ScramSha512] {
		return nil
	}
	b, err := os.ReadFile(sec.ScramPasswordFile)
	if err != nil {
		return fmt.Errorf("reading the SCRAM password: %w", err)
	}
	password := strings.TrimSpace(string(b))
	for _, m := range []kadm.ScramMechanism{kadm.ScramSha256, kadm.ScramSha512} {
		if have[m] {
			continue
		}
		// One request per mechanism: a broker refuses two alterations of
		// one user in a request (DUPLICATE_RESOURCE).
		altered, err := adm.AlterUserSCRAMs(ctx, nil, []kadm.UpsertSCRAM{
			{User: sec.ScramUser, Mechanism: m, Iterations: 4096, Password: password}})
		if err == nil {
			err = altered.Error()
		}
		if err != nil {
			return fmt.Errorf("adding SCRAM user %s (%s): %w", sec.ScramUser, m, err)
		}
	}
	// The broker answers Describe from the metadata it has applied, which
	// is also what it authenticates against: once both show, a handshake
	// finds them.
	for {
		have, err := scramMechanisms(ctx, adm, sec.ScramUser)
		if err != nil {
			return err
		}
		if have[kadm.ScramSha256] && have[kadm.ScramSha512] {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("SCRAM user %s added but not visible to the broker: %w", sec.ScramUser, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func scramMechanisms(ctx context.Context, adm *kadm.Client, user string) (map[kadm.ScramMechanism]bool, error) {
	described, err := adm.DescribeUserSCRAMs(ctx, user)
	if err != nil {
		return nil, fmt.Errorf("describing SCRAM user %s: %w", user, err)
	}
	have := map[kadm.ScramMechanism]bool{}
	for _, ci := range described[user].CredInfos {
		have[ci.Mechanism] = true
	}
	return have, nil
}

// TLS is TLS trusting the dev CA.
func (s Secure) TLS() tlsconf.Config { return tlsconf.Config{Enabled: true, CAFile: s.CAFile} }

// SASL returns a client configuration reaching the broker through the
// SASL_SSL listener with mechanism (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512
// with the dev users; OAUTHBEARER with a fresh token, see OAuthTokenFile).
func (s Secure) SASL(t testing.TB, mechanism string) kafkax.Config {
	t.Helper()
	cfg := kafkax.Config{Brokers: []string{s.SASLBrokers}, ClientID: "testenv", TLS: s.TLS()}
	switch mechanism {
	case kafkax.MechanismPlain:
		cfg.SASL = kafkax.SASL{Mechanism: mechanism, Username: s.PlainUser, PasswordFile: s.PlainPasswordFile}
	case kafkax.MechanismScramSHA256, kafkax.MechanismScramSHA512:
		cfg.SASL = kafkax.SASL{Mechanism: mechanism, Username: s.ScramUser, PasswordFile: s.ScramPasswordFile}
	case kafkax.MechanismOAuthBearer:
		cfg.SASL = kafkax.SASL{Mechanism: mechanism, OAuthTokenFile: OAuthTokenFile(t, "sluice-test", time.Hour)}
	default:
		t.Fatalf("testenv: the dev stack's SASL listener has no %s", mechanism)
	}
	return cfg
}

// MTLS returns a client configuration reaching the broker through the SSL
// listener with the dev client certificate.
func (s Secure) MTLS() kafkax.Config {
	tc := s.TLS()
	tc.CertFile, tc.KeyFile = s.CertFile, s.KeyFile
	return kafkax.Config{Brokers: []string{s.MTLSBrokers}, ClientID: "testenv", TLS: tc}
}

// ClickHouse returns ch's configuration (same database) over the secure
// port, as the password user.
func (s Secure) ClickHouse(ch *ClickHouse) clickhousex.Config {
	cfg := ch.Config
	cfg.Addrs = []string{s.ClickHouseAddr}
	cfg.Username, cfg.Password, cfg.PasswordFile = s.ClickHouseUser, "", s.ClickHousePasswordFile
	cfg.TLS = s.TLS()
	return cfg
}

// OAuthTokenFile writes an unsigned JWT for subject, valid for ttl, to a
// file of the test's and returns its path: the dev broker's unsecured
// validator takes any such token with a subject and a future expiry.
func OAuthTokenFile(t testing.TB, subject string, ttl time.Duration) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(path, []byte(UnsignedJWT(subject, ttl)), 0o600); err != nil {
		t.Fatalf("testenv: writing the token: %v", err)
	}
	return path
}

// UnsignedJWT is an "alg":"none" token with sub, iat and exp claims.
func UnsignedJWT(subject string, ttl time.Duration) string {
	enc := base64.RawURLEncoding
	now := time.Now()
	claims, _ := json.Marshal(map[string]any{"sub": subject, "iat": now.Unix(), "exp": now.Add(ttl).Unix()})
	return enc.EncodeToString([]byte(`{"alg":"none"}`)) + "." + enc.EncodeToString(claims) + "."
}
