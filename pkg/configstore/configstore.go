// Package configstore materialises the compacted topic sluice.config — the
// tenants, API keys and endpoints of the control plane (DESIGN §4), and
// the recover jobs the ingest replicas share — in memory. Every service keeps one Store; the ingest API writes through it.
//
// Reads are served from memory. Writes are conditional: Update hands the
// caller the current version of the object and writes what it returns, with
// the guarantee that no other write to the topic happened in between, on any
// replica. The guarantee comes from a transactional producer whose
// transactional.id all writers share: each write first claims the id (which
// fences the previous holder and aborts its open transaction), then brings
// its view up to date, checks, and commits. A writer fenced in between fails
// to commit and retries. Losing writes are therefore never in the log, so
// compaction, which keeps the last record of each key, cannot resurrect one.
// Update returns only once this Store's own view shows the write
// (read-your-writes).
package configstore

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/pkg/health"
	"github.com/sluicehq/sluice/pkg/kafkax"
)

// syncKey is the key of the barrier records a Store writes to learn that
// its view holds everything committed before them. Object ids never start
// with an underscore, and a tombstone of an unknown key changes nothing.
const syncKey = "_sync"

// maxWriteAttempts bounds the retries of a write fenced by a concurrent
// writer. Writers that keep fencing each other back off for a random, growing
// time (10 ms doubling to 640 ms), so one of them gets through; 16 attempts
// outlast contention far beyond the control plane's write rates.
const maxWriteAttempts = 16

// ErrMultiplePartitions is returned by Open for a config topic with more
// than one partition: one partition is what gives every reader the same
// order of writes.
var ErrMultiplePartitions = errors.New("configstore: the config topic must have exactly one partition")

// Store is the in-memory view of the config topic.
type Store struct {
	cl    *kgo.Client
	kcfg  kafkax.Config
	topic string
	txnID string
	log   *slog.Logger

	mu      sync.RWMutex
	objects map[string]*sluicev1.ConfigRecord
	// byTenant indexes endpoints, API keys and recover jobs by tenant id.
	byTenant map[string]map[string]struct{}
	keyHash  map[[32]byte]string // API key hash → key id
	// next is the offset after the last record applied.
	next int64
	// changed is closed and replaced whenever next moves.
	changed  chan struct{}
	caughtUp chan struct{}
	openSync int64
	watchers []func(Change)
	// pending is the offset of this store's write whose commit outcome is
	// being decided; pendingApplied turns true if the view applies it.
	// Only committed records are applied (read_committed), so this tells a
	// write that landed from an identical one another writer made.
	pending        int64
	pendingApplied bool
	// waiters count callers waiting for the view to reach an offset: the
	// work the follower owes (health).
	waiters int
	stage   *health.Stage

	writeMu sync.Mutex
}

// Change is one applied write: Old is nil for a create, New is nil for a
// delete. Both are shared and must not be modified.
type Change struct {
	Key      string
	Old, New *sluicev1.ConfigRecord
}

// Open builds a Store reading topic from its start. Call Run to consume;
// WaitCaughtUp returns once the view holds every write committed before Open.
func Open(ctx context.Context, kcfg kafkax.Config, topic string, log *slog.Logger) (*Store, error) {
	opts := append(kafkax.ProducerOptions(),
		kgo.ConsumeTopics(topic),
		// Writes are transactional; an aborted one must never be applied.
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	)
	cl, err := kafkax.NewClient(kcfg, opts...)
	if err != nil {
		return nil, err
	}
	td, err := kadm.NewClient(cl).ListTopics(ctx, topic)
	if err == nil {
		err = td.Error()
	}
	if err != nil {
		cl.Close()
		return nil, fmt.Errorf("describing config topic %s: %w", topic, err)
	}
	if n := len(td[topic].Partitions); n != 1 {
		cl.Close()
		return nil, fmt.Errorf("%w: %s has %d", ErrMultiplePartitions, topic, n)
	}
	s := &Store{
		cl: cl, kcfg: kcfg, topic: topic, log: log,
		txnID:    topic + ".writer",
		objects:  map[string]*sluicev1.ConfigRecord{},
		byTenant: map[string]map[string]struct{}{},
		keyHash:  map[[32]byte]string{},
		changed:  make(chan struct{}),
		caughtUp: make(chan struct{}),
		pending:  -1,
	}
	off, err := s.barrier(ctx)
	if err != nil {
		cl.Close()
		return nil, err
	}
	s.openSync = off
	return s, nil
}

// Close releases the Kafka client. Run must have returned.
func (s *Store) Close() { s.cl.Close() }

// ReportTo makes Run report to stage (package health): waiting until the
// view has caught up, then running; it owes work while a caller waits for
// the view to reach a write (read-your-writes, Sync) and progresses with
// every record applied. Call it before Run.
func (s *Store) ReportTo(stage *health.Stage) { s.stage = stage }

// Subscribe returns a snapshot of every object and registers fn to be
// called, in log order and under the store's lock, for every write applied
// after that snapshot — atomically, so an index built from the snapshot and
// kept up by fn misses nothing and sees nothing twice. The snapshot's
// records are shared: do not modify them. fn must be quick and must not
// call the Store.
func (s *Store) Subscribe(fn func(Change)) map[string]*sluicev1.ConfigRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	snap := make(map[string]*sluicev1.ConfigRecord, len(s.objects))
	for k, v := range s.objects {
		snap[k] = v
	}
	s.watchers = append(s.watchers, fn)
	return snap
}

// Run applies records until ctx is done.
func (s *Store) Run(ctx context.Context) error {
	stage := s.stage
	if stage == nil {
		stage = health.NewRegistry(health.DefaultStuckAfter, nil).Stage("config")
	}
	stage.Waiting("catching up with the config topic")
	defer stage.Stopped("config follower stopped")
	for {
		pctx, cancel := kafkax.PollContext(ctx)
		fetches := s.cl.PollFetches(pctx)
		cancel()
		if ctx.Err() != nil || errors.Is(fetches.Err0(), kgo.ErrClientClosed) {
			return nil
		}
		kafkax.FetchErrors(fetches, func(t string, p int32, err error) {
			s.log.Warn("reading config topic", "topic", t, "partition", p, "err", err)
		})
		s.mu.Lock()
		fetches.EachRecord(s.applyLocked)
		if s.next > s.openSync {
			select {
			case <-s.caughtUp:
			default:
				close(s.caughtUp)
			}
		}
		close(s.changed)
		s.changed = make(chan struct{})
		caughtUp, waiters := s.next > s.openSync, s.waiters
		s.mu.Unlock()
		if fetches.NumRecords() > 0 {
			stage.Progress()
		}
		if caughtUp {
			stage.Running()
		}
		stage.Owe(waiters)
		stage.Beat()
	}
}

func (s *Store) applyLocked(r *kgo.Record) {
	s.next = r.Offset + 1
	if r.Offset == s.pending {
		s.pendingApplied = true
	}
	key := string(r.Key)
	if key == syncKey {
		return
	}
	var rec *sluicev1.ConfigRecord
	if len(r.Value) > 0 {
		rec = new(sluicev1.ConfigRecord)
		if err := proto.Unmarshal(r.Value, rec); err != nil {
			s.log.Error("undecodable config record; keeping the previous version", "key", key, "offset", r.Offset, "err", err)
			return
		}
		if rec.SchemaVersion != sluicev1.SchemaVersion {
			s.log.Error("config record of unknown schema version; keeping the previous version",
				"key", key, "offset", r.Offset, "schema_version", rec.SchemaVersion)
			return
		}
	}
	old := s.objects[key]
	if old == nil && rec == nil {
		return
	}
	s.unindexLocked(key, old)
	if rec == nil {
		delete(s.objects, key)
	} else {
		s.objects[key] = rec
		s.indexLocked(key, rec)
	}
	for _, w := range s.watchers {
		w(Change{Key: key, Old: old, New: rec})
	}
}

// owner is the tenant a record belongs to ("" for tenants themselves) and,
// for an API key, its hash.
func owner(rec *sluicev1.ConfigRecord) (tenant string, keyHash *[32]byte) {
	switch o := rec.Object.(type) {
	case *sluicev1.ConfigRecord_Endpoint:
		return o.Endpoint.TenantId, nil
	case *sluicev1.ConfigRecord_ApiKey:
		if len(o.ApiKey.KeyHash) == 32 {
			h := [32]byte(o.ApiKey.KeyHash)
			return o.ApiKey.TenantId, &h
		}
		return o.ApiKey.TenantId, nil
	case *sluicev1.ConfigRecord_RecoverJob:
		return o.RecoverJob.TenantId, nil
	}
	return "", nil
}

func (s *Store) indexLocked(key string, rec *sluicev1.ConfigRecord) {
	tenant, hash := owner(rec)
	if hash != nil {
		s.keyHash[*hash] = key
	}
	if tenant != "" {
		m := s.byTenant[tenant]
		if m == nil {
			m = map[string]struct{}{}
			s.byTenant[tenant] = m
		}
		m[key] = struct{}{}
	}
}

func (s *Store) unindexLocked(key string, rec *sluicev1.ConfigRecord) {
	if rec == nil {
		return
	}
	tenant, hash := owner(rec)
	if hash != nil {
		delete(s.keyHash, *hash)
	}
	if m := s.byTenant[tenant]; m != nil {
		delete(m, key)
		if len(m) == 0 {
			delete(s.byTenant, tenant)
		}
	}
}

// WaitCaughtUp blocks until the view holds every write committed before the
// Store was opened. A service is not ready before that.
func (s *Store) WaitCaughtUp(ctx context.Context) error {
	select {
	case <-s.caughtUp:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for the config view to catch up: %w", ctx.Err())
	}
}

// Ready reports whether the view has caught up; for readiness checks.
func (s *Store) Ready(context.Context) error {
	select {
	case <-s.caughtUp:
		return nil
	default:
		return errors.New("config view still catching up")
	}
}

// Ping checks that a broker answers; for readiness checks.
func (s *Store) Ping(ctx context.Context) error { return kafkax.Ping(ctx, s.cl) }

// Get returns the record stored under key. It is shared: clone it
// (proto.Clone) before changing it.
func (s *Store) Get(key string) (*sluicev1.ConfigRecord, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, ok := s.objects[key]
	return r, ok
}

// Endpoint returns the endpoint with id. It is shared: do not modify it.
func (s *Store) Endpoint(id string) (*sluicev1.Endpoint, bool) {
	r, ok := s.Get(id)
	if !ok || r.GetEndpoint() == nil {
		return nil, false
	}
	return r.GetEndpoint(), true
}

// Tenant returns the tenant with id. It is shared: do not modify it.
func (s *Store) Tenant(id string) (*sluicev1.Tenant, bool) {
	r, ok := s.Get(id)
	if !ok || r.GetTenant() == nil {
		return nil, false
	}
	return r.GetTenant(), true
}

// APIKeyByHash returns the API key whose SHA-256 is hash.
func (s *Store) APIKeyByHash(hash [32]byte) (*sluicev1.APIKey, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	id, ok := s.keyHash[hash]
	if !ok {
		return nil, false
	}
	return s.objects[id].GetApiKey(), true
}

// TenantObjects returns a tenant's endpoints, API keys and recover jobs,
// sorted by id (ids are time-ordered, so this is creation order).
func (s *Store) TenantObjects(tenant string) []*sluicev1.ConfigRecord {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ids := make([]string, 0, len(s.byTenant[tenant]))
	for id := range s.byTenant[tenant] {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	out := make([]*sluicev1.ConfigRecord, len(ids))
	for i, id := range ids {
		out[i] = s.objects[id]
	}
	return out
}

// Tenants returns every tenant, sorted by id.
func (s *Store) Tenants() []*sluicev1.Tenant {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []*sluicev1.Tenant
	for _, r := range s.objects {
		if t := r.GetTenant(); t != nil {
			out = append(out, t)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Id < out[j].Id })
	return out
}

// Update writes the object under key as fn decides. fn is given the current
// record (nil if there is none) — current as of every write committed on
// any replica, and guaranteed not to change until this write commits — and
// returns the record to write, nil to delete it, or an error to write
// nothing (Update returns that error as it is). fn may run more than once
// when a concurrent writer intervenes. Update returns the record written
// once this Store's view shows it.
func (s *Store) Update(ctx context.Context, key string,
	fn func(cur *sluicev1.ConfigRecord) (*sluicev1.ConfigRecord, error)) (*sluicev1.ConfigRecord, error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	var lastErr error
	backoff := 10 * time.Millisecond
	for range maxWriteAttempts {
		rec, retry, err := s.tryUpdate(ctx, key, fn)
		if !retry {
			return rec, err
		}
		lastErr = err
		s.log.Debug("config write fenced by a concurrent writer; retrying", "key", key, "err", err)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("writing config record %s: %w (last attempt: %v)", key, ctx.Err(), lastErr)
		case <-time.After(backoff/2 + rand.N(backoff)):
		}
		backoff = min(2*backoff, 640*time.Millisecond)
	}
	return nil, fmt.Errorf("writing config record %s: gave up after %d attempts: %w", key, maxWriteAttempts, lastErr)
}

// tryUpdate makes one attempt; retry reports a fenced attempt.
func (s *Store) tryUpdate(ctx context.Context, key string,
	fn func(cur *sluicev1.ConfigRecord) (*sluicev1.ConfigRecord, error)) (_ *sluicev1.ConfigRecord, retry bool, _ error) {
	txn, err := kafkax.NewClient(s.kcfg, append(kafkax.ProducerOptions(),
		kgo.TransactionalID(s.txnID),
		// A writer that dies mid-write holds back read_committed readers
		// of the config topic until its transaction times out; writes
		// take milliseconds, so 10 s is ample.
		kgo.TransactionTimeout(10*time.Second))...)
	if err != nil {
		return nil, false, err
	}
	defer txn.Close()
	// Claiming the transactional id fences the previous writer: its open
	// transaction is aborted before this returns.
	if _, _, err := txn.ProducerID(ctx); err != nil {
		return nil, false, fmt.Errorf("claiming the config writer id: %w", err)
	}
	// Now no other write can commit unnoticed; bring the view up to every
	// write committed so far.
	off, err := s.barrier(ctx)
	if err != nil {
		return nil, false, err
	}
	if err := s.waitSeen(ctx, off); err != nil {
		return nil, false, err
	}
	cur, _ := s.Get(key)
	if cur != nil {
		cur = proto.Clone(cur).(*sluicev1.ConfigRecord)
	}
	next, err := fn(cur)
	if err != nil {
		return nil, false, err
	}
	var value []byte
	if next != nil {
		next.SchemaVersion = sluicev1.SchemaVersion
		if value, err = proto.Marshal(next); err != nil {
			return nil, false, fmt.Errorf("encoding config record %s: %w", key, err)
		}
	}
	if err := txn.BeginTransaction(); err != nil {
		return nil, false, fmt.Errorf("beginning config write: %w", err)
	}
	r, produceErr := txn.ProduceSync(ctx, &kgo.Record{Topic: s.topic, Key: []byte(key), Value: value}).First()
	commit := kgo.TryCommit
	if produceErr != nil {
		commit = kgo.TryAbort
	} else {
		// Before the commit, so the view cannot apply the record first.
		s.mu.Lock()
		s.pending, s.pendingApplied = r.Offset, false
		s.mu.Unlock()
	}
	endErr := txn.EndTransaction(ctx, commit)
	if produceErr != nil {
		// Most often fenced mid-produce (INVALID_PRODUCER_EPOCH) by another
		// writer; the transaction is aborted either way, so try again
		// unless the caller gave up.
		return nil, ctx.Err() == nil, fmt.Errorf("writing config record %s: %w", key, produceErr)
	}
	if endErr == nil {
		return next, false, s.waitSeen(ctx, r.Offset)
	}
	// Fenced by another writer, or the outcome is unknown. Whether the
	// record committed is decided by the log: sync and see whether the view
	// applied this very offset (an identical value from another writer
	// must not count as ours).
	if err := s.Sync(ctx); err != nil {
		return nil, false, err
	}
	s.mu.RLock()
	landed := s.pendingApplied
	s.mu.RUnlock()
	if landed {
		return next, false, nil
	}
	return nil, true, fmt.Errorf("committing config record %s: %w", key, endErr)
}

// barrier writes a sync record and returns its offset: once the view has
// passed it, the view holds every write committed before it.
func (s *Store) barrier(ctx context.Context) (int64, error) {
	r, err := s.cl.ProduceSync(ctx, &kgo.Record{Topic: s.topic, Key: []byte(syncKey)}).First()
	if err != nil {
		return 0, fmt.Errorf("writing a sync record to %s: %w", s.topic, err)
	}
	return r.Offset, nil
}

// Sync returns once the view holds every write committed before the call.
func (s *Store) Sync(ctx context.Context) error {
	off, err := s.barrier(ctx)
	if err != nil {
		return err
	}
	return s.waitSeen(ctx, off)
}

func (s *Store) waitSeen(ctx context.Context, offset int64) error {
	s.mu.Lock()
	s.waiters++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.waiters--
		s.mu.Unlock()
	}()
	for {
		s.mu.RLock()
		seen := s.next > offset
		ch := s.changed
		s.mu.RUnlock()
		if seen {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("waiting to read back config offset %d: %w", offset, ctx.Err())
		}
	}
}

// NewEtag is a fresh entity tag for a changed object: 64 random bits, hex.
func NewEtag() string {
	var b [8]byte
	_, _ = crand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// ErrNoEndpoint is returned by UpdateEndpoint for an id that is not an
// endpoint.
var ErrNoEndpoint = errors.New("configstore: no such endpoint")

// UpdateEndpoint changes endpoint id as change decides, for Sluice's own
// writers (the sender disabling an endpoint): change edits the endpoint and
// reports whether it changed anything; a change gets a new etag and update
// time, so API clients holding the old etag see a 412. It returns the
// endpoint as written (or unchanged).
func (s *Store) UpdateEndpoint(ctx context.Context, id string, change func(e *sluicev1.Endpoint) bool) (*sluicev1.Endpoint, error) {
	var same *sluicev1.Endpoint
	rec, err := s.Update(ctx, id, func(cur *sluicev1.ConfigRecord) (*sluicev1.ConfigRecord, error) {
		e := proto.CloneOf(cur.GetEndpoint())
		if e == nil {
			return nil, fmt.Errorf("%w: %s", ErrNoEndpoint, id)
		}
		if !change(e) {
			same = e
			return nil, errUnchanged
		}
		e.UpdatedAtMs, e.Etag = time.Now().UnixMilli(), NewEtag()
		return &sluicev1.ConfigRecord{Object: &sluicev1.ConfigRecord_Endpoint{Endpoint: e}}, nil
	})
	if errors.Is(err, errUnchanged) {
		return same, nil
	}
	if err != nil {
		return nil, err
	}
	return rec.GetEndpoint(), nil
}

var errUnchanged = errors.New("unchanged")

// Put writes rec under key unconditionally and returns once the view shows it.
func (s *Store) Put(ctx context.Context, key string, rec *sluicev1.ConfigRecord) error {
	_, err := s.Update(ctx, key, func(*sluicev1.ConfigRecord) (*sluicev1.ConfigRecord, error) { return rec, nil })
	return err
}

// Delete removes the object under key (a tombstone) and returns once the
// view shows it.
func (s *Store) Delete(ctx context.Context, key string) error {
	_, err := s.Update(ctx, key, func(*sluicev1.ConfigRecord) (*sluicev1.ConfigRecord, error) { return nil, nil })
	return err
}
