// Package eventrecord is the contract of records on the events topic
// (sluice.events, DESIGN §3) and the one decoder the router reads them with.
//
// Two kinds of producer write the topic. The ingest HTTP API writes a
// protobuf sluicev1.Event (FromHTTP) with header sluice-encoding: protobuf
// and, for tools such as kcat that do not speak protobuf, the tenant, type
// and id duplicated as headers. External Kafka producers write the JSON
// contract below. Decode reads both.
//
// # JSON contract
//
// The value is the event's data: one JSON object in UTF-8 of at most 256 KiB
// (DefaultMaxDataBytes), kept byte for byte. Headers say the rest; their
// names are case-sensitive and each may appear once:
//
//	sluice-tenant    required  tenant id: 1-64 bytes of A-Z a-z 0-9 _ -
//	sluice-type      required  event type such as order.created (package eventfilter)
//	sluice-id        optional  event id: 1-128 bytes of A-Z a-z 0-9 _ . : -, not starting
//	                           with '.'; receivers dedupe on it (webhook-id). Without it
//	                           the id is derived from the record's position (DerivedID).
//	sluice-encoding  optional  absent or json
//
// The key should be tenant/id (Key), so that copies of one event land on one
// partition, where the router drops them as duplicates. The record's
// timestamp becomes the event's received time.
//
//	echo '{"order_id":"o_123","total":4200}' | kcat -P -b localhost:9092 -t sluice.events \
//	  -k ten_01JD3K6Z8WQ4V0M5T7E9RXN2BC/order-o_123-created \
//	  -H sluice-tenant=ten_01JD3K6Z8WQ4V0M5T7E9RXN2BC \
//	  -H sluice-type=order.created -H sluice-id=order-o_123-created
//
// Event types starting with "sluice." are reserved for Sluice's own
// operational events: a Kafka producer's record of such a type is rejected.
//
// # Records only Sluice writes
//
// Two kinds of record on the events topic come from Sluice itself and carry
// header sluice-auth, an HMAC-SHA256 of the value under a key derived from
// the secrets key (secretbox.Box.RecordKey), so a producer that may write
// the topic cannot forge them:
//
//   - operational events (FromSystem: source SYSTEM, sluice.* types);
//   - fan-out continuations (Continuation, sluice-encoding: continuation):
//     the rest of an event's fan-out that did not fit in the routing
//     transaction that decided it.
//
// # Rejected records
//
// A record that is not an event is not dropped: the router copies it to the
// rejected topic (sluice.events.rejected) with Rejected, which adds the
// reason Decode gave as header sluice-reject-reason and the original's
// position as sluice-source.
package eventrecord

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"

	"github.com/sluicehq/sluice/pkg/errtext"
	"github.com/sluicehq/sluice/pkg/eventfilter"
	"github.com/sluicehq/sluice/pkg/ids"
)

// Header names of the contract. Kafka header names are case-sensitive.
const (
	HeaderTenant = "sluice-tenant" // required for JSON records
	HeaderType   = "sluice-type"   // required for JSON records
	HeaderID     = "sluice-id"     // optional
	// HeaderEncoding is "protobuf" on records the HTTP API writes; absent or
	// "json" for the JSON contract.
	HeaderEncoding = "sluice-encoding"
	// HeaderReason and HeaderSource are on copies in the rejected topic: why
	// the record was rejected, and where the original sits
	// ("<topic>/<partition>/<offset>").
	HeaderReason = "sluice-reject-reason"
	HeaderSource = "sluice-source"
	// HeaderAuth authenticates a record only Sluice writes (see the package
	// documentation): HMAC-SHA256 of its encoding and value.
	HeaderAuth = "sluice-auth"
	// HeaderTruncated is on a rejected copy whose value was cut to
	// MaxRejectedValueBytes: the original's length in bytes.
	HeaderTruncated = "sluice-reject-truncated"
)

// Values of HeaderEncoding.
const (
	EncodingProtobuf = "protobuf"
	EncodingJSON     = "json"
	// EncodingContinuation marks a sluicev1.FanoutContinuation.
	EncodingContinuation = "continuation"
)

// MaxRejectedValueBytes bounds the value a rejected copy keeps: a record
// rejected for its size may be as large as the broker accepts (about 1 MiB),
// and its copy, with the reason headers, must still fit the producer's
// 1,000,012-byte record limit, or the router could never commit past it.
// 512 KiB keeps the start of any value, which is what a reader needs to see
// what was sent; the original stays in the events topic whole.
const MaxRejectedValueBytes = 512 << 10

// DefaultMaxDataBytes bounds the JSON data of one event: 256 KiB, the bound
// of common webhook providers, keeps a full fan-out batch far below Kafka's
// default 1 MiB message limit on the deliveries topic.
const DefaultMaxDataBytes = 256 << 10

// Limits are the bounds of a decoded event, and the key of the records only
// Sluice writes.
type Limits struct {
	// MaxDataBytes bounds the event's data, counted as the bytes of the
	// JSON-contract value or of the protobuf data field. Zero or less means
	// DefaultMaxDataBytes, so the zero Limits is the default.
	MaxDataBytes int
	// AuthKey checks header sluice-auth (secretbox.Box.RecordKey). Without
	// it no record counts as Sluice's own: SYSTEM events and continuations
	// are rejected.
	AuthKey []byte
}

func (l Limits) maxData() int {
	if l.MaxDataBytes <= 0 {
		return DefaultMaxDataBytes
	}
	return l.MaxDataBytes
}

// RejectError says why a record is not an event. The record is not retried:
// the same bytes would be rejected again, so the router copies it to the
// rejected topic and moves on.
type RejectError struct {
	// Reason is one line naming the header or field at fault, for the log
	// and for header sluice-reject-reason.
	Reason string
}

func (e *RejectError) Error() string { return "event record rejected: " + e.Reason }

// reject builds a RejectError whose reason is guaranteed one line.
func reject(format string, args ...any) *RejectError {
	return &RejectError{Reason: oneLine(fmt.Sprintf(format, args...))}
}

// FromHTTP builds the record the HTTP API produces for e, to topic (empty
// leaves the topic to the client's kgo.DefaultProduceTopic).
//
// It completes e first, so that e is exactly what Decode will return: it sets
// e.SchemaVersion to sluicev1.SchemaVersion, e.Source to HTTP and, if zero,
// e.ReceivedAtMs to now. The record's timestamp is e.ReceivedAtMs, its key
// Key(tenant, id), and its headers duplicate tenant, type and id beside
// sluice-encoding: protobuf.
//
// e is checked as Decode checks it, except for the size of e.Data, which the
// API bounds with its request limit; an invalid e gives a *RejectError whose
// reason names the field (tenant_id, event_id, type, data), for a 400.
func FromHTTP(topic string, e *sluicev1.Event) (*kgo.Record, error) {
	return encode(topic, e, sluicev1.EventSource_EVENT_SOURCE_HTTP)
}

// FromSystem builds the record of one of Sluice's own operational events
// (sluice.endpoint.disabled and the like) as FromHTTP does, with source
// SYSTEM and a new event id, authenticated with key
// (secretbox.Box.RecordKey) so the router honours it.
func FromSystem(topic, tenant, eventType string, data, key []byte) (*kgo.Record, error) {
	r, err := encode(topic, &sluicev1.Event{TenantId: tenant, EventId: ids.New(ids.Event), Type: eventType, Data: data},
		sluicev1.EventSource_EVENT_SOURCE_SYSTEM)
	if err != nil {
		return nil, err
	}
	r.Headers = append(r.Headers, kgo.RecordHeader{Key: HeaderAuth, Value: mac(key, EncodingProtobuf, r.Value)})
	return r, nil
}

// mac is the sluice-auth value of a record of encoding with value.
func mac(key []byte, encoding string, value []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(encoding))
	m.Write([]byte{0})
	m.Write(value)
	return m.Sum(nil)
}

// authentic reports whether r carries a valid sluice-auth for encoding
// under key.
func authentic(r *kgo.Record, key []byte, encoding string) bool {
	if len(key) == 0 {
		return false
	}
	var got []byte
	n := 0
	for _, h := range r.Headers {
		if h.Key == HeaderAuth {
			got = h.Value
			n++
		}
	}
	return n == 1 && hmac.Equal(got, mac(key, encoding, r.Value))
}

// Continuation builds the record carrying the rest of ev's fan-out, to the
// endpoints ids (in that order), for partition of topic: the partition ev
// was read from, so the continuation is routed by the router that owns it,
// after ev. key is the record key (secretbox.Box.RecordKey). The record
// carries ev's own record key and is keyed by it.
func Continuation(topic string, partition int32, ev *sluicev1.Event, endpointIDs []string, key []byte) (*kgo.Record, error) {
	v, err := proto.Marshal(&sluicev1.FanoutContinuation{SchemaVersion: sluicev1.SchemaVersion, Event: ev, EndpointIds: endpointIDs})
	if err != nil {
		return nil, fmt.Errorf("encoding the fan-out continuation of %s/%s: %w", ev.TenantId, ev.EventId, err)
	}
	return &kgo.Record{
		Topic: topic, Partition: partition, Key: Key(ev.TenantId, ev.EventId), Value: v,
		Headers: []kgo.RecordHeader{
			{Key: HeaderEncoding, Value: []byte(EncodingContinuation)},
			{Key: HeaderAuth, Value: mac(key, EncodingContinuation, v)},
		},
	}, nil
}

// IsContinuation reports whether r claims to be a fan-out continuation;
// DecodeContinuation checks that it is one.
func IsContinuation(r *kgo.Record) bool {
	for _, h := range r.Headers {
		if h.Key == HeaderEncoding {
			return string(h.Value) == EncodingContinuation
		}
	}
	return false
}

// DecodeContinuation reads a record Continuation made: the event and the
// endpoints still to receive it. A record that is not authentic under
// lim.AuthKey, or does not decode, gives a *RejectError.
func DecodeContinuation(r *kgo.Record, lim Limits) (*sluicev1.Event, []string, error) {
	if !authentic(r, lim.AuthKey, EncodingContinuation) {
		return nil, nil, reject("%s %s is only written by Sluice's router, and this record's %s does not authenticate it",
			HeaderEncoding, EncodingContinuation, HeaderAuth)
	}
	var c sluicev1.FanoutContinuation
	if err := proto.Unmarshal(r.Value, &c); err != nil {
		return nil, nil, reject("value is not a protobuf sluice.v1.FanoutContinuation: %v", err)
	}
	if c.SchemaVersion != sluicev1.SchemaVersion || c.Event == nil {
		return nil, nil, reject("fan-out continuation of unknown schema version %d (this build reads %d)", c.SchemaVersion, sluicev1.SchemaVersion)
	}
	if reason := checkEvent(c.Event, "continuation ", math.MaxInt); reason != "" {
		return nil, nil, reject("%s", reason)
	}
	return c.Event, c.EndpointIds, nil
}

func encode(topic string, e *sluicev1.Event, source sluicev1.EventSource) (*kgo.Record, error) {
	e.SchemaVersion = sluicev1.SchemaVersion
	e.Source = source
	if e.ReceivedAtMs == 0 {
		e.ReceivedAtMs = time.Now().UnixMilli()
	}
	if reason := checkEvent(e, "", math.MaxInt); reason != "" {
		return nil, &RejectError{Reason: reason}
	}
	v, err := proto.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("encoding event %s/%s: %w", e.TenantId, e.EventId, err)
	}
	return &kgo.Record{
		Topic:     topic,
		Key:       Key(e.TenantId, e.EventId),
		Value:     v,
		Timestamp: time.UnixMilli(e.ReceivedAtMs),
		Headers: []kgo.RecordHeader{
			{Key: HeaderTenant, Value: []byte(e.TenantId)},
			{Key: HeaderType, Value: []byte(e.Type)},
			{Key: HeaderID, Value: []byte(e.EventId)},
			{Key: HeaderEncoding, Value: []byte(EncodingProtobuf)},
		},
	}, nil
}

// header is one contract header of a record as Decode found it.
type header struct {
	value   []byte
	present bool
}

// contractHeaders are the contract headers of one record.
type contractHeaders struct {
	tenant, typ, id, encoding header
}

// Decode turns a record of either kind into a validated event, or returns a
// *RejectError saying why it is not one. Any contract header that appears
// more than once is rejected as ambiguous; other headers are ignored.
//
// A protobuf record (sluice-encoding: protobuf) must have schema_version
// sluicev1.SchemaVersion, a known source, and a valid tenant, id, type and
// data; its contract headers are optional but, when present, must agree with
// the value. A zero received_at_ms is taken from the record's timestamp.
//
// A JSON record is read as the package documentation describes: source
// KAFKA, received_at_ms the record's timestamp. The event's Data is r.Value
// itself, not a copy: do not reuse or recycle r (kgo.Record.Recycle) while
// the event is in use.
func Decode(r *kgo.Record, lim Limits) (*sluicev1.Event, error) {
	var h contractHeaders
	for i := range r.Headers {
		var slot *header
		switch r.Headers[i].Key {
		case HeaderTenant:
			slot = &h.tenant
		case HeaderType:
			slot = &h.typ
		case HeaderID:
			slot = &h.id
		case HeaderEncoding:
			slot = &h.encoding
		default:
			continue
		}
		if slot.present {
			return nil, reject("header %s repeated", r.Headers[i].Key)
		}
		*slot = header{value: r.Headers[i].Value, present: true}
	}
	var (
		e      *sluicev1.Event
		reason string
	)
	switch enc := h.encoding.value; {
	case !h.encoding.present || string(enc) == EncodingJSON:
		e, reason = decodeJSON(r, &h, lim.maxData())
	case string(enc) == EncodingProtobuf:
		e, reason = decodeProtobuf(r, &h, lim.maxData())
		if reason == "" {
			reason = checkOwn(r, e, lim.AuthKey)
		}
	case string(enc) == EncodingContinuation:
		reason = "a fan-out continuation is not an event; read it with DecodeContinuation"
	default:
		reason = fmt.Sprintf("unknown %s %s, want %s or %s", HeaderEncoding, errtext.Quote(string(enc)), EncodingJSON, EncodingProtobuf)
	}
	if reason != "" {
		return nil, &RejectError{Reason: oneLine(reason)}
	}
	return e, nil
}

// decodeJSON reads a record of the JSON contract. It returns the event or a
// reason.
func decodeJSON(r *kgo.Record, h *contractHeaders, maxData int) (*sluicev1.Event, string) {
	if !h.tenant.present {
		return nil, missing(r, HeaderTenant)
	}
	if !h.typ.present {
		return nil, missing(r, HeaderType)
	}
	tenant := string(h.tenant.value)
	if err := ValidateTenant(tenant); err != nil {
		return nil, "header " + HeaderTenant + ": " + err.Error()
	}
	typ := string(h.typ.value)
	if err := eventfilter.ValidateType(typ); err != nil {
		return nil, "header " + HeaderType + ": " + err.Error()
	}
	if eventfilter.Reserved(typ) {
		return nil, "header " + HeaderType + ": " + errtext.Quote(typ) + " is reserved for Sluice's own operational events"
	}
	var id string
	if h.id.present {
		id = string(h.id.value)
		if err := ValidateID(id); err != nil {
			return nil, "header " + HeaderID + ": " + err.Error()
		}
	} else {
		id = DerivedID(r.Topic, r.Partition, r.Offset, r.Timestamp)
	}
	if reason := checkData(r.Value, maxData); reason != "" {
		return nil, "value " + reason
	}
	return &sluicev1.Event{
		SchemaVersion: sluicev1.SchemaVersion,
		TenantId:      tenant,
		EventId:       id,
		Type:          typ,
		Data:          r.Value,
		ReceivedAtMs:  r.Timestamp.UnixMilli(),
		Source:        sluicev1.EventSource_EVENT_SOURCE_KAFKA,
	}, ""
}

// missing says that a required header is absent and, if the record has it in
// another case (Sluice-Tenant), that names are case-sensitive: the usual
// mistake behind it.
func missing(r *kgo.Record, name string) string {
	for _, hd := range r.Headers {
		if strings.EqualFold(hd.Key, name) {
			return fmt.Sprintf("header %s missing (found %s; header names are case-sensitive)", name, errtext.Quote(hd.Key))
		}
	}
	return "header " + name + " missing"
}

// checkOwn returns why e cannot be what it claims, or "": source SYSTEM and
// the reserved sluice.* types are Sluice's own operational events, which
// carry a sluice-auth valid under key (FromSystem).
func checkOwn(r *kgo.Record, e *sluicev1.Event, key []byte) string {
	system := e.Source == sluicev1.EventSource_EVENT_SOURCE_SYSTEM
	if !system && !eventfilter.Reserved(e.Type) {
		return ""
	}
	if !system {
		return fmt.Sprintf("type %s is reserved for Sluice's own operational events", errtext.Quote(e.Type))
	}
	if !authentic(r, key, EncodingProtobuf) {
		return "source SYSTEM is reserved for Sluice's own operational events, and this record's " + HeaderAuth +
			" does not authenticate it"
	}
	return ""
}

// decodeProtobuf reads a record the HTTP API wrote. It returns the event or a
// reason.
func decodeProtobuf(r *kgo.Record, h *contractHeaders, maxData int) (*sluicev1.Event, string) {
	if len(r.Value) == 0 {
		return nil, "value is empty, want a protobuf sluice.v1.Event"
	}
	e := new(sluicev1.Event)
	if err := proto.Unmarshal(r.Value, e); err != nil {
		return nil, "value is not a protobuf sluice.v1.Event: " + err.Error()
	}
	if e.SchemaVersion != sluicev1.SchemaVersion {
		return nil, fmt.Sprintf("protobuf event of unknown schema version %d (this build reads %d)", e.SchemaVersion, sluicev1.SchemaVersion)
	}
	if reason := checkEvent(e, "protobuf ", maxData); reason != "" {
		return nil, reason
	}
	for _, c := range [...]struct {
		name, field string
		h           header
		want        string
	}{
		{HeaderTenant, "tenant_id", h.tenant, e.TenantId},
		{HeaderType, "type", h.typ, e.Type},
		{HeaderID, "event_id", h.id, e.EventId},
	} {
		if c.h.present && string(c.h.value) != c.want {
			return nil, fmt.Sprintf("header %s %s disagrees with protobuf %s %s", c.name, errtext.Quote(string(c.h.value)), c.field, errtext.Quote(c.want))
		}
	}
	if e.ReceivedAtMs == 0 {
		e.ReceivedAtMs = r.Timestamp.UnixMilli()
	}
	return e, ""
}

// checkEvent checks the fields of a protobuf event and returns what is wrong,
// naming the field after prefix, or "".
func checkEvent(e *sluicev1.Event, prefix string, maxData int) string {
	if err := ValidateTenant(e.TenantId); err != nil {
		return prefix + "tenant_id: " + err.Error()
	}
	if err := ValidateID(e.EventId); err != nil {
		return prefix + "event_id: " + err.Error()
	}
	if err := eventfilter.ValidateType(e.Type); err != nil {
		return prefix + "type: " + err.Error()
	}
	if _, known := sluicev1.EventSource_name[int32(e.Source)]; !known || e.Source == sluicev1.EventSource_EVENT_SOURCE_UNSPECIFIED {
		return fmt.Sprintf("%ssource %d is not a known event source", prefix, e.Source)
	}
	if reason := checkData(e.Data, maxData); reason != "" {
		return prefix + "data " + reason
	}
	return ""
}

// checkData returns what keeps data from being the data of an event — one
// JSON object in UTF-8 of at most maxData bytes — completing the sentence
// "value …", or "". Whitespace around the object is allowed and kept.
//
// A JSON text whose first non-space byte is '{' and that json.Valid accepts
// is an object, so one scan decides; utf8.Valid is the second, because
// encoding/json accepts invalid UTF-8 inside strings and receivers may not.
// Only a rejected value costs more, to name the problem.
func checkData(data []byte, maxData int) string {
	if len(data) > maxData {
		return fmt.Sprintf("is %d bytes, at most %d", len(data), maxData)
	}
	i := 0
	for i < len(data) && isSpace(data[i]) {
		i++
	}
	switch {
	case len(data) == 0:
		return "is empty, want a JSON object"
	case i == len(data):
		return "is only whitespace, want a JSON object"
	}
	if !json.Valid(data) {
		return "is not valid JSON: " + syntaxError(data)
	}
	switch data[i] {
	case '{':
	case '[':
		return "is a JSON array, not an object"
	case '"':
		return "is a JSON string, not an object"
	case 't', 'f':
		return "is a JSON boolean, not an object"
	case 'n':
		return "is JSON null, not an object"
	default:
		return "is a JSON number, not an object"
	}
	if !utf8.Valid(data) {
		return fmt.Sprintf("is not valid UTF-8 (byte %d)", invalidUTF8At(data))
	}
	return ""
}

// isSpace reports whether c is JSON whitespace (RFC 8259 §2).
func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// syntaxError says why json.Valid refused data, with the byte offset.
func syntaxError(data []byte) string {
	var raw json.RawMessage
	err := json.Unmarshal(data, &raw)
	var se *json.SyntaxError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("%s (byte %d)", se.Error(), se.Offset)
	case err != nil:
		return err.Error()
	default:
		return "rejected by the JSON scanner" // not reached: Valid and Unmarshal share one scanner
	}
}

// invalidUTF8At is the offset of the first byte of data that does not start
// a valid UTF-8 sequence, or len(data).
func invalidUTF8At(data []byte) int {
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && size <= 1 {
			return i
		}
		i += size
	}
	return len(data)
}

// Rejected returns the copy of r for the rejected topic: r's key, value,
// timestamp and headers (sharing their bytes with r), plus HeaderReason with
// reason made one line and HeaderSource with "<topic>/<partition>/<offset>"
// of r. An earlier reason or source header — a rejected copy written back to
// the events topic — is replaced, so the copy carries one of each.
//
// A value longer than MaxRejectedValueBytes is cut to that length and the
// copy says so in HeaderTruncated, with the original's length: the copy must
// be producible, or the router could not commit past the original. Header
// values are kept up to a total of maxRejectedHeaderBytes for the same
// reason.
func Rejected(topic string, r *kgo.Record, reason string) *kgo.Record {
	hs := make([]kgo.RecordHeader, 0, len(r.Headers)+3)
	budget := maxRejectedHeaderBytes
	for _, h := range r.Headers {
		if h.Key == HeaderReason || h.Key == HeaderSource || h.Key == HeaderTruncated {
			continue
		}
		if budget -= len(h.Key) + len(h.Value); budget < 0 {
			break
		}
		hs = append(hs, h)
	}
	hs = append(hs,
		kgo.RecordHeader{Key: HeaderReason, Value: []byte(errtext.Truncate(oneLine(reason), maxReasonBytes))},
		kgo.RecordHeader{Key: HeaderSource, Value: fmt.Appendf(nil, "%s/%d/%d", r.Topic, r.Partition, r.Offset)},
	)
	value := r.Value
	if len(value) > MaxRejectedValueBytes {
		value = value[:MaxRejectedValueBytes]
		hs = append(hs, kgo.RecordHeader{Key: HeaderTruncated, Value: fmt.Appendf(nil, "%d", len(r.Value))})
	}
	return &kgo.Record{Topic: topic, Key: r.Key, Value: value, Timestamp: r.Timestamp, Headers: hs}
}

// The headers a rejected copy keeps, and the length of its reason: far
// above what the contract's headers need, far below the record limit.
const (
	maxRejectedHeaderBytes = 64 << 10
	maxReasonBytes         = 4 << 10
)

// oneLine makes s one line of valid UTF-8 for a log field or a header: every
// control character becomes a space and invalid bytes become U+FFFD. Reasons
// quote what they show, so this only guards against a future one that does
// not.
func oneLine(s string) string {
	if utf8.ValidString(s) && !strings.ContainsFunc(s, isControl) {
		return s
	}
	return strings.Map(func(r rune) rune {
		if isControl(r) {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(s, "\uFFFD"))
}

// isControl reports whether r would break a line or is invisible control:
// C0, DEL, C1 and the Unicode line and paragraph separators.
func isControl(r rune) bool {
	return r < 0x20 || r == 0x7f || (0x80 <= r && r < 0xa0) || r == '\u2028' || r == '\u2029'
}
