package app_test

import (
	"strings"
	"testing"
	"time"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/pkg/testenv"
	"github.com/sluicehq/sluice/services/logwriter/app"
)

// TestLogwriterStartsWhileItsDependenciesAreDown: started with Kafka and
// ClickHouse both unreachable, the logwriter stays up, alive and not
// ready, naming what it waits for; once they answer it becomes ready and
// writes what was produced meanwhile. It never exits on its own.
func TestLogwriterStartsWhileItsDependenciesAreDown(t *testing.T) {
	k := testenv.NewKafka(t)
	ch := testenv.NewClickHouse(t)
	db := ch.Config.Database
	kafkaProxy := testenv.NewProxy(t, k.Config.Brokers[0])
	chProxy := testenv.NewProxy(t, ch.Config.Addrs[0])
	kafkaProxy.SetCut(true)
	chProxy.SetCut(true)

	ops := testenv.FreeAddr(t)
	vars := baseEnv(k, ch, k.Prefix+"logwriter")
	vars["SLUICE_KAFKA_BROKERS"] = kafkaProxy.Addr()
	vars["SLUICE_CLICKHOUSE_ADDRS"] = chProxy.Addr()
	vars["SLUICE_OPS_ADDR"] = ops
	cfg, err := app.LoadConfig(nil, env(vars))
	if err != nil {
		t.Fatal(err)
	}
	lw := start(t, cfg)

	testenv.WaitProbe(t, ops, "/readyz", 503, "waiting: clickhouse", 30*time.Second)
	if code, body := testenv.Probe(ops, "/healthz"); code != 200 {
		t.Fatalf("healthz while waiting for ClickHouse = %d %s", code, body)
	}
	chProxy.SetCut(false)
	testenv.WaitProbe(t, ops, "/readyz", 503, "waiting: kafka topics", 60*time.Second)
	lw.failIfExited(t)

	p := newProducer(t, k)
	now := time.Now().UTC()
	as := make([]*sluicev1.Attempt, 20)
	for i := range as {
		as[i] = attempt("down", i, now)
	}
	produce(t, p, records(t, k.Names.Attempts, as))

	kafkaProxy.SetCut(false)
	testenv.WaitProbe(t, ops, "/readyz", 200, "ready", 60*time.Second)
	waitCount(t, lw, ch, uint64(len(as)), "SELECT count() FROM "+db+".attempts FINAL")
	if code, body := testenv.Probe(ops, "/healthz"); code != 200 || !strings.Contains(body, `"logwriter"`) {
		t.Fatalf("healthz once running = %d %s", code, body)
	}
	lw.stop(t)
}
