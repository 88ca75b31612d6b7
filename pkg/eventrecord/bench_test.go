package eventrecord_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/pkg/eventrecord"
	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"
)

// data1KiB is a 1 KiB JSON object shaped like an order event: nested
// objects, an array, numbers and strings, padded to exactly 1024 bytes.
func data1KiB(tb testing.TB) []byte {
	tb.Helper()
	var b strings.Builder
	b.WriteString(`{"order_id":"o_01JD3K6Z8WQ4V0M5T7E9RXN2BC","customer":{"id":"c_42","email":"ada@example.com"},"items":[`)
	for i := range 6 {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"sku":"SKU-%04d","qty":%d,"price":%d.99}`, i, i+1, 10*i+9)
	}
	b.WriteString(`],"total":4200,"currency":"EUR","note":"`)
	pad := 1024 - b.Len() - len(`"}`)
	if pad < 0 {
		tb.Fatalf("template is %d bytes, over 1 KiB", b.Len())
	}
	b.WriteString(strings.Repeat("n", pad))
	b.WriteString(`"}`)
	if b.Len() != 1024 {
		tb.Fatalf("data is %d bytes", b.Len())
	}
	return []byte(b.String())
}

// BenchmarkDecodeJSON is the router's cost per JSON-contract record, with a
// producer-supplied id and with a derived one.
func BenchmarkDecodeJSON(b *testing.B) {
	data := data1KiB(b)
	for _, bc := range []struct {
		name    string
		headers []kgo.RecordHeader
	}{
		{"id", []kgo.RecordHeader{
			{Key: eventrecord.HeaderTenant, Value: []byte(tenant)},
			{Key: eventrecord.HeaderType, Value: []byte("order.created")},
			{Key: eventrecord.HeaderID, Value: []byte("order-o_01JD3K6Z8WQ4V0M5T7E9RXN2BC-created")},
			{Key: "traceparent", Value: []byte("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")},
		}},
		{"derived-id", []kgo.RecordHeader{
			{Key: eventrecord.HeaderTenant, Value: []byte(tenant)},
			{Key: eventrecord.HeaderType, Value: []byte("order.created")},
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			r := &kgo.Record{Topic: topic, Partition: 7, Offset: 123456789, Timestamp: recordTime, Value: data, Headers: bc.headers}
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := eventrecord.Decode(r, eventrecord.Limits{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDecodeProtobuf is the router's cost per record the HTTP API wrote.
func BenchmarkDecodeProtobuf(b *testing.B) {
	e := validEvent()
	e.Data = data1KiB(b)
	r, err := eventrecord.FromHTTP(topic, e)
	if err != nil {
		b.Fatal(err)
	}
	r.Partition, r.Offset = 7, 123456789
	b.SetBytes(int64(len(e.Data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := eventrecord.Decode(r, eventrecord.Limits{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFromHTTP is the HTTP API's cost to build one record.
func BenchmarkFromHTTP(b *testing.B) {
	data := data1KiB(b)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		e := &sluicev1.Event{TenantId: tenant, EventId: "evt_01JD3K6Z8WQ4V0M5T7E9RXN2BD", Type: "order.created", Data: data, ReceivedAtMs: 1}
		if _, err := eventrecord.FromHTTP(topic, e); err != nil {
			b.Fatal(err)
		}
	}
}
