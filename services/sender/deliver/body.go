package deliver

import (
	"encoding/json"
	"strconv"
	"time"

	sluicev1 "github.com/sluicehq/sluice/proto/sluice/v1"
)

// appendBody appends the webhook body {"id","type","timestamp","data"} of d.
// data is already JSON (validated at ingest) and is copied as is.
func appendBody(dst []byte, d *sluicev1.Delivery) []byte {
	dst = append(dst, `{"id":`...)
	dst = appendJSONString(dst, d.EventId)
	dst = append(dst, `,"type":`...)
	dst = appendJSONString(dst, d.EventType)
	dst = append(dst, `,"timestamp":"`...)
	dst = time.UnixMilli(d.EventReceivedAtMs).UTC().AppendFormat(dst, "2006-01-02T15:04:05.000Z")
	dst = append(dst, `","data":`...)
	if len(d.Data) == 0 {
		dst = append(dst, "{}"...)
	} else {
		dst = append(dst, d.Data...)
	}
	return append(dst, '}')
}

// appendJSONString appends s as a JSON string. Ids and types are plain
// ASCII in practice (ingest validates them), so the fast path copies bytes.
func appendJSONString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x80 {
			b, _ := json.Marshal(s)
			return append(dst, b...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}

// webhookTimestamp is the webhook-timestamp header: Unix seconds of the
// attempt, which the receiver checks against its clock.
func webhookTimestamp(now time.Time) string { return strconv.FormatInt(now.Unix(), 10) }
