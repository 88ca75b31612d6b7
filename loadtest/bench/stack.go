// Package bench is the load test of DESIGN §9: it runs Sluice's three
// services as separate processes against the dev stack's Kafka and
// ClickHouse, drives them with a generator, receives with the verifying
// receiver, and measures each scenario against the raw HTTP ceiling of the
// same machine in the same run. Every scenario also counts what arrived:
// missing deliveries fail the run, duplicates are reported.
package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/sluicehq/sluice/pkg/clickhousex"
	"github.com/sluicehq/sluice/pkg/kafkax"
	"github.com/sluicehq/sluice/pkg/topics"
)

// Stack is one run's services and the dev stack they use: topics under a
// prefix of the run's own and a ClickHouse database of its own, both
// removed at Close.
type Stack struct {
	Repo     string
	Kafka    kafkax.Config
	CH       clickhousex.Config
	Names    topics.Names
	Prefix   string
	AdminKey string
	APIURL   string
	// Procs are the services by name, and the dev stack's Kafka and
	// ClickHouse (not started here, only measured).
	Procs map[string]*Proc

	adm      *kadm.Client
	ch       driver.Conn
	logs     string
	bin      string
	devState string // the dev stack's state directory (pid files)
}

// StackOptions says what StartStack makes.
type StackOptions struct {
	// Name prefixes the run's topics (Name-<unix time>.) and database
	// (Name_<unix time>) and names the services' logs (Name-<service>.log
	// in the dev stack's logs directory).
	Name       string
	Partitions topics.Partitions
	// Env adds environment variables to a service's, by service name;
	// they win over StartStack's own.
	Env map[string][]string
}

// Proc is a process whose CPU and memory a scenario reads. A service's
// Proc also holds how it was started, so Restart can start it again the
// same way.
type Proc struct {
	Name   string
	PID    int
	cmd    *exec.Cmd
	exited chan struct{} // closed when a service process ends
	Ops    string        // ops address, for services
	Log    string        // the service's log file (both outputs)

	path string   // binary
	env  []string // whole environment
}

// devEnv reads dev/env.sh: the stack's addresses and state directory.
func devEnv(repo string) (map[string]string, error) {
	out, err := exec.Command("bash", filepath.Join(repo, "dev", "env.sh")).Output()
	if err != nil {
		return nil, fmt.Errorf("reading dev/env.sh: %w", err)
	}
	env := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			env[k] = v
		}
	}
	return env, nil
}

// freePort returns a free TCP address on loopback.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// StartStack builds the services, creates the run's topics and starts the
// services. The dev stack must be up (make bench starts it).
func StartStack(ctx context.Context, repo string, opts StackOptions, logf func(string, ...any)) (*Stack, error) {
	env, err := devEnv(repo)
	if err != nil {
		return nil, err
	}
	run := strconv.FormatInt(time.Now().Unix(), 10)
	s := &Stack{Repo: repo, Kafka: kafkax.Config{Brokers: []string{env["KAFKA_BROKERS"]}, ClientID: "sluice-" + opts.Name},
		CH:       clickhousex.Config{Addrs: []string{env["CLICKHOUSE_ADDR"]}, Database: opts.Name + "_" + run, Username: "default", DialTimeout: 5 * time.Second},
		Prefix:   opts.Name + "-" + run + ".",
		AdminKey: "admin_" + opts.Name + "_" + run + "_0123456789abcdefghijklmnop",
		Procs:    map[string]*Proc{}, logs: filepath.Join(env["SLUICE_DEV_STATE"], "logs"), devState: env["SLUICE_DEV_STATE"]}
	s.Names = topics.NewNames(s.Prefix)
	for _, name := range []string{"kafka", "clickhouse"} {
		pid, err := s.DevPID(name)
		if err != nil {
			return nil, err
		}
		s.Procs[name] = &Proc{Name: name, PID: pid}
	}
	if s.adm, err = kafkax.NewAdmin(s.Kafka); err != nil {
		return nil, err
	}
	if s.ch, err = clickhousex.Open(ctx, s.CH); err != nil {
		return nil, err
	}
	logf("creating topics under %s", s.Prefix)
	if err := kafkax.EnsureTopics(ctx, s.adm, topics.Specs(s.Names, opts.Partitions, topics.SingleBroker)); err != nil {
		return nil, err
	}
	if err := kafkax.WaitTopics(ctx, s.adm, s.Names.All()...); err != nil {
		return nil, err
	}
	s.bin, err = os.MkdirTemp("", "sluice-"+opts.Name+"-bin")
	if err != nil {
		return nil, err
	}
	logf("building the services")
	build := exec.CommandContext(ctx, "go", "build", "-o", s.bin+"/", "./services/ingest", "./services/sender", "./services/logwriter")
	build.Dir, build.Stdout, build.Stderr = repo, os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return nil, fmt.Errorf("building the services: %w", err)
	}
	api, err := freePort()
	if err != nil {
		return nil, err
	}
	s.APIURL = "http://" + api
	if err := os.MkdirAll(s.logs, 0o755); err != nil {
		return nil, err
	}
	common := []string{
		"SLUICE_KAFKA_BROKERS=" + s.Kafka.Brokers[0], "SLUICE_TOPIC_PREFIX=" + s.Prefix, "SLUICE_LOG_LEVEL=warn",
		"SLUICE_INSECURE_DEV_SECRETS_KEY=true",
		"SLUICE_CLICKHOUSE_ADDRS=" + s.CH.Addrs[0], "SLUICE_CLICKHOUSE_DATABASE=" + s.CH.Database,
	}
	// The stack's log directory exists once dev/run.sh has run; a stack
	// only started (dev/up.sh, or by the tests) has none yet.
	if err := os.MkdirAll(s.logs, 0o755); err != nil {
		return nil, err
	}
	for _, svc := range []struct {
		name string
		env  []string
	}{
		{"logwriter", []string{"SLUICE_GROUP=" + s.Prefix + "logwriter"}},
		{"sender", []string{"SLUICE_GROUP=" + s.Prefix + "sender", "SLUICE_EGRESS_ALLOW=127.0.0.1/32"}},
		{"ingest", []string{"SLUICE_API_ADDR=" + api, "SLUICE_ADMIN_KEY=" + s.AdminKey, "SLUICE_ROUTER_GROUP=" + s.Prefix + "router"}},
	} {
		ops, err := freePort()
		if err != nil {
			return nil, err
		}
		p := &Proc{Name: svc.name, Ops: ops, path: filepath.Join(s.bin, svc.name),
			Log: filepath.Join(s.logs, opts.Name+"-"+svc.name+".log"),
			env: slices.Concat(os.Environ(), common, svc.env, []string{"SLUICE_OPS_ADDR=" + ops}, opts.Env[svc.name])}
		if err := os.Remove(p.Log); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		if err := p.start(); err != nil {
			return nil, err
		}
		s.Procs[svc.name] = p
	}
	for _, name := range []string{"logwriter", "sender", "ingest"} {
		if err := WaitReady(ctx, s.Procs[name], 60*time.Second); err != nil {
			return nil, fmt.Errorf("%w (log: %s)", err, s.Procs[name].Log)
		}
	}
	logf("services ready: ingest %s", s.APIURL)
	return s, nil
}

// DevPID reads the pid of the dev stack's "kafka" or "clickhouse" from its
// pid file; it changes when dev/up.sh starts the part again.
func (s *Stack) DevPID(name string) (int, error) {
	b, err := os.ReadFile(filepath.Join(s.devState, name, "pid"))
	if err != nil {
		return 0, fmt.Errorf("the dev stack's %s is not running (run make dev-up): %w", name, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("the dev stack's %s pid file: %w", name, err)
	}
	return pid, nil
}

// start starts a service process, appending its output to its log, and
// watches for its end.
func (p *Proc) start() error {
	logFile, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(p.path)
	cmd.Env, cmd.Stdout, cmd.Stderr = p.env, logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("starting %s: %w", p.Name, err)
	}
	p.cmd, p.PID, p.exited = cmd, cmd.Process.Pid, make(chan struct{})
	exited := p.exited
	go func() { _ = cmd.Wait(); logFile.Close(); close(exited) }()
	return nil
}

// Kill sends a service SIGKILL and returns once it has exited.
func (p *Proc) Kill() error {
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("killing %s: %w", p.Name, err)
	}
	<-p.exited
	return nil
}

// Restart starts a service that has exited again: the same binary,
// environment and ports, its output appended to the same log.
func (p *Proc) Restart() error {
	select {
	case <-p.exited:
	default:
		return fmt.Errorf("restarting %s: it is still running (pid %d)", p.Name, p.PID)
	}
	return p.start()
}

// Exited is closed when the service's current process has ended.
func (p *Proc) Exited() <-chan struct{} { return p.exited }

// ExitState describes how the service's process ended ("" while it runs).
func (p *Proc) ExitState() string {
	select {
	case <-p.exited:
		return p.cmd.ProcessState.String()
	default:
		return ""
	}
}

// WaitReady waits until a service's /readyz answers 200; it fails when the
// process exits or within passes.
func WaitReady(ctx context.Context, p *Proc, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		resp, err := http.Get("http://" + p.Ops + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s not ready within %v", p.Name, within)
		}
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited", p.Name)
		default:
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Close stops the services (SIGTERM, then SIGKILL after 30 s) and removes
// the run's topics and database.
func (s *Stack) Close() {
	var wg sync.WaitGroup
	for _, p := range s.Procs {
		if p.cmd == nil {
			continue
		}
		wg.Go(func() {
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.exited:
			case <-time.After(30 * time.Second):
				_ = p.cmd.Process.Kill()
				<-p.exited
			}
		})
	}
	wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if s.adm != nil {
		_ = kafkax.DeleteTopics(ctx, s.adm, s.Names.All()...)
		s.adm.Close()
	}
	if s.ch != nil {
		_ = s.ch.Exec(ctx, "DROP DATABASE IF EXISTS "+s.CH.Database)
		s.ch.Close()
	}
	if s.bin != "" {
		os.RemoveAll(s.bin)
	}
}

// CPU is the process's user+system CPU time so far.
func (p *Proc) CPU() (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(p.PID) + "/stat")
	if err != nil {
		return 0, err
	}
	// Fields after the command (which may hold spaces) start after ')'.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	// Linux reports clock ticks of 1/100 s (USER_HZ, fixed at 100).
	return time.Duration(ut+st) * 10 * time.Millisecond, nil
}

// RSS is the process's resident memory.
func (p *Proc) RSS() (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(p.PID) + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, nil
		}
	}
	return 0, errors.New("no VmRSS")
}

// SelfCPU is this process's CPU time (generator and receiver).
func SelfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// API calls the ingest API.
func (s *Stack) API(ctx context.Context, method, path, key string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.APIURL+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, raw)
	}
	if out != nil {
		return json.Unmarshal(raw, out)
	}
	return nil
}

// ClickHouseVersion is the server's version.
func (s *Stack) ClickHouseVersion(ctx context.Context) string {
	var v string
	if err := s.ch.QueryRow(ctx, "SELECT version()").Scan(&v); err != nil {
		return "?"
	}
	return v
}

// AttemptRows counts the delivery log's successful attempt rows of tenant.
func (s *Stack) AttemptRows(ctx context.Context, tenant string) (uint64, error) {
	var n uint64
	err := s.ch.QueryRow(ctx, "SELECT count() FROM "+s.CH.Database+".attempts FINAL WHERE tenant_id = ? AND outcome = 'success'", tenant).Scan(&n)
	return n, err
}

// AttemptCount is how many rows of the delivery log's attempts (FINAL)
// have one event, endpoint and outcome.
type AttemptCount struct {
	EventID, EndpointID, Outcome string
	Rows                         uint64
}

// AttemptCounts counts the attempt rows of tenants by event, endpoint and
// outcome.
func (s *Stack) AttemptCounts(ctx context.Context, tenants []string) ([]AttemptCount, error) {
	// has(?, column), not IN (?): a bound slice arrives as an Array, which
	// ClickHouse 18.16 refuses after IN.
	rows, err := s.ch.Query(ctx, "SELECT event_id, endpoint_id, outcome, count() FROM "+s.CH.Database+
		".attempts FINAL WHERE has(?, tenant_id) GROUP BY event_id, endpoint_id, outcome", tenants)
	if err != nil {
		return nil, fmt.Errorf("counting attempt rows: %w", err)
	}
	defer rows.Close()
	var out []AttemptCount
	for rows.Next() {
		var c AttemptCount
		if err := rows.Scan(&c.EventID, &c.EndpointID, &c.Outcome, &c.Rows); err != nil {
			return nil, fmt.Errorf("reading attempt rows: %w", err)
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// EventAttemptRows counts the delivery log's successful attempt rows of
// one event.
func (s *Stack) EventAttemptRows(ctx context.Context, eventID string) (uint64, error) {
	var n uint64
	err := s.ch.QueryRow(ctx, "SELECT count() FROM "+s.CH.Database+".attempts FINAL WHERE event_id = ? AND outcome = 'success'", eventID).Scan(&n)
	return n, err
}
