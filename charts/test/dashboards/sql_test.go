package dashboardtest

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/testenv"
	"github.com/sluicehq/sluice/services/logwriter/schema"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// expectedColumns is the result shape each ClickHouse query must have, by
// dashboard file and panel title (or $variable). A query of the dashboards
// missing here fails the test, so a new panel brings its expectation.
var expectedColumns = map[string][]string{
	"sluice-overview.json: Deliveries per second by outcome": {"time", "outcome", "per_second"},
	"sluice-overview.json: Success rate":                     {"time", "success_rate"},
	"sluice-overview.json: Latency p50 / p95 / p99":          {"time", "p50", "p95", "p99"},
	"sluice-overview.json: Retries and dead letters":         {"time", "retries", "dead_letters"},
	"sluice-overview.json: Top failing endpoints": {"tenant_id", "endpoint_id", "attempts", "failures",
		"failure_rate", "last_outcome", "last_status"},
	"sluice-overview.json: Events per type":         {"time", "event_type", "events"},
	"sluice-endpoint.json: $tenant":                 {"tenant_id"},
	"sluice-endpoint.json: $endpoint":               {"endpoint_id"},
	"sluice-endpoint.json: Attempts by outcome":     {"time", "outcome", "attempts"},
	"sluice-endpoint.json: Status classes":          {"time", "status_class", "attempts"},
	"sluice-endpoint.json: Latency p50 / p95 / p99": {"time", "p50", "p95", "p99"},
	"sluice-endpoint.json: Summary":                 {"attempts", "successes", "success_rate", "retries", "dead_letters"},
	"sluice-endpoint.json: Recent failures": {"time", "event_id", "event_type", "attempt_number", "outcome",
		"status_code", "latency_ms", "excerpt", "error", "trace_id"},
}

// expectedRows pins the row counts the sample must give where they are
// plain to count: a filter or grouping that goes wrong on one engine shows.
var expectedRows = map[string]int{
	"sluice-overview.json: Top failing endpoints": 1,  // acme/ep_failing; initech's row is outside the range
	"sluice-endpoint.json: $tenant":               2,  // acme, globex
	"sluice-endpoint.json: $endpoint":             2,  // acme's ep_failing, ep_ok
	"sluice-endpoint.json: Summary":               1,  // one summary row
	"sluice-endpoint.json: Recent failures":       26, // 8 deliveries × 3 failed attempts + circuit_open + endpoint_disabled
}

// sqlQueries returns every ClickHouse query of the dashboards: panels'
// targets and query variables.
func sqlQueries(t *testing.T, ds []dashboard) []query {
	t.Helper()
	var out []query
	for _, d := range ds {
		for _, v := range d.Templating.List {
			if v.Type != "query" || v.Datasource == nil || v.Datasource.Type != clickhouseType {
				continue
			}
			var q chQuery
			if err := json.Unmarshal(v.Query, &q); err != nil || q.RawSQL == "" {
				t.Errorf("%s: variable %s: query is not the plugin's query object with rawSql (%v)", d.file, v.Name, err)
				continue
			}
			out = append(out, query{Where: d.file + ": $" + v.Name, Key: d.file + ": $" + v.Name, Kind: "table", Text: q.RawSQL})
		}
		for _, p := range d.allPanels() {
			for _, tg := range p.Targets {
				if tg.Datasource == nil || tg.Datasource.Type != clickhouseType {
					continue
				}
				if tg.EditorType != "sql" {
					t.Errorf("%s: %s: editorType %q, want sql", d.file, p.Title, tg.EditorType)
				}
				if tg.QueryType != "timeseries" && tg.QueryType != "table" {
					t.Errorf("%s: %s: queryType %q, want timeseries or table", d.file, p.Title, tg.QueryType)
				}
				out = append(out, query{Where: d.file + ": " + p.Title + " (" + tg.RefID + ")", Key: d.file + ": " + p.Title,
					Kind: tg.QueryType, Text: tg.RawSQL})
			}
		}
	}
	return out
}

// expand gives the SQL the plugin sends ClickHouse for q, with the test's
// database and the sample's tenant and endpoint as variable values.
func expand(q query, db string) (string, error) {
	sql, err := expandVariables(q.Text, map[string][]string{
		"database": {db}, "tenant": {"acme"}, "endpoint": {"ep_failing"},
	})
	if err != nil {
		return "", err
	}
	return expandMacros(sql, timeRange{From: rangeFrom, To: rangeTo, Interval: time.Minute})
}

// result is one engine's answer, reduced to what the test compares.
type result struct {
	columns, types []string
	rows           int
	err            string
}

// TestDashboardSQLOnBothEngines runs every ClickHouse query of the
// dashboards on ClickHouse 18.16 (the dev stack) and on chDB (the current
// engine), each holding the logwriter's schema and the same sample rows.
func TestDashboardSQLOnBothEngines(t *testing.T) {
	ds, err := loadDashboards()
	if err != nil {
		t.Fatal(err)
	}
	qs := sqlQueries(t, ds)
	if len(qs) < len(expectedColumns) {
		t.Fatalf("found %d ClickHouse queries in the dashboards, want at least %d", len(qs), len(expectedColumns))
	}

	ch := testenv.NewClickHouse(t)
	db := ch.Config.Database
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := schema.Migrate(ctx, ch.Conn, db); err != nil {
		t.Fatalf("migrating %s on 18.16: %v", db, err)
	}
	if err := insertNative(ctx, ch.Conn, db); err != nil {
		t.Fatal(err)
	}

	sqls := make([]string, len(qs))
	for i, q := range qs {
		if sqls[i], err = expand(q, db); err != nil {
			t.Fatalf("%s: expanding: %v", q.Where, err)
		}
		if strings.Contains(sqls[i], "$") {
			t.Errorf("%s: something is left unexpanded:\n%s", q.Where, sqls[i])
		}
	}

	old := make([]result, len(qs))
	for i, s := range sqls {
		old[i] = runNative(ctx, ch, s)
	}

	ms, err := schema.Migrations(db)
	if err != nil {
		t.Fatal(err)
	}
	setup := append([]string{"SET session_timezone = 'UTC'"}, schema.Bootstrap(db)...)
	for _, m := range ms {
		setup = append(setup, m.Statements...)
	}
	setup = append(setup, insertStatements(db)...)
	cur := testenv.RunChDB(t, setup, sqls)
	t.Logf("%d queries on ClickHouse 18.16 and on chDB's ClickHouse %s", len(qs), cur.Version)

	for i, q := range qs {
		c := cur.Results[i]
		now := result{err: c.Error, rows: len(c.Rows)}
		for _, col := range c.Columns {
			now.columns = append(now.columns, col.Name)
			now.types = append(now.types, col.Type)
		}
		for _, e := range []struct {
			engine string
			r      result
		}{{"ClickHouse 18.16", old[i]}, {"ClickHouse " + cur.Version + " (chDB)", now}} {
			r := e.r
			if r.err != "" {
				t.Errorf("%s on %s: %s\n%s", q.Where, e.engine, r.err, sqls[i])
				continue
			}
			want, ok := expectedColumns[q.Key]
			if !ok {
				t.Errorf("%s: no expected columns in this test; add them", q.Where)
			} else if !slices.Equal(r.columns, want) {
				t.Errorf("%s on %s: columns %v, want %v", q.Where, e.engine, r.columns, want)
			}
			if q.Kind == "timeseries" && (len(r.types) == 0 || !strings.HasPrefix(r.types[0], "DateTime")) {
				t.Errorf("%s on %s: a time series' first column must be a DateTime named time; types %v", q.Where, e.engine, r.types)
			}
			if n, ok := expectedRows[q.Key]; ok && r.rows != n {
				t.Errorf("%s on %s: %d rows, want %d", q.Where, e.engine, r.rows, n)
			} else if r.rows == 0 {
				t.Errorf("%s on %s: no rows, though the sample has data for it", q.Where, e.engine)
			}
		}
		if old[i].err == "" && now.err == "" && old[i].rows != now.rows {
			t.Errorf("%s: %d rows on 18.16 but %d on %s", q.Where, old[i].rows, now.rows, cur.Version)
		}
	}
}

func runNative(ctx context.Context, ch *testenv.ClickHouse, sql string) result {
	rows, err := ch.Conn.Query(ctx, sql)
	if err != nil {
		return result{err: err.Error()}
	}
	defer rows.Close()
	r := result{columns: rows.Columns()}
	for _, ct := range rows.ColumnTypes() {
		r.types = append(r.types, ct.DatabaseTypeName())
	}
	for rows.Next() {
		r.rows++
	}
	if err := rows.Err(); err != nil {
		return result{err: fmt.Sprintf("reading rows: %v", err)}
	}
	return r
}
