// Package secretbox encrypts endpoint signing secrets at rest with
// AES-256-GCM, so a copy of the database (a backup, a replica, a dump on a
// laptop) does not let anyone forge webhooks for Sluice's customers.
//
// A sealed secret is
//
//	version (1 byte, 1) | nonce (12 random bytes) | GCM ciphertext and 16-byte tag
//
// and is bound to its owner, the endpoint id, through GCM's additional data:
// a sealed secret copied onto another endpoint's row fails to open instead of
// silently signing that endpoint's deliveries with the wrong secret.
package secretbox

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/sluicehq/sluice/pkg/config"
)

// KeySize is the length of the key: 32 bytes selects AES-256.
const KeySize = 32

const (
	// version is the first byte of every sealed secret. A new format (another
	// cipher, a key id for rotation) takes the next number, and Open keeps
	// reading the old ones.
	version byte = 1
	// nonceSize is GCM's standard 96-bit nonce. Nonces are random, which is
	// safe for 2^32 seals under one key (NIST SP 800-38D §8.3 keeps the
	// collision chance below 2^-32 there). A secret is sealed once per
	// endpoint creation or rotation: a million endpoints each rotating
	// weekly for ten years is 5.2e8 seals, an eighth of that bound.
	nonceSize = 12
	// tagSize is GCM's full 16-byte authentication tag.
	tagSize = 16
	// Overhead is how many bytes Seal adds to a plaintext: 1 + 12 + 16 = 29.
	Overhead = 1 + nonceSize + tagSize
)

// devKeyPhrase derives the insecure development key: the key is
// sha256(devKeyPhrase), so anyone can reproduce it — which is the point of
// calling it insecure. Secrets sealed with it are as good as plaintext.
const devKeyPhrase = "sluice insecure development key"

var (
	// ErrNoKey is returned when neither a key nor the insecure development
	// flag was configured.
	ErrNoKey = errors.New("secretbox: no secrets key: set SLUICE_SECRETS_KEY to 32 random bytes in base64 " +
		"(openssl rand -base64 32) or, for development only, SLUICE_INSECURE_DEV_SECRETS_KEY=true")
	// ErrBadKey is returned when SLUICE_SECRETS_KEY is set but unusable.
	ErrBadKey = errors.New("secretbox: bad secrets key")
	// ErrCorrupt is returned by Open for anything it cannot open: too short,
	// an unknown version, or failed authentication (another key, another
	// owner, or altered bytes — GCM cannot tell these apart, by design).
	ErrCorrupt = errors.New("secretbox: sealed secret is corrupt")
)

// keyEnv names the setting in errors; operators set the environment variable
// far more often than the flag.
var keyEnv = config.EnvName("secrets-key")

// Config says where the key comes from.
type Config struct {
	// Key is 32 bytes, given base64 (std encoding) in SLUICE_SECRETS_KEY.
	// Surrounding whitespace is ignored (a key read from a file often ends
	// in a newline). When set, it is used even if InsecureDevKey is true.
	Key string
	// InsecureDevKey allows starting without Key, using a fixed, publicly
	// known development key (sha256 of "sluice insecure development key").
	// Never in production: anyone can open what it sealed.
	InsecureDevKey bool
}

// Register binds the settings to -secrets-key / SLUICE_SECRETS_KEY and
// -insecure-dev-secrets-key / SLUICE_INSECURE_DEV_SECRETS_KEY.
func (c *Config) Register(l *config.Loader) {
	l.String(&c.Key, "secrets-key", "",
		"key encrypting endpoint signing secrets at rest: 32 random bytes in standard base64 (openssl rand -base64 32)")
	l.Bool(&c.InsecureDevKey, "insecure-dev-secrets-key", false,
		"development only: without a secrets key, encrypt with a fixed, publicly known key instead of refusing to start")
}

// Validate checks that a key is configured and usable. Its errors never
// contain the key.
func (c Config) Validate() error {
	_, err := c.key()
	return err
}

// String keeps the key out of logs and error messages that print a Config.
func (c Config) String() string {
	return fmt.Sprintf("{Key:%s InsecureDevKey:%t}", redacted(c.Key), c.InsecureDevKey)
}

// GoString keeps the key out of %#v.
func (c Config) GoString() string {
	return fmt.Sprintf("secretbox.Config{Key:%q, InsecureDevKey:%t}", redacted(c.Key), c.InsecureDevKey)
}

// LogValue keeps the key out of structured logs; slog's JSON handler would
// otherwise marshal the exported Key field.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("key", redacted(c.Key)),
		slog.Bool("insecure_dev_key", c.InsecureDevKey),
	)
}

func redacted(key string) string {
	if key == "" {
		return "unset"
	}
	return "redacted"
}

// key returns the raw key and whether it is the insecure development one.
func (c Config) key() ([]byte, error) {
	s := strings.TrimSpace(c.Key)
	if s == "" {
		if !c.InsecureDevKey {
			return nil, ErrNoKey
		}
		k := sha256.Sum256([]byte(devKeyPhrase))
		return k[:], nil
	}
	k, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		// err names only the offset of the bad byte, never the key; the hint
		// covers the usual mistake of a URL-safe or hex key.
		return nil, fmt.Errorf("%w: %s is not valid standard base64 (A-Z a-z 0-9 + / and = padding): %v",
			ErrBadKey, keyEnv, err)
	}
	if len(k) != KeySize {
		return nil, fmt.Errorf("%w: %s decodes to %d bytes, want %d (openssl rand -base64 32 makes one)",
			ErrBadKey, keyEnv, len(k), KeySize)
	}
	return k, nil
}

// Box seals and opens secrets under one key. It is safe for concurrent use.
// Build it with New; the zero Box panics.
type Box struct {
	aead     cipher.AEAD
	insecure bool
	// recordKey authenticates records only Sluice writes (RecordKey).
	recordKey []byte
}

// New validates c and returns a Box for its key. The caller should warn
// loudly when Insecure reports true.
func New(c Config) (*Box, error) {
	k, err := c.key()
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, fmt.Errorf("secretbox: building AES: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("secretbox: building GCM: %w", err)
	}
	return &Box{aead: aead, insecure: strings.TrimSpace(c.Key) == "", recordKey: derive(k, recordKeyLabel)}, nil
}

// recordKeyLabel names what RecordKey is for; a different label gives an
// unrelated key.
const recordKeyLabel = "sluice record authentication v1"

// derive is HMAC-SHA256(key, label): a pseudo-random key for one purpose,
// so the sealing key itself is never used for anything but sealing (the
// HKDF-Expand step with a single block, RFC 5869 §2.3).
func derive(key []byte, label string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(label))
	m.Write([]byte{1})
	return m.Sum(nil)
}

// RecordKey is a 32-byte key derived from the secrets key, for the
// authentication of Kafka records only Sluice's own services may write
// (package eventrecord: operational events and fan-out continuations).
// Every service configured with the same secrets key derives the same one.
func (b *Box) RecordKey() []byte { return b.recordKey }

// Insecure reports whether b uses the publicly known development key.
func (b *Box) Insecure() bool { return b.insecure }

// String keeps key material out of anything that prints a Box.
func (b *Box) String() string {
	if b.insecure {
		return "secretbox.Box{key: insecure development key}"
	}
	return "secretbox.Box{key: redacted}"
}

// Seal encrypts plaintext for the owner named by aad (the endpoint id): only
// Open with the same aad and key returns it. Each call draws a fresh random
// nonce, so sealing the same secret twice gives different bytes.
func (b *Box) Seal(plaintext []byte, aad string) []byte {
	out := make([]byte, 1+nonceSize, Overhead+len(plaintext))
	out[0] = version
	// crypto/rand.Read never returns an error since Go 1.24: it crashes the
	// program instead, which is right, since a repeated nonce under GCM
	// leaks the authentication key.
	_, _ = rand.Read(out[1 : 1+nonceSize])
	return b.aead.Seal(out, out[1:1+nonceSize], plaintext, additionalData(aad))
}

// Open decrypts what Seal returned for the same aad. Any other input, of any
// length, gives an error wrapping ErrCorrupt; Open never panics.
func (b *Box) Open(sealed []byte, aad string) ([]byte, error) {
	if len(sealed) < Overhead {
		return nil, fmt.Errorf("%w: %d bytes, at least %d", ErrCorrupt, len(sealed), Overhead)
	}
	if sealed[0] != version {
		return nil, fmt.Errorf("%w: unknown version %d, want %d", ErrCorrupt, sealed[0], version)
	}
	nonce, ciphertext := sealed[1:1+nonceSize], sealed[1+nonceSize:]
	plaintext, err := b.aead.Open(nil, nonce, ciphertext, additionalData(aad))
	if err != nil {
		return nil, fmt.Errorf("%w: authentication failed (another key, another owner, or altered bytes)", ErrCorrupt)
	}
	return plaintext, nil
}

// additionalData authenticates the version byte along with the owner, so a
// future format cannot be confused with this one by changing the header. The
// owner is the only variable-length field, so no length prefix is needed.
func additionalData(aad string) []byte {
	ad := make([]byte, 0, 1+len(aad))
	ad = append(ad, version)
	return append(ad, aad...)
}
