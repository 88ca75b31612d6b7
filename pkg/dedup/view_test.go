package dedup_test

import (
	"context"
	"errors"
	"log/slog"
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
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v, err := dedup.NewView(ctx, k.Config, topic, window, maxEntries, slog.New(slog.DiscardHandler))
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

	t.Run("holds at most maxEntries, evicting the oldest", func(t *testing.T) {
		// 5 + 4 markers from before, 2 late, 1 after the odd record, 3
		// open: 15 committed and fresh, of which a view of 10 keeps the
		// last 10 it read. Which ones are last depends on how partitions
		// interleave, so only the count is checked.
		v := runView(t, k, topic, 10)
		waitCaughtUp(t, v)
		if v.Len() != 10 {
			t.Errorf("a view of at most 10 holds %d", v.Len())
		}
	})
}
