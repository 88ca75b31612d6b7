package dispatch

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

func TestWatermark(t *testing.T) {
	for _, tc := range []struct {
		desc   string
		take   []int64
		finish []int64
		want   int64
	}{
		{desc: "nothing taken", want: -1},
		{desc: "taken, nothing finished", take: []int64{5, 6, 7}, want: 5},
		{desc: "all finished", take: []int64{5, 6, 7}, finish: []int64{7, 5, 6}, want: 8},
		{desc: "a gap holds the mark", take: []int64{5, 6, 7}, finish: []int64{5, 7}, want: 6},
		{desc: "offsets skipping (transaction markers)", take: []int64{10, 12, 15}, finish: []int64{10, 12}, want: 15},
		{desc: "all finished with skips", take: []int64{10, 12, 15}, finish: []int64{15, 12, 10}, want: 16},
		{desc: "an unknown offset is ignored", take: []int64{1, 2}, finish: []int64{3, 0}, want: 1},
		{desc: "finishing twice is harmless", take: []int64{1, 2, 3}, finish: []int64{1, 1, 2}, want: 3},
		{desc: "an offset taken below the last (a re-read) holds the mark", take: []int64{5, 8, 3, 6}, finish: []int64{5, 8}, want: 3},
		{desc: "re-read offsets finish in place", take: []int64{5, 8, 3, 6}, finish: []int64{3, 5}, want: 6},
		{desc: "all finished after a re-read", take: []int64{5, 8, 3, 6}, finish: []int64{8, 6, 5, 3}, want: 9},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			w := newWatermark()
			for _, o := range tc.take {
				w.take(o)
			}
			for _, o := range tc.finish {
				w.finish(o)
			}
			if got := w.commit(); got != tc.want {
				t.Fatalf("commit = %d, want %d", got, tc.want)
			}
		})
	}
}

// TestWatermarkRandomOrder: finishing a long run in random order, the mark
// is always the lowest unfinished offset, and the queue does not keep the
// finished prefix.
func TestWatermarkRandomOrder(t *testing.T) {
	const n = 5000
	w := newWatermark()
	for o := range int64(n) {
		w.take(o * 2) // every other offset, like a transactional topic
	}
	order := rand.Perm(n)
	finished := make([]bool, n)
	low := 0
	for _, i := range order {
		w.finish(int64(i) * 2)
		finished[i] = true
		for low < n && finished[low] {
			low++
		}
		want := int64(low) * 2
		if low == n {
			want = int64(n-1)*2 + 1
		}
		if got := w.commit(); got != want {
			t.Fatalf("after finishing %d: commit = %d, want %d", i*2, got, want)
		}
		if live := len(w.offsets) - w.head; live > 2*(n-low)+64 {
			t.Fatalf("%d entries kept for %d unfinished", live, n-low)
		}
	}
}

func TestBucketHoldsTheRate(t *testing.T) {
	for _, rate := range []float64{0.5, 1, 7, 20, 100, 1000} {
		t.Run("", func(t *testing.T) {
			var b bucket
			b.setRate(rate)
			start := time.Unix(1_700_000_000, 0)
			// Take tokens greedily for 20 simulated seconds, asking again
			// exactly when wait says to, as the dispatcher's timer does.
			var times []time.Time
			now := start
			for now.Before(start.Add(20 * time.Second)) {
				if b.take(now) {
					times = append(times, now)
					continue
				}
				w := b.wait(now)
				if w <= 0 {
					t.Fatalf("take refused but wait is %v", w)
				}
				now = now.Add(w)
			}
			// Over the run: the rate, within a token of burst.
			want := rate * 20
			if got := float64(len(times)); got < want-1 || got > want+math.Max(1, rate/20)+1 {
				t.Fatalf("%v/s: %v tokens in 20 s, want about %v", rate, got, want)
			}
			// In every one-second window: at most rate + 5 % (the burst).
			limit := rate + math.Max(1, rate/20)
			for i := range times {
				j := i
				for j < len(times) && times[j].Sub(times[i]) < time.Second {
					j++
				}
				if n := float64(j - i); n > limit {
					t.Fatalf("%v/s: %v requests in the second from %v, limit %v", rate, n, times[i].Sub(start), limit)
				}
			}
		})
	}
	t.Run("unlimited", func(t *testing.T) {
		var b bucket
		now := time.Now()
		for range 1000 {
			if !b.take(now) {
				t.Fatal("rate 0 must not limit")
			}
		}
	})
}

// TestBucketWaitNeverNegative (review M1): a rate so small that the wait
// for a token overflows a Duration (below about 1.1e-10/s) waits the most
// the bucket waits, 24 h, instead of a negative wait firing its timer at
// once, over and over; and a wait never drops below 1 ms.
func TestBucketWaitNeverNegative(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	for _, rate := range []float64{1e-12, 1e-300, 1e-9} {
		var b bucket
		b.setRate(rate)
		b.take(t0)
		if w := b.wait(t0); w <= 0 || w > 24*time.Hour {
			t.Errorf("rate %v/s: wait %v, want within (0, 24h]", rate, w)
		}
	}
	var b bucket
	b.setRate(1e9) // a token every nanosecond: still a timer of 1 ms at least
	for b.take(t0) {
	}
	if w := b.wait(t0); w != time.Millisecond {
		t.Errorf("rate 1e9/s: wait %v, want 1ms", w)
	}
}
