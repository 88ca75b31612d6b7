package app_test

import (
	"context"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/testenv"
	"github.com/sluicehq/sluice/services/logwriter/app"
	"github.com/sluicehq/sluice/services/logwriter/schema"
)

// TestLogwriterDropsExpiredPartitionsAtStart: the retention job runs once
// when the logwriter starts (package retention tests the passes
// themselves).
func TestLogwriterDropsExpiredPartitionsAtStart(t *testing.T) {
	k := testenv.NewKafka(t)
	ch := testenv.NewClickHouse(t)
	db := ch.Config.Database
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := schema.Migrate(ctx, ch.Conn, db); err != nil {
		t.Fatal(err)
	}
	today := time.Now().UTC().Truncate(24 * time.Hour)
	old, recent := today.AddDate(0, 0, -8), today.AddDate(0, 0, -6)
	for _, table := range []string{"attempts", "events"} {
		b, err := ch.Conn.PrepareBatch(ctx, "INSERT INTO "+db+"."+table+" (day, tenant_id)")
		if err != nil {
			t.Fatal(err)
		}
		for _, day := range []time.Time{old, recent} {
			if err := b.Append(day, "ten_acme"); err != nil {
				t.Fatal(err)
			}
		}
		if err := b.Send(); err != nil {
			t.Fatal(err)
		}
	}

	vars := baseEnv(k, ch, k.Prefix+"logwriter")
	vars["SLUICE_RETENTION_DAYS"] = "7"
	cfg, err := app.LoadConfig(nil, env(vars))
	if err != nil {
		t.Fatal(err)
	}
	lw := start(t, cfg)
	onDay := func(table string, day time.Time) uint64 {
		return count(t, ch, "SELECT count() FROM "+db+"."+table+" WHERE toString(day) = ?", day.Format(time.DateOnly))
	}
	deadline := time.Now().Add(30 * time.Second)
	for onDay("attempts", old)+onDay("events", old) > 0 {
		lw.failIfExited(t)
		if time.Now().After(deadline) {
			t.Fatalf("the partitions of %s are still there 30 s after start", old.Format(time.DateOnly))
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, table := range []string{"attempts", "events"} {
		if n := onDay(table, recent); n != 1 {
			t.Errorf("%s holds %d rows of %s, want 1: a day within retention was dropped", table, n, recent.Format(time.DateOnly))
		}
	}
	lw.stop(t)
}
