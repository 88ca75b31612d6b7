package kafkax_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/pkg/kafkax"
	"github.com/sluicehq/sluice/pkg/testenv"
)

// TestTransactSessionAbortIsInvisible: a batch consumed and produced in an
// aborted transaction is consumed again and never seen by read_committed
// readers; the committed retry is seen exactly once.
func TestTransactSessionAbortIsInvisible(t *testing.T) {
	k := testenv.NewKafka(t)
	in, out := k.Names.Events, k.Names.Deliveries
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	p, err := kafkax.NewProducer(k.Config)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	const n = 10
	for i := range n {
		if err := p.ProduceSync(ctx, &kgo.Record{Topic: in, Value: []byte(strconv.Itoa(i))}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}

	s, err := kafkax.NewTransactSession(k.Config, k.Prefix+"txn", k.Prefix+"router", []string{in})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	round := func(commit kgo.TransactionEndTry) int {
		t.Helper()
		if err := s.Begin(); err != nil {
			t.Fatal(err)
		}
		got := 0
		for got < n {
			fs := s.PollFetches(ctx)
			if err := fs.Err(); err != nil {
				t.Fatalf("polling: %v", err)
			}
			fs.EachRecord(func(r *kgo.Record) {
				got++
				s.Produce(ctx, &kgo.Record{Topic: out, Value: r.Value}, nil)
			})
		}
		committed, err := s.End(ctx, commit)
		if err != nil {
			t.Fatalf("ending transaction: %v", err)
		}
		if bool(commit) != committed {
			t.Fatalf("End(%v) committed=%v", commit, committed)
		}
		return got
	}
	round(kgo.TryAbort)
	if again := round(kgo.TryCommit); again != n {
		t.Fatalf("after the abort the session re-read %d records, want %d", again, n)
	}

	c, err := kafkax.NewConsumer(k.Config, k.Prefix+"reader", []string{out})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	seen := map[string]int{}
	deadline := time.Now().Add(3 * time.Second) // after all n arrive, wait for stragglers
	for time.Now().Before(deadline) {
		pctx, pcancel := context.WithTimeout(ctx, 500*time.Millisecond)
		fs := c.PollFetches(pctx)
		pcancel()
		fs.EachRecord(func(r *kgo.Record) { seen[string(r.Value)]++ })
		c.AllowRebalance()
	}
	if len(seen) != n {
		t.Fatalf("read_committed reader saw %d distinct records, want %d", len(seen), n)
	}
	for v, c := range seen {
		if c != 1 {
			t.Errorf("record %s seen %d times: the aborted copy leaked", v, c)
		}
	}
}
