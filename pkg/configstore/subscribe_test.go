package configstore_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/sluicehq/sluice/pkg/configstore"
	"github.com/sluicehq/sluice/pkg/testenv"
)

// TestSubscribeMissesNothing: an index built from Subscribe's snapshot and
// kept up by its changes ends equal to the store, while writes race with
// the subscription.
func TestSubscribeMissesNothing(t *testing.T) {
	k := testenv.NewKafka(t)
	s := open(t, k, k.Names.Config)
	ctx := ctxT(t)
	put := func(i int) {
		id := fmt.Sprintf("ep_%03d", i)
		if err := s.Put(ctx, id, endpoint(id, fmt.Sprintf("https://example.com/%d", i))); err != nil {
			t.Error(err)
		}
	}
	for i := range 10 {
		put(i)
	}
	var (
		mu      sync.Mutex
		index   map[string]string
		changes int
	)
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 10; i < 30; i++ {
			put(i)
		}
	})
	snap := s.Subscribe(func(c configstore.Change) {
		mu.Lock()
		defer mu.Unlock()
		changes++
		if c.New == nil {
			delete(index, c.Key)
			return
		}
		index[c.Key] = c.New.GetEndpoint().Url
	})
	mu.Lock()
	if index == nil {
		index = map[string]string{}
	}
	for k, v := range snap {
		index[k] = v.GetEndpoint().Url
	}
	mu.Unlock()
	wg.Wait()
	if err := s.Delete(ctx, "ep_005"); err != nil {
		t.Fatal(err)
	}

	mu.Lock()
	defer mu.Unlock()
	if len(index) != 29 {
		t.Fatalf("index holds %d endpoints, want 29 (snapshot %d, changes %d)", len(index), len(snap), changes)
	}
	for i := range 30 {
		id := fmt.Sprintf("ep_%03d", i)
		e, ok := s.Endpoint(id)
		if got, in := index[id]; in != ok || (ok && got != e.Url) {
			t.Fatalf("%s: index %q (%v), store %v", id, got, in, ok)
		}
	}
	if len(snap)+changes != 31 {
		t.Fatalf("snapshot %d + changes %d != 31 writes: something was seen twice or missed", len(snap), changes)
	}
}
