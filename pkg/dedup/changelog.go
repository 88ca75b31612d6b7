package dedup

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/pkg/kafkax"
)

// ErrBadMarker is returned by Rebuild for a changelog record that is not a
// marker: its value is not 8 bytes. Only the router writes the changelog, so
// such a record means something else writes there, and Rebuild stops rather
// than guess.
var ErrBadMarker = errors.New("dedup: changelog record is not a marker")

// markerSize is the value of a marker: Unix ms, big-endian.
const markerSize = 8

// Marker is the changelog record saying key (the event's record key,
// "tenant/id") was routed at t. Its record timestamp is t too, so Rebuild
// and View find the first marker of a window by timestamp (a marker's
// value is never later than its timestamp). It is for partition of topic: the same
// partition number as the event's in sluice.events, set explicitly because
// external producers of events (kcat and librdkafka hash keys with CRC32,
// franz-go with murmur2) do not agree on where a key goes, so hashing the key
// again could put the marker where the owner of the event's partition never
// reads. The producing client must use Partitioner, which honours the field.
// key is not copied: leave it unmodified until the record is produced.
func Marker(topic string, partition int32, key []byte, t time.Time) *kgo.Record {
	v := make([]byte, markerSize)
	binary.BigEndian.PutUint64(v, uint64(t.UnixMilli()))
	return &kgo.Record{Topic: topic, Partition: partition, Key: key, Value: v, Timestamp: t}
}

// Partitioner returns the partitioner of a router's producer: records of
// dedupTopic go to the partition set in Record.Partition (see Marker), every
// other topic is partitioned by kgo.StickyKeyPartitioner(nil), so keyed
// records go where Kafka's Java client would put them (murmur2, as the
// consumers of deliveries expect) and unkeyed ones stick to a partition per
// batch. A marker naming a partition the topic does not have fails when
// produced, which aborts the router's transaction instead of misplacing it.
func Partitioner(dedupTopic string) kgo.Partitioner {
	return partitioner{dedup: dedupTopic, other: kgo.StickyKeyPartitioner(nil)}
}

type partitioner struct {
	dedup string
	other kgo.Partitioner
}

func (p partitioner) ForTopic(topic string) kgo.TopicPartitioner {
	if topic == p.dedup {
		return keepPartition{}
	}
	// Returned as is, so the optional interfaces of the sticky partitioner
	// (OnNewBatch) keep working.
	return p.other.ForTopic(topic)
}

type keepPartition struct{}

// RequiresConsistency is true: a marker must wait for its partition's leader
// rather than be written to another partition.
func (keepPartition) RequiresConsistency(*kgo.Record) bool { return true }
func (keepPartition) Partition(r *kgo.Record, _ int) int   { return int(r.Partition) }

// Rebuild reads partition of the changelog topic from its first marker of
// the window to its end with a read_committed client, and returns a Set of
// the markers less than window old (relative to when Rebuild started) and
// the number of markers read. Markers of aborted transactions are never
// read.
//
// Where the start is. The first offset whose timestamp is at or after the
// window's start (ListOffsets by time): every record before it is stamped
// earlier, and a marker's time is never after its timestamp (Marker stamps
// it with its time; markers of older routers were stamped when produced,
// later than their time), so every marker before it has expired. So a
// rebuild reads a window of markers, not the topic's retention (7 days):
// at 1,000 events/s and a 24 h window that is 86.4 M markers instead of
// 605 M.
//
// Where the end is. Rebuild lists that start S and the partition's high
// watermark E before reading, and reads until it has passed offset E-1 (at
// once if E ≤ S: nothing to read). Passing it is seen by asking for records
// with kgo.KeepControlRecords: the commit and abort markers of transactions
// then come back as control records, which Rebuild skips, so every offset
// below E the broker serves reaches Rebuild except data of aborted
// transactions, and a transaction's data always lies before its own marker.
// Without them a log ending with a marker, the usual case, has no record at
// E-1 to wait for, and a read waiting for one waits forever. So:
//
//   - If E-1 is a committed data record or a transaction marker, it is
//     returned: Rebuild finishes as soon as it has read the log.
//   - If E-1 is data of a transaction still open, read_committed holds the
//     read back until the transaction ends; then its data (committed) or
//     its abort marker, at or after E, is returned. The wait is at most the
//     writer's transaction timeout (20 s, kafkax.NewTransactSession).
//   - E-1 is never cleaned away: compaction never touches the active
//     segment, which holds the last record. A segment is rolled without an
//     append only when retention deletes every segment, and then S = E.
//
// E is the high watermark, not the last stable offset, on purpose: when a
// partition moves, its previous owner may still be committing its last
// batch, whose markers the new owner must hold before it routes the events
// after that batch. Reading to the last stable offset could finish before
// those markers are visible. The wait includes a transaction of the
// caller's own left open on this partition, until the broker aborts it.
//
// ctx bounds the whole read: give it a deadline above the transaction
// timeout, and treat an error as "cannot own this partition yet".
func Rebuild(ctx context.Context, kcfg kafkax.Config, topic string, partition int32, window time.Duration, maxEntries int) (*Set, int, error) {
	set := NewSet(window, maxEntries)
	horizon := time.Now().Add(-window).UnixMilli()

	adm, err := kafkax.NewAdmin(kcfg)
	if err != nil {
		return nil, 0, fmt.Errorf("rebuilding dedup state of %s/%d: %w", topic, partition, err)
	}
	start, end, err := bounds(ctx, adm, topic, partition, horizon)
	adm.Close()
	if err != nil {
		return nil, 0, fmt.Errorf("rebuilding dedup state of %s/%d: %w", topic, partition, err)
	}
	if start >= end {
		return set, 0, nil
	}
	cl, err := kafkax.NewClient(kcfg,
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {partition: kgo.NewOffset().At(start)}}),
		// Markers of aborted batches must not count as seen.
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// Transaction markers are how Rebuild sees that it has passed the
		// end; see above.
		kgo.KeepControlRecords(),
	)
	if err != nil {
		return nil, 0, fmt.Errorf("rebuilding dedup state of %s/%d: %w", topic, partition, err)
	}
	defer cl.Close()

	read := 0
	for next := start; next < end; {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, read, fmt.Errorf("rebuilding dedup state of %s/%d: read to offset %d of %d: %w", topic, partition, next, end, err)
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) { ferr = errors.Join(ferr, err) })
		if ferr != nil {
			return nil, read, fmt.Errorf("rebuilding dedup state of %s/%d: fetching: %w", topic, partition, ferr)
		}
		for it := fs.RecordIter(); !it.Done(); {
			r := it.Next()
			next = r.Offset + 1
			if r.Attrs.IsControl() {
				continue
			}
			if len(r.Value) != markerSize {
				return nil, read, fmt.Errorf("rebuilding dedup state of %s/%d: offset %d has a %d-byte value: %w",
					topic, partition, r.Offset, len(r.Value), ErrBadMarker)
			}
			read++
			if t := int64(binary.BigEndian.Uint64(r.Value)); t > horizon {
				set.Add(r.Key, time.UnixMilli(t))
			}
		}
	}
	return set, read, nil
}

// bounds lists the first offset stamped at or after since (Unix ms) and
// the high watermark of a partition. With no record that recent, the first
// is the high watermark.
func bounds(ctx context.Context, adm *kadm.Client, topic string, partition int32, since int64) (start, end int64, err error) {
	starts, err := adm.ListOffsetsAfterMilli(ctx, since, topic)
	if err != nil {
		return 0, 0, fmt.Errorf("listing offsets after %s: %w", time.UnixMilli(since).UTC().Format(time.RFC3339Nano), err)
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return 0, 0, fmt.Errorf("listing end offsets: %w", err)
	}
	s, ok := starts.Lookup(topic, partition)
	e, ok2 := ends.Lookup(topic, partition)
	switch {
	case !ok || !ok2:
		return 0, 0, fmt.Errorf("partition %d of %s does not exist", partition, topic)
	case s.Err != nil:
		return 0, 0, fmt.Errorf("listing start offset: %w", s.Err)
	case e.Err != nil:
		return 0, 0, fmt.Errorf("listing end offset: %w", e.Err)
	}
	return s.Offset, e.Offset, nil
}
