package testenv

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// chdbScript is the Python side of RunChDB (not named chdb.py, which would
// shadow the package it imports); it is written to a temporary
// file at each run so the tests need nothing but the package installed.
//
//go:embed chdbrun.py
var chdbScript []byte

// ChDBColumn is one column of a chDB result.
type ChDBColumn struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

// ChDBResult is the answer to one query: columns and rows (JSONCompact
// values: numbers of 64 bits come as strings), or the error chDB gave.
type ChDBResult struct {
	Columns []ChDBColumn `json:"columns"`
	Rows    [][]any      `json:"rows"`
	Error   string       `json:"error"`
}

// ChDB is a run of statements on chDB, the current ClickHouse engine
// in-process: the PyPI package chdb that dev/install.sh puts in
// $SLUICE_CACHE/chdb. It covers current ClickHouse releases where the dev
// stack's server is 18.16.
type ChDB struct {
	// Version is the ClickHouse version chDB embeds.
	Version string
	Results []ChDBResult
}

// RunChDB runs setup (each statement must succeed) and then queries (each
// may fail: its result holds the error) in one fresh chDB session, and
// returns the engine's version and one result per query. It fails the test
// when chDB is not installed or setup fails. No dev stack is needed.
func RunChDB(t testing.TB, setup, queries []string) ChDB {
	t.Helper()
	s, err := loadSettings()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	dir := filepath.Join(s.vars["SLUICE_CACHE"], "chdb")
	if _, err := os.Stat(filepath.Join(dir, "chdb")); err != nil {
		t.Fatalf("testenv: chDB is not installed in %s (dev/install.sh installs it; make test runs that): %v", dir, err)
	}
	script := filepath.Join(t.TempDir(), "chdbrun.py")
	if err := os.WriteFile(script, chdbScript, 0o644); err != nil {
		t.Fatalf("testenv: writing %s: %v", script, err)
	}
	req, err := json.Marshal(map[string][]string{"setup": setup, "queries": queries})
	if err != nil {
		t.Fatalf("testenv: encoding the chDB request: %v", err)
	}
	cmd := exec.Command("python3", script)
	cmd.Env = append(os.Environ(), "PYTHONPATH="+dir)
	cmd.Stdin = bytes.NewReader(req)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("testenv: running chDB (python3 %s with PYTHONPATH=%s): %v\n%s", script, dir, err, stderr.String())
	}
	var out ChDB
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("testenv: reading chDB's answer: %v\n%s", err, stdout.String())
	}
	t.Logf("testenv: chDB ran %d statements in %v", len(setup)+len(queries), time.Since(start).Round(time.Millisecond))
	if len(out.Results) != len(queries) {
		t.Fatalf("testenv: chDB answered %d results to %d queries", len(out.Results), len(queries))
	}
	return out
}

// String describes a result for a failure message.
func (r ChDBResult) String() string {
	if r.Error != "" {
		return "error: " + r.Error
	}
	return fmt.Sprintf("%d columns %v, %d rows", len(r.Columns), r.Columns, len(r.Rows))
}

// ValuesInsert writes rows as one INSERT … VALUES statement for chDB, the
// same rows a test inserts into ClickHouse 18.16 with a batch: strings are
// quoted and escaped, times written as UTC 'YYYY-MM-DD hh:mm:ss' (the
// session runs in UTC: SET session_timezone first), []string as arrays,
// numbers as Go prints them.
func ValuesInsert(table, columns string, rows [][]any) string {
	var b strings.Builder
	fmt.Fprintf(&b, "INSERT INTO %s (%s) VALUES ", table, columns)
	for i, r := range rows {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('(')
		for j, v := range r {
			if j > 0 {
				b.WriteString(", ")
			}
			b.WriteString(SQLLiteral(v))
		}
		b.WriteByte(')')
	}
	return b.String()
}

// SQLLiteral writes one value as ValuesInsert does.
func SQLLiteral(v any) string {
	switch v := v.(type) {
	case string:
		return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
	case time.Time:
		return "'" + v.UTC().Format("2006-01-02 15:04:05") + "'"
	case []string:
		q := make([]string, len(v))
		for i, s := range v {
			q[i] = SQLLiteral(s)
		}
		return "[" + strings.Join(q, ", ") + "]"
	default:
		return fmt.Sprint(v)
	}
}

// ClickHouseHTTP is the dev stack's ClickHouse HTTP interface, host:port.
func ClickHouseHTTP(t testing.TB) string {
	t.Helper()
	s := requireStack(t)
	return strings.TrimPrefix(s.vars["CLICKHOUSE_HTTP"], "http://")
}
