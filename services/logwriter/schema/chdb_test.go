package schema_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/testenv"
	"github.com/sluicehq/sluice/services/logwriter/schema"
)

// TestMigrationsOnCurrentClickHouse runs what Migrate runs (Bootstrap, then
// every migration's statements, twice, as two logwriters starting together
// would, the second time without the ADD COLUMNs Migrate then skips) on chDB, today's ClickHouse engine, and checks that the tables it
// makes have the columns, names and types alike, that the same migrations
// make on the dev stack's ClickHouse 18.16: the schema is one for both.
func TestMigrationsOnCurrentClickHouse(t *testing.T) {
	ch := testenv.NewClickHouse(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	db := ch.Config.Database
	if _, err := schema.Migrate(ctx, ch.Conn, db); err != nil {
		t.Fatalf("Migrate on 18.16: %v", err)
	}
	const columns = "SELECT table, name, type FROM system.columns WHERE database = '%s' ORDER BY table, name"
	rows, err := ch.Conn.Query(ctx, fmt.Sprintf(columns, db))
	if err != nil {
		t.Fatal(err)
	}
	var old []string
	for rows.Next() {
		var table, name, typ string
		if err := rows.Scan(&table, &name, &typ); err != nil {
			t.Fatal(err)
		}
		old = append(old, table+"."+name+" "+typ)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}

	ms, err := schema.Migrations(db)
	if err != nil {
		t.Fatal(err)
	}
	var setup []string
	for pass := range 2 {
		setup = append(setup, schema.Bootstrap(db)...)
		for _, m := range ms {
			for _, stmt := range m.Statements {
				// Migrate skips an ADD COLUMN whose column exists, as it
				// does after the first pass.
				if pass == 1 && schema.AddsColumn(stmt) {
					continue
				}
				setup = append(setup, stmt)
			}
		}
	}
	for _, m := range ms {
		setup = append(setup, fmt.Sprintf("INSERT INTO %s.schema_migrations (version, name, applied_at) VALUES (%d, '%s', now())", db, m.Version, m.Name))
	}
	got := testenv.RunChDB(t, setup, []string{
		fmt.Sprintf(columns, db),
		fmt.Sprintf("SELECT count() FROM %s.schema_migrations FINAL", db),
	})
	t.Logf("chDB runs ClickHouse %s", got.Version)
	cols, count := got.Results[0], got.Results[1]
	if cols.Error != "" || count.Error != "" {
		t.Fatalf("reading the schema on chDB: %v; %v", cols, count)
	}
	var cur []string
	for _, r := range cols.Rows {
		cur = append(cur, fmt.Sprintf("%v.%v %v", r[0], r[1], r[2]))
	}
	if len(old) == 0 || !slices.Equal(cur, old) {
		t.Errorf("columns on ClickHouse %s:\n%v\nwant those of 18.16:\n%v", got.Version, cur, old)
	}
	if n := fmt.Sprint(count.Rows[0][0]); n != fmt.Sprint(len(ms)) {
		t.Errorf("schema_migrations on chDB holds %s versions, want %d", n, len(ms))
	}
}
