package dispatch_test

// Records the sender writes stay within what Kafka accepts, and one Kafka
// refuses anyway is made smaller or dead-lettered, never retried forever.

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kgo"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"
)

// TestHugeErrorsDoNotStopTheCommit (review H5): an endpoint fails a
// delivery four times with an error of 300 KiB, then takes it. Every
// record the failures make (attempts, retries with their history) carries
// at most 1 KiB of each error, so they can all be produced: the delivery
// arrives and the group commits every partition to its end. Before, the
// fourth retry (1.2 MB of history) was refused by Kafka and retried
// forever, and its retry tier's partition never committed past it.
func TestHugeErrorsDoNotStopTheCommit(t *testing.T) {
	k := onePartition(t)
	clock := newFakeClock()
	clock.auto(t)
	eps := newEndpoints(&sluicev1.Endpoint{Id: "ep_loud", RetryScheduleMs: ms(time.Second, time.Second, time.Second, time.Second)})
	a := newAttempter(clock)
	a.failFirst["ep_loud"] = 4
	a.errText["ep_loud"] = strings.Repeat("x", 300<<10)
	dl := delivery("ep_loud")
	produce(t, k, k.Names.Deliveries, dl)
	start(t, k, defaults(clock), eps, a)
	waitFor(t, "the delivery", func() bool { return a.doneCount("ep_loud") == 1 })
	settled(t, k)
	for _, r := range decode(t, k.Read(t, k.Names.Retry[0], 4)) {
		for _, h := range r.History {
			if len(h.Error) > 1024 || !utf8.ValidString(h.Error) {
				t.Fatalf("history error of %d bytes, want at most 1024", len(h.Error))
			}
		}
	}
	for _, at := range attemptsOf(t, k, 5) {
		if len(at.Error) > 1024 {
			t.Fatalf("attempt error of %d bytes, want at most 1024", len(at.Error))
		}
	}
}

// TestRefusedRecordsShrinkThenGoDead: the dispatcher's producer takes
// records of at most 100,000 bytes. A delivery of 95,000 bytes of data
// that fails six times outgrows that with its history: its retry is made
// again without the history and it is delivered. A delivery of 100,500
// bytes of data cannot be copied at all: its retry, then the retry without
// history, then a dead letter with its data are refused, and it ends as a
// dead letter without data whose reason says why. Both partitions commit
// to their ends: nothing is retried forever.
func TestRefusedRecordsShrinkThenGoDead(t *testing.T) {
	k := onePartition(t)
	clock := newFakeClock()
	clock.auto(t)
	schedule := ms(time.Second, time.Second, time.Second, time.Second, time.Second, time.Second, time.Second)
	eps := newEndpoints(
		&sluicev1.Endpoint{Id: "ep_grows", RetryScheduleMs: schedule},
		&sluicev1.Endpoint{Id: "ep_huge", RetryScheduleMs: schedule},
	)
	a := newAttempter(clock)
	a.failFirst["ep_grows"], a.errText["ep_grows"] = 6, strings.Repeat("e", 5000)
	a.failFirst["ep_huge"] = 1
	grows, huge := delivery("ep_grows"), delivery("ep_huge")
	grows.Data = []byte(`{"pad":"` + strings.Repeat("g", 95000) + `"}`)
	huge.Data = []byte(`{"pad":"` + strings.Repeat("h", 100500) + `"}`)
	produce(t, k, k.Names.Deliveries, grows, huge)
	d, _ := startWith(t, k, defaults(clock), eps, a, kgo.ProducerBatchMaxBytes(100_000))

	waitFor(t, "the growing delivery", func() bool { return a.doneCount("ep_grows") == 1 })
	dead := decode(t, k.Read(t, k.Names.Dead, 1))
	if len(dead) != 1 || dead[0].DeliveryId != huge.DeliveryId || len(dead[0].Data) != 0 ||
		!strings.HasPrefix(dead[0].DeadReason, "its data (100510 bytes) and history were dropped, replay the event to send it again; could not be produced to "+k.Names.Dead) {
		t.Fatalf("dead letters %v, want the huge delivery without its data, saying why", dead)
	}
	settled(t, k)
	shrunk := false
	for _, r := range decode(t, k.Read(t, k.Names.Retry[0], 6)) {
		if r.DeliveryId == grows.DeliveryId && r.AttemptsMade >= 5 && len(r.History) == 0 {
			shrunk = true
		}
	}
	if !shrunk {
		t.Error("no retry of the growing delivery was made again without its history")
	}
	if s := d.Stats(); s.Shrunk < 4 {
		t.Errorf("stats %+v: want at least one retry shrunk and the huge delivery's three steps", s)
	}
}
