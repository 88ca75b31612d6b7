package chaos

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/loadtest/bench"
	"github.com/sluicehq/sluice/loadtest/receiver"
	"github.com/sluicehq/sluice/pkg/eventfilter"
	"github.com/sluicehq/sluice/pkg/eventrecord"
)

// TestEventsPartitionIsTheProducers: the probes cover every events
// partition only if eventsPartition picks what franz-go's default
// partitioner (the events API's and the Kafka producer's) picks for a
// keyed record.
func TestEventsPartitionIsTheProducers(t *testing.T) {
	// franz-go's default (kgo/config.go); for a keyed record it hashes the
	// key and never consults the backup iterator.
	def := kgo.UniformBytesPartitioner(64<<10, true, true, nil).ForTopic("chaos.events").(kgo.TopicBackupPartitioner)
	seen := map[int32]bool{}
	for i := range 1000 {
		id := "evt_" + strconv.Itoa(i)
		want := int32(def.PartitionByBackup(&kgo.Record{Key: eventrecord.Key("ten_1", id)}, eventsPartitions, nil))
		if got := eventsPartition("ten_1", id, eventsPartitions); got != want {
			t.Fatalf("%s: eventsPartition = %d, the producer's partitioner %d", id, got, want)
		}
		seen[want] = true
	}
	if len(seen) != eventsPartitions {
		t.Errorf("1000 ids reached %d of %d partitions", len(seen), eventsPartitions)
	}
}

func TestInUncommittedWindow(t *testing.T) {
	kill := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	su := &Suite{
		stages: []*Stage{{Name: "sender", Started: kill, Recovered: kill.Add(15 * time.Second)}},
		sends:  []mark{{stage: 0, at: kill}},
	}
	for name, tc := range map[string]struct {
		first, again time.Duration // from the kill
		want         bool
	}{
		"delivered just before the kill, again after it":         {-time.Second, 5 * time.Second, true},
		"delivered 15 s before the kill":                         {-uncommittedBefore, 20 * time.Second, true},
		"delivered 16 s before the kill: committed by then":      {-16 * time.Second, 20 * time.Second, false},
		"again 30 s after the recovery":                          {-time.Second, 15*time.Second + redeliveredWithin - time.Millisecond, true},
		"again later than 30 s after the recovery":               {-time.Second, 15*time.Second + redeliveredWithin + time.Second, false},
		"both after the kill: not a redelivery of uncommitted":   {time.Second, 2 * time.Second, false},
		"both before the kill: a duplicate with no fault at all": {-3 * time.Second, -time.Second, false},
	} {
		if got := su.inUncommittedWindow(kill.Add(tc.first), kill.Add(tc.again)); got != tc.want {
			t.Errorf("%s: inUncommittedWindow = %v, want %v", name, got, tc.want)
		}
	}
}

func TestReasonClass(t *testing.T) {
	for in, want := range map[string]string{
		"exhausted: 4 attempts failed, the last with circuit_open":                                             "exhausted: 4 attempts failed, the last with circuit_open",
		"exhausted: 4 attempts failed, the last with network_error: read tcp 127.0.0.1:4242: connection reset": "exhausted: 4 attempts failed, the last with network_error",
		"endpoint disabled: by the tenant":                                                                     "endpoint disabled: by the tenant",
	} {
		if got := reasonClass(in); got != want {
			t.Errorf("reasonClass(%q) = %q, want %q", in, got, want)
		}
	}
}

// accountingSuite is a suite of one tenant with two endpoints, e0 on
// chaos.a.* and e1 on chaos.a.t0, that ran an ingest stage and then a
// sender stage whose kill was at kill.
func accountingSuite(t *testing.T, kill time.Time) *Suite {
	t.Helper()
	su := &Suite{cfg: Config{Logf: t.Logf},
		tenants: []tenant{{ID: "ten_a", Name: "a", types: []string{"chaos.a.t0", "chaos.a.t1"}}},
		stages: []*Stage{
			{Name: "ingest", Started: kill.Add(-20 * time.Second), Recovered: kill.Add(-5 * time.Second)},
			{Name: "sender", Started: kill, Recovered: kill.Add(15 * time.Second)},
		},
		sends: []mark{{stage: 1, at: kill}},
	}
	for i, f := range []string{"chaos.a.*", "chaos.a.t0"} {
		set, err := eventfilter.Compile([]string{f})
		if err != nil {
			t.Fatal(err)
		}
		su.eps = append(su.eps, &endpoint{Endpoint: bench.Endpoint{ID: "ep_" + strconv.Itoa(i), Name: "e" + strconv.Itoa(i)}, filters: set})
	}
	return su
}

// TestTally: every (event, endpoint) pair lands in exactly one of
// delivered, dead with a reason, or missing, under the stage its event was
// sent in; duplicates are split by the uncommitted window, and missing
// pairs and duplicates outside the window fail the run.
func TestTally(t *testing.T) {
	kill := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	su := accountingSuite(t, kill)
	ok := func(d time.Duration) receiver.Arrival { return receiver.Arrival{At: kill.Add(d), Status: 204} }
	failed := func(d time.Duration) receiver.Arrival { return receiver.Arrival{At: kill.Add(d), Status: 503} }
	evs := map[string]accepted{
		"evt_both":       {typ: "chaos.a.t0", stage: 0}, // reaches e0 and e1
		"evt_dead":       {typ: "chaos.a.t1", stage: 0}, // e0 only, from here on
		"evt_noreason":   {typ: "chaos.a.t1", stage: 1},
		"evt_lost":       {typ: "chaos.a.t1", stage: 1},
		"evt_redelivery": {typ: "chaos.a.t1", stage: 0},
		"evt_dup":        {typ: "chaos.a.t1", stage: 1},
		"evt_retried":    {typ: "chaos.a.t1", stage: 1},
	}
	arrivals := map[string]map[string][]receiver.Arrival{
		"e0": {
			"evt_both":       {ok(-10 * time.Second)},
			"evt_dead":       {failed(-9 * time.Second), failed(-8 * time.Second)},
			"evt_redelivery": {ok(-time.Second), ok(5 * time.Second)},
			"evt_dup":        {ok(2 * time.Second), ok(3 * time.Second)},
			"evt_retried":    {failed(time.Second), ok(2 * time.Second)},
		},
		"e1": {"evt_both": {ok(-10 * time.Second)}},
	}
	dead := map[[2]string]string{
		{"evt_dead", "ep_0"}:     "exhausted: 4 attempts failed, the last with HTTP 503",
		{"evt_noreason", "ep_0"}: "",
	}
	su.tally(evs, arrivals, func(e, ep string) (string, bool) { r, ok := dead[[2]string{e, ep}]; return r, ok })

	type counts struct{ Accepted, Pairs, Delivered, Dead, Missing, Duplicates, DupInWindow int }
	for i, want := range []counts{
		{Accepted: 3, Pairs: 4, Delivered: 3, Dead: 1, Duplicates: 1, DupInWindow: 1},
		{Accepted: 4, Pairs: 4, Delivered: 2, Missing: 2, Duplicates: 1},
	} {
		st := su.stages[i]
		got := counts{st.Accepted, st.Pairs, st.Delivered, st.Dead, st.Missing, st.Duplicates, st.DupInWindow}
		if got != want {
			t.Errorf("stage %s: %+v, want %+v", st.Name, got, want)
		}
	}
	if got := su.stages[0].DeadReasons; len(got) != 1 || got["exhausted: 4 attempts failed, the last with HTTP 503"] != 1 {
		t.Errorf("dead reasons %v, want the one exhausted delivery", got)
	}
	if len(su.Failures) != 2 || !strings.HasPrefix(su.Failures[0], "2 deliveries missing") ||
		!strings.Contains(su.Failures[0], "evt_noreason→e0 (, stage sender; a dead letter without a reason)") ||
		su.Failures[1] != "stage sender: 1 duplicates outside the uncommitted window" {
		t.Errorf("failures %q, want the two missing pairs and the duplicate outside the window", su.Failures)
	}
}

// TestCompareAttempts: rows must equal requests per pair, except for
// requests in flight when a sender was killed.
func TestCompareAttempts(t *testing.T) {
	kill := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) receiver.Arrival { return receiver.Arrival{At: kill.Add(d)} }
	arrivals := map[string]map[string][]receiver.Arrival{
		"e0": {
			"evt_equal":    {at(-time.Minute), at(-50 * time.Second)},
			"evt_inflight": {at(-time.Minute), at(-3 * time.Second)},
			"evt_early":    {at(-time.Minute), at(-30 * time.Second)},
			"evt_extra":    {at(-time.Minute)},
		},
	}
	rows := map[[2]string]int{
		{"evt_equal", "e0"}: 2, {"evt_inflight", "e0"}: 1, {"evt_early", "e0"}: 1, {"evt_extra", "e0"}: 2,
		{"evt_unseen", "e0"}: 1,
	}
	res := compareAttempts(arrivals, rows, []time.Time{kill})
	want := []string{"evt_early→e0: 2 requests, 1 rows", "evt_extra→e0: 1 requests, 2 rows", "evt_unseen→e0: 0 requests, 1 rows"}
	if res.Requests != 7 || res.Rows != 7 || res.InFlight != 1 || !slices.Equal(res.Unexplained, want) {
		t.Errorf("compareAttempts = %+v, want 7 requests, 7 rows, 1 in flight, unexplained %q", res, want)
	}
}
