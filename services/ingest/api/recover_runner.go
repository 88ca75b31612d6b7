package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/pkg/configstore"
	"github.com/sluicehq/sluice/pkg/ids"
)

// JobStore is what a RecoverRunner needs of the config view.
type JobStore interface {
	Get(key string) (*sluicev1.ConfigRecord, bool)
	Update(ctx context.Context, key string,
		fn func(cur *sluicev1.ConfigRecord) (*sluicev1.ConfigRecord, error)) (*sluicev1.ConfigRecord, error)
	Subscribe(fn func(configstore.Change)) map[string]*sluicev1.ConfigRecord
	WaitCaughtUp(ctx context.Context) error
}

var _ JobStore = (*configstore.Store)(nil)

// DeadLetterReader reads the dead-letter topic for recover jobs.
type DeadLetterReader interface {
	DeadLetters
	// Reader returns a client consuming each partition of from from its
	// offset, read_committed, with transaction markers kept.
	Reader(from map[int32]int64) (*kgo.Client, error)
}

// Defaults of a RecoverRunner.
const (
	// DefaultRecoverRunning is how many jobs one replica runs at once.
	// Each holds a Kafka client reading the dead-letter topic (a few MiB
	// of fetch buffer) and produces one delivery at a time.
	DefaultRecoverRunning = 4
	// defaultRecoverLease is how long a replica holds a job without
	// renewing it: seven renewals (every 2 s) may fail before another
	// replica takes over, and a crashed replica's jobs resume within 15 s.
	defaultRecoverLease = 15 * time.Second
	// defaultRecoverSaveEvery is how often a running job saves its
	// progress and renews its lease: half a config write (30-50 ms) a
	// second per job, two for a replica's four; a job resumed after its
	// replica died re-sends at most this long's deliveries.
	defaultRecoverSaveEvery = 2 * time.Second
	// recoverRetention is how long finished jobs are kept (answered by
	// GET) before they are deleted from the config topic, so it does not
	// grow with every job ever run.
	recoverRetention = 7 * 24 * time.Hour
	// maxFinishedRecoverJobs is how many finished jobs of one tenant are
	// kept within the retention: a tenant starting short jobs all week
	// does not fill every service's view of the config topic. At about
	// 300 bytes a job (6 partitions), 100 are 30 KB per tenant.
	maxFinishedRecoverJobs = 100
	// recoverSweepEvery is how often finished jobs past either bound are
	// deleted.
	recoverSweepEvery = time.Minute
	// recoverPublishBackoff is the wait before producing again when the
	// producer's buffer is full (a burst of events).
	recoverPublishBackoff = 100 * time.Millisecond
)

// RecoverRunnerOptions are a RecoverRunner's settings; zero values take
// the defaults above.
type RecoverRunnerOptions struct {
	// Store is the config view the jobs are in.
	Store JobStore
	// Dead reads the dead-letter topic.
	Dead DeadLetterReader
	// Sink produces the re-sent deliveries to Topic, the deliveries topic,
	// or OrderedTopic for an ordered endpoint (see DeliveriesOptions).
	Sink                EventSink
	Topic, OrderedTopic string
	// Owner names this replica in the jobs it runs; empty makes one from
	// the host name and a random suffix, unique per process.
	Owner string
	// Now tells the time of leases, deadlines and retention; nil means
	// time.Now.
	Now          func() time.Time
	MaxRunning   int
	Lease        time.Duration
	SaveEvery    time.Duration
	WriteTimeout time.Duration
}

// RecoverRunner runs recover jobs in one replica. Every replica runs one:
// it claims running jobs that no replica holds (a new job, or one whose
// lease expired, its replica gone), a few at a time; reads each job's
// partitions from its saved progress up to the end offsets it captured;
// saves progress and renews its lease as it goes; and on shutdown saves
// progress and releases its jobs, so another replica resumes them at
// once. It also deletes finished jobs past their retention.
type RecoverRunner struct {
	opts RecoverRunnerOptions
	now  func() time.Time
	log  *slog.Logger
	// wake is signalled (never blocking) when the jobs change or one of
	// ours ends, so claims do not wait for the next tick.
	wake chan struct{}

	mu   sync.Mutex
	jobs map[string]*sluicev1.RecoverJob // every job in the view; shared, read-only
	mine map[string]bool                 // jobs this runner is running
	// early holds the changes applied before the snapshot was loaded:
	// they are newer than it, so they are replayed after it.
	early  []configstore.Change
	loaded bool
}

// NewRecoverRunner builds a runner; Run runs it.
func NewRecoverRunner(opts RecoverRunnerOptions, log *slog.Logger) *RecoverRunner {
	if opts.Owner == "" {
		host, _ := os.Hostname()
		opts.Owner = host + "-" + configstore.NewEtag()
	}
	if opts.MaxRunning <= 0 {
		opts.MaxRunning = DefaultRecoverRunning
	}
	if opts.Lease <= 0 {
		opts.Lease = defaultRecoverLease
	}
	if opts.SaveEvery <= 0 {
		opts.SaveEvery = defaultRecoverSaveEvery
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 10 * time.Second
	}
	rr := &RecoverRunner{opts: opts, now: opts.Now, log: log, wake: make(chan struct{}, 1),
		jobs: map[string]*sluicev1.RecoverJob{}, mine: map[string]bool{}}
	if rr.now == nil {
		rr.now = time.Now
	}
	return rr
}

// Owner is the name this runner writes into the jobs it holds.
func (rr *RecoverRunner) Owner() string { return rr.opts.Owner }

// Run claims and runs jobs until ctx is done, then stops its jobs (each
// saves its progress and lets go of its lease) and returns once they
// have. Call it once.
func (rr *RecoverRunner) Run(ctx context.Context) error {
	rr.load(rr.opts.Store.Subscribe(rr.apply))
	if err := rr.opts.Store.WaitCaughtUp(ctx); err != nil {
		return nil // stopped during start-up
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	// Claims happen on every change; the tick finds leases that expired,
	// which no change announces.
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var nextSweep time.Time
	for {
		rr.claim(ctx, &wg)
		if now := rr.now(); !now.Before(nextSweep) {
			rr.sweep(ctx, now)
			nextSweep = now.Add(recoverSweepEvery)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-rr.wake:
		}
	}
}

// load takes the snapshot Subscribe returned, then the changes applied
// since.
func (rr *RecoverRunner) load(snap map[string]*sluicev1.ConfigRecord) {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	for id, rec := range snap {
		if j := rec.GetRecoverJob(); j != nil {
			rr.jobs[id] = j
		}
	}
	for _, c := range rr.early {
		rr.applyLocked(c)
	}
	rr.early, rr.loaded = nil, true
}

// apply follows the view; it runs under the store's lock, so it only
// records the change.
func (rr *RecoverRunner) apply(c configstore.Change) {
	if c.Old.GetRecoverJob() == nil && c.New.GetRecoverJob() == nil {
		return
	}
	rr.mu.Lock()
	if rr.loaded {
		rr.applyLocked(c)
	} else {
		rr.early = append(rr.early, c)
	}
	rr.mu.Unlock()
	rr.poke()
}

func (rr *RecoverRunner) applyLocked(c configstore.Change) {
	if j := c.New.GetRecoverJob(); j != nil {
		rr.jobs[c.Key] = j
	} else {
		delete(rr.jobs, c.Key)
	}
}

func (rr *RecoverRunner) poke() {
	select {
	case rr.wake <- struct{}{}:
	default:
	}
}

// errNotClaimable stops a claim of a job another replica holds or that
// has ended.
var errNotClaimable = errors.New("the job is not waiting for a replica")

// errLeaseLost stops a job whose lease another replica has taken.
var errLeaseLost = errors.New("another replica holds the job")

// claim takes as many waiting jobs as this runner has room for, oldest
// first, and runs each in a goroutine of wg.
func (rr *RecoverRunner) claim(ctx context.Context, wg *sync.WaitGroup) {
	now := ms(rr.now())
	rr.mu.Lock()
	free := rr.opts.MaxRunning - len(rr.mine)
	var waiting []*sluicev1.RecoverJob
	for id, j := range rr.jobs {
		if j.Status == sluicev1.RecoverJobStatus_RECOVER_JOB_STATUS_RUNNING && !rr.mine[id] &&
			(j.Owner == "" || j.LeaseExpiresAtMs <= now) {
			waiting = append(waiting, j)
		}
	}
	rr.mu.Unlock()
	sort.Slice(waiting, func(i, j int) bool { return waiting[i].Id < waiting[j].Id }) // ids are time-ordered
	for _, w := range waiting {
		if free == 0 || ctx.Err() != nil {
			return
		}
		job, err := rr.take(ctx, w.Id)
		if err != nil {
			if !errors.Is(err, errNotClaimable) {
				rr.log.Warn("claiming a recover job", "job", w.Id, "err", err)
			}
			continue
		}
		free--
		rr.mu.Lock()
		rr.mine[job.Id] = true
		rr.mu.Unlock()
		wg.Go(func() {
			rr.run(ctx, job)
			rr.mu.Lock()
			delete(rr.mine, job.Id)
			rr.mu.Unlock()
			rr.poke()
		})
	}
}

// take claims job id: configstore.Update makes the claim exclusive, so
// of two replicas claiming at once one gets it.
func (rr *RecoverRunner) take(ctx context.Context, id string) (*sluicev1.RecoverJob, error) {
	wctx, cancel := context.WithTimeout(ctx, rr.opts.WriteTimeout)
	defer cancel()
	var taken *sluicev1.RecoverJob
	_, err := rr.opts.Store.Update(wctx, id, func(cur *sluicev1.ConfigRecord) (*sluicev1.ConfigRecord, error) {
		j := cur.GetRecoverJob()
		now := rr.now()
		if j == nil || j.Status != sluicev1.RecoverJobStatus_RECOVER_JOB_STATUS_RUNNING ||
			(j.Owner != "" && j.LeaseExpiresAtMs > ms(now)) {
			return nil, errNotClaimable
		}
		j.Owner, j.LeaseExpiresAtMs, j.UpdatedAtMs = rr.opts.Owner, ms(now.Add(rr.opts.Lease)), ms(now)
		taken = j
		return recoverJobRecord(j), nil
	})
	if err != nil {
		return nil, err
	}
	return proto.CloneOf(taken), nil
}

// jobEnd is how running a job here ended.
type jobEnd int

const (
	// jobFinished: its status (done, incomplete or failed) is set.
	jobFinished jobEnd = iota + 1
	// jobStopped: this replica is shutting down; the progress is saved
	// and the job released for another replica.
	jobStopped
	// jobLost: another replica holds the job now; nothing is written.
	jobLost
)

// run runs job, which this runner has claimed, and saves how it ended.
func (rr *RecoverRunner) run(ctx context.Context, job *sluicev1.RecoverJob) {
	end := rr.scan(ctx, job)
	switch end {
	case jobLost:
		rr.log.Warn("recover job taken over by another replica", "job", job.Id)
		return
	case jobFinished:
		job.FinishedAtMs = ms(rr.now())
		if job.Status == sluicev1.RecoverJobStatus_RECOVER_JOB_STATUS_FAILED {
			rr.log.Warn("recover job failed", "job", job.Id, "endpoint", job.EndpointId, "err", job.Error)
		}
	}
	job.Owner, job.LeaseExpiresAtMs = "", 0
	// The last write happens even when ctx is done (shutdown): it is what
	// lets another replica resume at once, from where this one stopped.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rr.opts.WriteTimeout)
	defer cancel()
	if err := rr.save(wctx, job); err != nil {
		// The lease expires instead, and another replica resumes from the
		// last progress saved.
		rr.log.Warn("saving the end of a recover job", "job", job.Id, "err", err)
	}
}

// save writes job if this runner still holds it.
func (rr *RecoverRunner) save(ctx context.Context, job *sluicev1.RecoverJob) error {
	job.UpdatedAtMs = ms(rr.now())
	_, err := rr.opts.Store.Update(ctx, job.Id, func(cur *sluicev1.ConfigRecord) (*sluicev1.ConfigRecord, error) {
		c := cur.GetRecoverJob()
		if c == nil || c.Owner != rr.opts.Owner || c.Status != sluicev1.RecoverJobStatus_RECOVER_JOB_STATUS_RUNNING {
			return nil, errLeaseLost
		}
		return recoverJobRecord(job), nil
	})
	return err
}

// scan reads job's partitions from their progress to their end offsets
// and re-sends the endpoint's dead letters of the window, updating job.
//
// It never stops because a poll brought nothing: a slow broker, cold
// segments, or an open transaction holding back read_committed all end.
// What bounds it is the job's deadline (then it is incomplete) and the
// lease: polls wait at most SaveEvery, so the lease is renewed even while
// nothing arrives.
func (rr *RecoverRunner) scan(ctx context.Context, job *sluicev1.RecoverJob) jobEnd {
	finish := func(status sluicev1.RecoverJobStatus, format string, args ...any) jobEnd {
		job.Status = status
		if format != "" {
			job.Error = fmt.Sprintf(format, args...)
		}
		return jobFinished
	}
	const (
		done       = sluicev1.RecoverJobStatus_RECOVER_JOB_STATUS_DONE
		incomplete = sluicev1.RecoverJobStatus_RECOVER_JOB_STATUS_INCOMPLETE
		failed     = sluicev1.RecoverJobStatus_RECOVER_JOB_STATUS_FAILED
	)
	outOfTime := func() jobEnd {
		return finish(incomplete, "the job's time budget ran out before it read every partition to its end "+
			"(next_offset shows how far); recover again for the rest")
	}
	left := map[int32]*sluicev1.RecoverPartition{}
	from := map[int32]int64{}
	for _, p := range job.Partitions {
		if p.NextOffset < p.EndOffset {
			left[p.Partition], from[p.Partition] = p, p.NextOffset
		}
	}
	if len(left) == 0 {
		return finish(done, "")
	}
	if problem := rr.endpointProblem(job); problem != "" {
		return finish(failed, "%s", problem)
	}
	deadline, leaseUntil := time.UnixMilli(job.DeadlineAtMs), time.UnixMilli(job.LeaseExpiresAtMs)
	since, until := time.UnixMilli(job.SinceMs), time.UnixMilli(job.UntilMs)
	cl, err := rr.opts.Dead.Reader(from)
	if err != nil {
		return finish(failed, "reading dead letters: %v", err)
	}
	defer cl.Close()
	lastSave := rr.now()
	for len(left) > 0 {
		now := rr.now()
		if !now.Before(deadline) {
			return outOfTime()
		}
		if now.Sub(lastSave) >= rr.opts.SaveEvery {
			lastSave = now
			if problem := rr.endpointProblem(job); problem != "" {
				return finish(failed, "%s", problem)
			}
			job.LeaseExpiresAtMs = ms(now.Add(rr.opts.Lease))
			switch err := rr.save(ctx, job); {
			case errors.Is(err, errLeaseLost):
				return jobLost
			case ctx.Err() != nil:
				return jobStopped
			case err != nil:
				// Kafka is slow or down; carry on while the lease lasts.
				rr.log.Warn("saving the progress of a recover job", "job", job.Id, "err", err)
			default:
				leaseUntil = time.UnixMilli(job.LeaseExpiresAtMs)
			}
		}
		if !now.Before(leaseUntil) {
			// Not renewed in time: another replica may be running it.
			return jobLost
		}
		pctx, cancel := context.WithTimeout(ctx, rr.opts.SaveEvery)
		fs := cl.PollFetches(pctx)
		cancel()
		if ctx.Err() != nil {
			return jobStopped
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) {
				ferr = errors.Join(ferr, err)
			}
		})
		if ferr != nil {
			return finish(failed, "reading dead letters: %v", ferr)
		}
		for it := fs.RecordIter(); !it.Done(); {
			rec := it.Next()
			p := left[rec.Partition]
			if p == nil || rec.Offset < p.NextOffset {
				continue
			}
			if rec.Offset >= p.EndOffset {
				// Past the end captured at creation: written after the
				// job was asked for.
				p.NextOffset = p.EndOffset
			} else {
				if !rec.Attrs.IsControl() && string(rec.Key) == job.EndpointId &&
					!rec.Timestamp.Before(since) && rec.Timestamp.Before(until) {
					if job.Recovered >= uint64(job.MaxDeliveries) {
						job.Truncated = true
						return finish(done, "")
					}
					if end := rr.recoverOne(ctx, job, rec, deadline, leaseUntil); end != 0 {
						if end == jobFinished && job.Status == incomplete {
							return outOfTime()
						}
						return end
					}
				}
				p.NextOffset = rec.Offset + 1
			}
			if p.NextOffset >= p.EndOffset {
				delete(left, rec.Partition)
				cl.PauseFetchPartitions(map[string][]int32{rec.Topic: {rec.Partition}})
			}
			if len(left) > 0 && !rr.now().Before(deadline) {
				return outOfTime()
			}
		}
	}
	return finish(done, "")
}

// recoverOne re-sends the dead letter rec as a fresh delivery (origin
// recover, attempts reset; the same event id, so the same webhook-id) and
// counts it; 0 means go on. While the producer's buffer is full it waits,
// as long as the job has time and its lease lasts.
func (rr *RecoverRunner) recoverOne(ctx context.Context, job *sluicev1.RecoverJob, rec *kgo.Record,
	deadline, leaseUntil time.Time) jobEnd {
	d := &sluicev1.Delivery{}
	if err := proto.Unmarshal(rec.Value, d); err != nil || d.SchemaVersion != sluicev1.SchemaVersion ||
		d.TenantId != job.TenantId || d.EndpointId != job.EndpointId {
		job.Scanned++
		job.Skipped++
		return 0
	}
	fresh := &sluicev1.Delivery{SchemaVersion: sluicev1.SchemaVersion, DeliveryId: ids.New(ids.Delivery),
		TenantId: d.TenantId, EndpointId: d.EndpointId, EventId: d.EventId, EventType: d.EventType,
		EventReceivedAtMs: d.EventReceivedAtMs, Data: d.Data, Origin: sluicev1.DeliveryOrigin_DELIVERY_ORIGIN_RECOVER}
	b, err := proto.Marshal(fresh)
	if err != nil {
		job.Status, job.Error = sluicev1.RecoverJobStatus_RECOVER_JOB_STATUS_FAILED, fmt.Sprintf("encoding a delivery: %v", err)
		return jobFinished
	}
	out := &kgo.Record{Topic: deliveryTopic(rr.opts.Store, d.EndpointId, rr.opts.Topic, rr.opts.OrderedTopic),
		Key: []byte(d.EndpointId), Value: b}
	for {
		err := rr.opts.Sink.Publish(ctx, out)
		switch {
		case err == nil:
			job.Scanned++
			job.Recovered++
			return 0
		case ctx.Err() != nil:
			return jobStopped
		case !errors.Is(err, kgo.ErrMaxBuffered):
			job.Status = sluicev1.RecoverJobStatus_RECOVER_JOB_STATUS_FAILED
			job.Error = fmt.Sprintf("stopped after %d deliveries: re-sending the dead letter at %d/%d: %v",
				job.Recovered, rec.Partition, rec.Offset, err)
			return jobFinished
		case !rr.now().Before(deadline):
			job.Status = sluicev1.RecoverJobStatus_RECOVER_JOB_STATUS_INCOMPLETE
			return jobFinished
		case !rr.now().Before(leaseUntil):
			return jobLost
		}
		// The producer's buffer is full (a burst of events): wait for room
		// rather than fail the job.
		select {
		case <-ctx.Done():
			return jobStopped
		case <-time.After(recoverPublishBackoff):
		}
	}
}

// endpointProblem says why job's endpoint can no longer be recovered to,
// or "".
func (rr *RecoverRunner) endpointProblem(job *sluicev1.RecoverJob) string {
	rec, ok := rr.opts.Store.Get(job.EndpointId)
	e := rec.GetEndpoint()
	switch {
	case !ok || e == nil || e.TenantId != job.TenantId:
		return "endpoint " + job.EndpointId + " was deleted"
	case e.Status == sluicev1.EndpointStatus_ENDPOINT_STATUS_DISABLED:
		return "endpoint " + job.EndpointId + " was disabled, so its recovered deliveries would be parked again; " +
			"enable it and recover again"
	}
	return ""
}

// sweep deletes finished jobs older than the retention, and a tenant's
// oldest finished jobs beyond the most it keeps. Every replica sweeps;
// Update makes a second delete of a job a no-op.
func (rr *RecoverRunner) sweep(ctx context.Context, now time.Time) {
	rr.mu.Lock()
	byTenant := map[string][]*sluicev1.RecoverJob{}
	for _, j := range rr.jobs {
		if j.Status != sluicev1.RecoverJobStatus_RECOVER_JOB_STATUS_RUNNING && j.FinishedAtMs != 0 {
			byTenant[j.TenantId] = append(byTenant[j.TenantId], j)
		}
	}
	rr.mu.Unlock()
	var expired []string
	for _, js := range byTenant {
		sort.Slice(js, func(i, j int) bool { return js[i].FinishedAtMs > js[j].FinishedAtMs }) // newest first
		for i, j := range js {
			if i >= maxFinishedRecoverJobs || now.Sub(time.UnixMilli(j.FinishedAtMs)) >= recoverRetention {
				expired = append(expired, j.Id)
			}
		}
	}
	for _, id := range expired {
		if ctx.Err() != nil {
			return
		}
		wctx, cancel := context.WithTimeout(ctx, rr.opts.WriteTimeout)
		_, err := rr.opts.Store.Update(wctx, id, func(cur *sluicev1.ConfigRecord) (*sluicev1.ConfigRecord, error) {
			if j := cur.GetRecoverJob(); j == nil || j.Status == sluicev1.RecoverJobStatus_RECOVER_JOB_STATUS_RUNNING {
				return nil, errNotClaimable // gone already, or (never) running again
			}
			return nil, nil
		})
		cancel()
		if err != nil && !errors.Is(err, errNotClaimable) {
			rr.log.Warn("deleting a finished recover job", "job", id, "err", err)
		}
	}
}
