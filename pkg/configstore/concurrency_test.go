package configstore_test

import (
	"strconv"
	"sync"
	"testing"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/pkg/configstore"
	"github.com/sluicehq/sluice/pkg/testenv"
)

// TestConcurrentUpdatesLoseNothing: two replicas incrementing one counter
// through Update never lose an increment. Update's function sees the latest
// committed version on every replica, and no write commits in between.
func TestConcurrentUpdatesLoseNothing(t *testing.T) {
	k := testenv.NewKafka(t)
	a := open(t, k, k.Names.Config)
	b := open(t, k, k.Names.Config)
	ctx := ctxT(t)
	const perReplica = 15

	increment := func(cur *sluicev1.ConfigRecord) (*sluicev1.ConfigRecord, error) {
		n := 0
		if cur != nil {
			n, _ = strconv.Atoi(cur.GetTenant().Metadata["n"])
		}
		return &sluicev1.ConfigRecord{Object: &sluicev1.ConfigRecord_Tenant{Tenant: &sluicev1.Tenant{
			Id: "ten_counter", Metadata: map[string]string{"n": strconv.Itoa(n + 1)},
		}}}, nil
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, s := range []*configstore.Store{a, b} {
		wg.Go(func() {
			for range perReplica {
				if _, err := s.Update(ctx, "ten_counter", increment); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for name, s := range map[string]*configstore.Store{"a": a, "b": b} {
		if err := s.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		tn, ok := s.Tenant("ten_counter")
		if !ok {
			t.Fatalf("replica %s has no counter", name)
		}
		if got := tn.Metadata["n"]; got != strconv.Itoa(2*perReplica) {
			t.Fatalf("replica %s counts %s after %d increments: updates were lost", name, got, 2*perReplica)
		}
	}
}
