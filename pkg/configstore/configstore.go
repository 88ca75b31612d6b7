// Package configstore materialises the compacted topic sluice.config — the
// tenants, API keys and endpoints of the control plane (DESIGN §4) — in
// memory. Every service keeps one Store; the ingest API writes through it and
// reads its own writes.
package configstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/pkg/kafkax"
)

// Store is the in-memory view of the config topic.
type Store struct {
	cl    *kgo.Client
	topic string
	log   *slog.Logger

	mu        sync.RWMutex
	endpoints map[string]*sluicev1.Endpoint
	tenants   map[string]*sluicev1.Tenant
	apiKeys   map[string]*sluicev1.APIKey
	// next is, per partition, the offset after the last record applied.
	next map[int32]int64
	// changed is closed and replaced whenever next moves; waiters select on it.
	changed chan struct{}
	// caughtUp closes once every partition reached the end it had at Open.
	caughtUp chan struct{}
	ends     map[int32]int64
}

// Open builds a Store reading topic from its start. Call Run to consume.
func Open(ctx context.Context, kcfg kafkax.Config, topic string, log *slog.Logger) (*Store, error) {
	opts := append(kafkax.ProducerOptions(), kgo.ConsumeTopics(topic))
	cl, err := kafkax.NewClient(kcfg, opts...)
	if err != nil {
		return nil, err
	}
	s := &Store{
		cl: cl, topic: topic, log: log,
		endpoints: map[string]*sluicev1.Endpoint{},
		tenants:   map[string]*sluicev1.Tenant{},
		apiKeys:   map[string]*sluicev1.APIKey{},
		next:      map[int32]int64{},
		changed:   make(chan struct{}),
		caughtUp:  make(chan struct{}),
	}
	ends, err := kafkax.EndOffsets(ctx, cl, topic)
	if err != nil {
		cl.Close()
		return nil, fmt.Errorf("reading end offsets of %s: %w", topic, err)
	}
	s.ends = ends
	s.checkCaughtUpLocked()
	return s, nil
}

// Close releases the Kafka client. Run must have returned.
func (s *Store) Close() { s.cl.Close() }

// Run applies records until ctx is done.
func (s *Store) Run(ctx context.Context) error {
	for {
		fetches := s.cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err := fetches.Err0(); errors.Is(err, kgo.ErrClientClosed) {
			return nil
		}
		fetches.EachError(func(t string, p int32, err error) {
			s.log.Warn("reading config topic", "topic", t, "partition", p, "err", err)
		})
		s.mu.Lock()
		fetches.EachRecord(s.applyLocked)
		s.checkCaughtUpLocked()
		close(s.changed)
		s.changed = make(chan struct{})
		s.mu.Unlock()
	}
}

func (s *Store) applyLocked(r *kgo.Record) {
	s.next[r.Partition] = r.Offset + 1
	id := string(r.Key)
	if len(r.Value) == 0 { // tombstone: the object was deleted
		delete(s.endpoints, id)
		delete(s.tenants, id)
		delete(s.apiKeys, id)
		return
	}
	var rec sluicev1.ConfigRecord
	if err := proto.Unmarshal(r.Value, &rec); err != nil {
		s.log.Error("undecodable config record; keeping the previous version", "key", id, "offset", r.Offset, "err", err)
		return
	}
	if rec.SchemaVersion != sluicev1.SchemaVersion {
		s.log.Error("config record of unknown schema version; keeping the previous version",
			"key", id, "offset", r.Offset, "schema_version", rec.SchemaVersion)
		return
	}
	switch o := rec.Object.(type) {
	case *sluicev1.ConfigRecord_Endpoint:
		s.endpoints[id] = o.Endpoint
	case *sluicev1.ConfigRecord_Tenant:
		s.tenants[id] = o.Tenant
	case *sluicev1.ConfigRecord_ApiKey:
		s.apiKeys[id] = o.ApiKey
	}
}

func (s *Store) checkCaughtUpLocked() {
	select {
	case <-s.caughtUp:
		return
	default:
	}
	for p, end := range s.ends {
		if s.next[p] < end {
			return
		}
	}
	close(s.caughtUp)
}

// WaitCaughtUp blocks until the view holds everything the topic held when the
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

// Endpoint returns the endpoint with id. The result is shared: do not modify it.
func (s *Store) Endpoint(id string) (*sluicev1.Endpoint, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, ok := s.endpoints[id]
	return e, ok
}

// Put writes rec under key and returns once this Store's own view shows it
// (read-your-writes).
func (s *Store) Put(ctx context.Context, key string, rec *sluicev1.ConfigRecord) error {
	rec.SchemaVersion = sluicev1.SchemaVersion
	b, err := proto.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encoding config record %s: %w", key, err)
	}
	return s.write(ctx, key, b)
}

// Delete writes a tombstone for key and waits until the view shows it.
func (s *Store) Delete(ctx context.Context, key string) error { return s.write(ctx, key, nil) }

func (s *Store) write(ctx context.Context, key string, value []byte) error {
	r, err := s.cl.ProduceSync(ctx, &kgo.Record{Topic: s.topic, Key: []byte(key), Value: value}).First()
	if err != nil {
		return fmt.Errorf("writing config record %s: %w", key, err)
	}
	return s.waitSeen(ctx, r.Partition, r.Offset)
}

func (s *Store) waitSeen(ctx context.Context, partition int32, offset int64) error {
	for {
		s.mu.RLock()
		seen := s.next[partition] > offset
		ch := s.changed
		s.mu.RUnlock()
		if seen {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("waiting to read back config offset %d/%d: %w", partition, offset, ctx.Err())
		}
	}
}

// Ping checks that a broker answers; for readiness checks.
func (s *Store) Ping(ctx context.Context) error { return kafkax.Ping(ctx, s.cl) }
