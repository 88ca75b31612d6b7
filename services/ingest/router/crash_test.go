package router_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/pkg/configstore"
	"github.com/sluicehq/sluice/pkg/eventrecord"
	"github.com/sluicehq/sluice/pkg/kafkax"
	"github.com/sluicehq/sluice/pkg/testenv"
	"github.com/sluicehq/sluice/pkg/topics"
	"github.com/sluicehq/sluice/services/ingest/router"
)

// The test binary re-executes itself as a router process (ROUTER_CHILD
// set), so the crash test can kill -9 a real process.
func init() {
	if os.Getenv("ROUTER_CHILD") == "" {
		return
	}
	if err := runChild(); err != nil {
		fmt.Fprintln(os.Stderr, "router child:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func runChild() error {
	ctx := context.Background()
	kcfg := kafkax.Config{Brokers: []string{os.Getenv("ROUTER_BROKERS")}}
	names := topics.NewNames(os.Getenv("ROUTER_PREFIX"))
	store, err := configstore.Open(ctx, kcfg, names.Config, quiet)
	if err != nil {
		return err
	}
	go func() { _ = store.Run(ctx) }()
	if err := store.WaitCaughtUp(ctx); err != nil {
		return err
	}
	ix := router.NewIndex(nil)
	ix.Load(store.Subscribe(ix.Apply))
	r, err := router.New(router.Options{Kafka: kcfg, Names: names, Group: os.Getenv("ROUTER_GROUP"), Limits: eventrecord.Limits{AuthKey: testKey},
		DedupWindow: time.Hour, DedupMaxEntries: 100000, MaxBatch: 50}, ix, quiet)
	if err != nil {
		return err
	}
	fmt.Println("routing")
	return r.Run(ctx) // until killed
}

// TestKillNineMidBatchLeavesNoDuplicates: a router process killed with
// SIGKILL while it routes leaves no delivery visible twice to a
// read_committed reader, and the router that takes over routes every
// event: each (event, endpoint) pair exactly once.
func TestKillNineMidBatchLeavesNoDuplicates(t *testing.T) {
	k := testenv.NewKafka(t, testenv.WithPartitions(topics.Partitions{
		Events: 2, Deliveries: 3, Retry: 1, Dead: 1, Attempts: 1, EventLog: 2}))
	store := openStore(t, k)
	putEndpoint(t, store, &sluicev1.Endpoint{Id: "ep_orders", TenantId: "ten_a", EventTypes: []string{"order.*"}})
	putEndpoint(t, store, &sluicev1.Endpoint{Id: "ep_all", TenantId: "ten_a"})

	const n = 4000
	var recs []*kgo.Record
	for i := range n {
		recs = append(recs, event(k.Names.Events, "ten_a", "order.created", fmt.Sprintf("evt_%05d", i), `{"x":1}`))
	}
	produce(t, k, recs...)

	group := k.Prefix + "router"
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), "ROUTER_CHILD=1", "ROUTER_BROKERS="+k.Config.Brokers[0],
		"ROUTER_PREFIX="+k.Prefix, "ROUTER_GROUP="+group)
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	child.Stderr = &stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = child.Process.Kill(); _ = child.Wait() })
	buf := make([]byte, 8)
	if _, err := out.Read(buf); err != nil || !strings.HasPrefix(string(buf), "routing") {
		t.Fatalf("child did not start routing: %q %v\n%s", buf, err, stderr.String())
	}

	// Kill it once it is well into the work: some batches committed, one
	// surely open (batches of 50, 4,000 events).
	adm := k.Admin
	deadline := time.Now().Add(60 * time.Second)
	for {
		ends, err := adm.ListEndOffsets(context.Background(), k.Names.Deliveries)
		var total int64
		if err == nil {
			ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
		}
		if total >= 1000 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the child routed only %d deliveries in 60 s\n%s", total, stderr.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := child.Process.Signal(os.Kill); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()
	// Records past the last stable offset belong to the transaction the
	// kill cut short: they must never become visible.
	hw, err1 := adm.ListEndOffsets(context.Background(), k.Names.Deliveries)
	lso, err2 := adm.ListCommittedOffsets(context.Background(), k.Names.Deliveries)
	if err1 == nil && err2 == nil {
		var open int64
		hw.Each(func(o kadm.ListedOffset) { open += o.Offset })
		lso.Each(func(o kadm.ListedOffset) { open -= o.Offset })
		t.Logf("killed with %d delivery records in an open transaction", open)
	}

	// A new router takes over the group and finishes the work.
	startRouter(t, k, store, group)
	wantPairs := 2 * n
	got := map[string]int{}
	for _, rec := range k.Read(t, k.Names.Deliveries, wantPairs) {
		var d sluicev1.Delivery
		if err := proto.Unmarshal(rec.Value, &d); err != nil {
			t.Fatal(err)
		}
		got[d.EventId+"→"+d.EndpointId]++
	}
	dups := 0
	for pair, c := range got {
		if c > 1 {
			dups++
			if dups < 5 {
				t.Errorf("delivered %d times: %s", c, pair)
			}
		}
	}
	if len(got) != wantPairs || dups > 0 {
		t.Fatalf("%d distinct deliveries of %d, %d duplicated", len(got), wantPairs, dups)
	}
}
