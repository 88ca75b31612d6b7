package app

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/sluicehq/sluice/pkg/health"
	"github.com/sluicehq/sluice/pkg/kafkax"
)

// table is one destination table and how its records become rows.
type table struct {
	name    string
	columns string
	decode  func([]byte) ([]any, error)
	rows    [][]any
}

// writer moves records from Kafka into ClickHouse in batches. A record is
// marked for commit only after the insert holding its row succeeded, so a
// crash at any point redelivers rather than loses; the redelivered rows
// collapse in the ReplacingMergeTree tables.
type writer struct {
	conn      driver.Conn
	db        string
	cl        *kgo.Client
	log       *slog.Logger
	tables    map[string]*table // by topic
	batchRows int
	batchWait time.Duration
	// stage is reported to: it owes the records of the batch it holds and
	// progresses with every insert (package health).
	stage *health.Stage
	// lag reports the consumer lag of the partitions polled (nil: none).
	lag *kafkax.Lag
	// tracer makes a span per insert (no-op with tracing off).
	tracer trace.Tracer

	pending  []*kgo.Record
	firstAt  time.Time
	rowsOut  metric.Int64Counter
	failures metric.Int64Counter
	flushDur metric.Float64Histogram
}

func newWriter(conn driver.Conn, db string, cl *kgo.Client, log *slog.Logger, m metric.Meter,
	attemptsTopic, eventLogTopic string, batchRows int, batchWait time.Duration) (*writer, error) {
	w := &writer{
		conn: conn, db: db, cl: cl, log: log, batchRows: batchRows, batchWait: batchWait,
		stage:  health.NewRegistry(health.DefaultStuckAfter, nil).Stage("logwriter"),
		tracer: noop.NewTracerProvider().Tracer(""),
		tables: map[string]*table{
			attemptsTopic: {name: "attempts", columns: attemptColumns, decode: attemptRow},
			eventLogTopic: {name: "events", columns: eventColumns, decode: eventRow},
		},
	}
	var err error
	if w.rowsOut, err = m.Int64Counter("sluice.logwriter.rows",
		metric.WithDescription("rows inserted into ClickHouse")); err != nil {
		return nil, err
	}
	if w.failures, err = m.Int64Counter("sluice.logwriter.insert.failures",
		metric.WithDescription("ClickHouse inserts that failed and were retried")); err != nil {
		return nil, err
	}
	if w.flushDur, err = m.Float64Histogram("sluice.logwriter.flush.duration", metric.WithUnit("s"),
		metric.WithDescription("time to insert one batch, retries included")); err != nil {
		return nil, err
	}
	return w, nil
}

// run consumes until ctx is done, then inserts what it holds and commits on
// shutdownCtx.
func (w *writer) run(ctx context.Context, shutdownCtx func() (context.Context, context.CancelFunc)) error {
	w.stage.Running()
	defer w.stage.Stopped("logwriter stopped")
	for ctx.Err() == nil {
		w.stage.Beat()
		pollCtx, cancel := kafkax.PollContext(ctx)
		if len(w.pending) > 0 {
			cancel()
			pollCtx, cancel = context.WithDeadline(ctx, w.firstAt.Add(w.batchWait))
		}
		fetches := w.cl.PollRecords(pollCtx, w.batchRows-len(w.pending))
		cancel()
		w.lag.Observe(fetches)
		kafkax.FetchErrors(fetches, func(t string, p int32, err error) {
			if ctx.Err() == nil {
				w.log.Warn("fetching", "topic", t, "partition", p, "err", err)
			}
		})
		fetches.EachRecord(w.add)
		w.stage.Owe(len(w.pending))
		if len(w.pending) >= w.batchRows || (len(w.pending) > 0 && time.Since(w.firstAt) >= w.batchWait) {
			if err := w.flush(ctx); err != nil {
				break // ctx is done; the batch is retried on the shutdown context
			}
		}
		if len(w.pending) == 0 {
			// Everything polled is inserted and marked: a rebalance now
			// commits exactly what is in ClickHouse.
			w.cl.AllowRebalance()
		}
	}
	sctx, cancel := shutdownCtx()
	defer cancel()
	if err := w.flush(sctx); err != nil {
		return fmt.Errorf("inserting the last batch on shutdown: %w (its records will be redelivered)", err)
	}
	if err := w.cl.CommitMarkedOffsets(sctx); err != nil {
		return fmt.Errorf("committing offsets on shutdown: %w", err)
	}
	return nil
}

func (w *writer) add(r *kgo.Record) {
	t, ok := w.tables[r.Topic]
	if !ok {
		return
	}
	if len(w.pending) == 0 {
		w.firstAt = time.Now()
	}
	w.pending = append(w.pending, r)
	row, err := t.decode(r.Value)
	if err != nil {
		// Our own sender and router write these topics; a record we cannot
		// read is a bug or a newer writer. It is logged with its position
		// (it stays in Kafka) rather than stalling the log behind it.
		w.log.Error("skipping undecodable record", "topic", r.Topic, "partition", r.Partition,
			"offset", r.Offset, "err", err)
		return
	}
	t.rows = append(t.rows, row)
}

// flush inserts every pending row, retrying with backoff until it succeeds
// or ctx ends, then marks the records for commit. While it retries nothing
// is polled, so memory stays bounded by one batch.
func (w *writer) flush(ctx context.Context) error {
	if len(w.pending) == 0 {
		return nil
	}
	start := time.Now()
	for _, t := range w.tables {
		backoff := 100 * time.Millisecond
		for len(t.rows) > 0 {
			err := w.insert(ctx, t)
			if err == nil {
				w.rowsOut.Add(ctx, int64(len(t.rows)), metric.WithAttributes(attribute.String("table", t.name)))
				t.rows = t.rows[:0]
				break
			}
			w.failures.Add(ctx, 1, metric.WithAttributes(attribute.String("table", t.name)))
			w.stage.Beat() // retrying, not wedged
			w.log.Warn("inserting into ClickHouse failed; retrying", "table", t.name, "rows", len(t.rows),
				"backoff", backoff, "err", err)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(backoff):
			}
			// Capped at 10 s: quick to notice ClickHouse is back, slow
			// enough not to hammer it while it is down.
			backoff = min(backoff*2, 10*time.Second)
		}
	}
	w.cl.MarkCommitRecords(w.pending...)
	w.pending = w.pending[:0]
	w.stage.Owe(0)
	w.stage.Progress()
	w.flushDur.Record(ctx, time.Since(start).Seconds())
	return nil
}

// insert writes t's rows in one batch, under a span of its own: the
// batch's records come from many traces, so it starts a trace of its own
// rather than join one of them.
func (w *writer) insert(ctx context.Context, t *table) (err error) {
	ctx, span := w.tracer.Start(ctx, "INSERT "+w.db+"."+t.name, trace.WithNewRoot(), trace.WithSpanKind(trace.SpanKindClient))
	if span.IsRecording() {
		span.SetAttributes(
			attribute.String("db.system.name", "clickhouse"),
			attribute.String("db.namespace", w.db),
			attribute.String("db.collection.name", t.name),
			attribute.String("db.operation.name", "INSERT"),
			attribute.Int("db.operation.batch.size", len(t.rows)),
		)
		defer func() {
			if err != nil {
				span.SetStatus(codes.Error, err.Error())
			}
			span.End()
		}()
	}
	b, err := w.conn.PrepareBatch(ctx, "INSERT INTO "+w.db+"."+t.name+" ("+t.columns+")")
	if err != nil {
		return fmt.Errorf("preparing insert into %s: %w", t.name, err)
	}
	for _, row := range t.rows {
		if err := b.Append(row...); err != nil {
			_ = b.Abort()
			return fmt.Errorf("appending to %s: %w", t.name, err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("inserting %d rows into %s: %w", len(t.rows), t.name, err)
	}
	return nil
}
