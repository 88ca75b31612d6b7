// Package health is how a process's long-running stages (the router, the
// sender's dispatcher, the logwriter, the config follower, the dedup view)
// report on themselves, and how /readyz and /healthz judge them
// (DESIGN §10):
//
//   - ready: every stage is running. A stage that waits for a dependency
//     (Kafka or ClickHouse unreachable, partitions not yet usable) says so
//     with Waiting and the reason, and the process is not ready;
//   - alive: no stage is stuck. A stage is stuck when it holds work it has
//     not finished (Owe) and has made no progress (Progress) for the stuck
//     threshold, or when its loop has not come round (Beat) for that long.
//     A stuck process is restarted by Kubernetes' liveness probe rather than
//     left holding partitions it does not serve.
//
// A stage that is waiting is never stuck: restarting a process whose broker
// is down does not bring the broker back. A stage that holds work while a
// dependency is down does count as stuck after the threshold; the restart
// is harmless (the process comes back, waits, and is not ready), and it is
// what clears a wedge nobody foresaw.
package health

import (
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"
)

// DefaultStuckAfter is how long a stage may hold work without progress, or
// go without its loop coming round, before the process counts as stuck.
// Two minutes is six times the longest thing a healthy stage waits for in
// one go (a 20 s routing transaction, a 10 s ClickHouse retry backoff, a
// 15 s group session timeout), and short enough that a wedged pod is
// replaced long before its partitions' backlog matters.
const DefaultStuckAfter = 2 * time.Minute

type state int

const (
	starting state = iota
	waiting
	running
	stopped
)

func (s state) String() string {
	switch s {
	case starting:
		return "starting"
	case waiting:
		return "waiting"
	case running:
		return "running"
	default:
		return "stopped"
	}
}

// Stage is one long-running part of a process. Its methods are safe for
// concurrent use and cheap enough for a hot loop (one uncontended mutex).
type Stage struct {
	name string
	now  func() time.Time

	mu     sync.Mutex
	state  state
	reason string // why the stage waits or stopped
	// owed is the work the stage holds and has not finished; owedSince is
	// when it last went from none to some.
	owed      int
	owedSince time.Time
	progress  time.Time
	beat      time.Time
}

// Waiting says the stage cannot run yet, and why (a dependency that does not
// answer, partitions whose state is being rebuilt). The process is not
// ready while any stage waits. Waiting also counts as a beat: a stage
// retrying a dependency is alive.
func (s *Stage) Waiting(reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state, s.reason = waiting, reason
	s.beat = s.now()
}

// Running says the stage runs and serves.
func (s *Stage) Running() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != running {
		s.state, s.reason = running, ""
		s.beat, s.progress = s.now(), s.now()
	}
}

// Stopped says the stage has ended (the process is shutting down, or the
// stage is not used in this process); it is no longer judged.
func (s *Stage) Stopped(reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state, s.reason, s.owed = stopped, reason, 0
}

// Owe sets how much work the stage holds unfinished (records polled and not
// committed, partitions assigned and not yet served): zero when idle.
func (s *Stage) Owe(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.owed == 0 && n > 0 {
		s.owedSince = s.now()
	}
	s.owed = n
}

// Progress says the stage finished some work.
func (s *Stage) Progress() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.progress = s.now()
}

// Beat says the stage's loop came round: it is not blocked inside a call.
// Loops that wait for work wait with a bounded timeout and beat each turn.
func (s *Stage) Beat() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.beat = s.now()
}

// Status is a stage as the probes see it.
type Status struct {
	Name  string `json:"name"`
	State string `json:"state"`
	// Reason says why the stage waits, stopped or is stuck.
	Reason string `json:"reason,omitempty"`
	Owed   int    `json:"owed,omitempty"`
	// Stuck is set when the stage counts as stuck.
	Stuck bool `json:"stuck,omitempty"`
}

// status judges the stage at now.
func (s *Stage) status(now time.Time, stuckAfter time.Duration) Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{Name: s.name, State: s.state.String(), Reason: s.reason, Owed: s.owed}
	if s.state != running {
		return st
	}
	switch {
	case now.Sub(s.beat) > stuckAfter:
		st.Stuck = true
		st.Reason = fmt.Sprintf("its loop has not come round for %s", now.Sub(s.beat).Round(time.Second))
	case s.owed > 0 && now.Sub(later(s.owedSince, s.progress)) > stuckAfter:
		st.Stuck = true
		st.Reason = fmt.Sprintf("holds %d unfinished and made no progress for %s", s.owed,
			now.Sub(later(s.owedSince, s.progress)).Round(time.Second))
	}
	return st
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// Registry holds a process's stages.
type Registry struct {
	now        func() time.Time
	stuckAfter time.Duration

	mu     sync.Mutex
	stages map[string]*Stage
}

// NewRegistry returns a registry judging stages stuck after stuckAfter; now
// tells the time (nil means time.Now; tests pass a fake).
func NewRegistry(stuckAfter time.Duration, now func() time.Time) *Registry {
	if now == nil {
		now = time.Now
	}
	return &Registry{now: now, stuckAfter: stuckAfter, stages: map[string]*Stage{}}
}

// Stage returns the stage called name, registering it (starting, so not
// ready) on first use.
func (r *Registry) Stage(name string) *Stage {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.stages[name]
	if s == nil {
		s = &Stage{name: name, now: r.now, reason: "not started yet"}
		s.beat = r.now()
		r.stages[name] = s
	}
	return s
}

// Statuses judges every stage, sorted by name.
func (r *Registry) Statuses() []Status {
	r.mu.Lock()
	stages := make([]*Stage, 0, len(r.stages))
	for _, s := range r.stages {
		stages = append(stages, s)
	}
	r.mu.Unlock()
	now := r.now()
	out := make([]Status, len(stages))
	for i, s := range stages {
		out[i] = s.status(now, r.stuckAfter)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Ready returns nil when every stage runs, else an error naming those that
// do not and why.
func (r *Registry) Ready() error {
	var errs []error
	for _, st := range r.Statuses() {
		if st.State != "running" {
			errs = append(errs, fmt.Errorf("stage %s is %s: %s", st.Name, st.State, st.Reason))
		}
	}
	return errors.Join(errs...)
}

// Live returns nil unless a stage is stuck; the error names each stuck stage.
func (r *Registry) Live() error {
	var errs []error
	for _, st := range r.Statuses() {
		if st.Stuck {
			errs = append(errs, fmt.Errorf("stage %s is stuck: %s", st.Name, st.Reason))
		}
	}
	return errors.Join(errs...)
}
