package e2e_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/loadtest/receiver"
	"github.com/sluicehq/sluice/pkg/kafkax"
	"github.com/sluicehq/sluice/pkg/testenv"
	ingest "github.com/sluicehq/sluice/services/ingest/app"
	logwriter "github.com/sluicehq/sluice/services/logwriter/app"
	sender "github.com/sluicehq/sluice/services/sender/app"
)

// saslEnv reaches the test's topics through the dev broker's SASL_SSL
// listener as its SCRAM-SHA-512 user, trusting the dev CA: what a
// deployment against Strimzi or MSK with SCRAM sets.
func saslEnv(sec testenv.Secure) env {
	return env{
		"SLUICE_KAFKA_BROKERS":            sec.SASLBrokers,
		"SLUICE_KAFKA_TLS":                "true",
		"SLUICE_KAFKA_TLS_CA_FILE":        sec.CAFile,
		"SLUICE_KAFKA_SASL_MECHANISM":     kafkax.MechanismScramSHA512,
		"SLUICE_KAFKA_SASL_USERNAME":      sec.ScramUser,
		"SLUICE_KAFKA_SASL_PASSWORD_FILE": sec.ScramPasswordFile,
	}
}

// clickhouseTLSEnv reaches the test's database over ClickHouse's secure
// port as the password user.
func clickhouseTLSEnv(sec testenv.Secure, ch *testenv.ClickHouse) env {
	return env{
		"SLUICE_CLICKHOUSE_ADDRS":         sec.ClickHouseAddr,
		"SLUICE_CLICKHOUSE_DATABASE":      ch.Config.Database,
		"SLUICE_CLICKHOUSE_USERNAME":      sec.ClickHouseUser,
		"SLUICE_CLICKHOUSE_PASSWORD_FILE": sec.ClickHousePasswordFile,
		"SLUICE_CLICKHOUSE_TLS":           "true",
		"SLUICE_CLICKHOUSE_TLS_CA_FILE":   sec.CAFile,
	}
}

// TestSecureConnectionsEndToEnd: ingest, sender and logwriter all on the
// SASL_SSL listener (SCRAM-SHA-512 over TLS), the logwriter on ClickHouse
// over TLS with a password: every event sent through the HTTP API reaches
// the receiver, signed, and every attempt lands in ClickHouse.
func TestSecureConnectionsEndToEnd(t *testing.T) {
	k := testenv.NewKafka(t)
	ch := testenv.NewClickHouse(t)
	sec := testenv.SecureStack(t)
	recv, err := receiver.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { recv.Close() })

	const adminKey = "admin-key-of-the-e2e-secure-test-0123456789"
	apiAddr := freeAddr(t)
	common := commonEnv(k).with(saslEnv(sec))
	start(t, "logwriter", logwriter.LoadConfig, logwriter.Run, common.with(clickhouseTLSEnv(sec, ch)).with(env{
		"SLUICE_GROUP":      k.Prefix + "logwriter",
		"SLUICE_BATCH_WAIT": "200ms",
	}))
	start(t, "sender", sender.LoadConfig, sender.Run, common.with(senderEnv).with(env{"SLUICE_GROUP": k.Prefix + "sender"}))
	start(t, "ingest", ingest.LoadConfig, ingest.Run, common.with(clickhouseTLSEnv(sec, ch)).with(env{
		"SLUICE_API_ADDR":                 apiAddr,
		"SLUICE_ADMIN_KEY":                adminKey,
		"SLUICE_INSECURE_DEV_SECRETS_KEY": "true",
		"SLUICE_ROUTER_GROUP":             k.Prefix + "router",
	}))

	a := &apiClient{t: t, base: "http://" + apiAddr}
	a.waitUp()
	// The API answers before its configuration view has caught up over the
	// secured listener; writes are refused with 503 until it has.
	deadline := time.Now().Add(60 * time.Second)
	status, raw := a.try("POST", "/v1/tenants", adminKey, []byte(`{"name":"secure"}`))
	for ; status == http.StatusServiceUnavailable && time.Now().Before(deadline); status, raw = a.try("POST", "/v1/tenants", adminKey, []byte(`{"name":"secure"}`)) {
		time.Sleep(100 * time.Millisecond)
	}
	var tenant struct{ ID string }
	if status != http.StatusCreated || json.Unmarshal(raw, &tenant) != nil {
		t.Fatalf("POST /v1/tenants: %d %s", status, raw)
	}
	var apiKey struct{ Key string }
	a.call("POST", "/v1/tenants/"+tenant.ID+"/api-keys", adminKey, `{"name":"secure"}`, http.StatusCreated, &apiKey)
	var endpoint struct{ ID, Secret string }
	a.call("POST", "/v1/endpoints", apiKey.Key, `{"url":"`+recv.URL("secure")+`","events":["order.*"]}`,
		http.StatusCreated, &endpoint)
	if err := recv.SetSecret("secure", endpoint.Secret); err != nil {
		t.Fatal(err)
	}

	const n = 100
	var ids []string
	for i := range n {
		var got struct{ ID string }
		a.call("POST", "/v1/events", apiKey.Key, fmt.Sprintf(`{"type":"order.created","data":{"n":%d}}`, i),
			http.StatusAccepted, &got)
		ids = append(ids, got.ID)
	}
	deadline = time.Now().Add(90 * time.Second)
	for len(recv.Tally("secure", ids).Missing) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d events not delivered within 90 s", len(recv.Tally("secure", ids).Missing), n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if tally := recv.Tally("secure", ids); tally.Duplicates > 0 || len(tally.Unexpected) > 0 {
		t.Fatalf("receiver: %d duplicates, unexpected %v", tally.Duplicates, tally.Unexpected)
	}
	if bad, body := recv.BadSignatures(), recv.BadBodies(); bad+body > 0 {
		t.Fatalf("receiver: %d webhooks with bad signatures, %d with bad bodies", bad, body)
	}
	// The logwriter wrote over TLS; the plain port reads the same rows.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	waitCount(t, ctx, ch, "SELECT count(), uniqExact(event_id), countIf(outcome = 'success' AND status_code = 204) FROM "+
		ch.Config.Database+".attempts FINAL WHERE endpoint_id = ?", []any{endpoint.ID}, n)
}

// TestSecureRefusalsEndRun: ingest given a wrong password, or a CA that
// did not sign the broker's certificate, returns from Run at once with an
// error naming the cause and the setting to check, instead of waiting as
// for a broker that is down.
func TestSecureRefusalsEndRun(t *testing.T) {
	k := testenv.NewKafka(t)
	sec := testenv.SecureStack(t)
	wrong := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(wrong, []byte("not-the-password"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		desc string
		edit env
		want []string
	}{
		{"wrong password", env{"SLUICE_KAFKA_SASL_PASSWORD_FILE": wrong}, []string{
			`kafka: SASL SCRAM-SHA-512 authentication as "` + sec.ScramUser + `" refused by ` + sec.SASLBrokers,
			"check SLUICE_KAFKA_SASL_USERNAME and SLUICE_KAFKA_SASL_PASSWORD_FILE"}},
		{"untrusted CA", env{"SLUICE_KAFKA_TLS_CA_FILE": sec.OtherCAFile}, []string{
			"kafka: TLS: certificate of " + sec.SASLBrokers + " is not signed by a trusted authority (x509: ",
			"check SLUICE_KAFKA_TLS_CA_FILE"}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			cfg, err := ingest.LoadConfig(nil, commonEnv(k).with(saslEnv(sec)).with(env{
				"SLUICE_API_ADDR":                 "127.0.0.1:0",
				"SLUICE_INSECURE_DEV_SECRETS_KEY": "true",
				"SLUICE_ROUTER_GROUP":             k.Prefix + "router",
			}).with(tc.edit).lookup)
			if err != nil {
				t.Fatal(err)
			}
			// The context outlives what a refusal may take by far; a Run
			// still waiting when it ends was waiting on the refusal.
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			began := time.Now()
			err = ingest.Run(ctx, cfg)
			took := time.Since(began)
			if err == nil || errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
				t.Fatalf("Run = %v after %v, want it to end at once with the refusal", err, took)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Run's error %q does not say %q", err, w)
				}
			}
			// Await's retries would have taken it past 10 s by their fifth.
			if took > 15*time.Second {
				t.Errorf("Run took %v to give up: the refusal was waited on", took)
			}
			t.Logf("Run ended after %v: %v", took, err)
		})
	}
}
