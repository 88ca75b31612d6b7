// Package ids makes Sluice's object ids: a type prefix and a ULID
// (48 bits of Unix milliseconds, then 80 random bits, in Crockford base32),
// such as evt_01JD3K6Z8WQ4V0M5T7E9RXN2BC. Ids made later sort later, which
// keeps the ClickHouse sorting keys that contain them close to time order.
package ids

import (
	"crypto/rand"
	"encoding/binary"
	"time"
)

// Prefixes of the object types.
const (
	Event    = "evt"
	Delivery = "dlv"
	Attempt  = "att"
	Endpoint = "ep"
	Tenant   = "ten"
	APIKey   = "key"
)

const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// New returns prefix_ULID for the current time.
func New(prefix string) string { return NewAt(prefix, time.Now()) }

// NewAt returns prefix_ULID for time t.
func NewAt(prefix string, t time.Time) string {
	var entropy [10]byte
	_, _ = rand.Read(entropy[:]) // crypto/rand.Read never fails on Linux
	return At(prefix, t, entropy)
}

// At returns prefix_ULID of time t and the given 80 bits: deterministic
// ids that still sort by time, such as one derived from a record's place in
// a log and its timestamp.
func At(prefix string, t time.Time, entropy [10]byte) string {
	var b [16]byte
	ms := uint64(t.UnixMilli())
	binary.BigEndian.PutUint16(b[0:2], uint16(ms>>32))
	binary.BigEndian.PutUint32(b[2:6], uint32(ms))
	copy(b[6:], entropy[:])
	return FromBytes(prefix, b)
}

// FromBytes returns prefix_ and the 128 bits of b in the ids' alphabet, for
// ids that are a hash rather than a ULID.
func FromBytes(prefix string, b [16]byte) string {
	out := make([]byte, 0, len(prefix)+1+26)
	out = append(out, prefix...)
	out = append(out, '_')
	return string(appendBase32(out, b))
}

// appendBase32 writes the 128 bits of b as 26 Crockford base32 digits, the
// first digit carrying the top 3 bits.
func appendBase32(dst []byte, b [16]byte) []byte {
	hi := binary.BigEndian.Uint64(b[0:8])
	lo := binary.BigEndian.Uint64(b[8:16])
	for i := 25; i >= 0; i-- {
		shift := uint(i * 5)
		var v uint64
		switch {
		case shift >= 64:
			v = hi >> (shift - 64)
		case shift > 59: // straddles the two words
			v = lo>>shift | hi<<(64-shift)
		default:
			v = lo >> shift
		}
		dst = append(dst, crockford[v&31])
	}
	return dst
}
