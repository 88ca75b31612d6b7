// Package signing signs and verifies webhook deliveries as Standard Webhooks
// (https://www.standardwebhooks.com) specifies, so that any receiver using a
// Standard Webhooks library can check a Sluice delivery.
//
// A secret is Prefix followed by standard base64 of the raw key. A signature
// is "v1," followed by standard base64 of HMAC-SHA256 under the key of
//
//	msgID + "." + timestamp (decimal Unix seconds) + "." + body
//
// and the webhook-signature header holds one or more signatures separated by
// single spaces. While a secret is being rotated Sluice sends two: the
// current key's first, then the previous key's, so a receiver holding either
// secret accepts the delivery.
package signing

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
)

// Prefix starts every secret, telling it apart from other credentials in
// configuration and in leaked-secret scanners.
const Prefix = "whsec_"

// Key sizes a secret may have. Standard Webhooks recommends 24 to 64 bytes:
// 24 bytes (192 bits) is well above the 128 bits HMAC-SHA256 needs to resist
// guessing, and 64 bytes is SHA-256's block size, beyond which HMAC hashes the
// key down to 32 bytes, so longer keys add nothing.
const (
	MinKeyBytes = 24 // keys shorter than this are refused
	MaxKeyBytes = 64
)

// newKeyBytes is the size of the keys NewKey makes: SHA-256's output size,
// the strength HMAC-SHA256 can give.
const newKeyBytes = 32

// version1 starts each signature in a header: the Standard Webhooks scheme
// (HMAC-SHA256, symmetric). Other versions, such as v1a (Ed25519), are
// skipped when verifying.
const version1 = "v1,"

// sigLen is the length of the base64 of one HMAC-SHA256: 44 characters.
var sigLen = base64.StdEncoding.EncodedLen(sha256.Size)

// Errors Verify wraps, so that a caller can tell a request that carries no
// signature from one whose signature is wrong.
var (
	ErrNoSignature = errors.New("header holds no v1 signature")
	ErrNoMatch     = errors.New("no signature in header matches")
)

// errSecretFormat never includes the secret: a refused secret may still be
// real, and error messages end up in logs and API responses.
var errSecretFormat = fmt.Errorf("must be %s followed by base64 of %d to %d bytes", Prefix, MinKeyBytes, MaxKeyBytes)

// NewKey returns a new random 32-byte key.
func NewKey() []byte {
	b := make([]byte, newKeyBytes)
	// crypto/rand.Read never returns an error; it crashes the program if the
	// system's source of randomness fails.
	_, _ = rand.Read(b)
	return b
}

// FormatSecret returns key as a secret: Prefix and standard base64.
func FormatSecret(key []byte) string {
	return Prefix + base64.StdEncoding.EncodeToString(key)
}

// ParseSecret returns the key in secret s, refusing one without Prefix, with
// bad base64, or whose key is outside MinKeyBytes to MaxKeyBytes. The error
// never repeats s.
func ParseSecret(s string) ([]byte, error) {
	b64, ok := strings.CutPrefix(s, Prefix)
	if !ok {
		return nil, errSecretFormat
	}
	// Each key has one spelling, the one FormatSecret gives: Strict refuses
	// non-zero unused bits, and the length check the line breaks that
	// base64 decoders skip. A secret stored is then the secret shown.
	key, err := base64.StdEncoding.Strict().DecodeString(b64)
	if err != nil || len(b64) != base64.StdEncoding.EncodedLen(len(key)) ||
		len(key) < MinKeyBytes || len(key) > MaxKeyBytes {
		return nil, errSecretFormat
	}
	return key, nil
}

// Signer signs with one or more keys (current first). Not safe for concurrent
// use; reusable; after the first call AppendSignature makes no allocations.
type Signer struct {
	macs []hash.Hash
	// signed holds msgID.timestamp. of the message being signed, reused
	// across calls so that strings need no conversion to bytes.
	signed []byte
	sum    [sha256.Size]byte
}

// NewSigner returns a Signer for keys, the current key first. Keys are used
// as given; check them with ParseSecret. With no keys, AppendSignature
// appends nothing.
func NewSigner(keys ...[]byte) *Signer {
	s := &Signer{macs: make([]hash.Hash, len(keys))}
	for i, k := range keys {
		s.macs[i] = hmac.New(sha256.New, k)
		// The first Reset saves the keyed state so that later ones restore
		// it without allocating; doing it here makes even the first
		// AppendSignature allocation-free.
		s.macs[i].Reset()
	}
	return s
}

// AppendSignature appends to dst "v1,<signature>" for each key, separated by
// single spaces, and returns the extended slice: the value of the
// webhook-signature header.
func (s *Signer) AppendSignature(dst []byte, msgID string, timestamp int64, body []byte) []byte {
	s.begin(msgID, timestamp)
	for i := range s.macs {
		if i > 0 {
			dst = append(dst, ' ')
		}
		dst = append(dst, version1...)
		dst = base64.StdEncoding.AppendEncode(dst, s.mac(i, body))
	}
	return dst
}

// begin readies s to sign a message with msgID and timestamp.
func (s *Signer) begin(msgID string, timestamp int64) {
	s.signed = append(s.signed[:0], msgID...)
	s.signed = append(s.signed, '.')
	s.signed = strconv.AppendInt(s.signed, timestamp, 10)
	s.signed = append(s.signed, '.')
}

// mac returns the HMAC of the message begun, with body, under key i. The
// result is valid until the next call.
func (s *Signer) mac(i int, body []byte) []byte {
	m := s.macs[i]
	m.Reset()
	// hash.Hash's Write never returns an error.
	m.Write(s.signed)
	m.Write(body)
	return m.Sum(s.sum[:0])
}

// Verify reports whether header (one or more space-separated "v1,<b64>"
// entries; unknown versions ignored) holds a valid signature of (msgID,
// timestamp, body) under any of keys. It returns nil, or an error wrapping
// ErrNoSignature or ErrNoMatch. It does not check the timestamp's age:
// callers must refuse old timestamps to stop replays.
func Verify(header string, keys [][]byte, msgID string, timestamp int64, body []byte) error {
	if len(keys) == 0 {
		return errors.New("verifying signature: no keys to verify with")
	}
	// Every key's MAC is computed before looking at the header, so the work
	// done does not depend on what an attacker sent.
	s := NewSigner(keys...)
	s.begin(msgID, timestamp)
	want := make([][sha256.Size]byte, len(keys))
	for i := range keys {
		copy(want[i][:], s.mac(i, body))
	}

	entries, v1 := 0, 0
	var got [sha256.Size + 1]byte // DecodedLen(44) is 33
	for entry := range strings.SplitSeq(header, " ") {
		if entry == "" {
			continue
		}
		entries++
		sig, ok := strings.CutPrefix(entry, version1)
		if !ok {
			continue
		}
		v1++
		if len(sig) != sigLen {
			continue
		}
		n, err := base64.StdEncoding.Strict().Decode(got[:], []byte(sig))
		if err != nil || n != sha256.Size {
			continue
		}
		for i := range want {
			if hmac.Equal(got[:n], want[i][:]) {
				return nil
			}
		}
	}
	if v1 == 0 {
		return fmt.Errorf("verifying signature (%d entries, none v1): %w", entries, ErrNoSignature)
	}
	return fmt.Errorf("verifying signature (%d v1 entries, %d keys): %w", v1, len(keys), ErrNoMatch)
}
