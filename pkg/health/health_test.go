package health_test

import (
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/health"
)

// clock is a fake time the registry reads.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newRegistry(t testing.TB) (*health.Registry, *clock) {
	t.Helper()
	c := &clock{t: time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)}
	return health.NewRegistry(time.Minute, c.now), c
}

func TestReadiness(t *testing.T) {
	for desc, tc := range map[string]struct {
		do    func(s *health.Stage)
		ready bool
		want  string
	}{
		"a new stage is not ready":         {func(*health.Stage) {}, false, "stage router is starting: not started yet"},
		"a waiting stage says why":         {func(s *health.Stage) { s.Waiting("kafka: dial refused") }, false, "waiting: kafka: dial refused"},
		"a running stage is ready":         {func(s *health.Stage) { s.Running() }, true, ""},
		"a stopped stage is not ready":     {func(s *health.Stage) { s.Running(); s.Stopped("run returned") }, false, "stopped: run returned"},
		"waiting again after running":      {func(s *health.Stage) { s.Running(); s.Waiting("rebuilding dedup of partition 3") }, false, "rebuilding dedup"},
		"running again after waiting":      {func(s *health.Stage) { s.Waiting("x"); s.Running() }, true, ""},
		"owing work does not make unready": {func(s *health.Stage) { s.Running(); s.Owe(5) }, true, ""},
	} {
		t.Run(desc, func(t *testing.T) {
			r, _ := newRegistry(t)
			tc.do(r.Stage("router"))
			err := r.Ready()
			if (err == nil) != tc.ready {
				t.Fatalf("Ready() = %v, want ready=%v", err, tc.ready)
			}
			if err != nil && !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Ready() = %q, want it to say %q", err, tc.want)
			}
		})
	}
}

func TestStuck(t *testing.T) {
	for desc, tc := range map[string]struct {
		do    func(s *health.Stage, c *clock)
		stuck bool
	}{
		"idle and beating is alive": {func(s *health.Stage, c *clock) {
			s.Running()
			for range 10 {
				c.advance(30 * time.Second)
				s.Beat()
			}
		}, false},
		"holding work without progress past the threshold is stuck": {func(s *health.Stage, c *clock) {
			s.Running()
			s.Owe(1)
			c.advance(61 * time.Second)
			s.Beat()
		}, true},
		"holding work just under the threshold is alive": {func(s *health.Stage, c *clock) {
			s.Running()
			s.Owe(1)
			c.advance(59 * time.Second)
			s.Beat()
		}, false},
		"steady progress while always owing is alive": {func(s *health.Stage, c *clock) {
			s.Running()
			s.Owe(100)
			for range 10 {
				c.advance(50 * time.Second)
				s.Beat()
				s.Progress()
			}
		}, false},
		"the clock starts when work arrives, not at the last progress": {func(s *health.Stage, c *clock) {
			s.Running()
			s.Progress()
			c.advance(10 * time.Minute) // idle for long
			s.Beat()
			s.Owe(1)
			c.advance(30 * time.Second)
		}, false},
		"a loop that does not come round is stuck even when idle": {func(s *health.Stage, c *clock) {
			s.Running()
			c.advance(61 * time.Second)
		}, true},
		"a waiting stage is never stuck": {func(s *health.Stage, c *clock) {
			s.Running()
			s.Owe(3)
			s.Waiting("kafka down")
			c.advance(time.Hour)
		}, false},
		"a stopped stage is never stuck": {func(s *health.Stage, c *clock) {
			s.Running()
			s.Owe(3)
			s.Stopped("done")
			c.advance(time.Hour)
		}, false},
		"owing nothing again clears it": {func(s *health.Stage, c *clock) {
			s.Running()
			s.Owe(2)
			c.advance(61 * time.Second)
			s.Beat()
			s.Owe(0)
		}, false},
	} {
		t.Run(desc, func(t *testing.T) {
			r, c := newRegistry(t)
			tc.do(r.Stage("logwriter"), c)
			err := r.Live()
			if (err != nil) != tc.stuck {
				t.Fatalf("Live() = %v, want stuck=%v", err, tc.stuck)
			}
			if err != nil && !strings.Contains(err.Error(), "stage logwriter is stuck") {
				t.Fatalf("Live() = %q does not name the stage", err)
			}
		})
	}
}

func TestStatusesNameEveryStage(t *testing.T) {
	r, _ := newRegistry(t)
	r.Stage("sender").Running()
	r.Stage("config").Waiting("catching up")
	if first, again := r.Stage("sender"), r.Stage("sender"); first != again {
		t.Fatal("Stage returned two stages for one name")
	}
	st := r.Statuses()
	if len(st) != 2 || st[0].Name != "config" || st[0].State != "waiting" || st[1].Name != "sender" || st[1].State != "running" {
		t.Fatalf("Statuses() = %+v", st)
	}
}

func BenchmarkHotPath(b *testing.B) {
	r := health.NewRegistry(time.Minute, nil)
	s := r.Stage("sender")
	s.Running()
	b.ReportAllocs()
	for b.Loop() {
		s.Owe(3)
		s.Progress()
	}
}
