package chaos

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/sluicehq/sluice/loadtest/receiver"
)

const (
	// restartDelay is how long a killed service stays down before the suite
	// starts it again, like a supervisor's restart back-off: long enough
	// that the load meets a closed port.
	restartDelay = time.Second
	// freezeFor is how long ClickHouse is stopped with SIGSTOP: its clients
	// see a server that accepts nothing and answers nothing.
	freezeFor = 30 * time.Second
	// clickHouseDownFor is how long ClickHouse stays stopped before the
	// suite starts it again.
	clickHouseDownFor = 10 * time.Second
	// flapFor is how long the receivers misbehave.
	flapFor = 20 * time.Second
	// baselineFor is the load before the first fault.
	baselineFor = 10 * time.Second
)

// Stage is one fault and what became of it.
type Stage struct {
	Name  string // short, for the table
	Fault string // what was done
	// Started is when the fault began; Restored when the suite had undone
	// what it did (restarted, resumed, stopped flapping); Recovered when
	// the system was fully recovered (zero if it was not).
	Started, Restored, Recovered time.Time
	// Err says why the stage failed or did not run; empty if it recovered.
	Err string
	Ran bool
	// ProbesResent counts probe events that went to the dead-letter topic
	// and were sent again.
	ProbesResent int

	// The accounting of the events accepted while the stage ran.
	Accepted, Pairs, Delivered, Dead, Missing, Duplicates, DupInWindow int
	DeadReasons                                                        map[string]int
}

// Recovery is the time from the fault to full recovery, 0 if none.
func (st *Stage) Recovery() time.Duration {
	if st.Recovered.IsZero() {
		return 0
	}
	return st.Recovered.Sub(st.Started)
}

// fault is a stage of the suite: inject does the fault and undoes it (only
// by bringing back what it killed or stopped); redelivers says the fault
// may leave deliveries uncommitted (the uncommitted window opens at
// Started).
type fault struct {
	name, what string
	inject     func(ctx context.Context) error
	redelivers bool
}

func (su *Suite) faults() []fault {
	return []fault{
		{name: "baseline", what: fmt.Sprintf("none: %v of load", baselineFor), inject: func(ctx context.Context) error { return sleep(ctx, baselineFor) }},
		{name: "ingest", what: "kill -9 ingest, start it again", inject: su.killService("ingest")},
		{name: "sender", what: "kill -9 sender, start it again", inject: su.killService("sender"), redelivers: true},
		{name: "logwriter", what: "kill -9 logwriter, start it again", inject: su.killService("logwriter")},
		{name: "broker", what: "kill -9 the Kafka broker; while it is down, kill -9 the logwriter and ingest and start them again (they start without Kafka); dev/up.sh kafka", inject: su.killBroker, redelivers: true},
		{name: "ch-freeze", what: fmt.Sprintf("SIGSTOP ClickHouse for %v, then SIGCONT", freezeFor), inject: su.freezeClickHouse},
		{name: "ch-restart", what: fmt.Sprintf("dev/down.sh clickhouse, %v down, dev/up.sh clickhouse", clickHouseDownFor), inject: su.restartClickHouse},
		{name: "flap", what: fmt.Sprintf("receivers flap for %v: 5xx bursts, hangs past the timeout, resets, slow bodies", flapFor), inject: su.flap},
	}
}

// runStages runs the faults in order, each followed by the wait for full
// recovery. A stage that fails ends the sequence: the faults after it
// would only measure a system that is already broken.
func (su *Suite) runStages(ctx context.Context) {
	faults := su.faults()
	for i, f := range faults {
		st := &Stage{Name: f.name, Fault: f.what, Started: time.Now(), Ran: true}
		su.mu.Lock()
		su.stages = append(su.stages, st)
		if f.redelivers {
			su.sends = append(su.sends, mark{stage: i, at: st.Started})
		}
		su.mu.Unlock()
		su.cfg.Logf("stage %s: %s", f.name, f.what)
		err := f.inject(ctx)
		st.Restored = time.Now()
		if err == nil {
			err = su.recover(ctx, st)
		}
		if err != nil {
			st.Err = err.Error()
			su.fail("stage %s: %v", f.name, err)
			// Events sent from now on count under this stage.
			for _, g := range faults[i+1:] {
				su.notRun = append(su.notRun, &Stage{Name: g.name, Fault: g.what, Err: "not run: stage " + f.name + " failed"})
			}
			return
		}
		su.cfg.Logf("stage %s: recovered %.1f s after the fault", f.name, st.Recovery().Seconds())
	}
}

// recover waits until the system has fully recovered from st's fault:
// every service answers /readyz and /healthz with 200, and probe events
// sent now (sendProbes: every events partition, every endpoint) are
// delivered to every endpoint they should reach, and the first of them is
// logged in ClickHouse. A probe that ends in the dead-letter topic (an
// endpoint whose circuit is still open exhausts a short schedule without a
// request) is sent again. It fails on a service that exited by itself or
// after RecoveryBound from the fault.
func (su *Suite) recover(ctx context.Context, st *Stage) error {
	deadline := st.Started.Add(RecoveryBound)
	bounded, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	probes, err := su.sendProbes(bounded)
	for {
		if msg := su.exitedByItself(); msg != "" {
			return fmt.Errorf("%s", msg)
		}
		if err != nil || time.Now().After(deadline) {
			// What is not recovered, asked with a context of its own:
			// the bounded one has ended.
			why := su.notReady(ctx, probes)
			if err != nil {
				why = err.Error() + "; " + why
			}
			return fmt.Errorf("not recovered within %v: %s", RecoveryBound, why)
		}
		why := su.notReady(bounded, probes)
		if why == "" {
			st.Recovered = time.Now()
			return nil
		}
		for i, p := range probes {
			if su.probeDead(p) {
				st.ProbesResent++
				if probes[i], err = su.sendProbe(bounded, p.tenant, p.typ, p.partition); err != nil {
					break
				}
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// notReady says what is not yet recovered, "" when all is.
func (su *Suite) notReady(ctx context.Context, probes []probe) string {
	var why []string
	for _, name := range []string{"ingest", "sender", "logwriter"} {
		for _, path := range []string{"/readyz", "/healthz"} {
			if code, body := get(ctx, "http://"+su.S.Procs[name].Ops+path); code != http.StatusOK {
				why = append(why, fmt.Sprintf("%s %s %d %s", name, path, code, strings.TrimSpace(body)))
			}
		}
	}
	for i, p := range probes {
		var to []string
		for _, ep := range p.eps {
			if su.R.Recv.Received(ep.Name)[p.id] == 0 {
				to = append(to, ep.Name)
			}
		}
		if len(to) > 0 {
			why = append(why, fmt.Sprintf("probe %s (events partition %d) not delivered to %s", p.id, p.partition, strings.Join(to, ", ")))
			continue
		}
		if i == 0 {
			// Bounded: a frozen ClickHouse accepts and never answers.
			qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			n, err := su.S.EventAttemptRows(qctx, p.id)
			cancel()
			if err != nil || n == 0 {
				why = append(why, fmt.Sprintf("probe %s not in ClickHouse (%v)", p.id, err))
			}
		}
	}
	return strings.Join(why, "; ")
}

// probeDead says whether a probe went to the dead-letter topic for one of
// its endpoints.
func (su *Suite) probeDead(p probe) bool {
	for _, ep := range p.eps {
		if _, dead := su.dead.reason(p.id, ep.ID); dead {
			return true
		}
	}
	return false
}

// get returns the status and body of a GET, 0 and the error if none.
func get(ctx context.Context, url string) (int, string) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err.Error()
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(http.MaxBytesReader(nil, resp.Body, 512))
	return resp.StatusCode, b.String()
}

// exitedByItself describes a service process that ended without the suite
// killing it, with its log's tail; "" if none did. The suite never starts
// such a service again: that would hide the failure.
func (su *Suite) exitedByItself() string {
	for _, name := range []string{"ingest", "sender", "logwriter"} {
		p := su.S.Procs[name]
		select {
		case <-p.Exited():
			return fmt.Sprintf("%s exited by itself (%s); the end of %s:\n%s", name, p.ExitState(), p.Log, tail(p.Log, 15))
		default:
		}
	}
	return ""
}

// tail is the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// killService kills a service with SIGKILL and starts it again the same
// way after restartDelay.
func (su *Suite) killService(name string) func(context.Context) error {
	return func(ctx context.Context) error {
		p := su.S.Procs[name]
		if msg := su.exitedByItself(); msg != "" {
			return fmt.Errorf("%s", msg)
		}
		if err := p.Kill(); err != nil {
			return err
		}
		if err := sleep(ctx, restartDelay); err != nil {
			return err
		}
		return p.Restart()
	}
}

// killBroker kills the broker with SIGKILL and brings it back with
// dev/up.sh, as an operator (or a supervisor) would. While it is down the
// logwriter and ingest are killed and started again, as a node failure
// would: they start with no broker to talk to, and must wait for it rather
// than exit, and ingest's router rebuilds its dedup state as the broker
// comes back.
func (su *Suite) killBroker(ctx context.Context) error {
	if _, err := su.signal("kafka", syscall.SIGKILL); err != nil {
		return err
	}
	for _, name := range []string{"logwriter", "ingest"} {
		if err := su.killService(name)(ctx); err != nil {
			return err
		}
	}
	return su.dev(ctx, "up.sh", "kafka")
}

// signal sends sig to the dev stack's part ("kafka", "clickhouse") and
// returns its pid.
func (su *Suite) signal(part string, sig syscall.Signal) (int, error) {
	pid, err := su.S.DevPID(part)
	if err != nil {
		return 0, err
	}
	if err := syscall.Kill(pid, sig); err != nil {
		return pid, fmt.Errorf("sending %v to %s (pid %d): %w", sig, part, pid, err)
	}
	return pid, nil
}

// freezeClickHouse stops ClickHouse with SIGSTOP for freezeFor, then
// resumes it; it resumes it also when ctx ends early.
func (su *Suite) freezeClickHouse(ctx context.Context) error {
	pid, err := su.signal("clickhouse", syscall.SIGSTOP)
	if err != nil {
		return err
	}
	slept := sleep(ctx, freezeFor)
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		return fmt.Errorf("resuming ClickHouse (pid %d): %w", pid, err)
	}
	return slept
}

// restartClickHouse stops ClickHouse cleanly, leaves it down for
// clickHouseDownFor and starts it again, all with the dev scripts.
func (su *Suite) restartClickHouse(ctx context.Context) error {
	if err := su.dev(ctx, "down.sh", "clickhouse"); err != nil {
		return err
	}
	if err := sleep(ctx, clickHouseDownFor); err != nil {
		return err
	}
	return su.dev(ctx, "up.sh", "clickhouse")
}

// flap makes the flapping endpoints misbehave for flapFor, then answer
// normally again.
func (su *Suite) flap(ctx context.Context) error {
	for _, ep := range su.eps {
		if ep.flap != nil {
			su.R.Recv.SetBehavior(ep.Name, *ep.flap)
		}
	}
	err := sleep(ctx, flapFor)
	for _, ep := range su.eps {
		if ep.flap != nil {
			su.R.Recv.SetBehavior(ep.Name, receiver.Behavior{})
		}
	}
	return err
}

// dev runs a dev/ script with this process's environment (the chaos
// stack's), its output in the dev stack's logs directory.
func (su *Suite) dev(ctx context.Context, script string, args ...string) error {
	log := filepath.Join(filepath.Dir(su.S.Procs["ingest"].Log), "chaos-dev.log")
	f, err := os.OpenFile(log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	cmd := exec.CommandContext(ctx, "bash", append([]string{filepath.Join(su.cfg.Repo, "dev", script)}, args...)...)
	// The run's topics exist; the default ones up.sh would create are not
	// the suite's.
	cmd.Env = append(os.Environ(), "SLUICE_DEV_TOPICS=0")
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("dev/%s %s: %w; the end of %s:\n%s", script, strings.Join(args, " "), err, log, tail(log, 10))
	}
	return nil
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
