package dedup_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/pkg/dedup"
	"github.com/sluicehq/sluice/pkg/kafkax"
	"github.com/sluicehq/sluice/pkg/testenv"
)

// runView builds a View of topic and runs it until the test ends.
func runView(t *testing.T, k *testenv.Kafka, topic string, maxEntries int) *dedup.View {
	t.Helper()
	return runViewLogging(t, k, topic, maxEntries, slog.New(slog.DiscardHandler))
}

func runViewLogging(t *testing.T, k *testenv.Kafka, topic string, maxEntries int, log *slog.Logger) *dedup.View {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v, err := dedup.NewView(ctx, k.Config, topic, window, maxEntries, log)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- v.Run(runCtx) }()
	var once sync.Once
	t.Cleanup(func() {
		once.Do(func() {
			stop()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("View.Run returned %v after cancel, want nil", err)
				}
			case <-time.After(10 * time.Second):
				t.Error("View.Run did not return within 10 s of cancel")
			}
			v.Close()
		})
	})
	return v
}

// waitCaughtUp fails the test unless v catches up within prompt.
func waitCaughtUp(t *testing.T, v *dedup.View) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	if err := v.WaitCaughtUp(ctx); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > prompt {
		t.Errorf("the view caught up in %v, want under %v", took, prompt)
	}
	if err := v.Ready(ctx); err != nil {
		t.Errorf("Ready after WaitCaughtUp = %v", err)
	}
}

// eventuallySeen waits up to prompt for v to see key.
func eventuallySeen(t *testing.T, v *dedup.View, key string) time.Duration {
	t.Helper()
	start := time.Now()
	for !v.Seen([]byte(key), time.Now()) {
		if time.Since(start) > prompt {
			t.Fatalf("the view did not see %s within %v", key, prompt)
		}
		time.Sleep(time.Millisecond)
	}
	return time.Since(start)
}

func TestViewRejectsBadConfig(t *testing.T) {
	_, err := dedup.NewView(context.Background(), kafkax.Config{}, "sluice.dedup", window, 10, slog.New(slog.DiscardHandler))
	if !errors.Is(err, kafkax.ErrNoBrokers) {
		t.Fatalf("NewView without brokers = %v, want ErrNoBrokers", err)
	}
}

// TestView: one View over every partition holds every committed marker
// less than a window old, written before it started or while it runs, and
// never an aborted one.
func TestView(t *testing.T) {
	k, topic := newKafka(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	t.Run("an empty changelog is caught up at once", func(t *testing.T) {
		v := runView(t, k, topic, 1000)
		if err := v.Ready(ctx); err != nil {
			t.Fatalf("Ready of a view of an empty changelog = %v", err)
		}
		waitCaughtUp(t, v)
	})

	now := time.Now()
	fresh, stale := now.Add(-time.Minute), now.Add(-window-time.Hour)
	x := newTransactor(t, k, topic)
	// Before the view starts: committed markers on partitions 0 and 1 (and
	// stale ones), an aborted transaction across both, so partition 0 ends
	// with an abort marker and partition 1 with a commit marker.
	committed0, fresh0 := markers(topic, 0, "fresh0", 5, fresh)
	old0, stale0 := markers(topic, 0, "stale0", 3, stale)
	aborted, abortedKeys := markers(topic, 0, "aborted0", 4, now)
	aborted1, abortedKeys1 := markers(topic, 1, "aborted1", 2, now)
	committed1, fresh1 := markers(topic, 1, "fresh1", 4, fresh)
	x.begin(ctx, append(committed0, old0...)...)
	x.end(ctx, kgo.TryCommit)
	x.begin(ctx, append(aborted, aborted1...)...)
	x.end(ctx, kgo.TryAbort)
	x.begin(ctx, committed1...)
	x.end(ctx, kgo.TryCommit)

	v := runView(t, k, topic, 1000)
	waitCaughtUp(t, v)

	t.Run("markers written before it started", func(t *testing.T) {
		at := time.Now()
		for _, key := range append(fresh0, fresh1...) {
			if !v.Seen([]byte(key), at) {
				t.Errorf("committed marker %s not seen", key)
			}
			if v.Seen([]byte(key), fresh.Add(window)) {
				t.Errorf("marker %s still seen a window after it was written", key)
			}
		}
		for _, keys := range [][]string{stale0, abortedKeys, abortedKeys1, {"ten_1/never"}} {
			for _, key := range keys {
				if v.Seen([]byte(key), at) {
					t.Errorf("%s seen: stale, aborted or never written", key)
				}
			}
		}
		if v.Len() != len(fresh0)+len(fresh1) {
			t.Errorf("holds %d keys, want %d", v.Len(), len(fresh0)+len(fresh1))
		}
	})

	t.Run("markers written while it runs, on any partition", func(t *testing.T) {
		late, lateKeys := markers(topic, 2, "late2", 2, time.Now())
		// The aborted transaction comes first on the same partition, so
		// once the late markers are seen the view has passed it.
		abortedLate, abortedLateKeys := markers(topic, 2, "abortedlate2", 2, time.Now())
		x.begin(ctx, abortedLate...)
		x.end(ctx, kgo.TryAbort)
		x.begin(ctx, late...)
		x.end(ctx, kgo.TryCommit)
		for _, key := range lateKeys {
			t.Logf("%s seen %v after its commit", key, eventuallySeen(t, v, key))
		}
		for _, key := range abortedLateKeys {
			if v.Seen([]byte(key), time.Now()) {
				t.Errorf("marker %s of an aborted transaction seen", key)
			}
		}
	})

	t.Run("a record that is not a marker is skipped", func(t *testing.T) {
		x.begin(ctx, &kgo.Record{Topic: topic, Partition: 0, Key: []byte("ten_1/odd"), Value: []byte("odd")})
		x.end(ctx, kgo.TryCommit)
		next, keys := markers(topic, 0, "after-odd", 1, time.Now())
		x.begin(ctx, next...)
		x.end(ctx, kgo.TryCommit)
		eventuallySeen(t, v, keys[0])
		if v.Seen([]byte("ten_1/odd"), time.Now()) {
			t.Error("a record that is not a marker counts as seen")
		}
	})

	t.Run("waits for a transaction open when it started", func(t *testing.T) {
		recs, keys := markers(topic, 2, "open2", 3, time.Now())
		x.begin(ctx, recs...)
		v := runView(t, k, topic, 1000)
		const open = time.Second
		time.Sleep(open)
		if err := v.Ready(ctx); err == nil {
			t.Fatal("the view is ready while a transaction before its end is open")
		}
		x.end(ctx, kgo.TryCommit)
		waitCaughtUp(t, v)
		for _, key := range append(keys, fresh0...) {
			if !v.Seen([]byte(key), time.Now()) {
				t.Errorf("marker %s not seen after catching up", key)
			}
		}
	})

	t.Run("holds at most maxEntries, evicting the oldest of each partition", func(t *testing.T) {
		// Committed and fresh: partition 0 has 5 markers from before and
		// 1 after the odd record, partition 1 has 4, partition 2 has 2
		// late and 3 once open. A view of 10 gives them 4, 3 and 3, and
		// evicts the oldest of each: 2 of fresh0 and 1 of fresh1 (written a
		// minute ago), and the 2 late2.
		var logged logRecords
		v := runViewLogging(t, k, topic, 10, slog.New(&logged))
		waitCaughtUp(t, v)
		at := time.Now()
		if v.Len() != 10 {
			t.Errorf("a view of at most 10 holds %d", v.Len())
		}
		if v.Evicted() != 5 {
			t.Errorf("evicted %d, want 5", v.Evicted())
		}
		seen := 0
		for _, key := range append(fresh0, fresh1...) {
			if v.Seen([]byte(key), at) {
				seen++
			}
		}
		if seen != 4+3-1 {
			t.Errorf("%d of fresh0 and fresh1 seen, want 6: 3 of 5 and 3 of 4", seen)
		}
		// Partitions 0 and 1 evicted ids of a minute ago: their effective
		// window is the time since then, to the millisecond. Partition 2
		// evicted ids of the last few seconds, and the View's is the
		// shortest.
		sinceFresh := time.Duration(at.UnixMilli()-fresh.UnixMilli()) * time.Millisecond
		stats := v.Stats(at)
		for p, want := range []struct {
			len       int
			evicted   uint64
			effective time.Duration
		}{{4, 2, sinceFresh}, {3, 1, sinceFresh}, {3, 2, stats[2].EffectiveWindow}} {
			st := stats[p]
			if st.Partition != int32(p) || st.Len != want.len || st.Evicted != want.evicted || st.EffectiveWindow != want.effective {
				t.Errorf("partition %d stats %+v, want %d held, %d evicted, effective window %v",
					p, st, want.len, want.evicted, want.effective)
			}
		}
		if w := stats[2].EffectiveWindow; w >= time.Minute || v.EffectiveWindow(at) != w {
			t.Errorf("partition 2's effective window %v, the View's %v; want the same, under a minute",
				w, v.EffectiveWindow(at))
		}
		// Each partition's fall below the window is logged once, however
		// many of its markers were evicted.
		if got := logged.count("dedup view evicts ids before the dedup window ends"); got != 3 {
			t.Errorf("logged %d short windows, want 3 (one per partition): %v", got, logged.messages())
		}
	})
}

// TestViewReadsOnlyTheWindow: the View starts each partition at its first
// marker stamped less than a window ago, so markers before it are not even
// read, and a partition holding only those is caught up at once.
func TestViewReadsOnlyTheWindow(t *testing.T) {
	k, topic := newKafka(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	now := time.Now()
	stale := now.Add(-window - time.Hour)
	x := newTransactor(t, k, topic)
	old0, oldKeys0 := markers(topic, 0, "stale0", 30, stale)
	fresh0, freshKeys0 := markers(topic, 0, "fresh0", 4, now)
	old1, oldKeys1 := markers(topic, 1, "stale1", 20, stale)
	for _, recs := range [][]*kgo.Record{old0, old1, fresh0} {
		x.begin(ctx, recs...)
		x.end(ctx, kgo.TryCommit)
	}
	v := runView(t, k, topic, 1000)
	waitCaughtUp(t, v)
	at := time.Now()
	for p, want := range []uint64{4, 0, 0} {
		if got := v.Stats(at)[p].Read; got != want {
			t.Errorf("partition %d: read %d markers, want %d: only those of the window", p, got, want)
		}
	}
	for _, key := range freshKeys0 {
		if !v.Seen([]byte(key), at) {
			t.Errorf("marker %s of the window not seen", key)
		}
	}
	for _, key := range append(oldKeys0, oldKeys1...) {
		if v.Seen([]byte(key), at) {
			t.Errorf("stale marker %s seen", key)
		}
	}
	if v.Evicted() != 0 || v.EffectiveWindow(at) != window {
		t.Errorf("evicted %d, effective window %v; want 0 and %v", v.Evicted(), v.EffectiveWindow(at), window)
	}
}

// logRecords is a slog.Handler keeping the messages logged.
type logRecords struct {
	mu   sync.Mutex
	msgs []string
}

func (l *logRecords) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecords) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecords) WithGroup(string) slog.Handler            { return l }
func (l *logRecords) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs = append(l.msgs, r.Message)
	return nil
}

func (l *logRecords) messages() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.msgs)
}

func (l *logRecords) count(prefix string) int {
	n := 0
	for _, m := range l.messages() {
		if strings.HasPrefix(m, prefix) {
			n++
		}
	}
	return n
}
