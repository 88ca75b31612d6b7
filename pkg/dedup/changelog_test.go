package dedup_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/pkg/dedup"
	"github.com/sluicehq/sluice/pkg/kafkax"
	"github.com/sluicehq/sluice/pkg/testenv"
	"github.com/sluicehq/sluice/pkg/topics"
)

func TestMain(m *testing.M) { testenv.Main(m) }

const (
	window = 24 * time.Hour
	// prompt is how long a Rebuild of a few records may take: a client's
	// bootstrap, two offset lists and a fetch or two, each milliseconds.
	// Waiting for a data record at the end of a log that ends with a
	// transaction marker would instead hit the 30 s test deadline.
	prompt = 3 * time.Second
)

// newKafka gives the test its own Sluice topics, the dedup changelog among
// them (created as in production: compact,delete), with 3 partitions of
// events and so of dedup.
func newKafka(t *testing.T) (*testenv.Kafka, string) {
	k := testenv.NewKafka(t, testenv.WithPartitions(topics.Partitions{
		Events: 3, Deliveries: 2, Retry: 2, Dead: 2, Attempts: 2, EventLog: 2}))
	return k, k.Names.Dedup
}

// transactor produces in transactions the way the router does: markers on
// the partition they name, everything else by key.
type transactor struct {
	t  *testing.T
	cl *kgo.Client
}

func newTransactor(t *testing.T, k *testenv.Kafka, topic string) *transactor {
	cl, err := kafkax.NewClient(k.Config,
		kgo.TransactionalID(k.Prefix+"router"),
		kgo.RecordPartitioner(dedup.Partitioner(topic)),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return &transactor{t: t, cl: cl}
}

// begin starts a transaction and produces recs in it, waiting until they are
// in the log.
func (x *transactor) begin(ctx context.Context, recs ...*kgo.Record) {
	x.t.Helper()
	if err := x.cl.BeginTransaction(); err != nil {
		x.t.Fatal(err)
	}
	if err := x.cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		x.t.Fatalf("producing in a transaction: %v", err)
	}
}

func (x *transactor) end(ctx context.Context, how kgo.TransactionEndTry) {
	x.t.Helper()
	if err := x.cl.EndTransaction(ctx, how); err != nil {
		x.t.Fatalf("ending transaction (commit=%v): %v", how, err)
	}
}

// markers returns n markers on partition, keyed "ten_1/<name>-<i>", at t.
func markers(topic string, partition int32, name string, n int, t time.Time) (recs []*kgo.Record, keys []string) {
	for i := range n {
		key := fmt.Sprintf("ten_1/%s-%d", name, i)
		keys = append(keys, key)
		recs = append(recs, dedup.Marker(topic, partition, []byte(key), t))
	}
	return recs, keys
}

// rebuild runs Rebuild and fails the test unless it returns within prompt.
func rebuild(t *testing.T, k *testenv.Kafka, topic string, partition int32) (*dedup.Set, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	set, n, err := dedup.Rebuild(ctx, k.Config, topic, partition, window, 1000)
	took := time.Since(start)
	if err != nil {
		t.Fatalf("Rebuild(%d) after %v: %v", partition, took, err)
	}
	t.Logf("Rebuild(%d): %d markers read, %d held, in %v", partition, n, set.Len(), took)
	if took > prompt {
		t.Errorf("Rebuild(%d) took %v, want under %v", partition, took, prompt)
	}
	return set, n
}

func TestRebuildRejectsBadConfig(t *testing.T) {
	_, _, err := dedup.Rebuild(context.Background(), kafkax.Config{}, "sluice.dedup", 0, window, 10)
	if !errors.Is(err, kafkax.ErrNoBrokers) {
		t.Fatalf("Rebuild without brokers = %v, want ErrNoBrokers", err)
	}
}

func TestRebuild(t *testing.T) {
	k, topic := newKafka(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	now := time.Now()
	fresh, stale := now.Add(-time.Minute), now.Add(-window-time.Hour)

	t.Run("empty topic", func(t *testing.T) {
		for p := range int32(3) {
			if set, n := rebuild(t, k, topic, p); n != 0 || set.Len() != 0 {
				t.Errorf("Rebuild(%d) of an empty partition: %d read, %d held", p, n, set.Len())
			}
		}
	})

	x := newTransactor(t, k, topic)
	// Partition 0: a committed transaction, then an aborted one, so its log
	// ends with an abort marker. Partition 1: the other way round, ending
	// with a commit marker. Partition 2: nothing.
	committed0, fresh0 := markers(topic, 0, "fresh0", 5, fresh)
	old0, stale0 := markers(topic, 0, "stale0", 3, stale)
	aborted0, abortedKeys0 := markers(topic, 0, "aborted0", 4, now)
	aborted1, abortedKeys1 := markers(topic, 1, "aborted1", 4, now)
	committed1, fresh1 := markers(topic, 1, "fresh1", 5, fresh)
	old1, stale1 := markers(topic, 1, "stale1", 2, stale)
	// Deliveries go in the same transactions, partitioned by key.
	var deliveries []*kgo.Record
	for i := range 6 {
		deliveries = append(deliveries, &kgo.Record{Topic: k.Names.Deliveries,
			Key: fmt.Appendf(nil, "ep_%d", i%2), Value: fmt.Appendf(nil, "delivery-%d", i)})
	}

	x.begin(ctx, append(append(committed0, old0...), deliveries...)...)
	x.end(ctx, kgo.TryCommit)
	x.begin(ctx, append(aborted0, aborted1...)...)
	x.end(ctx, kgo.TryAbort)
	x.begin(ctx, append(committed1, old1...)...)
	x.end(ctx, kgo.TryCommit)

	t.Run("markers keep their partition, deliveries go by key", func(t *testing.T) {
		// Produced records carry the partition they went to; the
		// Rebuilds below show they are read from there.
		for want, recs := range map[int32][][]*kgo.Record{0: {committed0, old0, aborted0}, 1: {committed1, old1, aborted1}} {
			for _, group := range recs {
				for _, r := range group {
					if r.Partition != want {
						t.Errorf("marker %s went to partition %d, want %d", r.Key, r.Partition, want)
					}
				}
			}
		}
		murmur := kgo.StickyKeyPartitioner(nil).ForTopic(k.Names.Deliveries)
		for _, r := range deliveries {
			if want := int32(murmur.Partition(&kgo.Record{Key: r.Key}, 2)); r.Partition != want {
				t.Errorf("delivery keyed %s went to partition %d, want %d", r.Key, r.Partition, want)
			}
		}
	})

	for _, tc := range []struct {
		desc      string
		partition int32
		read      int
		seen      []string
		unseen    [][]string
	}{
		{desc: "log ends with an abort marker", partition: 0, read: 8, seen: fresh0,
			unseen: [][]string{stale0, abortedKeys0, abortedKeys1, fresh1}},
		{desc: "log ends with a commit marker", partition: 1, read: 7, seen: fresh1,
			unseen: [][]string{stale1, abortedKeys1, abortedKeys0, fresh0}},
		{desc: "empty partition beside busy ones", partition: 2,
			unseen: [][]string{fresh0, fresh1, stale0, abortedKeys0}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			set, n := rebuild(t, k, topic, tc.partition)
			if n != tc.read {
				t.Errorf("read %d markers, want %d (committed ones, stale included)", n, tc.read)
			}
			if set.Len() != len(tc.seen) {
				t.Errorf("holds %d keys, want %d", set.Len(), len(tc.seen))
			}
			at := time.Now()
			for _, key := range tc.seen {
				if !set.Seen([]byte(key), at) {
					t.Errorf("committed marker %s not seen", key)
				}
			}
			for _, keys := range tc.unseen {
				for _, key := range keys {
					if set.Seen([]byte(key), at) {
						t.Errorf("%s seen: stale, aborted or another partition's", key)
					}
				}
			}
		})
	}

	t.Run("waits for an open transaction", func(t *testing.T) {
		// A new owner rebuilding while the previous one is still
		// committing its last batch must wait for that batch's markers.
		recs, keys := markers(topic, 2, "open2", 3, fresh)
		x.begin(ctx, recs...)
		type result struct {
			set  *dedup.Set
			n    int
			err  error
			done time.Time
		}
		res := make(chan result, 1)
		go func() {
			set, n, err := dedup.Rebuild(ctx, k.Config, topic, 2, window, 1000)
			res <- result{set, n, err, time.Now()}
		}()
		const open = time.Second
		select {
		case r := <-res:
			t.Fatalf("Rebuild returned while the transaction was open: %d read, err %v", r.n, r.err)
		case <-time.After(open):
		}
		x.end(ctx, kgo.TryCommit)
		committedAt := time.Now()
		r := <-res
		if r.err != nil {
			t.Fatal(r.err)
		}
		t.Logf("Rebuild returned %v after the commit", r.done.Sub(committedAt))
		if r.done.Sub(committedAt) > prompt {
			t.Errorf("Rebuild returned %v after the commit, want under %v", r.done.Sub(committedAt), prompt)
		}
		if r.n != 3 || r.set.Len() != 3 {
			t.Errorf("read %d markers, holds %d, want 3 and 3", r.n, r.set.Len())
		}
		for _, key := range keys {
			if !r.set.Seen([]byte(key), time.Now()) {
				t.Errorf("marker %s of the transaction committed during Rebuild not seen", key)
			}
		}
	})

	t.Run("a record that is not a marker", func(t *testing.T) {
		x.begin(ctx, &kgo.Record{Topic: topic, Partition: 2, Key: []byte("ten_1/odd"), Value: []byte("odd")})
		x.end(ctx, kgo.TryCommit)
		_, _, err := dedup.Rebuild(ctx, k.Config, topic, 2, window, 1000)
		if !errors.Is(err, dedup.ErrBadMarker) {
			t.Fatalf("Rebuild = %v, want ErrBadMarker", err)
		}
	})

	t.Run("a partition that does not exist", func(t *testing.T) {
		if _, _, err := dedup.Rebuild(ctx, k.Config, topic, 3, window, 1000); err == nil {
			t.Fatal("Rebuild of partition 3 of a 3-partition topic succeeded")
		}
	})
}

// TestRebuildReadsOnlyTheWindow: Rebuild starts at the first marker stamped
// less than a window ago, so the markers before it are not even fetched:
// the count of markers read leaves them out. A marker's record timestamp
// is set here as Marker sets it, to the marker's own time.
func TestRebuildReadsOnlyTheWindow(t *testing.T) {
	k, topic := newKafka(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	now := time.Now()
	stamped := func(recs []*kgo.Record, at time.Time) []*kgo.Record {
		for _, r := range recs {
			r.Timestamp = at
		}
		return recs
	}
	stale, inside := now.Add(-window-time.Hour), now.Add(-window+10*time.Minute)
	x := newTransactor(t, k, topic)
	// Partition 0: 40 stale markers, then 3 just inside the window and 4
	// fresh ones, each group its own transaction. Partition 1: only stale
	// markers, ending with a commit marker.
	old0, oldKeys0 := markers(topic, 0, "stale0", 40, stale)
	in0, inKeys0 := markers(topic, 0, "inside0", 3, inside)
	fresh0, freshKeys0 := markers(topic, 0, "fresh0", 4, now)
	old1, oldKeys1 := markers(topic, 1, "stale1", 10, stale)
	for _, recs := range [][]*kgo.Record{stamped(old0, stale), stamped(old1, stale), stamped(in0, inside), stamped(fresh0, now)} {
		x.begin(ctx, recs...)
		x.end(ctx, kgo.TryCommit)
	}
	for _, tc := range []struct {
		desc      string
		partition int32
		seen      []string
		unseen    []string
	}{
		{desc: "stale markers before fresh ones", partition: 0,
			seen: append(inKeys0, freshKeys0...), unseen: oldKeys0},
		{desc: "only stale markers", partition: 1, unseen: oldKeys1},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			set, n := rebuild(t, k, topic, tc.partition)
			if n != len(tc.seen) {
				t.Errorf("read %d markers, want %d: only those of the window", n, len(tc.seen))
			}
			for _, key := range tc.seen {
				if !set.Seen([]byte(key), now) {
					t.Errorf("marker %s of the window not seen", key)
				}
			}
			for _, key := range tc.unseen {
				if set.Seen([]byte(key), now) {
					t.Errorf("stale marker %s seen", key)
				}
			}
		})
	}
}
