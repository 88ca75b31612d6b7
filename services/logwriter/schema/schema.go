// Package schema owns the delivery log's ClickHouse schema: numbered SQL
// migrations applied in order, once each, recorded in schema_migrations.
package schema

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/sluicehq/sluice/pkg/clickhousex"
)

//go:embed migrations/*.sql
var files embed.FS

// Migration is one numbered schema change.
type Migration struct {
	Version    uint32
	Name       string
	Statements []string
}

// Migrations returns the embedded migrations in version order, with {db}
// replaced by the database name.
func Migrations(db string) ([]Migration, error) {
	entries, err := fs.ReadDir(files, "migrations")
	if err != nil {
		return nil, err
	}
	var out []Migration
	for _, e := range entries {
		num, name, ok := strings.Cut(strings.TrimSuffix(e.Name(), ".sql"), "_")
		v, err := strconv.ParseUint(num, 10, 32)
		if !ok || err != nil {
			return nil, fmt.Errorf("migration file %s is not named NNNN_name.sql", e.Name())
		}
		b, err := files.ReadFile("migrations/" + e.Name())
		if err != nil {
			return nil, err
		}
		out = append(out, Migration{Version: uint32(v), Name: name,
			Statements: splitStatements(strings.ReplaceAll(string(b), "{db}", db))})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	for i := 1; i < len(out); i++ {
		if out[i].Version == out[i-1].Version {
			return nil, fmt.Errorf("two migrations numbered %d", out[i].Version)
		}
	}
	return out, nil
}

// splitStatements cuts a file at semicolons that end a line, dropping
// comment lines; the migrations hold no string literals with semicolons.
func splitStatements(sql string) []string {
	var stmts []string
	var cur strings.Builder
	for _, line := range strings.Split(sql, "\n") {
		t := strings.TrimSpace(line)
		if t == "" || strings.HasPrefix(t, "--") {
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
		if strings.HasSuffix(t, ";") {
			stmts = append(stmts, strings.TrimSuffix(strings.TrimSpace(cur.String()), ";"))
			cur.Reset()
		}
	}
	if s := strings.TrimSpace(cur.String()); s != "" {
		stmts = append(stmts, s)
	}
	return stmts
}

// Bootstrap returns the statements Migrate runs before any migration: the
// database and the schema_migrations table that records what was applied.
// The chDB tests run them, with Migrations, on the current engine.
func Bootstrap(db string) []string {
	return []string{
		"CREATE DATABASE IF NOT EXISTS " + db,
		`CREATE TABLE IF NOT EXISTS ` + db + `.schema_migrations (
    version UInt32, name String, applied_at DateTime
) ENGINE = ReplacingMergeTree() ORDER BY version`,
	}
}

// Migrate creates the database if needed and applies the migrations not yet
// recorded. It is safe to run from several logwriters at once: every
// statement is idempotent (IF NOT EXISTS; an ALTER TABLE … ADD COLUMN is
// skipped when the column exists, since ClickHouse 18.16 has no ADD COLUMN
// IF NOT EXISTS, and one that loses a race fails once and is skipped when
// retried), and recording a version twice collapses in the
// ReplacingMergeTree.
func Migrate(ctx context.Context, conn driver.Conn, db string) (applied []uint32, err error) {
	if !clickhousex.ValidIdentifier(db) {
		return nil, fmt.Errorf("database name %q is not a plain identifier", db)
	}
	for _, stmt := range Bootstrap(db) {
		if err := conn.Exec(ctx, stmt); err != nil {
			return nil, fmt.Errorf("preparing database %s (%s): %w", db, stmt, err)
		}
	}
	done := map[uint32]bool{}
	rows, err := conn.Query(ctx, "SELECT version FROM "+db+".schema_migrations")
	if err != nil {
		return nil, fmt.Errorf("reading applied migrations: %w", err)
	}
	for rows.Next() {
		var v uint32
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return nil, err
		}
		done[v] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	ms, err := Migrations(db)
	if err != nil {
		return nil, err
	}
	for _, m := range ms {
		if done[m.Version] {
			continue
		}
		for _, stmt := range m.Statements {
			if c := addColumn.FindStringSubmatch(stmt); c != nil {
				exists, err := columnExists(ctx, conn, c[1], c[2], c[3])
				if err != nil {
					return applied, fmt.Errorf("applying migration %04d_%s: %w", m.Version, m.Name, err)
				}
				if exists {
					continue
				}
			}
			if err := conn.Exec(ctx, stmt); err != nil {
				return applied, fmt.Errorf("applying migration %04d_%s: %w", m.Version, m.Name, err)
			}
		}
		if err := record(ctx, conn, db, m); err != nil {
			return applied, fmt.Errorf("recording migration %04d: %w", m.Version, err)
		}
		applied = append(applied, m.Version)
	}
	return applied, nil
}

// addColumn matches an ALTER TABLE db.table ADD COLUMN name statement.
var addColumn = regexp.MustCompile(`(?is)^\s*ALTER\s+TABLE\s+(\w+)\.(\w+)\s+ADD\s+COLUMN\s+(\w+)\s`)

// AddsColumn reports whether stmt is an ALTER TABLE … ADD COLUMN, which
// Migrate runs only while the column is missing.
func AddsColumn(stmt string) bool { return addColumn.MatchString(stmt) }

// columnExists reports whether db.table has column.
func columnExists(ctx context.Context, conn driver.Conn, db, table, column string) (bool, error) {
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM system.columns WHERE database = ? AND table = ? AND name = ?",
		db, table, column).Scan(&n); err != nil {
		return false, fmt.Errorf("looking for column %s of %s.%s: %w", column, db, table, err)
	}
	return n > 0, nil
}

// record inserts m into schema_migrations as a one-row batch. An INSERT …
// VALUES sent through Exec never returns on ClickHouse 18.16: the server
// answers with the table's header block and waits for data blocks the client
// does not send. The batch API sends them, as the logwriter's inserts do.
func record(ctx context.Context, conn driver.Conn, db string, m Migration) error {
	b, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".schema_migrations (version, name, applied_at)")
	if err != nil {
		return err
	}
	if err := b.Append(m.Version, m.Name, time.Now().UTC()); err != nil {
		_ = b.Abort()
		return err
	}
	return b.Send()
}
