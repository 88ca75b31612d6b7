package testenv_test

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/testenv"
	"github.com/sluicehq/sluice/pkg/topics"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// eventually polls cond every 100 ms until it holds or d passes, and returns
// whether it held.
func eventually(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestNewKafkaTopicsLiveForTheTest(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// The parent's own topics and admin client check from outside the
	// subtest, whose admin client closes with it.
	outside := testenv.NewKafka(t)
	var k *testenv.Kafka
	t.Run("owner", func(t *testing.T) {
		k = testenv.NewKafka(t, testenv.WithPartitions(topics.Partitions{
			Events: 3, Deliveries: 2, Retry: 1, Dead: 1, Attempts: 2, EventLog: 1}))
		if !strings.HasPrefix(k.Names.Events, k.Prefix) || !strings.HasSuffix(k.Prefix, ".") {
			t.Fatalf("prefix %q, events topic %q", k.Prefix, k.Names.Events)
		}
		td, err := k.Admin.ListTopics(ctx, k.Names.All()...)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]int{k.Names.Events: 3, k.Names.Deliveries: 2, k.Names.Config: 1,
			k.Names.Attempts: 2, k.Names.Dead: 1, k.Names.EventLog: 1, k.Names.EventsRejected: 3}
		for _, r := range k.Names.Retry {
			want[r] = 1
		}
		for _, name := range k.Names.All() {
			d, ok := td[name]
			if !ok || d.Err != nil {
				t.Errorf("topic %s does not exist during the test (%v)", name, d.Err)
				continue
			}
			if n, ok := want[name]; ok && len(d.Partitions) != n {
				t.Errorf("topic %s has %d partitions, want %d", name, len(d.Partitions), n)
			}
		}
	})
	if k == nil {
		t.Fatal("the subtest never got its topics")
	}

	var left []string
	gone := eventually(30*time.Second, func() bool {
		td, err := outside.Admin.ListTopics(ctx, k.Names.All()...)
		if err != nil {
			left = []string{err.Error()}
			return false
		}
		left = left[:0]
		for _, name := range k.Names.All() {
			if td.Has(name) {
				left = append(left, name)
			}
		}
		return len(left) == 0
	})
	if !gone {
		t.Fatalf("topics still there 30 s after their test ended: %v", left)
	}
	// Only the subtest's topics went away.
	td, err := outside.Admin.ListTopics(ctx, outside.Names.All()...)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range outside.Names.All() {
		if !td.Has(name) {
			t.Errorf("the parent's topic %s went away with the subtest's", name)
		}
	}
}

func TestNewKafkaPrefixesDiffer(t *testing.T) {
	a, b := testenv.NewKafka(t), testenv.NewKafka(t)
	if a.Prefix == b.Prefix {
		t.Fatalf("two calls share the prefix %q", a.Prefix)
	}
	// Neither set sees the other's topics.
	td, err := a.Admin.ListTopics(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var mine int
	for _, name := range td.Names() {
		if strings.HasPrefix(name, a.Prefix) {
			mine++
			if strings.HasPrefix(name, b.Prefix) {
				t.Errorf("topic %s is under both prefixes", name)
			}
		}
	}
	if mine != len(a.Names.All()) {
		t.Errorf("%d topics under %s, want %d", mine, a.Prefix, len(a.Names.All()))
	}
}

// identifier is a ClickHouse name usable unquoted.
var identifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func TestNewClickHouseDatabaseLivesForTheTest(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// The parent's own connection checks from outside the subtest.
	outside := testenv.NewClickHouse(t)
	exists := func(t testing.TB, name string) bool {
		t.Helper()
		var n uint64
		if err := outside.Conn.QueryRow(ctx, "SELECT count() FROM system.databases WHERE name = ?", name).Scan(&n); err != nil {
			t.Fatalf("querying system.databases: %v", err)
		}
		return n > 0
	}

	var names []string
	t.Run("owner", func(t *testing.T) {
		a, b := testenv.NewClickHouse(t), testenv.NewClickHouse(t)
		for _, ch := range []*testenv.ClickHouse{a, b} {
			name := ch.Config.Database
			if !identifier.MatchString(name) {
				t.Fatalf("database name %q is not a valid identifier", name)
			}
			if exists(t, name) {
				t.Fatalf("database %s exists before anyone created it", name)
			}
			names = append(names, name)
		}
		if a.Config.Database == b.Config.Database {
			t.Fatalf("two calls share the database %q", a.Config.Database)
		}
		if err := a.Conn.Exec(ctx, "CREATE DATABASE "+a.Config.Database); err != nil {
			t.Fatal(err)
		}
		if err := a.Conn.Exec(ctx, "CREATE TABLE "+a.Config.Database+".t (x UInt8) ENGINE = Memory"); err != nil {
			t.Fatal(err)
		}
		if !exists(t, a.Config.Database) {
			t.Fatalf("database %s missing right after CREATE DATABASE", a.Config.Database)
		}
	})
	if len(names) != 2 {
		t.Fatal("the subtest never got its databases")
	}
	for _, name := range names {
		if !eventually(10*time.Second, func() bool { return !exists(t, name) }) {
			t.Errorf("database %s still exists 10 s after its test ended", name)
		}
	}
	if outside.Config.Database == names[0] || outside.Config.Database == names[1] {
		t.Errorf("the parent's database %s is shared with the subtest", outside.Config.Database)
	}
}
