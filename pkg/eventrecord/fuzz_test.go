package eventrecord_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/sluicehq/sluice/pkg/eventfilter"
	"github.com/sluicehq/sluice/pkg/eventrecord"
	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"
)

// FuzzDecode feeds Decode arbitrary values and contract headers. present says
// which headers the record has, two bits each (tenant, type, id, encoding):
// 0 absent, 1 once, 2 twice with the same value, 3 twice with the second
// value reversed. maxData is the limit (0: the default).
//
// Decode must not panic, and must return either an event that passes every
// check again, independently of Decode, or a *RejectError with one line.
func FuzzDecode(f *testing.F) {
	proto1, err := proto.Marshal(validEvent())
	if err != nil {
		f.Fatal(err)
	}
	const once = 0b01_01_01_01 // every header once
	const noID, noEnc = 0b01_00_01_01, 0b00_01_01_01
	f.Add([]byte(`{}`), tenant, "order.created", "", "", uint8(noID&noEnc), uint16(0))
	f.Add([]byte(` {"a":[1,{"b":null}]} `), tenant, "order.created", "evt_1", "json", uint8(once), uint16(0))
	f.Add([]byte(`{"a":"`+strings.Repeat("x", 40)+`"}`), tenant, "a.b", "i", "json", uint8(once), uint16(32))
	f.Add([]byte(`[]`), "acme", "a", "x", "", uint8(noEnc), uint16(0))
	f.Add([]byte(`"s"`), "acme", "a..b", ".x", "avro", uint8(once), uint16(0))
	f.Add([]byte("{\"a\":\"\xff\"}"), "a/b", "a", "", "", uint8(noID&noEnc), uint16(0))
	f.Add([]byte(`{"a":1}{}`), "acme", "a", "", "", uint8(0b11_11_11_11), uint16(0))
	f.Add(proto1, tenant, "order.created", "evt_01JD3K6Z8WQ4V0M5T7E9RXN2BD", "protobuf", uint8(once), uint16(0))
	f.Add(proto1, tenant, "order.created", "", "protobuf", uint8(0b01_00_00_00), uint16(8))
	f.Add(proto1[:len(proto1)-3], "", "", "", "protobuf", uint8(0b01_00_00_00), uint16(0))
	f.Add([]byte("\x08\x07"), "", "", "", "protobuf", uint8(0b01_00_00_00), uint16(0))

	f.Fuzz(func(t *testing.T, value []byte, tenantH, typeH, idH, encH string, present uint8, maxData uint16) {
		r := &kgo.Record{Topic: topic, Partition: 1, Offset: 99, Timestamp: recordTime, Value: value}
		for i, h := range []struct{ name, value string }{
			{eventrecord.HeaderTenant, tenantH}, {eventrecord.HeaderType, typeH},
			{eventrecord.HeaderID, idH}, {eventrecord.HeaderEncoding, encH},
		} {
			n := present >> (2 * i) & 3
			if n >= 1 {
				r.Headers = append(r.Headers, kgo.RecordHeader{Key: h.name, Value: []byte(h.value)})
			}
			switch n {
			case 2:
				r.Headers = append(r.Headers, kgo.RecordHeader{Key: h.name, Value: []byte(h.value)})
			case 3:
				r.Headers = append(r.Headers, kgo.RecordHeader{Key: h.name, Value: []byte(reverse(h.value))})
			}
		}
		lim := eventrecord.Limits{MaxDataBytes: int(maxData)}

		e, err := eventrecord.Decode(r, lim)
		if err != nil {
			var rej *eventrecord.RejectError
			if !errors.As(err, &rej) {
				t.Fatalf("error %v (%T) is not a *RejectError", err, err)
			}
			if e != nil {
				t.Fatalf("event %v returned with error %v", e, err)
			}
			if rej.Reason == "" || strings.ContainsAny(rej.Reason, "\r\n") || !utf8.ValidString(rej.Reason) {
				t.Fatalf("reason %q is not one non-empty line of UTF-8", rej.Reason)
			}
			return
		}
		checkEvent(t, e, lim)
		if e.Source == sluicev1.EventSource_EVENT_SOURCE_KAFKA {
			if e.TenantId != tenantH || e.Type != typeH || string(e.Data) != string(value) {
				t.Fatalf("JSON event %v does not carry the record's headers and value", e)
			}
			if want := eventrecord.DerivedID(topic, 1, 99, r.Timestamp); present>>4&3 == 0 && e.EventId != want {
				t.Fatalf("id %s, want derived %s", e.EventId, want)
			}
			return
		}
		// A protobuf event: the copies in headers, where present, agree.
		for _, h := range r.Headers {
			if (h.Key == eventrecord.HeaderTenant && string(h.Value) != e.TenantId) ||
				(h.Key == eventrecord.HeaderType && string(h.Value) != e.Type) ||
				(h.Key == eventrecord.HeaderID && string(h.Value) != e.EventId) {
				t.Fatalf("header %s: %q disagrees with event %v", h.Key, h.Value, e)
			}
		}
	})
}

// checkEvent re-checks a decoded event without Decode's code paths for data.
func checkEvent(t *testing.T, e *sluicev1.Event, lim eventrecord.Limits) {
	t.Helper()
	if e.SchemaVersion != sluicev1.SchemaVersion {
		t.Fatalf("schema version %d", e.SchemaVersion)
	}
	if err := eventrecord.ValidateTenant(e.TenantId); err != nil {
		t.Fatal(err)
	}
	if err := eventrecord.ValidateID(e.EventId); err != nil {
		t.Fatal(err)
	}
	if err := eventfilter.ValidateType(e.Type); err != nil {
		t.Fatal(err)
	}
	if _, ok := sluicev1.EventSource_name[int32(e.Source)]; !ok || e.Source == sluicev1.EventSource_EVENT_SOURCE_UNSPECIFIED {
		t.Fatalf("source %v", e.Source)
	}
	limit := lim.MaxDataBytes
	if limit <= 0 {
		limit = eventrecord.DefaultMaxDataBytes
	}
	if len(e.Data) > limit {
		t.Fatalf("data is %d bytes, limit %d", len(e.Data), limit)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(e.Data, &obj); err != nil || obj == nil {
		t.Fatalf("data %q is not a JSON object: %v", e.Data, err)
	}
	if !utf8.Valid(e.Data) {
		t.Fatalf("data %q is not UTF-8", e.Data)
	}
}

func reverse(s string) string {
	b := []byte(s)
	for i, j := 0, len(b)-1; i < j; i, j = i+1, j-1 {
		b[i], b[j] = b[j], b[i]
	}
	if string(b) == s {
		b = append(b, 'x') // a palindrome would repeat the same value
	}
	return string(b)
}
