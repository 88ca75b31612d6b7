package chaos

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/sluicehq/sluice/loadtest/bench"
)

// Report is a whole run.
type Report struct {
	Started  time.Time
	Seconds  float64
	Machine  string
	Commit   string
	Stages   []*Stage
	Attempts Attempts
	GaveUp   int64
	Failures []string
}

// Failed says whether the run failed.
func (rep *Report) Failed() bool { return len(rep.Failures) > 0 }

// finish accounts and fills the report.
func (su *Suite) finish(ctx context.Context, rep *Report) *Report {
	rep.Attempts = su.account(ctx)
	rep.Machine = bench.Machine(su.S.ClickHouseVersion(ctx))
	rep.Stages = append(slices.Clone(su.stages), su.notRun...)
	rep.GaveUp = su.ledger.gaveUp.Load()
	rep.Seconds = time.Since(rep.Started).Seconds()
	su.mu.Lock()
	for _, k := range slices.Sorted(maps.Keys(su.refused)) {
		su.Failures = append(su.Failures, fmt.Sprintf("the events API refused %d events (a client does not retry a 4xx, so they are lost to it): %s", su.refused[k], k))
	}
	rep.Failures = slices.Clone(su.Failures)
	su.mu.Unlock()
	return rep
}

// Markdown renders the report: a row per fault, totals, the attempts
// check and the failures.
func (rep *Report) Markdown() string {
	var b strings.Builder
	verdict := "**passed**"
	if rep.Failed() {
		verdict = fmt.Sprintf("**failed** (%d failures, below)", len(rep.Failures))
	}
	fmt.Fprintf(&b, "Run %s, commit %s, %.0f s: %s.\n\nMachine: %s\n\n", rep.Started.UTC().Format("2006-01-02 15:04 MST"), rep.Commit, rep.Seconds, verdict, rep.Machine)
	b.WriteString("| stage | fault | accepted | deliveries | delivered | dead (with reason) | missing | duplicates (in window) | recovery |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|\n")
	var tot Stage
	for _, st := range rep.Stages {
		recovery := "—"
		switch {
		case !st.Ran:
			recovery = "not run"
		case st.Recovered.IsZero():
			recovery = "**not recovered**"
		default:
			recovery = fmt.Sprintf("%.1f s (restored after %.1f s)", st.Recovery().Seconds(), st.Restored.Sub(st.Started).Seconds())
			if st.ProbesResent > 0 {
				recovery += fmt.Sprintf("; %d probes dead-lettered and sent again", st.ProbesResent)
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %d | %d | %d | %d | %d (%d) | %s |\n", st.Name, st.Fault, st.Accepted, st.Pairs,
			st.Delivered, st.Dead, st.Missing, st.Duplicates, st.DupInWindow, recovery)
		tot.Accepted += st.Accepted
		tot.Pairs += st.Pairs
		tot.Delivered += st.Delivered
		tot.Dead += st.Dead
		tot.Missing += st.Missing
		tot.Duplicates += st.Duplicates
		tot.DupInWindow += st.DupInWindow
	}
	fmt.Fprintf(&b, "| **total** | | %d | %d | %d | %d | %d | %d (%d) | |\n", tot.Accepted, tot.Pairs, tot.Delivered, tot.Dead, tot.Missing, tot.Duplicates, tot.DupInWindow)

	var reasons []string
	for _, st := range rep.Stages {
		for _, r := range slices.Sorted(maps.Keys(st.DeadReasons)) {
			reasons = append(reasons, fmt.Sprintf("- %s: %d × %s", st.Name, st.DeadReasons[r], r))
		}
	}
	if len(reasons) > 0 {
		b.WriteString("\nDead letters by stage and reason:\n\n" + strings.Join(reasons, "\n") + "\n")
	}
	a := rep.Attempts
	fmt.Fprintf(&b, "\nAttempts: the receiver saw %d requests; the delivery log holds %d attempt rows with an HTTP outcome; %d requests have no row because they were in flight when the sender was killed; %d (event, endpoint) pairs differ otherwise.\n",
		a.Requests, a.Rows, a.InFlight, len(a.Unexplained))
	if rep.GaveUp > 0 {
		fmt.Fprintf(&b, "\nProducers gave up on %d events after retrying them for %v (not accepted, not expected anywhere).\n", rep.GaveUp, giveUpAfter)
	}
	for _, st := range rep.Stages {
		if st.Err != "" {
			fmt.Fprintf(&b, "\nStage %s: %s\n", st.Name, indent(st.Err))
		}
	}
	if rep.Failed() {
		b.WriteString("\nFailures:\n\n")
		for _, f := range rep.Failures {
			b.WriteString("- " + indent(f) + "\n")
		}
	}
	return b.String()
}

// indent makes a multi-line text a code block inside a list item.
func indent(s string) string {
	first, rest, ok := strings.Cut(s, "\n")
	if !ok {
		return s
	}
	return first + "\n\n  ```\n  " + strings.ReplaceAll(rest, "\n", "\n  ") + "\n  ```"
}
