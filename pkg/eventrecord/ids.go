package eventrecord

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/sluicehq/sluice/pkg/errtext"
	"github.com/sluicehq/sluice/pkg/ids"
)

// MaxTenantLen and MaxIDLen bound tenant and event ids, in bytes. Generated
// ids are 30 bytes (evt_ + 26); 128 leaves producers room for their own ids,
// such as a UUID with a prefix, while keeping every log row and dedup entry
// small.
const (
	MaxTenantLen = 64
	MaxIDLen     = 128
)

var (
	// ErrInvalidTenant is wrapped by every error ValidateTenant returns.
	ErrInvalidTenant = errors.New("invalid tenant")
	// ErrInvalidID is wrapped by every error ValidateID returns.
	ErrInvalidID = errors.New("invalid event id")
)

// ValidateTenant checks a tenant id: 1 to MaxTenantLen bytes of
// A-Z a-z 0-9 _ -. It never contains '/', so Key is unambiguous.
func ValidateTenant(t string) error {
	return validateName(t, MaxTenantLen, ErrInvalidTenant, false)
}

// ValidateID checks an event id: 1 to MaxIDLen bytes of A-Z a-z 0-9 _ . : -,
// not starting with '.', so that an id is never "." or ".." or a hidden name
// where it ends up in a URL path or a file name.
func ValidateID(id string) error {
	return validateName(id, MaxIDLen, ErrInvalidID, true)
}

// validateName checks s against the shared alphabet A-Z a-z 0-9 _ -, plus
// '.' and ':' if id. It allocates only to build an error.
func validateName(s string, maxLen int, sentinel error, id bool) error {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%w %s: %s", sentinel, errtext.Quote(s), fmt.Sprintf(format, args...))
	}
	allowed := "A-Z a-z 0-9 _ -"
	if id {
		allowed = "A-Z a-z 0-9 _ . : -"
	}
	switch {
	case s == "":
		return fail("empty, want 1 to %d bytes", maxLen)
	case len(s) > maxLen:
		return fail("%d bytes, at most %d", len(s), maxLen)
	case id && s[0] == '.':
		return fail("must not start with '.'")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_', c == '-':
		case id && (c == '.' || c == ':'):
		default:
			return fail("%s at byte %d is not allowed; use %s", errtext.Describe(s[i:]), i, allowed)
		}
	}
	return nil
}

// Key is the record key of an event on the events topic: tenant/id. Every
// copy of one event id of a tenant hashes to the same partition, which the
// router's per-partition dedup relies on. A tenant never contains '/', so
// the key splits back unambiguously at its first '/'.
func Key(tenant, id string) []byte {
	k := make([]byte, 0, len(tenant)+1+len(id))
	k = append(k, tenant...)
	k = append(k, '/')
	return append(k, id...)
}

// DerivedID is the event id of a JSON-contract record without a sluice-id
// header: a ULID whose 48-bit time is the record's timestamp (the broker's
// append time on sluice.events) and whose 80 other bits are the start of
// SHA-256("<topic>/<partition>/<offset>"). Both are fixed once the record is
// in the log, so a router that re-reads it (after an aborted transaction, a
// crash or a rebalance) gives it the same id and its dedup drops the second
// fan-out. The time part keeps ids distinct when offsets start again (a
// recreated topic) and sorted by time, as the ClickHouse events table wants.
//
// Changing this function changes the id of every such event: records re-read
// across a deploy would be delivered twice. The test pins its output.
func DerivedID(topic string, partition int32, offset int64, at time.Time) string {
	// Kafka topic names are [a-zA-Z0-9._-], so '/' separates unambiguously.
	var buf [249 + 1 + 11 + 1 + 20]byte // longest topic name, '/', int32, '/', int64
	b := append(buf[:0], topic...)
	b = append(b, '/')
	b = strconv.AppendInt(b, int64(partition), 10)
	b = append(b, '/')
	b = strconv.AppendInt(b, offset, 10)
	sum := sha256.Sum256(b)
	return ids.At(ids.Event, at, [10]byte(sum[:10]))
}

// IDFromIdempotencyKey is the event id of an HTTP request that carries an
// Idempotency-Key instead of an id: evt_ and 26 Crockford base32 digits of
// the first 128 bits of SHA-256(tenant + "\x00" + key). A retry of the
// request gets the same id on any replica, and the router's dedup drops the
// copy. It has no time part (a retry comes later), so these ids do not sort
// by time. tenant must be valid: it never contains NUL, so no two (tenant,
// key) pairs hash the same input. Like DerivedID, its output is pinned by a
// test.
func IDFromIdempotencyKey(tenant, key string) string {
	h := sha256.New()
	h.Write([]byte(tenant))
	h.Write([]byte{0})
	h.Write([]byte(key))
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return ids.FromBytes(ids.Event, [16]byte(sum[:16]))
}
