// Package retention drops the delivery log's day partitions once they are
// older than the retention period (DESIGN §7: "partitioned by day; retention
// drops whole partitions"). Dropping a partition removes its parts at once
// and rewrites nothing, unlike ALTER … DELETE; and the tables have no TTL
// clause because ClickHouse 18.16 has none.
package retention

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/sluicehq/sluice/pkg/clickhousex"
)

// idLayout is how ClickHouse names the partition of a table partitioned by a
// Date column: the day as YYYYMMDD (system.parts.partition_id), on 18.16 as
// on current releases.
const idLayout = "20060102"

// Partition is one day partition of a table.
type Partition struct {
	Table string
	// Day is the partition's day, midnight UTC.
	Day time.Time
}

// DayOfPartition reads a partition id of a table partitioned by a Date
// column. Anything but eight digits naming a real day is an error, so what
// system.parts holds never reaches a statement unless it is a date.
func DayOfPartition(id string) (time.Time, error) {
	valid := len(id) == len(idLayout)
	for i := 0; valid && i < len(id); i++ {
		valid = id[i] >= '0' && id[i] <= '9'
	}
	if !valid {
		return time.Time{}, fmt.Errorf("partition id %q is not a day (YYYYMMDD)", id)
	}
	day, err := time.Parse(idLayout, id)
	if err != nil {
		return time.Time{}, fmt.Errorf("partition id %q is not a day: %w", id, err)
	}
	return day, nil
}

// Cutoff is the first day kept when keeping days days before now's day
// (UTC): partitions of earlier days are dropped. A row therefore stays at
// least days days, and at most one day more (plus a pass interval).
func Cutoff(now time.Time, days int) time.Time {
	y, m, d := now.UTC().Date()
	return time.Date(y, m, d-days, 0, 0, 0, 0, time.UTC)
}

// Dropper drops the expired day partitions of some tables of one database.
type Dropper struct {
	conn     driver.Conn
	db       string
	tables   []string
	days     int
	log      *slog.Logger
	dropped  metric.Int64Counter
	failures metric.Int64Counter
}

// New returns a Dropper keeping days days of tables in db. Every table must
// be partitioned by a Date column. The names are written into DDL, which
// cannot take bound parameters, so they must be plain identifiers.
func New(conn driver.Conn, db string, tables []string, days int, log *slog.Logger, m metric.Meter) (*Dropper, error) {
	for _, name := range append([]string{db}, tables...) {
		if !clickhousex.ValidIdentifier(name) {
			return nil, fmt.Errorf("retention: %q is not a plain identifier", name)
		}
	}
	if len(tables) == 0 {
		return nil, errors.New("retention: no tables")
	}
	if days < 1 {
		return nil, fmt.Errorf("retention: days must be at least 1, got %d", days)
	}
	d := &Dropper{conn: conn, db: db, tables: tables, days: days, log: log}
	var err error
	if d.dropped, err = m.Int64Counter("sluice.logwriter.retention.partitions.dropped",
		metric.WithDescription("day partitions dropped because they were older than the retention period")); err != nil {
		return nil, err
	}
	if d.failures, err = m.Int64Counter("sluice.logwriter.retention.failures",
		metric.WithDescription("retention passes that failed; the next pass retries")); err != nil {
		return nil, err
	}
	return d, nil
}

// Run makes a pass at once and then one every interval until ctx ends. A
// failed pass is logged and counted and the next one retries: partitions
// are a day wide, so a pass an interval late costs nothing. Each pass is
// bounded by the interval, so a hung statement cannot stop the later ones.
func (d *Dropper) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, interval)
		_, err := d.Pass(pctx, time.Now())
		cancel()
		if err != nil && ctx.Err() == nil {
			d.failures.Add(ctx, 1)
			d.log.Warn("retention pass failed; retrying at the next one", "err", err, "interval", interval)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Pass drops every active partition of the tables whose day is before
// Cutoff(now, days), and returns those it dropped. A partition whose id is
// not a day is logged and kept. A failed drop does not stop the others; the
// errors are returned together.
func (d *Dropper) Pass(ctx context.Context, now time.Time) ([]Partition, error) {
	cutoff := Cutoff(now, d.days)
	expired, err := d.expired(ctx, cutoff)
	if err != nil {
		return nil, err
	}
	var (
		dropped []Partition
		errs    []error
	)
	for _, p := range expired {
		// The id is formatted from the parsed day, never copied from the
		// server's answer; db and table are checked identifiers.
		stmt := "ALTER TABLE " + d.db + "." + p.Table + " DROP PARTITION ID '" + p.Day.Format(idLayout) + "'"
		if err := d.conn.Exec(ctx, stmt); err != nil {
			errs = append(errs, fmt.Errorf("dropping the %s partition of %s.%s: %w",
				p.Day.Format(time.DateOnly), d.db, p.Table, err))
			continue
		}
		d.dropped.Add(ctx, 1, metric.WithAttributes(attribute.String("table", p.Table)))
		d.log.Info("dropped expired partition", "table", p.Table, "day", p.Day.Format(time.DateOnly),
			"retention_days", d.days)
		dropped = append(dropped, p)
	}
	return dropped, errors.Join(errs...)
}

// expired lists the partitions of the tables holding days before cutoff,
// in table and day order.
func (d *Dropper) expired(ctx context.Context, cutoff time.Time) ([]Partition, error) {
	// has(?, table): a slice bound to IN (?) fails on ClickHouse 18.16.
	rows, err := d.conn.Query(ctx, "SELECT DISTINCT table, partition_id FROM system.parts "+
		"WHERE database = ? AND has(?, table) AND active ORDER BY table, partition_id", d.db, d.tables)
	if err != nil {
		return nil, fmt.Errorf("listing the partitions of %s: %w", d.db, err)
	}
	defer rows.Close()
	var out []Partition
	for rows.Next() {
		var table, id string
		if err := rows.Scan(&table, &id); err != nil {
			return nil, fmt.Errorf("reading the partitions of %s: %w", d.db, err)
		}
		// The query asked for these tables only; checked again because the
		// name goes into the ALTER statement.
		if !slices.Contains(d.tables, table) {
			return nil, fmt.Errorf("system.parts answered for table %q, which was not asked for", table)
		}
		day, err := DayOfPartition(id)
		if err != nil {
			d.log.Warn("keeping a partition that is not a day", "table", table, "partition_id", id, "err", err)
			continue
		}
		if day.Before(cutoff) {
			out = append(out, Partition{Table: table, Day: day})
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading the partitions of %s: %w", d.db, err)
	}
	return out, nil
}
