package retry_test

import (
	"math/rand/v2"
	"testing"
	"time"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/pkg/topics"
	"github.com/sluicehq/sluice/services/sender/retry"
)

func TestScheduleOverrides(t *testing.T) {
	ep := &sluicev1.Endpoint{}
	ten := &sluicev1.Tenant{}
	if got := retry.Schedule(ep, ten); len(got) != 7 || got[0] != 5*time.Second || got[6] != 10*time.Hour {
		t.Fatalf("default schedule %v", got)
	}
	ten.RetryScheduleMs = []int64{1000, 2000}
	if got := retry.Schedule(ep, ten); len(got) != 2 || got[1] != 2*time.Second {
		t.Fatalf("tenant schedule %v", got)
	}
	ep.RetryScheduleMs = []int64{500}
	if got := retry.Schedule(ep, ten); len(got) != 1 || got[0] != 500*time.Millisecond {
		t.Fatalf("endpoint schedule %v", got)
	}
	if got := retry.Schedule(&sluicev1.Endpoint{}, nil); len(got) != 7 {
		t.Fatalf("no tenant: %v", got)
	}
}

func TestJitterStaysWithinBounds(t *testing.T) {
	for _, d := range retry.DefaultSchedule {
		lo, hi := time.Duration(float64(d)*0.8), time.Duration(float64(d)*1.2)
		if got := retry.Jitter(d, 0); got != lo {
			t.Errorf("Jitter(%v, 0) = %v, want %v", d, got, lo)
		}
		seenLow, seenHigh := false, false
		for range 10000 {
			got := retry.Jitter(d, rand.Float64())
			if got < lo || got > hi {
				t.Fatalf("Jitter(%v) = %v, outside [%v, %v]", d, got, lo, hi)
			}
			seenLow = seenLow || got < d*9/10
			seenHigh = seenHigh || got > d*11/10
		}
		if !seenLow || !seenHigh {
			t.Errorf("jitter of %v does not spread over the range", d)
		}
	}
}

func TestTierAndHop(t *testing.T) {
	for _, tc := range []struct {
		wait time.Duration
		tier int
	}{
		{time.Second, 0}, {5 * time.Second, 0}, {4 * time.Minute, 0}, {5 * time.Minute, 1},
		{6 * time.Minute, 1}, {2 * time.Hour, 3}, {12 * time.Hour, 5}, {48 * time.Hour, 5},
	} {
		if got := retry.Tier(tc.wait); got != tc.tier {
			t.Errorf("Tier(%v) = %d (%v), want %d", tc.wait, got, topics.RetryTiers[got], tc.tier)
		}
	}
	if retry.Hop(0, 6*time.Second) {
		t.Error("a wait within the 5 s tier's jitter must be held, not hopped")
	}
	if !retry.Hop(0, 4*time.Minute) {
		t.Error("a 4 min wait in the 5 s tier must hop")
	}
}

func TestJudge(t *testing.T) {
	httpErr := func(code uint32) *sluicev1.Attempt {
		return &sluicev1.Attempt{Outcome: sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_HTTP_ERROR, StatusCode: code}
	}
	for desc, tc := range map[string]struct {
		a         *sluicev1.Attempt
		want      retry.Verdict
		throttled bool
	}{
		"2xx delivers":    {&sluicev1.Attempt{Outcome: sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_SUCCESS, StatusCode: 204}, retry.Delivered, false},
		"302 retries":     {httpErr(302), retry.Retry, false},
		"400 retries":     {httpErr(400), retry.Retry, false},
		"404 retries":     {httpErr(404), retry.Retry, false},
		"410 disables":    {httpErr(410), retry.Disable, false},
		"429 throttles":   {httpErr(429), retry.Retry, true},
		"500 retries":     {httpErr(500), retry.Retry, false},
		"503 throttles":   {httpErr(503), retry.Retry, true},
		"timeout retries": {&sluicev1.Attempt{Outcome: sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_TIMEOUT}, retry.Retry, false},
		"network retries": {&sluicev1.Attempt{Outcome: sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_NETWORK_ERROR}, retry.Retry, false},
		"blocked retries": {&sluicev1.Attempt{Outcome: sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_BLOCKED}, retry.Retry, false},
		"circuit open":    {&sluicev1.Attempt{Outcome: sluicev1.AttemptOutcome_ATTEMPT_OUTCOME_CIRCUIT_OPEN}, retry.Retry, false},
	} {
		if got := retry.Judge(tc.a); got != tc.want {
			t.Errorf("%s: Judge = %v, want %v", desc, got, tc.want)
		}
		if got := retry.Throttled(tc.a); got != tc.throttled {
			t.Errorf("%s: Throttled = %v, want %v", desc, got, tc.throttled)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)
	for desc, tc := range map[string]struct {
		in   string
		want time.Duration
		ok   bool
	}{
		"seconds":                  {"120", 2 * time.Minute, true},
		"zero seconds":             {"0", 0, true},
		"seconds with spaces":      {" 30 ", 30 * time.Second, true},
		"HTTP date":                {"Sun, 22 Nov 2026 08:05:00 GMT", 5 * time.Minute, true},
		"RFC 850 date":             {"Sunday, 22-Nov-26 08:01:00 GMT", time.Minute, true},
		"asctime date":             {"Sun Nov 22 08:00:30 2026", 30 * time.Second, true},
		"date in the past":         {"Sun, 22 Nov 2026 07:59:00 GMT", 0, false},
		"date next year":           {"Mon, 22 Nov 2027 08:00:00 GMT", 0, false},
		"negative":                 {"-5", 0, false},
		"fraction":                 {"1.5", 0, false},
		"more than a week":         {"604801", 0, false},
		"huge":                     {"99999999999999999999", 0, false},
		"empty":                    {"", 0, false},
		"word":                     {"soon", 0, false},
		"seconds then junk":        {"10; drop table", 0, false},
		"date without zone":        {"2026-11-22T08:05:00", 0, false},
		"HTTP date with bad month": {"Sun, 22 Foo 2026 08:05:00 GMT", 0, false},
	} {
		got, ok := retry.ParseRetryAfter(tc.in, now)
		if ok != tc.ok || got != tc.want {
			t.Errorf("%s: ParseRetryAfter(%q) = %v, %v; want %v, %v", desc, tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"120", "Sun, 22 Nov 2026 08:05:00 GMT", "-1", "", "1e9", "\xff"} {
		f.Add(s)
	}
	now := time.Now()
	f.Fuzz(func(t *testing.T, s string) {
		d, ok := retry.ParseRetryAfter(s, now)
		if ok && (d < 0 || d > 7*24*time.Hour) {
			t.Fatalf("ParseRetryAfter(%q) = %v", s, d)
		}
	})
}

func TestClamp(t *testing.T) {
	w := 5 * time.Minute
	for _, tc := range []struct{ asked, want time.Duration }{
		{0, w}, {time.Minute, w}, {7 * time.Minute, 7 * time.Minute}, {10 * time.Minute, 10 * time.Minute}, {time.Hour, 10 * time.Minute},
	} {
		if got := retry.Clamp(tc.asked, w); got != tc.want {
			t.Errorf("Clamp(%v, %v) = %v, want %v", tc.asked, w, got, tc.want)
		}
	}
}

func TestConcurrencyAIMD(t *testing.T) {
	var c retry.Concurrency
	if c.Limit(10) != 10 {
		t.Fatalf("fresh limit %d, want the maximum", c.Limit(10))
	}
	c.Throttled(10)
	c.Throttled(10)
	if got := c.Limit(10); got != 2 {
		t.Fatalf("after two throttles: %d, want 2 (10 → 5 → 2.5)", got)
	}
	for range 5 {
		c.Throttled(10)
	}
	if got := c.Limit(10); got != 1 {
		t.Fatalf("never below 1, got %d", got)
	}
	successes := 0
	for c.Limit(10) < 10 {
		c.Succeeded(10)
		successes++
		if successes > 1000 {
			t.Fatal("the limit never recovers")
		}
	}
	// From 1 back to 10 at 1/limit per success: about 1+2+…+9 = 45.
	if successes < 30 || successes > 60 {
		t.Fatalf("recovered in %d successes, want about 45", successes)
	}
	if c.Limit(20) != 20 {
		t.Fatal("recovered limit must follow a raised maximum")
	}
}

func TestBreakerOpensAndClosesOnSchedule(t *testing.T) {
	cfg := retry.BreakerConfig{Window: 5 * time.Minute, MinAttempts: 10, FailureRatio: 0.7, OpenFor: 30 * time.Second}
	now := time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)
	b := retry.NewBreaker(cfg)
	step := func(ok bool) retry.Transition {
		now = now.Add(time.Second)
		if p := b.Allow(now); p != retry.Normal {
			t.Fatalf("at %v: %v while closed, want Normal", now, p)
		}
		return b.Record(now, retry.Normal, ok)
	}
	// 9 failures: below the 10-attempt minimum, stays closed.
	for i := range 9 {
		if tr := step(false); tr != retry.Unchanged {
			t.Fatalf("failure %d opened the circuit before 10 attempts", i+1)
		}
	}
	// The 10th attempt at 100 % failures opens it.
	if tr := step(false); tr != retry.Opened {
		t.Fatalf("10 failures of 10: %v, want Opened", tr)
	}
	opened := now
	for _, after := range []time.Duration{time.Second, 29 * time.Second} {
		if b.Allow(opened.Add(after)) != retry.Refused {
			t.Fatalf("%v after opening: a request passed", after)
		}
	}
	// At 30 s exactly one probe passes.
	probeAt := opened.Add(30 * time.Second)
	if b.Allow(probeAt) != retry.Probe {
		t.Fatal("no probe 30 s after opening")
	}
	if b.Allow(probeAt) != retry.Refused {
		t.Fatal("a second request passed while the probe is out")
	}
	// The probe fails: open for another 30 s.
	if tr := b.Record(probeAt, retry.Probe, false); tr != retry.Opened {
		t.Fatalf("failed probe: %v, want Opened", tr)
	}
	if b.Allow(probeAt.Add(10*time.Second)) != retry.Refused {
		t.Fatal("passed 10 s after a failed probe")
	}
	probe2 := probeAt.Add(30 * time.Second)
	if b.Allow(probe2) != retry.Probe {
		t.Fatal("no second probe")
	}
	if tr := b.Record(probe2, retry.Probe, true); tr != retry.Closed {
		t.Fatalf("successful probe: %v, want Closed", tr)
	}
	if b.Allow(probe2.Add(time.Millisecond)) != retry.Normal || b.Allow(probe2.Add(2*time.Millisecond)) != retry.Normal {
		t.Fatal("closed breaker refuses requests")
	}
}

// TestBreakerHalfOpenIsDecidedByTheProbe (review B4): a request let
// through before the circuit opened answers while the probe is out; its
// answer, success or failure, changes nothing. The probe's own answer
// decides.
func TestBreakerHalfOpenIsDecidedByTheProbe(t *testing.T) {
	cfg := retry.BreakerConfig{Window: time.Minute, MinAttempts: 2, FailureRatio: 0.5, OpenFor: 30 * time.Second}
	now := time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)
	for _, late := range []bool{true, false} {
		b := retry.NewBreaker(cfg)
		slow := b.Allow(now) // answered only after the circuit opened
		b.Allow(now)
		b.Allow(now)
		b.Record(now, retry.Normal, false)
		if tr := b.Record(now, retry.Normal, false); tr != retry.Opened {
			t.Fatalf("2 failures of 2: %v, want Opened", tr)
		}
		probeAt := now.Add(cfg.OpenFor)
		if b.Allow(probeAt) != retry.Probe {
			t.Fatal("no probe after OpenFor")
		}
		if tr := b.Record(probeAt.Add(time.Second), slow, late); tr != retry.Unchanged {
			t.Fatalf("a late answer (ok %v) of a request from before the circuit opened: %v, want Unchanged", late, tr)
		}
		if b.Allow(probeAt.Add(time.Second)) != retry.Refused {
			t.Fatal("a request passed while the probe is out")
		}
		if tr := b.Record(probeAt.Add(2*time.Second), retry.Probe, true); tr != retry.Closed {
			t.Fatalf("the probe's success: %v, want Closed", tr)
		}
	}
}

// TestBreakerReleasedProbeIsOfferedAgain (review M2): a probe that could not
// be sent (no rate-limit token) is released, and the next Allow offers the
// probe again instead of refusing everything.
func TestBreakerReleasedProbeIsOfferedAgain(t *testing.T) {
	cfg := retry.BreakerConfig{Window: time.Minute, MinAttempts: 1, FailureRatio: 0.5, OpenFor: time.Second}
	now := time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)
	b := retry.NewBreaker(cfg)
	b.Allow(now)
	b.Record(now, retry.Normal, false)
	at := now.Add(cfg.OpenFor)
	if b.Allow(at) != retry.Probe {
		t.Fatal("no probe after OpenFor")
	}
	b.Release()
	if p := b.Allow(at.Add(time.Minute)); p != retry.Probe {
		t.Fatalf("after releasing the probe: %v, want a probe again", p)
	}
}

func TestBreakerThresholdAndWindow(t *testing.T) {
	cfg := retry.BreakerConfig{Window: 5 * time.Minute, MinAttempts: 10, FailureRatio: 0.7, OpenFor: 30 * time.Second}
	now := time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)
	t.Run("69 % failures stay closed, 70 % open", func(t *testing.T) {
		b := retry.NewBreaker(cfg)
		// 30 successes then 69 failures: 69.7 %, closed; the 70th
		// failure makes 70 of 100 and opens it.
		for range 30 {
			b.Record(now, retry.Normal, true)
		}
		for range 69 {
			if b.Record(now, retry.Normal, false) == retry.Opened {
				t.Fatal("opened below 70 %")
			}
		}
		if tr := b.Record(now, retry.Normal, false); tr != retry.Opened {
			t.Fatal("did not open at 70 of 100")
		}
	})
	t.Run("old failures leave the window", func(t *testing.T) {
		b := retry.NewBreaker(cfg)
		for range 9 {
			b.Record(now, retry.Normal, false)
		}
		// Six minutes later the nine are out of the window: one more
		// failure is 1 of 1, below the minimum.
		if tr := b.Record(now.Add(6*time.Minute), retry.Normal, false); tr != retry.Unchanged {
			t.Fatal("failures older than the window counted")
		}
	})
}
