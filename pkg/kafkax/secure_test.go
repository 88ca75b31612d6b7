package kafkax_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/pkg/health"
	"github.com/sluicehq/sluice/pkg/kafkax"
	"github.com/sluicehq/sluice/pkg/service"
	"github.com/sluicehq/sluice/pkg/testenv"
)

// roundTrip produces n records to topic through cfg and reads them back
// through cfg in a group: the listener cfg reaches carries both ways.
func roundTrip(t *testing.T, cfg kafkax.Config, topic string, n int) {
	t.Helper()
	ctx := ctxT(t, 60*time.Second)
	p, err := kafkax.NewProducer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	want := map[string]bool{}
	for i := range n {
		v := fmt.Sprintf("%s-%d", t.Name(), i)
		want[v] = true
		if err := p.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte(v)}).FirstErr(); err != nil {
			t.Fatalf("producing over %s (%s): %v", cfg.Brokers[0], cfg.SASL.Mechanism, err)
		}
	}
	c, err := kafkax.NewConsumer(cfg, "g-"+strings.ReplaceAll(t.Name(), "/", "-"), []string{topic},
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for len(want) > 0 {
		fs := c.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consuming over %s: %d records still missing: %v", cfg.Brokers[0], len(want), err)
		}
		fs.EachError(func(_ string, _ int32, err error) { t.Fatalf("fetching over %s: %v", cfg.Brokers[0], err) })
		fs.EachRecord(func(r *kgo.Record) { delete(want, string(r.Value)) })
		c.AllowRebalance() // the consumer blocks rebalances while it holds a poll
	}
}

func TestSecureListenersCarryRecords(t *testing.T) {
	k := testenv.NewKafka(t)
	sec := testenv.SecureStack(t)
	for _, m := range []string{kafkax.MechanismScramSHA256, kafkax.MechanismScramSHA512, kafkax.MechanismPlain, kafkax.MechanismOAuthBearer} {
		t.Run(m, func(t *testing.T) { roundTrip(t, sec.SASL(t, m), k.Names.Events, 5) })
	}
	t.Run("mTLS", func(t *testing.T) { roundTrip(t, sec.MTLS(), k.Names.Events, 5) })
}

// refused checks that try's error is a refusal: kafkax.Fatal recognises
// it, its message holds every part of want, and service.Await returns it
// at once instead of waiting.
func refused(t *testing.T, cfg kafkax.Config, want ...string) {
	t.Helper()
	ctx := ctxT(t, 60*time.Second)
	began := time.Now()
	err := service.Await(ctx, testStage(), testLog(), "kafka", func(ctx context.Context) error {
		adm, err := kafkax.NewAdmin(cfg)
		if err != nil {
			return err
		}
		defer adm.Close()
		_, err = adm.ListTopics(ctx)
		return err
	})
	took := time.Since(began)
	var ae *kafkax.AuthError
	if !errors.As(err, &ae) {
		t.Fatalf("Await = %v (after %v), want a *kafkax.AuthError", err, took)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("refusal %q does not say %q", err, w)
		}
	}
	// Await's first retry comes after 100 ms and its tenth after about a
	// minute; a refusal must not be retried at all. 15 s is a try and its
	// TLS handshakes on a loaded machine, far below Await's retry horizon.
	if took > 15*time.Second {
		t.Errorf("the refusal took %v: it was waited on", took)
	}
	t.Logf("refused after %v: %v", took, err)
}

func TestWrongPasswordIsRefusedAtOnce(t *testing.T) {
	sec := testenv.SecureStack(t)
	wrong := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(wrong, []byte("not-the-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{kafkax.MechanismScramSHA512, kafkax.MechanismScramSHA256, kafkax.MechanismPlain} {
		t.Run(m, func(t *testing.T) {
			cfg := sec.SASL(t, m)
			cfg.SASL.PasswordFile = wrong
			refused(t, cfg, "kafka: SASL "+m+" authentication as \""+cfg.SASL.Username+"\" refused by "+sec.SASLBrokers,
				"check SLUICE_KAFKA_SASL_USERNAME and SLUICE_KAFKA_SASL_PASSWORD_FILE")
		})
	}
	t.Run("OAUTHBEARER expired token", func(t *testing.T) {
		cfg := sec.SASL(t, kafkax.MechanismOAuthBearer)
		cfg.SASL.OAuthTokenFile = testenv.OAuthTokenFile(t, "sluice-test", -time.Hour)
		refused(t, cfg, "kafka: SASL OAUTHBEARER authentication refused by "+sec.SASLBrokers+" (the broker said {\"status\":\"invalid_token\"", "SLUICE_KAFKA_SASL_OAUTH_TOKEN_FILE")
	})
}

func TestUntrustedCertificateIsRefusedAtOnce(t *testing.T) {
	sec := testenv.SecureStack(t)
	t.Run("unknown authority", func(t *testing.T) {
		cfg := sec.SASL(t, kafkax.MechanismScramSHA512)
		cfg.TLS.CAFile = sec.OtherCAFile
		refused(t, cfg, "kafka: TLS: certificate of "+sec.SASLBrokers+" is not signed by a trusted authority (x509: ",
			"check SLUICE_KAFKA_TLS_CA_FILE")
	})
	t.Run("wrong server name", func(t *testing.T) {
		cfg := sec.SASL(t, kafkax.MechanismScramSHA512)
		cfg.TLS.ServerName = "kafka.example.com"
		refused(t, cfg, "is not valid for the name \"kafka.example.com\"", "check SLUICE_KAFKA_TLS_SERVER_NAME")
	})
	t.Run("server name override accepted", func(t *testing.T) {
		cfg := sec.SASL(t, kafkax.MechanismScramSHA512)
		cfg.Brokers = []string{strings.Replace(sec.SASLBrokers, "127.0.0.1", "localhost", 1)}
		cfg.TLS.ServerName = "localhost"
		adm, err := kafkax.NewAdmin(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer adm.Close()
		if _, err := adm.ListTopics(ctxT(t, 30*time.Second)); err != nil {
			t.Fatalf("with the server name the certificate lists: %v", err)
		}
	})
	t.Run("mTLS without a client certificate", func(t *testing.T) {
		cfg := sec.MTLS()
		cfg.TLS.CertFile, cfg.TLS.KeyFile = "", ""
		refused(t, cfg, "kafka: TLS: ", "refused the handshake", "check SLUICE_KAFKA_TLS_CERT_FILE and SLUICE_KAFKA_TLS_KEY_FILE", sec.MTLSBrokers+" refused the handshake")
	})
}

// TestUnreachableBrokerIsWaitedFor: a broker that does not answer at all is
// a dependency that is down, not a refusal: Await keeps trying.
func TestUnreachableBrokerIsWaitedFor(t *testing.T) {
	sec := testenv.SecureStack(t)
	cfg := sec.SASL(t, kafkax.MechanismScramSHA512)
	cfg.Brokers = []string{"127.0.0.1:1"} // nothing listens on port 1
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	tries := 0
	err := service.Await(ctx, testStage(), testLog(), "kafka", func(ctx context.Context) error {
		tries++
		adm, err := kafkax.NewAdmin(cfg)
		if err != nil {
			return err
		}
		defer adm.Close()
		_, err = adm.ListTopics(ctx)
		if f := kafkax.Fatal(err); f != nil {
			t.Errorf("connection refused classified as a refusal: %v", f)
		}
		return err
	})
	if !errors.Is(err, context.DeadlineExceeded) || tries < 2 {
		t.Fatalf("Await = %v after %d tries, want it still waiting (several tries) when its context ended", err, tries)
	}
}

func testStage() *health.Stage { return health.NewRegistry(time.Minute, nil).Stage("kafka") }

func testLog() *slog.Logger { return slog.New(slog.DiscardHandler) }
