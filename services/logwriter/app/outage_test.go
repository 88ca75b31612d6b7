package app_test

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/sluicehq/sluice/pkg/testenv"
	"github.com/sluicehq/sluice/services/logwriter/app"
)

// loadGen produces attempts and event-log entries at a steady rate until
// stopped. It keeps only counts: record i of a run has an id made from i
// (see attempt and eventEntry), so the ids need no memory while the test
// measures the heap.
type loadGen struct {
	stop chan struct{}
	done chan struct{}
	// attempts and events produced, read after done.
	attempts, events int
	err              error
}

// Every tick produces 50 attempts and 5 events: 1,000 attempts and 100
// events a second, about 33,000 records over a 30 s outage.
const (
	loadTick         = 50 * time.Millisecond
	attemptsPerTick  = 50
	eventsPerTick    = 5
	loadProduceLimit = 30 * time.Second
)

func startLoad(p *kgo.Client, k *testenv.Kafka, run string, now time.Time) *loadGen {
	g := &loadGen{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(g.done)
		tick := time.NewTicker(loadTick)
		defer tick.Stop()
		for {
			select {
			case <-g.stop:
				return
			case <-tick.C:
			}
			var recs []*kgo.Record
			for i := range attemptsPerTick {
				recs = append(recs, encode(k.Names.Attempts, g.attempts+i, attempt(run, g.attempts+i, now)))
			}
			for i := range eventsPerTick {
				recs = append(recs, encode(k.Names.EventLog, g.events+i, eventEntry(run, g.events+i, now)))
			}
			ctx, cancel := context.WithTimeout(context.Background(), loadProduceLimit)
			err := p.ProduceSync(ctx, recs...).FirstErr()
			cancel()
			if err != nil {
				g.err = err
				return
			}
			g.attempts += attemptsPerTick
			g.events += eventsPerTick
		}
	}()
	return g
}

// encode is records for one message, without a testing.TB: it runs on the
// load goroutine. Our own messages always marshal.
func encode(topic string, i int, m proto.Message) *kgo.Record {
	b, _ := proto.Marshal(m)
	return &kgo.Record{Topic: topic, Partition: int32(i % partitions), Value: b}
}

// heapInUse is the live heap after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// ids returns the distinct values of column in db.table FINAL.
func ids(t testing.TB, ch *testenv.ClickHouse, table, column string) map[string]int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rows, err := ch.Conn.Query(ctx, "SELECT "+column+" FROM "+ch.Config.Database+"."+table+" FINAL")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		out[id]++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// checkExactlyOnce compares the rows of table FINAL with the ids produced:
// each must be there once, and nothing else.
func checkExactlyOnce(t testing.TB, ch *testenv.ClickHouse, table, column string, want []string) {
	t.Helper()
	got := ids(t, ch, table, column)
	var missing, doubled []string
	for _, id := range want {
		switch got[id] {
		case 0:
			missing = append(missing, id)
		case 1:
		default:
			doubled = append(doubled, id)
		}
		delete(got, id)
	}
	if len(missing) > 0 || len(doubled) > 0 || len(got) > 0 {
		t.Errorf("%s: %d of %d ids missing (first %v), %d twice or more after FINAL (first %v), %d never produced",
			table, len(missing), len(want), first(missing), len(doubled), first(doubled), len(got))
	}
}

func first(s []string) []string { return s[:min(len(s), 5)] }

// TestLogwriterClickHouseOutageLosesNothing cuts the logwriter off
// ClickHouse for 30 s while attempts and events keep arriving, then checks
// that every record produced is in ClickHouse exactly once, and that while
// the inserts failed the logwriter held one batch rather than reading on.
//
// "Exactly once" is checked on the tables FINAL. A batch whose insert
// succeeded but whose answer was lost in the cut is inserted again, so raw
// rows may be duplicated until ClickHouse merges them; the tables are
// ReplacingMergeTrees and FINAL collapses rows of equal sorting key, which is
// what anyone reading the log sees. count(DISTINCT id) alone would also pass
// if a retried row came back with a different sorting key (a second row
// FINAL cannot collapse), so the ids are compared FINAL, one row each.
func TestLogwriterClickHouseOutageLosesNothing(t *testing.T) {
	const outage = 30 * time.Second // what the issue asks: ClickHouse stopped for 30 s
	k := testenv.NewKafka(t)
	ch := testenv.NewClickHouse(t)
	db := ch.Config.Database
	proxy := testenv.NewProxy(t, ch.Config.Addrs[0])
	vars := baseEnv(k, ch, k.Prefix+"logwriter")
	vars["SLUICE_CLICKHOUSE_ADDRS"] = proxy.Addr()
	// Small batches, so one held batch (1,000 rows, ~1 MiB decoded) is
	// far below what 30 s of load would take if the writer read on.
	vars["SLUICE_BATCH_ROWS"] = "1000"
	cfg, err := app.LoadConfig(nil, env(vars))
	if err != nil {
		t.Fatal(err)
	}
	p := newProducer(t, k)
	lw := start(t, cfg)
	t.Cleanup(func() { proxy.SetCut(false) }) // before lw stops, should the test fail while cut

	now := time.Now().UTC()
	load := startLoad(p, k, "o", now)
	var once sync.Once
	stopLoad := func() { once.Do(func() { close(load.stop); <-load.done }) }
	t.Cleanup(stopLoad)
	countRaw := "SELECT (SELECT count() FROM " + db + ".attempts) + (SELECT count() FROM " + db + ".events)"

	// Rows flow through the proxy before the cut.
	deadline := time.Now().Add(30 * time.Second)
	for n, _ := tryCount(ch, countRaw); n == 0; n, _ = tryCount(ch, countRaw) {
		lw.failIfExited(t)
		if time.Now().After(deadline) {
			t.Fatal("no row reached ClickHouse through the proxy within 30 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(2 * time.Second)

	proxy.SetCut(true)
	cutAt := time.Now()
	t.Logf("ClickHouse cut for %v", outage)
	// An insert sent just before the cut may still land; after a second
	// nothing can.
	time.Sleep(time.Second)
	before := count(t, ch, countRaw)
	base := heapInUse()
	peak := base
	for time.Since(cutAt) < outage {
		lw.failIfExited(t)
		time.Sleep(2 * time.Second)
		peak = max(peak, heapInUse())
	}
	if after := count(t, ch, countRaw); after != before {
		t.Fatalf("%d rows reached ClickHouse while it was cut: the proxy did not cut", after-before)
	}
	proxy.SetCut(false)
	t.Logf("restored after %v; heap in use %.1f MiB at the cut, peak %.1f MiB during it",
		time.Since(cutAt).Round(time.Second), mib(base), mib(peak))
	// 30 s of load is ~33,000 records: a writer that read on while its
	// insert failed grew the heap by ~27 MiB here (measured by making it
	// poll during its backoff). The one batch this writer may hold is 1,000
	// rows plus the one fetch per broker franz-go buffers, ~1 MiB; it
	// measured no growth at all.
	if grew := int64(peak) - int64(base); grew > 12<<20 {
		t.Errorf("heap grew %.1f MiB while ClickHouse was cut: the writer kept reading Kafka", mib(uint64(grew)))
	}

	// A little more load after the outage, then everything must arrive.
	time.Sleep(2 * time.Second)
	stopLoad()
	nAttempts, nEvents := load.attempts, load.events
	if load.err != nil {
		t.Fatalf("producing the load: %v", load.err)
	}
	t.Logf("produced %d attempts and %d events", nAttempts, nEvents)
	waitCount(t, lw, ch, uint64(nAttempts), "SELECT count() FROM "+db+".attempts FINAL")
	waitCount(t, lw, ch, uint64(nEvents), "SELECT count() FROM "+db+".events FINAL")
	// Raw rows above the records produced are inserts repeated because the
	// cut lost their answer; FINAL collapses them.
	t.Logf("all in ClickHouse %v after the restore; %d raw rows for %d records",
		time.Since(cutAt.Add(outage)).Round(100*time.Millisecond), count(t, ch, countRaw), nAttempts+nEvents)

	wantAttempts := make([]string, nAttempts)
	for i := range wantAttempts {
		wantAttempts[i] = attempt("o", i, now).AttemptId
	}
	wantEvents := make([]string, nEvents)
	for i := range wantEvents {
		wantEvents[i] = eventEntry("o", i, now).EventId
	}
	checkExactlyOnce(t, ch, "attempts", "attempt_id", wantAttempts)
	checkExactlyOnce(t, ch, "events", "event_id", wantEvents)
	if n := count(t, ch, "SELECT uniqExact(attempt_id) FROM "+db+".attempts"); n != uint64(nAttempts) {
		t.Errorf("%d distinct attempt ids, want %d", n, nAttempts)
	}
	lw.stop(t)
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }
