package schema_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/testenv"
	"github.com/sluicehq/sluice/services/logwriter/schema"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func TestMigrations(t *testing.T) {
	ms, err := schema.Migrations("db1")
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) == 0 {
		t.Fatal("no migrations embedded")
	}
	if ms[0].Version != 1 || ms[0].Name != "delivery_log" {
		t.Errorf("first migration is %04d_%s, want 0001_delivery_log", ms[0].Version, ms[0].Name)
	}
	for i, m := range ms {
		if i > 0 && m.Version <= ms[i-1].Version {
			t.Errorf("migration %d follows %d: versions must ascend", m.Version, ms[i-1].Version)
		}
		if len(m.Statements) == 0 {
			t.Errorf("migration %04d has no statements", m.Version)
		}
		for j, s := range m.Statements {
			switch {
			case strings.TrimSpace(s) == "":
				t.Errorf("migration %04d statement %d is empty", m.Version, j)
			case strings.HasSuffix(strings.TrimSpace(s), ";"):
				t.Errorf("migration %04d statement %d ends with ';': %q", m.Version, j, s)
			case strings.Contains(s, "{db}"):
				t.Errorf("migration %04d statement %d still holds {db}: %q", m.Version, j, s)
			case strings.Contains(s, "\n--") || strings.HasPrefix(strings.TrimSpace(s), "--"):
				t.Errorf("migration %04d statement %d holds a comment line: %q", m.Version, j, s)
			}
		}
	}
	// 0001 holds two CREATE TABLEs, each in the named database.
	var heads []string
	for _, s := range ms[0].Statements {
		heads = append(heads, strings.Join(strings.Fields(s)[:7], " "))
	}
	want := []string{
		"CREATE TABLE IF NOT EXISTS db1.attempts (",
		"CREATE TABLE IF NOT EXISTS db1.events (",
	}
	if !slices.Equal(heads, want) {
		t.Errorf("0001 statements begin %q, want %q", heads, want)
	}
}

func TestMigrateRefusesUnsafeDatabaseName(t *testing.T) {
	// The name is checked before anything is sent, so no server is needed.
	if _, err := schema.Migrate(context.Background(), nil, "db; DROP DATABASE x"); err == nil {
		t.Fatal("Migrate accepted a database name that is not an identifier")
	}
}

func TestMigrate(t *testing.T) {
	ch := testenv.NewClickHouse(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	db := ch.Config.Database

	applied, err := schema.Migrate(ctx, ch.Conn, db)
	if err != nil {
		t.Fatalf("first Migrate: %v", err)
	}
	ms, err := schema.Migrations(db)
	if err != nil {
		t.Fatal(err)
	}
	var all []uint32
	for _, m := range ms {
		all = append(all, m.Version)
	}
	if !slices.Equal(applied, all) {
		t.Errorf("first Migrate applied %v, want every migration %v", applied, all)
	}

	rows, err := ch.Conn.Query(ctx, "SELECT name FROM system.tables WHERE database = ? ORDER BY name", db)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			t.Fatal(err)
		}
		tables = append(tables, name)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if want := []string{"attempts", "events", "schema_migrations"}; !slices.Equal(tables, want) {
		t.Errorf("tables in %s = %v, want %v", db, tables, want)
	}

	again, err := schema.Migrate(ctx, ch.Conn, db)
	if err != nil {
		t.Fatalf("second Migrate: %v", err)
	}
	if len(again) != 0 {
		t.Errorf("second Migrate applied %v, want nothing", again)
	}
	var recorded uint64
	if err := ch.Conn.QueryRow(ctx, "SELECT count() FROM "+db+".schema_migrations").Scan(&recorded); err != nil {
		t.Fatal(err)
	}
	if recorded != uint64(len(all)) {
		t.Errorf("schema_migrations holds %d rows, want %d (one per migration)", recorded, len(all))
	}
}

// TestMigrateAddsTraceIDOnceOnly: migration 0002 adds events.trace_id; a
// database whose events table already has the column (a logwriter that
// lost the race to add it) migrates without error, as ClickHouse 18.16 has
// no ADD COLUMN IF NOT EXISTS.
func TestMigrateAddsTraceIDOnceOnly(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	hasTraceID := func(ch *testenv.ClickHouse) bool {
		var n uint64
		if err := ch.Conn.QueryRow(ctx, "SELECT count() FROM system.columns WHERE database = ? AND table = 'events' AND name = 'trace_id'",
			ch.Config.Database).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 1
	}

	fresh := testenv.NewClickHouse(t)
	if _, err := schema.Migrate(ctx, fresh.Conn, fresh.Config.Database); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if !hasTraceID(fresh) {
		t.Fatal("events has no trace_id column after Migrate")
	}

	raced := testenv.NewClickHouse(t)
	db := raced.Config.Database
	if err := raced.Conn.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+db); err != nil {
		t.Fatal(err)
	}
	if err := raced.Conn.Exec(ctx, "CREATE TABLE "+db+".events (day Date, tenant_id String, event_id String, trace_id String) "+
		"ENGINE = ReplacingMergeTree() PARTITION BY day ORDER BY (tenant_id, event_id)"); err != nil {
		t.Fatal(err)
	}
	applied, err := schema.Migrate(ctx, raced.Conn, db)
	if err != nil {
		t.Fatalf("Migrate over an events table that has trace_id: %v", err)
	}
	if !slices.Contains(applied, 2) || !hasTraceID(raced) {
		t.Fatalf("applied %v; trace_id present %v", applied, hasTraceID(raced))
	}
}
