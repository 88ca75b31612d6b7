package app_test

import (
	"context"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/testenv"
	"github.com/sluicehq/sluice/services/sender/app"
)

// TestSenderStartsWhileKafkaIsDown: a sender started with no broker to
// reach stays up, alive and not ready, saying what it waits for, and
// becomes ready by itself once the broker answers.
func TestSenderStartsWhileKafkaIsDown(t *testing.T) {
	k := testenv.NewKafka(t)
	proxy := testenv.NewProxy(t, k.Config.Brokers[0])
	proxy.SetCut(true)
	ops := testenv.FreeAddr(t)
	cfg, err := app.LoadConfig(nil, lookup(map[string]string{
		"SLUICE_KAFKA_BROKERS":            proxy.Addr(),
		"SLUICE_TOPIC_PREFIX":             k.Prefix,
		"SLUICE_GROUP":                    k.Prefix + "sender",
		"SLUICE_OPS_ADDR":                 ops,
		"SLUICE_LOG_LEVEL":                "error",
		"SLUICE_INSECURE_DEV_SECRETS_KEY": "true",
		"SLUICE_SHUTDOWN_TIMEOUT":         "5s",
	}))
	if err != nil {
		t.Fatal(err)
	}
	svc := testenv.StartService(t, func(ctx context.Context) error { return app.Run(ctx, cfg) }, cfg.ShutdownBudget())

	testenv.WaitProbe(t, ops, "/readyz", 503, "waiting: kafka topics", 30*time.Second)
	if code, body := testenv.Probe(ops, "/healthz"); code != 200 {
		t.Fatalf("healthz while waiting for Kafka = %d %s", code, body)
	}
	svc.FailIfExited(t)
	proxy.SetCut(false)
	testenv.WaitProbe(t, ops, "/readyz", 200, "ready", 60*time.Second)
	svc.Stop(t)
}
