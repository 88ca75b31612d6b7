package eventrecord_test

import (
	"bytes"
	"strconv"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/pkg/eventrecord"
)

var (
	key      = []byte("0123456789abcdef0123456789abcdef")
	otherKey = []byte("fedcba9876543210fedcba9876543210")
)

// TestOnlySluiceWritesItsOwnEvents (issue 11 §3.9, review B3/H8): a Kafka
// producer cannot publish the reserved sluice.* types or claim source
// SYSTEM; Sluice's own operational events, authenticated with the record
// key, still route.
func TestOnlySluiceWritesItsOwnEvents(t *testing.T) {
	own, err := eventrecord.FromSystem(topic, tenant, "sluice.endpoint.disabled", []byte(`{"endpoint_id":"ep_1"}`), key)
	if err != nil {
		t.Fatal(err)
	}
	forgedSystem := validEvent()
	forgedSystem.Source = sluicev1.EventSource_EVENT_SOURCE_SYSTEM
	forgedType := validEvent()
	forgedType.Type = "sluice.endpoint.disabled"
	forgedBoth := validEvent()
	forgedBoth.Source, forgedBoth.Type = sluicev1.EventSource_EVENT_SOURCE_SYSTEM, "sluice.delivery.exhausted"
	withAuth := func(r *kgo.Record, v []byte) *kgo.Record {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: eventrecord.HeaderAuth, Value: v})
		return r
	}
	tampered := *own
	tampered.Value = bytes.Replace(own.Value, []byte("ep_1"), []byte("ep_2"), 1)
	stolenAuth, _ := header(own, eventrecord.HeaderAuth)

	for desc, tc := range map[string]struct {
		rec  *kgo.Record
		lim  eventrecord.Limits
		want string // fragment of the reason; "" when accepted
	}{
		"Sluice's own operational event": {rec: own, lim: eventrecord.Limits{AuthKey: key}},
		"a reserved type over the JSON contract": {rec: jsonRecord(`{}`, eventrecord.HeaderTenant, tenant,
			eventrecord.HeaderType, "sluice.endpoint.disabled"), lim: eventrecord.Limits{AuthKey: key},
			want: `header sluice-type: "sluice.endpoint.disabled" is reserved for Sluice's own operational events`},
		"a reserved type over protobuf": {rec: protoRecord(t, forgedType, eventrecord.HeaderEncoding, "protobuf"),
			lim: eventrecord.Limits{AuthKey: key}, want: `type "sluice.endpoint.disabled" is reserved`},
		"source SYSTEM without authentication": {rec: protoRecord(t, forgedSystem, eventrecord.HeaderEncoding, "protobuf"),
			lim: eventrecord.Limits{AuthKey: key}, want: "source SYSTEM is reserved"},
		"a reserved type and SYSTEM without authentication": {rec: protoRecord(t, forgedBoth, eventrecord.HeaderEncoding, "protobuf"),
			lim: eventrecord.Limits{AuthKey: key}, want: "does not authenticate it"},
		"an authentication made with another key": {rec: own, lim: eventrecord.Limits{AuthKey: otherKey}, want: "does not authenticate it"},
		"a router without a key trusts nothing":   {rec: own, lim: eventrecord.Limits{}, want: "does not authenticate it"},
		"a tampered value":                        {rec: &tampered, lim: eventrecord.Limits{AuthKey: key}, want: "does not authenticate it"},
		"a genuine header copied onto a forgery": {rec: withAuth(protoRecord(t, forgedBoth, eventrecord.HeaderEncoding, "protobuf"), []byte(stolenAuth)),
			lim: eventrecord.Limits{AuthKey: key}, want: "does not authenticate it"},
		"an ordinary HTTP event needs no authentication": {rec: protoRecord(t, validEvent(), eventrecord.HeaderEncoding, "protobuf"),
			lim: eventrecord.Limits{AuthKey: key}},
	} {
		t.Run(desc, func(t *testing.T) {
			e, err := eventrecord.Decode(tc.rec, tc.lim)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Decode = %v, want an event", err)
				}
				if e == nil {
					t.Fatal("no event")
				}
				return
			}
			if reason := rejectReason(t, err); !strings.Contains(reason, tc.want) {
				t.Fatalf("reason %q, want it to contain %q", reason, tc.want)
			}
		})
	}
}

func TestContinuationRoundTrip(t *testing.T) {
	ev := validEvent()
	ids := []string{"ep_b", "ep_c", "ep_d"}
	r, err := eventrecord.Continuation(topic, 5, ev, ids, key)
	if err != nil {
		t.Fatal(err)
	}
	if r.Partition != 5 || string(r.Key) != string(eventrecord.Key(ev.TenantId, ev.EventId)) || !eventrecord.IsContinuation(r) {
		t.Fatalf("continuation record partition %d key %q continuation %v", r.Partition, r.Key, eventrecord.IsContinuation(r))
	}
	got, gotIDs, err := eventrecord.DecodeContinuation(r, eventrecord.Limits{AuthKey: key})
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got, ev) || strings.Join(gotIDs, ",") != strings.Join(ids, ",") {
		t.Fatalf("decoded %v %v, want %v %v", got, gotIDs, ev, ids)
	}
	if _, err := eventrecord.Decode(r, eventrecord.Limits{AuthKey: key}); err == nil {
		t.Fatal("Decode took a continuation for an event")
	}
	if _, _, err := eventrecord.DecodeContinuation(r, eventrecord.Limits{AuthKey: otherKey}); err == nil ||
		!strings.Contains(rejectReason(t, err), "only written by Sluice's router") {
		t.Fatalf("a continuation under another key: %v", err)
	}
	forged := *r
	forged.Value = append([]byte(nil), r.Value...)
	forged.Value[len(forged.Value)-1] ^= 1
	if _, _, err := eventrecord.DecodeContinuation(&forged, eventrecord.Limits{AuthKey: key}); err == nil {
		t.Fatal("an altered continuation decoded")
	}
	if eventrecord.IsContinuation(jsonRecord(`{}`, eventrecord.HeaderTenant, tenant)) {
		t.Fatal("a JSON record counts as a continuation")
	}
}

// TestRejectedCopyIsBounded (review H1): the copy of a record rejected for
// its size must itself fit the producer's record limit.
func TestRejectedCopyIsBounded(t *testing.T) {
	big := jsonRecord(strings.Repeat("x", 1_040_000), eventrecord.HeaderTenant, tenant,
		"x-huge", strings.Repeat("h", 200<<10))
	c := eventrecord.Rejected("sluice.events.rejected", big, strings.Repeat("reason ", 10_000))
	size := len(c.Key) + len(c.Value)
	for _, h := range c.Headers {
		size += len(h.Key) + len(h.Value)
	}
	if size > 700_000 {
		t.Fatalf("rejected copy of %d bytes", size)
	}
	if len(c.Value) != eventrecord.MaxRejectedValueBytes || !bytes.Equal(c.Value, big.Value[:len(c.Value)]) {
		t.Fatalf("value of %d bytes, want the first %d of the original", len(c.Value), eventrecord.MaxRejectedValueBytes)
	}
	if v, n := header(c, eventrecord.HeaderTruncated); n != 1 || v != strconv.Itoa(len(big.Value)) {
		t.Fatalf("truncated header %q (%d)", v, n)
	}
	if v, _ := header(c, eventrecord.HeaderSource); v != "sluice.events/3/42" {
		t.Fatalf("source header %q", v)
	}
	small := eventrecord.Rejected("r", jsonRecord(`[1]`), "array")
	if _, n := header(small, eventrecord.HeaderTruncated); n != 0 {
		t.Fatal("a small copy says it was truncated")
	}
}
