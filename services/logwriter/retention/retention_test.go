package retention_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/metric/noop"

	"github.com/sluicehq/sluice/pkg/telemetry"
	"github.com/sluicehq/sluice/pkg/testenv"
	"github.com/sluicehq/sluice/services/logwriter/retention"
	"github.com/sluicehq/sluice/services/logwriter/schema"
)

func TestMain(m *testing.M) { testenv.Main(m) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func TestDayOfPartition(t *testing.T) {
	for _, tc := range []struct {
		desc, id string
		want     string // YYYY-MM-DD, or "" for an error
	}{
		{"a day", "20240115", "2024-01-15"},
		{"a leap day", "20240229", "2024-02-29"},
		{"no leap day in 2023", "20230229", ""},
		{"month 13", "20241301", ""},
		{"day 32", "20240132", ""},
		{"too short", "2024011", ""},
		{"too long", "202401150", ""},
		{"a month partition (toYYYYMM)", "202401", ""},
		{"empty", "", ""},
		{"the partition value as 18.16 shows it", "2024-01-15", ""},
		{"quoted", "'20240115'", ""},
		{"a sign", "+2024011", ""},
		{"an injection", "20240115' OR 1", ""},
		{"unpartitioned table", "all", ""},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			day, err := retention.DayOfPartition(tc.id)
			switch {
			case tc.want == "" && err == nil:
				t.Fatalf("DayOfPartition(%q) = %v, want an error", tc.id, day)
			case tc.want != "" && err != nil:
				t.Fatalf("DayOfPartition(%q): %v", tc.id, err)
			case tc.want != "" && (day.Format(time.DateOnly) != tc.want || day.Location() != time.UTC || day.Hour() != 0):
				t.Fatalf("DayOfPartition(%q) = %v, want midnight UTC of %s", tc.id, day, tc.want)
			}
		})
	}
}

// FuzzDayOfPartition: whatever system.parts answers, a day is accepted only
// if it formats back to exactly the id, which is eight digits.
func FuzzDayOfPartition(f *testing.F) {
	for _, s := range []string{"20240115", "20240229", "2024-01-15", "all", "20241301", "00000101", "99991231"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		day, err := retention.DayOfPartition(id)
		if err != nil {
			return
		}
		if got := day.Format("20060102"); got != id {
			t.Fatalf("DayOfPartition(%q) = %v, which formats as %q", id, day, got)
		}
		if strings.Trim(id, "0123456789") != "" {
			t.Fatalf("DayOfPartition accepted %q, which is not all digits", id)
		}
	})
}

func TestCutoff(t *testing.T) {
	for _, tc := range []struct {
		desc string
		now  time.Time
		days int
		want string
	}{
		{"just after midnight", time.Date(2024, 3, 10, 0, 0, 1, 0, time.UTC), 30, "2024-02-09"},
		{"just before midnight", time.Date(2024, 3, 10, 23, 59, 59, 0, time.UTC), 30, "2024-02-09"},
		{"one day keeps yesterday", time.Date(2024, 3, 10, 12, 0, 0, 0, time.UTC), 1, "2024-03-09"},
		{"across a year", time.Date(2024, 1, 5, 12, 0, 0, 0, time.UTC), 10, "2023-12-26"},
		// 01:00 in UTC+2 is still the 9th in UTC: days are UTC days.
		{"a local time is read in UTC", time.Date(2024, 3, 10, 1, 0, 0, 0, time.FixedZone("EET", 2*3600)), 1, "2024-03-08"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			got := retention.Cutoff(tc.now, tc.days)
			if got.Format(time.DateOnly) != tc.want || got.Location() != time.UTC || !got.Equal(got.Truncate(24*time.Hour)) {
				t.Fatalf("Cutoff(%v, %d) = %v, want midnight UTC of %s", tc.now, tc.days, got, tc.want)
			}
		})
	}
}

func TestNewRefuses(t *testing.T) {
	// Checked before anything is sent, so no server is needed.
	m := noop.NewMeterProvider().Meter("test")
	for _, tc := range []struct {
		desc   string
		db     string
		tables []string
		days   int
	}{
		{"a database name that is not an identifier", "db; DROP DATABASE x", []string{"attempts"}, 30},
		{"a table name that is not an identifier", "db", []string{"attempts", "events FINAL"}, 30},
		{"no tables", "db", nil, 30},
		{"zero days", "db", []string{"attempts"}, 0},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			if _, err := retention.New(nil, tc.db, tc.tables, tc.days, quiet, m); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

// insertDays writes n rows per day into attempts and events of db through
// the batch API (INSERT … VALUES through Exec hangs on 18.16).
func insertDays(t testing.TB, ch *testenv.ClickHouse, db string, n int, days ...time.Time) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, table := range []string{"attempts", "events"} {
		id := map[string]string{"attempts": "attempt_id", "events": "event_id"}[table]
		b, err := ch.Conn.PrepareBatch(ctx, "INSERT INTO "+db+"."+table+" (day, tenant_id, "+id+")")
		if err != nil {
			t.Fatalf("preparing insert into %s: %v", table, err)
		}
		for _, day := range days {
			for i := range n {
				if err := b.Append(day, "ten_acme", fmt.Sprintf("%s_%s_%d", table, day.Format("20060102"), i)); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := b.Send(); err != nil {
			t.Fatalf("inserting into %s: %v", table, err)
		}
	}
}

// rowsPerDay counts the rows of db.table by day, YYYY-MM-DD.
func rowsPerDay(t testing.TB, ch *testenv.ClickHouse, db, table string) map[string]uint64 {
	t.Helper()
	rows, err := ch.Conn.Query(context.Background(), "SELECT day, count() FROM "+db+"."+table+" GROUP BY day")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]uint64{}
	for rows.Next() {
		var (
			day time.Time
			n   uint64
		)
		if err := rows.Scan(&day, &n); err != nil {
			t.Fatal(err)
		}
		out[day.Format(time.DateOnly)] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestPassDropsExpiredDays(t *testing.T) {
	ch := testenv.NewClickHouse(t)
	other := testenv.NewClickHouse(t) // a second logwriter database
	db := ch.Config.Database
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, c := range []*testenv.ClickHouse{ch, other} {
		if _, err := schema.Migrate(ctx, c.Conn, c.Config.Database); err != nil {
			t.Fatal(err)
		}
	}
	// One fixed now, so the test does not straddle midnight.
	now := time.Now().UTC()
	today := retention.Cutoff(now, 0)
	ago := func(n int) time.Time { return today.AddDate(0, 0, -n) }
	// Retention 30 keeps today and the 30 days before it: day -30 stays,
	// day -31 is the newest to go.
	kept := []time.Time{ago(0), ago(5), ago(30)}
	expired := []time.Time{ago(31), ago(40), ago(41)}
	insertDays(t, ch, db, 3, append(kept, expired...)...)
	insertDays(t, other, other.Config.Database, 2, ago(41))

	metrics, err := telemetry.NewMetrics("logwriter")
	if err != nil {
		t.Fatal(err)
	}
	d, err := retention.New(ch.Conn, db, []string{"attempts", "events"}, 30, quiet, metrics.Meter("sluice/logwriter"))
	if err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	dropped, err := d.Pass(ctx, now)
	if err != nil {
		t.Fatalf("first pass: %v", err)
	}
	t.Logf("first pass dropped %d partitions in %v", len(dropped), time.Since(start))
	var want, got []string
	for _, table := range []string{"attempts", "events"} {
		for _, day := range []time.Time{ago(41), ago(40), ago(31)} { // table, then day order
			want = append(want, table+" "+day.Format(time.DateOnly))
		}
	}
	for _, p := range dropped {
		got = append(got, p.Table+" "+p.Day.Format(time.DateOnly))
	}
	if !slices.Equal(got, want) {
		t.Errorf("first pass dropped\n%q\nwant\n%q", got, want)
	}

	wantRows := map[string]uint64{}
	for _, day := range kept {
		wantRows[day.Format(time.DateOnly)] = 3
	}
	for _, table := range []string{"attempts", "events"} {
		if got := rowsPerDay(t, ch, db, table); !maps.Equal(got, wantRows) {
			t.Errorf("%s rows per day after the pass = %v, want %v", table, got, wantRows)
		}
		if got := rowsPerDay(t, other, other.Config.Database, table); got[ago(41).Format(time.DateOnly)] != 2 {
			t.Errorf("another database's %s lost rows: %v", table, got)
		}
	}

	// The partitions are gone, so a second pass finds nothing to do.
	again, err := d.Pass(ctx, now)
	if err != nil {
		t.Fatalf("second pass: %v", err)
	}
	if len(again) != 0 {
		t.Errorf("second pass dropped %v, want nothing", again)
	}
	for _, table := range []string{"attempts", "events"} {
		if got := rowsPerDay(t, ch, db, table); !maps.Equal(got, wantRows) {
			t.Errorf("%s rows per day after the second pass = %v, want %v", table, got, wantRows)
		}
	}

	// Each drop was counted once, by table.
	rec := httptest.NewRecorder()
	metrics.Handler.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, table := range []string{"attempts", "events"} {
		if v := sample(rec.Body.String(), "sluice_logwriter_retention_partitions_dropped_total", `table="`+table+`"`); v != "3" {
			t.Errorf("dropped-partitions counter for %s = %q, want 3", table, v)
		}
	}
}

// sample returns the value of the first line of metric whose labels contain
// label.
func sample(exposition, metric, label string) string {
	for _, line := range strings.Split(exposition, "\n") {
		if strings.HasPrefix(line, metric+"{") && strings.Contains(line, label) {
			f := strings.Fields(line)
			return f[len(f)-1]
		}
	}
	return ""
}
