// Package testenv hands tests a real Kafka broker and a real ClickHouse
// server: the dev stack of dev/. If the stack is not running, the first test
// that needs it starts it (dev/up.sh) and the last test process to finish
// stops it again; a stack someone else started is reused and left running.
// Each test gets its own topic prefix and ClickHouse database, so tests never
// see each other's data.
//
// A package that uses testenv calls it from TestMain:
//
//	func TestMain(m *testing.M) { testenv.Main(m) }
package testenv

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/pkg/clickhousex"
	"github.com/sluicehq/sluice/pkg/kafkax"
	"github.com/sluicehq/sluice/pkg/topics"
)

// owner marks a stack testenv started; dev/down.sh --if-owner stops only that.
const owner = "testenv"

var (
	stackOnce sync.Once
	stackErr  error
	stack     settings
	usersLock *os.File
)

type settings struct {
	repo, state, brokers, clickhouse string
	// vars are every line of dev/env.sh, the secured doors' among them.
	vars map[string]string
}

// Main runs the package's tests and, when this process was the last user of
// a stack testenv started, stops the stack.
func Main(m *testing.M) {
	code := m.Run()
	release()
	os.Exit(code)
}

// repoRoot finds the repository from the test's working directory.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "dev", "up.sh")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("testenv: no dev/up.sh above the working directory")
		}
		dir = parent
	}
}

func loadSettings() (settings, error) {
	repo, err := repoRoot()
	if err != nil {
		return settings{}, err
	}
	out, err := exec.Command("bash", filepath.Join(repo, "dev", "env.sh")).Output()
	if err != nil {
		return settings{}, fmt.Errorf("testenv: running dev/env.sh: %w", err)
	}
	vars := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			vars[k] = v
		}
	}
	return settings{repo: repo, state: vars["SLUICE_DEV_STATE"],
		brokers: vars["KAFKA_BROKERS"], clickhouse: vars["CLICKHOUSE_ADDR"], vars: vars}, nil
}

func reachable(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func flock(path string, how int) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), how); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// ensureStack makes sure the stack runs and registers this process as a user.
func ensureStack() error {
	s, err := loadSettings()
	if err != nil {
		return err
	}
	stack = s
	if err := os.MkdirAll(s.state, 0o755); err != nil {
		return fmt.Errorf("testenv: %w", err)
	}
	// Register as a user first: a process stopping the stack holds this lock
	// exclusively, so once we have it shared the stack cannot go away.
	usersLock, err = flock(filepath.Join(s.state, "testenv.users.lock"), syscall.LOCK_SH)
	if err != nil {
		return fmt.Errorf("testenv: locking the users file: %w", err)
	}
	start, err := flock(filepath.Join(s.state, "testenv.start.lock"), syscall.LOCK_EX)
	if err != nil {
		return fmt.Errorf("testenv: locking the start file: %w", err)
	}
	defer start.Close()
	if reachable(s.brokers) && reachable(s.clickhouse) && reachable(s.vars["KAFKA_SASL_BROKERS"]) &&
		reachable(s.vars["CLICKHOUSE_SECURE_ADDR"]) {
		return nil
	}
	cmd := exec.Command("bash", filepath.Join(s.repo, "dev", "up.sh"))
	cmd.Env = append(os.Environ(), "SLUICE_DEV_OWNER="+owner, "SLUICE_DEV_TOPICS=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("testenv: starting the dev stack (dev/up.sh) failed: %v\n%s", err, out)
	}
	return nil
}

// release drops this process's claim on the stack; the last process out
// stops a stack testenv started.
func release() {
	if usersLock == nil {
		return
	}
	usersLock.Close()
	f, err := flock(filepath.Join(stack.state, "testenv.users.lock"), syscall.LOCK_EX|syscall.LOCK_NB)
	if err != nil {
		return // another test process still uses the stack
	}
	defer f.Close()
	out, err := exec.Command("bash", filepath.Join(stack.repo, "dev", "down.sh"), "--if-owner", owner).CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "testenv: stopping the dev stack: %v\n%s", err, out)
	}
}

func requireStack(t testing.TB) settings {
	t.Helper()
	if testing.Short() {
		t.Skip("needs the real Kafka and ClickHouse; skipped by -short")
	}
	stackOnce.Do(func() { stackErr = ensureStack() })
	if stackErr != nil {
		t.Fatalf("the real Kafka and ClickHouse are needed and could not be started: %v", stackErr)
	}
	return stack
}

var unsafeChars = regexp.MustCompile(`[^a-z0-9]+`)

// uniqueName is a name derived from the test's, unique across runs.
func uniqueName(t testing.TB, sep string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := unsafeChars.ReplaceAllString(strings.ToLower(t.Name()), sep)
	if len(name) > 40 {
		name = name[:40]
	}
	return "t" + sep + strings.Trim(name, sep) + sep + hex.EncodeToString(b)
}

// Kafka is a broker connection with a set of topics of the test's own.
type Kafka struct {
	Config kafkax.Config
	// Prefix starts every topic name of this test.
	Prefix string
	Names  topics.Names
	Admin  *kadm.Client
}

// KafkaOption adjusts the topics a test gets.
type KafkaOption func(*topics.Partitions)

// WithPartitions sets the partition counts of the test's topics.
func WithPartitions(p topics.Partitions) KafkaOption {
	return func(dst *topics.Partitions) { *dst = p }
}

// NewKafka creates the full set of Sluice topics under a prefix unique to
// the test (two partitions each unless told otherwise) and deletes them when
// the test ends.
func NewKafka(t testing.TB, opts ...KafkaOption) *Kafka {
	t.Helper()
	s := requireStack(t)
	cfg := kafkax.Config{Brokers: []string{s.brokers}, ClientID: "testenv"}
	adm, err := kafkax.NewAdmin(cfg)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(adm.Close)
	p := topics.Partitions{Events: 2, Deliveries: 2, Retry: 2, Dead: 2, Attempts: 2, EventLog: 2}
	for _, o := range opts {
		o(&p)
	}
	prefix := uniqueName(t, "-") + "."
	names := topics.NewNames(prefix)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := kafkax.EnsureTopics(ctx, adm, topics.Specs(names, p, topics.SingleBroker)); err != nil {
		t.Fatalf("testenv: creating topics: %v", err)
	}
	if err := kafkax.WaitTopics(ctx, adm, names.All()...); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := kafkax.DeleteTopics(ctx, adm, names.All()...); err != nil {
			t.Logf("testenv: %v", err)
		}
	})
	return &Kafka{Config: cfg, Prefix: prefix, Names: names, Admin: adm}
}

// Read returns every committed record of topic: it reads until at least
// want records have arrived and then nothing new for a second, so extra
// records (a duplicate a test looks for) are caught too. Counting records
// rather than waiting for a quiet spell matters: a transaction's commit
// markers reach the partitions after EndTxn returns, so records a writer has
// committed can stay invisible to read_committed readers for a moment. It
// fails the test when want records do not arrive within two minutes (long
// enough for a crashed writer's group session and transaction to time out).
func (k *Kafka) Read(t testing.TB, topic string, want int) []*kgo.Record {
	t.Helper()
	cl, err := kafkax.NewClient(k.Config, kgo.ConsumeTopics(topic), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	defer cl.Close()
	var out []*kgo.Record
	deadline := time.Now().Add(2 * time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		fs := cl.PollFetches(ctx)
		cancel()
		fs.EachError(func(_ string, _ int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("testenv: reading %s: %v", topic, err)
			}
		})
		got := fs.Records()
		out = append(out, got...)
		switch {
		case len(got) == 0 && len(out) >= want:
			return out
		case time.Now().After(deadline):
			t.Fatalf("testenv: %d records of %s within two minutes, want at least %d", len(out), topic, want)
		}
	}
}

// ClickHouse is a server connection with a database of the test's own.
type ClickHouse struct {
	Config clickhousex.Config
	Conn   driver.Conn
}

// NewClickHouse names a database unique to the test (it does not create
// it: the logwriter's migrations do) and drops it when the test ends.
func NewClickHouse(t testing.TB) *ClickHouse {
	t.Helper()
	s := requireStack(t)
	cfg := clickhousex.Config{
		Addrs:       []string{s.clickhouse},
		Database:    uniqueName(t, "_"),
		Username:    "default",
		DialTimeout: 5 * time.Second,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := clickhousex.Open(ctx, cfg)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+cfg.Database); err != nil {
			t.Logf("testenv: dropping database %s: %v", cfg.Database, err)
		}
		conn.Close()
	})
	return &ClickHouse{Config: cfg, Conn: conn}
}
