package api_test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/pkg/configstore"
	"github.com/sluicehq/sluice/pkg/ids"
	"github.com/sluicehq/sluice/pkg/kafkax"
	"github.com/sluicehq/sluice/pkg/secretbox"
	"github.com/sluicehq/sluice/pkg/testenv"
	"github.com/sluicehq/sluice/services/ingest/api"
)

// recoverSetup is a test's topics, an API replica that takes recover
// requests, and a tenant with one endpoint.
type recoverSetup struct {
	k      *testenv.Kafka
	box    *secretbox.Box
	dead   api.KafkaDeadLetters
	opts   api.Options
	a      *replica
	tenant string
	key    string
	ep     string
}

func newRecoverSetup(t *testing.T, tweak func(*api.Options)) *recoverSetup {
	t.Helper()
	k := testenv.NewKafka(t)
	s := &recoverSetup{k: k, box: newBox(t), dead: api.KafkaDeadLetters{Kafka: k.Config, Topic: k.Names.Dead}}
	s.opts = testOptions()
	s.opts.Deliveries = api.DeliveriesOptions{Sink: &fakeSink{}, Topic: k.Names.Deliveries, Dead: s.dead}
	if tweak != nil {
		tweak(&s.opts)
	}
	s.a = startReplica(t, k, s.box, s.opts)
	ten, key := newTenant(t, s.a.server, "Recover")
	s.tenant, s.key = ten.ID, key
	s.ep = newEndpoint(t, s.a.server, key, endpointBody("")).ID
	return s
}

// replica starts another API replica on the setup's topics.
func (s *recoverSetup) replica(t *testing.T) *replica {
	t.Helper()
	return startReplica(t, s.k, s.box, s.opts)
}

// post asks for a recover of endpoint over the last hour and returns the
// job.
func (s *recoverSetup) post(t *testing.T, r *replica, endpoint string) api.RecoverJobJSON {
	t.Helper()
	job, hdr, _ := call[api.RecoverJobJSON](t, r.server, http.StatusAccepted, "POST", "/v1/endpoints/"+endpoint+"/recover", s.key, s.window())
	if want := "/v1/endpoints/" + endpoint + "/recover/" + job.ID; hdr.Get("Location") != want {
		t.Fatalf("Location %q, want %q", hdr.Get("Location"), want)
	}
	return job
}

func (s *recoverSetup) window() string {
	return `{"since":"` + time.Now().Add(-time.Hour).UTC().Format(time.RFC3339) +
		`","until":"` + time.Now().Add(time.Hour).UTC().Format(time.RFC3339) + `"}`
}

// get reads a job through r.
func (s *recoverSetup) get(t *testing.T, r *replica, endpoint, id string) api.RecoverJobJSON {
	t.Helper()
	job, _, _ := call[api.RecoverJobJSON](t, r.server, http.StatusOK, "GET", "/v1/endpoints/"+endpoint+"/recover/"+id, s.key, nil)
	return job
}

// waitEnded polls the job through r until it is no longer running.
func (s *recoverSetup) waitEnded(t *testing.T, r *replica, endpoint, id string) api.RecoverJobJSON {
	t.Helper()
	var job api.RecoverJobJSON
	eventually(t, "recover job "+id+" to end", func() bool {
		job = s.get(t, r, endpoint, id)
		return job.Status != "running"
	})
	return job
}

// stored is the job as a store's view holds it.
func stored(t *testing.T, store *configstore.Store, id string) *sluicev1.RecoverJob {
	t.Helper()
	rec, ok := store.Get(id)
	if !ok || rec.GetRecoverJob() == nil {
		t.Fatalf("recover job %s is not in the store", id)
	}
	return rec.GetRecoverJob()
}

// deadLetter is a parked delivery of an event to endpoint, on partition 0
// of the dead-letter topic.
func deadLetter(topic, tenant, endpoint string) (*kgo.Record, string) {
	d := &sluicev1.Delivery{SchemaVersion: sluicev1.SchemaVersion, DeliveryId: ids.New(ids.Delivery), TenantId: tenant,
		EndpointId: endpoint, EventId: ids.New(ids.Event), EventType: "order.created", Data: []byte(`{"n":1}`),
		AttemptsMade: 8}
	v, _ := proto.Marshal(d)
	return &kgo.Record{Topic: topic, Partition: 0, Key: []byte(endpoint), Value: v}, d.EventId
}

// park produces n dead letters of endpoint (and tenant) and returns their
// event ids.
func (s *recoverSetup) park(t *testing.T, tenant, endpoint string, n int) []string {
	t.Helper()
	p, err := kafkax.NewProducer(s.k.Config, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var recs []*kgo.Record
	var events []string
	for range n {
		r, ev := deadLetter(s.k.Names.Dead, tenant, endpoint)
		recs, events = append(recs, r), append(events, ev)
	}
	if err := p.ProduceSync(ctxT(t), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	return events
}

// transactional is a transactional producer writing to partition 0.
func (s *recoverSetup) transactional(t *testing.T, name string) *kgo.Client {
	t.Helper()
	cl, err := kafkax.NewClient(s.k.Config, append(kafkax.ProducerOptions(), kgo.TransactionalID(s.k.Prefix+name),
		kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// runner is a RecoverRunner running until stop (or the test's end).
type runner struct {
	*api.RecoverRunner
	stop func()
}

func startRunner(t *testing.T, store api.JobStore, opts api.RecoverRunnerOptions) *runner {
	t.Helper()
	opts.Store = store
	rr := api.NewRecoverRunner(opts, discard)
	svc := testenv.StartService(t, rr.Run, 20*time.Second)
	stop := func() { svc.Stop(t) }
	t.Cleanup(stop)
	return &runner{rr, stop}
}

// gateSink takes the first open records, then holds every other until
// its context ends: a replica that stops in the middle of a job.
type gateSink struct {
	fakeSink
	open    int
	waiting chan struct{} // closed when a record waits at the gate
	once    sync.Once
}

func newGateSink(open int) *gateSink { return &gateSink{open: open, waiting: make(chan struct{})} }

func (s *gateSink) Publish(ctx context.Context, rec *kgo.Record) error {
	if len(s.records()) < s.open {
		return s.fakeSink.Publish(ctx, rec)
	}
	s.once.Do(func() { close(s.waiting) })
	<-ctx.Done()
	return ctx.Err()
}

// eventIDs are the event ids of the deliveries a sink took, checked to be
// recovered deliveries of endpoint.
func eventIDs(t *testing.T, endpoint string, recs []*kgo.Record) []string {
	t.Helper()
	var out []string
	for _, r := range recs {
		var d sluicev1.Delivery
		if err := proto.Unmarshal(r.Value, &d); err != nil {
			t.Fatal(err)
		}
		if d.Origin != sluicev1.DeliveryOrigin_DELIVERY_ORIGIN_RECOVER || d.EndpointId != endpoint ||
			string(r.Key) != endpoint || d.AttemptsMade != 0 || !strings.HasPrefix(d.DeliveryId, "dlv_") {
			t.Fatalf("re-sent delivery %+v (key %s): want a fresh delivery of %s, origin recover", &d, r.Key, endpoint)
		}
		out = append(out, d.EventId)
	}
	return out
}

// TestRecoverJobSurvivesItsReplica: a job started through one replica and
// run by it is released when that replica stops, resumed by another
// replica's runner from the saved progress, and read by a third replica
// that never ran it. A second case: the first replica dies without
// releasing; the job is taken over when its lease expires.
func TestRecoverJobSurvivesItsReplica(t *testing.T) {
	t.Parallel()
	s := newRecoverSetup(t, nil)
	events := s.park(t, s.tenant, s.ep, 10)
	s.park(t, s.tenant, "ep_other", 3) // another endpoint's
	s.park(t, "ten_other", s.ep, 1)    // another tenant's under this endpoint's key: skipped
	sinkA := newGateSink(3)
	runA := startRunner(t, s.a.store, api.RecoverRunnerOptions{Dead: s.dead, Sink: sinkA, Topic: s.k.Names.Deliveries})

	job := s.post(t, s.a, s.ep)
	if job.Status != "running" || len(job.Partitions) != 1 || job.Partitions[0].EndOffset != 14 ||
		job.Partitions[0].NextOffset != job.Partitions[0].StartOffset {
		t.Fatalf("new job %+v: want running, reading partition 0 up to offset 14", job)
	}
	select {
	case <-sinkA.waiting:
	case <-time.After(30 * time.Second):
		t.Fatal("replica A re-sent fewer than 3 deliveries in 30 s")
	}
	runA.stop()
	released := stored(t, s.a.store, job.ID)
	if released.Owner != "" || released.Status != sluicev1.RecoverJobStatus_RECOVER_JOB_STATUS_RUNNING ||
		released.Recovered != 3 || released.Partitions[0].NextOffset != 3 {
		t.Fatalf("after replica A stopped, the job is %v; want released, running, 3 recovered, next offset 3", released)
	}

	b := s.replica(t)
	sinkB := &fakeSink{}
	startRunner(t, b.store, api.RecoverRunnerOptions{Dead: s.dead, Sink: sinkB, Topic: s.k.Names.Deliveries})
	c := s.replica(t) // never runs a job
	final := s.waitEnded(t, c, s.ep, job.ID)
	if final.Status != "done" || final.Recovered != 10 || final.Scanned != 11 || final.Skipped != 1 || final.Truncated ||
		final.Partitions[0].NextOffset != final.Partitions[0].EndOffset || final.Finished == nil {
		t.Fatalf("the job as a third replica shows it: %+v", final)
	}
	a, bb := eventIDs(t, s.ep, sinkA.records()), eventIDs(t, s.ep, sinkB.records())
	if len(a) != 3 || len(bb) != 7 {
		t.Fatalf("replica A re-sent %d and B %d, want 3 and 7: a stop that saved its progress re-sends nothing twice", len(a), len(bb))
	}
	got := append(a, bb...)
	slices.Sort(got)
	want := slices.Clone(events)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("re-sent events %v, want each of %v once", got, want)
	}

}

// TestRecoverJobTakenOverAfterItsReplicaDies: a replica that dies holding
// a job cannot release it; another replica takes it over once its lease
// has expired, from the progress last saved. Deliveries sent after that
// save are sent again (receivers drop them by webhook-id); none is lost.
func TestRecoverJobTakenOverAfterItsReplicaDies(t *testing.T) {
	t.Parallel()
	s := newRecoverSetup(t, nil)
	events := s.park(t, s.tenant, s.ep, 10)
	storeX, stopStoreX := openStore(t, s.k)
	sinkX := newGateSink(3)
	runX := startRunner(t, storeX, api.RecoverRunnerOptions{Dead: s.dead, Sink: sinkX, Topic: s.k.Names.Deliveries})
	job := s.post(t, s.a, s.ep)
	select {
	case <-sinkX.waiting:
	case <-time.After(30 * time.Second):
		t.Fatal("replica X re-sent fewer than 3 deliveries in 30 s")
	}
	// X's connection to Kafka goes first, so its runner cannot release
	// the job: as after kill -9.
	stopStoreX()
	runX.stop()
	held := stored(t, s.a.store, job.ID)
	if held.Owner != runX.Owner() || held.Status != sluicev1.RecoverJobStatus_RECOVER_JOB_STATUS_RUNNING {
		t.Fatalf("after X died the job is %v; want still running and held by X (%s)", held, runX.Owner())
	}

	// Replica B, on a clock a minute on: X's lease (15 s) has expired.
	b := s.replica(t)
	sinkB := &fakeSink{}
	startRunner(t, b.store, api.RecoverRunnerOptions{Dead: s.dead, Sink: sinkB, Topic: s.k.Names.Deliveries,
		Now: func() time.Time { return time.Now().Add(time.Minute) }})
	final := s.waitEnded(t, s.a, s.ep, job.ID)
	if final.Status != "done" || final.Recovered != 10 || final.Partitions[0].NextOffset != final.Partitions[0].EndOffset {
		t.Fatalf("the job after the takeover: %+v", final)
	}
	x, bb := eventIDs(t, s.ep, sinkX.records()), eventIDs(t, s.ep, sinkB.records())
	if len(bb) < 7 || len(bb) > 10 {
		t.Fatalf("replica B re-sent %d, want the 7 X did not plus at most the 3 it did", len(bb))
	}
	got := map[string]bool{}
	for _, id := range append(x, bb...) {
		got[id] = true
	}
	for _, id := range events {
		if !got[id] {
			t.Fatalf("event %s was never re-sent", id)
		}
	}
	if len(got) != len(events) {
		t.Fatalf("%d distinct events re-sent, want %d", len(got), len(events))
	}
}

// TestRecoverJobIncompleteWhenItsBudgetRunsOut: a job has 10 minutes from
// its creation; when they run out before it has read every partition to
// its end, it ends incomplete, saying how far it read, not done. A job
// with time to spare ends done.
func TestRecoverJobIncompleteWhenItsBudgetRunsOut(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	clock.now = time.Now() // dead letters carry real times; the window is around now
	s := newRecoverSetup(t, func(o *api.Options) { o.Now = clock.Now })
	s.park(t, s.tenant, s.ep, 10)
	// The third delivery takes 11 minutes, as on a broker this slow.
	sink := &fakeSink{}
	sink.fail = func(*kgo.Record) error {
		if len(sink.records()) == 2 {
			clock.Advance(11 * time.Minute)
		}
		return nil
	}
	startRunner(t, s.a.store, api.RecoverRunnerOptions{Dead: s.dead, Sink: sink, Topic: s.k.Names.Deliveries, Now: clock.Now})
	job := s.post(t, s.a, s.ep)
	got := s.waitEnded(t, s.a, s.ep, job.ID)
	p := got.Partitions[0]
	if got.Status != "incomplete" || got.Recovered != 3 || p.NextOffset != p.StartOffset+3 || p.EndOffset != 10 ||
		!strings.Contains(got.Error, "time budget") {
		t.Fatalf("job %+v, partition %+v: want incomplete after 3, read up to offset 3 of 10", got, p)
	}

	// Asked again, with time to spare: done, all of the window.
	sink.fail = nil
	again := s.waitEnded(t, s.a, s.ep, s.post(t, s.a, s.ep).ID)
	if again.Status != "done" || again.Recovered != 10 || again.Error != "" {
		t.Fatalf("second job %+v: want done with 10", again)
	}
}

// TestRecoverJobReadsToAnEndThatIsATransactionMarker: dead letters written
// in transactions end the partition with a commit or abort marker, which
// is no record; the job still sees it has read to the end, and re-sends
// the committed letters only.
func TestRecoverJobReadsToAnEndThatIsATransactionMarker(t *testing.T) {
	t.Parallel()
	s := newRecoverSetup(t, nil)
	txn := s.transactional(t, "dead-writer")
	ctx := ctxT(t)
	var committed []string
	for _, commit := range []bool{true, false} {
		if err := txn.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for range 4 {
			r, ev := deadLetter(s.k.Names.Dead, s.tenant, s.ep)
			if err := txn.ProduceSync(ctx, r).FirstErr(); err != nil {
				t.Fatal(err)
			}
			if commit {
				committed = append(committed, ev)
			}
		}
		if err := txn.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
			t.Fatal(err)
		}
	}
	sink := &fakeSink{}
	startRunner(t, s.a.store, api.RecoverRunnerOptions{Dead: s.dead, Sink: sink, Topic: s.k.Names.Deliveries})
	job := s.post(t, s.a, s.ep)
	// 4 committed, their marker, 4 aborted, their marker: the end is 10,
	// offset 9 the abort marker.
	if p := job.Partitions; len(p) != 1 || p[0].EndOffset != 10 {
		t.Fatalf("job %+v: want one partition ending at 10", job)
	}
	got := s.waitEnded(t, s.a, s.ep, job.ID)
	if got.Status != "done" || got.Recovered != 4 || got.Partitions[0].NextOffset != 10 {
		t.Fatalf("job %+v: want done with the 4 committed letters, read to offset 10", got)
	}
	sent := eventIDs(t, s.ep, sink.records())
	slices.Sort(sent)
	slices.Sort(committed)
	if !slices.Equal(sent, committed) {
		t.Fatalf("re-sent %v, want the committed %v", sent, committed)
	}
}

// TestRecoverJobWaitsOutAQuietBroker: a scan that nothing arrives for is
// not over (review B6: the old scan ended done at its first empty 2 s
// poll). Here a transaction left open before the dead letters holds
// read_committed back; the job keeps its lease while it waits, and
// re-sends them all once the transaction commits.
func TestRecoverJobWaitsOutAQuietBroker(t *testing.T) {
	t.Parallel()
	s := newRecoverSetup(t, nil)
	txn := s.transactional(t, "open")
	ctx := ctxT(t)
	if err := txn.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	r, _ := deadLetter(s.k.Names.Dead, s.tenant, "ep_other")
	if err := txn.ProduceSync(ctx, r).FirstErr(); err != nil {
		t.Fatal(err)
	}
	events := s.park(t, s.tenant, s.ep, 5)
	sink := &fakeSink{}
	startRunner(t, s.a.store, api.RecoverRunnerOptions{Dead: s.dead, Sink: sink, Topic: s.k.Names.Deliveries,
		SaveEvery: 100 * time.Millisecond})
	job := s.post(t, s.a, s.ep)
	// Three saves of its progress with nothing read: three polls that
	// brought nothing, and the job goes on.
	var seen []time.Time
	eventually(t, "three saves of a job that reads nothing", func() bool {
		j := s.get(t, s.a, s.ep, job.ID)
		if j.Status != "running" || j.Recovered != 0 {
			t.Fatalf("while the transaction is open: %+v", j)
		}
		if len(seen) == 0 || j.Updated.After(seen[len(seen)-1]) {
			seen = append(seen, j.Updated)
		}
		return len(seen) > 3
	})
	if err := txn.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	got := s.waitEnded(t, s.a, s.ep, job.ID)
	if got.Status != "done" || got.Recovered != 5 {
		t.Fatalf("job %+v: want done with the 5 letters", got)
	}
	if sent := eventIDs(t, s.ep, sink.records()); len(sent) != len(events) {
		t.Fatalf("re-sent %d, want %d", len(sent), len(events))
	}
}

// TestRecoverJobBounds: one running job per endpoint (409 naming it), at
// most MaxRecoverJobs running per tenant (429 with Retry-After), and
// neither counts another tenant's jobs or finished ones. No runner runs
// here, so the jobs stay running.
func TestRecoverJobBounds(t *testing.T) {
	t.Parallel()
	s := newRecoverSetup(t, func(o *api.Options) { o.Deliveries.MaxRecoverJobs = 2 })
	ep2 := newEndpoint(t, s.a.server, s.key, endpointBody("")).ID
	ep3 := newEndpoint(t, s.a.server, s.key, endpointBody("")).ID
	for _, ep := range []string{s.ep, ep2, ep3} {
		s.park(t, s.tenant, ep, 1)
	}
	first := s.post(t, s.a, s.ep)
	b := s.replica(t) // the bounds hold across replicas
	eventually(t, "the key on replica b", func() bool {
		status, _, _ := b.do(t, "GET", "/v1/endpoints", s.key, nil)
		return status == 200
	})
	p := callProblem(t, b.server, http.StatusConflict, "recover-running", "POST", "/v1/endpoints/"+s.ep+"/recover", s.key, s.window())
	if !strings.Contains(p.Detail, first.ID) {
		t.Fatalf("the refusal %q does not name the running job %s", p.Detail, first.ID)
	}
	s.post(t, b, ep2)
	status, hdr, raw := s.a.do(t, "POST", "/v1/endpoints/"+ep3+"/recover", s.key, s.window())
	wantProblem(t, "a third job", status, hdr, raw, http.StatusTooManyRequests, "too-many-recover-jobs")
	if hdr.Get("Retry-After") != "10" {
		t.Fatalf("Retry-After %q, want 10", hdr.Get("Retry-After"))
	}
	// Any replica answers for any job.
	if got := s.get(t, b, s.ep, first.ID); got.Status != "running" || got.ID != first.ID {
		t.Fatalf("job %s through replica b: %+v", first.ID, got)
	}
	callProblem(t, b.server, http.StatusNotFound, "not-found", "GET", "/v1/endpoints/"+ep2+"/recover/"+first.ID, s.key, nil)

	// A window with nothing parked is done at once and counts for nothing.
	// It starts a few milliseconds after the letters above were parked
	// (record times are in milliseconds), and must not be in the future.
	since := time.Now().Add(2 * time.Millisecond)
	time.Sleep(time.Until(since))
	empty, _, _ := call[api.RecoverJobJSON](t, s.a.server, http.StatusAccepted, "POST", "/v1/endpoints/"+ep3+"/recover", s.key,
		`{"since":"`+since.UTC().Format(time.RFC3339Nano)+`","until":"`+since.Add(time.Hour).UTC().Format(time.RFC3339Nano)+`"}`)
	if empty.Status != "done" || len(empty.Partitions) != 0 || empty.Finished == nil {
		t.Fatalf("a job with nothing to read: %+v", empty)
	}

	// Another tenant is not held back by this one's jobs.
	_, otherKey := newTenant(t, s.a.server, "Other")
	otherEp := newEndpoint(t, s.a.server, otherKey, endpointBody("")).ID
	s.park(t, "ten_whatever", otherEp, 1)
	call[api.RecoverJobJSON](t, s.a.server, http.StatusAccepted, "POST", "/v1/endpoints/"+otherEp+"/recover", otherKey, s.window())
	// And cannot read this one's.
	callProblem(t, s.a.server, http.StatusNotFound, "not-found", "GET", "/v1/endpoints/"+s.ep+"/recover/"+first.ID, otherKey, nil)
}

// TestFinishedRecoverJobsAreDeleted: finished jobs leave the config topic
// after 7 days, and a tenant keeps at most its newest 100 finished ones,
// so the topic and every service's view of it stay bounded.
func TestFinishedRecoverJobsAreDeleted(t *testing.T) {
	t.Parallel()
	s := newRecoverSetup(t, nil)
	ctx := ctxT(t)
	now := time.Now()
	put := func(id string, finished time.Time) {
		t.Helper()
		job := &sluicev1.RecoverJob{Id: id, TenantId: s.tenant, EndpointId: s.ep,
			Status: sluicev1.RecoverJobStatus_RECOVER_JOB_STATUS_DONE, CreatedAtMs: finished.UnixMilli(),
			UpdatedAtMs: finished.UnixMilli(), FinishedAtMs: finished.UnixMilli()}
		if err := s.a.store.Put(ctx, id, &sluicev1.ConfigRecord{Object: &sluicev1.ConfigRecord_RecoverJob{RecoverJob: job}}); err != nil {
			t.Fatal(err)
		}
	}
	// 101 finished within the week, one a minute, the oldest first; and
	// one finished 8 days ago.
	var recent []string
	for i := range 101 {
		id := ids.New("rcv")
		put(id, now.Add(time.Duration(i-101)*time.Minute))
		recent = append(recent, id)
	}
	old := ids.New("rcv")
	put(old, now.Add(-8*24*time.Hour))
	running := s.post(t, s.a, s.ep) // nothing to read: done, but new

	startRunner(t, s.a.store, api.RecoverRunnerOptions{Dead: s.dead, Sink: &fakeSink{}, Topic: s.k.Names.Deliveries})
	gone := func(id string) bool { _, ok := s.a.store.Get(id); return !ok }
	eventually(t, "the expired job and the 101st newest to be deleted", func() bool {
		return gone(old) && gone(recent[0]) && gone(recent[1])
	})
	for _, id := range append(recent[2:], running.ID) {
		if gone(id) {
			t.Fatalf("job %s, among the tenant's 100 newest finished within the week, was deleted", id)
		}
	}
	callProblem(t, s.a.server, http.StatusNotFound, "not-found", "GET", "/v1/endpoints/"+s.ep+"/recover/"+old, s.key, nil)
}
