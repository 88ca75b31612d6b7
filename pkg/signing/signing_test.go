package signing_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/sluicehq/sluice/pkg/signing"
)

// The Standard Webhooks example, taken from TestWebhookSign in the reference
// Go library, github.com/standard-webhooks/standard-webhooks/libraries@v0.0.1
// go/webhook_test.go (the same values appear in the spec's other language
// libraries). Its key is 24 bytes, the smallest we accept.
const (
	specSecret    = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	specMsgID     = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	specTimestamp = 1614265330
	specBody      = `{"test": 2432232314}`
	specSignature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

// Our own vector, computed once with crypto/hmac in TestVectorByHand (and
// separately with Python's hmac module) and frozen here, so that any change
// in what we sign fails. Two keys: a rotation, current key first.
const (
	// Keys of bytes 0 to 31 and 100 to 147.
	handCurrent   = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	handPrevious  = "whsec_ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoOEhYaHiImKi4yNjo+QkZKT"
	handMsgID     = "msg_2Lq7Xh0V8YcKzP1wQ3rT"
	handTimestamp = 1700000000
	handBody      = `{"type":"invoice.paid","data":{"id":42}}`
	handSignature = "v1,beQlrPlTMfHhcK6rtTkXfvBa2Sd0Cc3EWt2fZPHHjEE= v1,Ah45cMR/Q6NXj/6JMlPqIeaqaEDwezTpAe213BJwpts="
)

func TestVectors(t *testing.T) {
	tests := []struct {
		desc      string
		secrets   []string
		msgID     string
		timestamp int64
		body      string
		want      string
	}{
		{"Standard Webhooks example", []string{specSecret}, specMsgID, specTimestamp, specBody, specSignature},
		{"rotation, computed by hand", []string{handCurrent, handPrevious}, handMsgID, handTimestamp, handBody, handSignature},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			keys := parseAll(t, tt.secrets...)
			got := signing.NewSigner(keys...).AppendSignature(nil, tt.msgID, tt.timestamp, []byte(tt.body))
			if string(got) != tt.want {
				t.Errorf("AppendSignature = %q, want %q", got, tt.want)
			}
			if err := signing.Verify(tt.want, keys, tt.msgID, tt.timestamp, []byte(tt.body)); err != nil {
				t.Errorf("Verify: %v", err)
			}
		})
	}
}

// TestVectorByHand recomputes handSignature from the spec's wording, without
// the package, so that a wrong constant cannot hide a wrong implementation.
func TestVectorByHand(t *testing.T) {
	var sigs []string
	for _, secret := range []string{handCurrent, handPrevious} {
		key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
		if err != nil {
			t.Fatal(err)
		}
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte(handMsgID + "." + strconv.Itoa(handTimestamp) + "." + handBody))
		sigs = append(sigs, "v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	}
	if got := strings.Join(sigs, " "); got != handSignature {
		t.Fatalf("by hand: %q, constant: %q", got, handSignature)
	}
}

// TestLibraryVerifiesOurs checks our signatures with the reference library,
// which also checks that the timestamp is within 5 minutes of now.
func TestLibraryVerifiesOurs(t *testing.T) {
	current, previous, other := signing.NewKey(), signing.NewKey(), signing.NewKey()
	tests := []struct {
		desc       string
		signWith   [][]byte
		verifyWith []byte
		wantOK     bool
	}{
		{"one key", [][]byte{current}, current, true},
		{"rotation, receiver has the current secret", [][]byte{current, previous}, current, true},
		{"rotation, receiver still has the previous secret", [][]byte{current, previous}, previous, true},
		{"receiver has another secret", [][]byte{current, previous}, other, false},
	}
	body := []byte(`{"type":"endpoint.test"}`)
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			now := time.Now().Unix()
			sig := signing.NewSigner(tt.signWith...).AppendSignature(nil, "msg_1", now, body)
			err := libVerifier(t, tt.verifyWith).Verify(body, libHeader("msg_1", now, string(sig)))
			if (err == nil) != tt.wantOK {
				t.Errorf("library Verify(%q) = %v, want ok %v", sig, err, tt.wantOK)
			}
		})
	}

	t.Run("random ids and bodies", func(t *testing.T) {
		seed := uint64(time.Now().UnixNano())
		rng := rand.New(rand.NewPCG(seed, 0))
		s := signing.NewSigner(current, previous)
		libCurrent, libPrevious := libVerifier(t, current), libVerifier(t, previous)
		var sig []byte
		for range 200 {
			id, body := randomID(rng), randomBytes(rng, rng.IntN(4096))
			now := time.Now().Unix()
			sig = s.AppendSignature(sig[:0], id, now, body)
			h := libHeader(id, now, string(sig))
			for name, wh := range map[string]*standardwebhooks.Webhook{"current": libCurrent, "previous": libPrevious} {
				if err := wh.Verify(body, h); err != nil {
					t.Fatalf("seed %d: library with %s secret refuses id %q, %d-byte body: %v", seed, name, id, len(body), err)
				}
			}
		}
	})
}

// TestWeVerifyLibrary checks the reverse: the library's signatures pass Verify.
func TestWeVerifyLibrary(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 1))
	key := signing.NewKey()
	wh := libVerifier(t, key)
	for range 200 {
		id, body := randomID(rng), randomBytes(rng, rng.IntN(4096))
		ts := time.Unix(rng.Int64N(4e9), 0)
		sig, err := wh.Sign(id, ts, body)
		if err != nil {
			t.Fatal(err)
		}
		if err := signing.Verify(sig, [][]byte{signing.NewKey(), key}, id, ts.Unix(), body); err != nil {
			t.Fatalf("seed %d: Verify(%q) of library signature for id %q, %d-byte body: %v", seed, sig, id, len(body), err)
		}
	}
}

func TestParseSecret(t *testing.T) {
	b64 := func(n int) string { return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0xa5}, n)) }
	tests := []struct {
		desc    string
		in      string
		wantLen int // 0: refused
	}{
		{"24 bytes", "whsec_" + b64(24), 24},
		{"32 bytes", "whsec_" + b64(32), 32},
		{"64 bytes", "whsec_" + b64(64), 64},
		{"spec example", specSecret, 24},
		{"missing prefix", b64(32), 0},
		{"prefix in upper case", "WHSEC_" + b64(32), 0},
		{"bad base64", "whsec_!!!!" + b64(32), 0},
		{"url-safe base64", "whsec_" + base64.URLEncoding.EncodeToString(bytes.Repeat([]byte{0xfb}, 32)), 0},
		{"unpadded base64", "whsec_" + strings.TrimRight(b64(32), "="), 0},
		{"non-zero padding bits", "whsec_" + b64(32)[:42] + "B=", 0}, // 'B' sets one of the 2 unused low bits
		{"line break in base64", "whsec_" + b64(32)[:20] + "\n" + b64(32)[20:], 0},
		{"23 bytes", "whsec_" + b64(23), 0},
		{"65 bytes", "whsec_" + b64(65), 0},
		{"prefix only", "whsec_", 0},
		{"empty", "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			key, err := signing.ParseSecret(tt.in)
			if tt.wantLen == 0 {
				if err == nil {
					t.Fatalf("ParseSecret accepted %q", tt.in)
				}
				wantSafeError(t, err, tt.in)
				return
			}
			if err != nil {
				t.Fatalf("ParseSecret: %v", err)
			}
			if len(key) != tt.wantLen {
				t.Errorf("key is %d bytes, want %d", len(key), tt.wantLen)
			}
			if got := signing.FormatSecret(key); got != tt.in {
				t.Errorf("FormatSecret(ParseSecret(s)) = %q, want s = %q", got, tt.in)
			}
		})
	}
}

func TestNewKey(t *testing.T) {
	a, b := signing.NewKey(), signing.NewKey()
	if len(a) != 32 || bytes.Equal(a, b) {
		t.Fatalf("NewKey gave %x then %x; want two different 32-byte keys", a, b)
	}
	if key, err := signing.ParseSecret(signing.FormatSecret(a)); err != nil || !bytes.Equal(key, a) {
		t.Fatalf("ParseSecret(FormatSecret(key)) = %x, %v", key, err)
	}
}

func TestVerify(t *testing.T) {
	key, previous, other := signing.NewKey(), signing.NewKey(), signing.NewKey()
	body := []byte(`{"n":1}`)
	const id, ts = "msg_1", int64(1700000000)
	good := string(signing.NewSigner(key).AppendSignature(nil, id, ts, body))
	otherSig := string(signing.NewSigner(other).AppendSignature(nil, id, ts, body))
	goodB64 := strings.TrimPrefix(good, "v1,")

	tests := []struct {
		desc    string
		header  string
		keys    [][]byte
		msgID   string
		ts      int64
		body    string
		wantErr error // nil: accepted
	}{
		{"valid", good, [][]byte{key}, id, ts, string(body), nil},
		{"valid under the second key", good, [][]byte{previous, key}, id, ts, string(body), nil},
		{"valid as the second entry", otherSig + " " + good, [][]byte{key}, id, ts, string(body), nil},
		{"valid after other versions", "v1a,xyz v2," + goodB64 + " " + good, [][]byte{key}, id, ts, string(body), nil},
		{"valid with doubled spaces", otherSig + "  " + good + " ", [][]byte{key}, id, ts, string(body), nil},
		{"wrong key", good, [][]byte{other}, id, ts, string(body), signing.ErrNoMatch},
		{"altered body", good, [][]byte{key}, id, ts, `{"n":2}`, signing.ErrNoMatch},
		{"empty body", good, [][]byte{key}, id, ts, "", signing.ErrNoMatch},
		{"altered id", good, [][]byte{key}, "msg_2", ts, string(body), signing.ErrNoMatch},
		{"altered timestamp", good, [][]byte{key}, id, ts + 1, string(body), signing.ErrNoMatch},
		{"malformed base64", "v1,!!!!" + goodB64[4:], [][]byte{key}, id, ts, string(body), signing.ErrNoMatch},
		{"truncated signature", good[:len(good)-2], [][]byte{key}, id, ts, string(body), signing.ErrNoMatch},
		{"signature with trailing data", good + "AAAA", [][]byte{key}, id, ts, string(body), signing.ErrNoMatch},
		{"v1 with nothing after", "v1,", [][]byte{key}, id, ts, string(body), signing.ErrNoMatch},
		{"version in upper case", "V1," + goodB64, [][]byte{key}, id, ts, string(body), signing.ErrNoSignature},
		{"v2 only", "v2," + goodB64, [][]byte{key}, id, ts, string(body), signing.ErrNoSignature},
		{"no version", goodB64, [][]byte{key}, id, ts, string(body), signing.ErrNoSignature},
		{"empty header", "", [][]byte{key}, id, ts, string(body), signing.ErrNoSignature},
		{"spaces only", "   ", [][]byte{key}, id, ts, string(body), signing.ErrNoSignature},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			err := signing.Verify(tt.header, tt.keys, tt.msgID, tt.ts, []byte(tt.body))
			if tt.wantErr == nil && err != nil {
				t.Fatalf("Verify refused %q: %v", tt.header, err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("Verify(%q) = %v, want %v", tt.header, err, tt.wantErr)
			}
		})
	}

	t.Run("no keys", func(t *testing.T) {
		if err := signing.Verify(good, nil, id, ts, body); err == nil {
			t.Fatal("Verify with no keys accepted a signature")
		}
	})
}

func TestAppendSignature(t *testing.T) {
	current, previous := signing.NewKey(), signing.NewKey()
	s := signing.NewSigner(current, previous)
	one := signing.NewSigner(current)
	sigOf := func(s *signing.Signer, id string, body string) string {
		return string(s.AppendSignature(nil, id, 1700000000, []byte(body)))
	}

	t.Run("appends to dst", func(t *testing.T) {
		got := s.AppendSignature([]byte("header: "), "msg_1", 1700000000, []byte("b"))
		if want := "header: " + sigOf(s, "msg_1", "b"); string(got) != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	})
	t.Run("current key first", func(t *testing.T) {
		both := sigOf(s, "msg_1", "b")
		if first, _, _ := strings.Cut(both, " "); first != sigOf(one, "msg_1", "b") {
			t.Fatalf("first entry of %q is not the current key's", both)
		}
	})
	t.Run("reuse gives the same signatures", func(t *testing.T) {
		// A long message then a short one: nothing of the first may leak
		// into the second through the reused buffers.
		longID, longBody := "msg_"+strings.Repeat("L", 60), strings.Repeat("x", 5000)
		long, short := sigOf(s, longID, longBody), sigOf(s, "m", "y")
		if long != sigOf(signing.NewSigner(current, previous), longID, longBody) ||
			short != sigOf(signing.NewSigner(current, previous), "m", "y") {
			t.Fatal("a reused Signer signs differently from a new one")
		}
	})
	t.Run("no keys", func(t *testing.T) {
		if got := signing.NewSigner().AppendSignature([]byte("x"), "msg_1", 1, nil); string(got) != "x" {
			t.Fatalf("got %q, want dst unchanged", got)
		}
	})
}

// keyCounts are the Signers a sender has: one key, or two during a rotation.
var keyCounts = []struct {
	desc string
	keys int
}{{"one key", 1}, {"two keys", 2}}

// TestAppendSignatureAllocs holds the hot path of every delivery to zero
// allocations: the sender signs each request.
func TestAppendSignatureAllocs(t *testing.T) {
	body := randomBytes(rand.New(rand.NewPCG(1, 2)), 1024)
	for _, tc := range keyCounts {
		t.Run(tc.desc, func(t *testing.T) {
			s := signing.NewSigner(newKeys(tc.keys)...)
			dst := make([]byte, 0, 256)
			ts := int64(1700000000)
			allocs := testing.AllocsPerRun(100, func() {
				ts++
				dst = s.AppendSignature(dst[:0], "msg_2Lq7Xh0V8YcKzP1wQ3rT", ts, body)
			})
			if allocs != 0 {
				t.Fatalf("AppendSignature made %v allocations, want 0", allocs)
			}
		})
	}
}

func BenchmarkAppendSignature(b *testing.B) {
	body := randomBytes(rand.New(rand.NewPCG(1, 2)), 1024)
	for _, tc := range keyCounts {
		b.Run(tc.desc, func(b *testing.B) {
			s := signing.NewSigner(newKeys(tc.keys)...)
			dst := make([]byte, 0, 256)
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				dst = s.AppendSignature(dst[:0], "msg_2Lq7Xh0V8YcKzP1wQ3rT", 1700000000, body)
			}
		})
	}
}

// FuzzVerify feeds Verify headers as a receiver or a proxy might mangle them.
// It must never panic, and never refuse a signature we made.
func FuzzVerify(f *testing.F) {
	keys := parseAll(f, handCurrent, handPrevious)
	f.Add(handSignature, handMsgID, int64(handTimestamp), []byte(handBody))
	f.Add(specSignature, specMsgID, int64(specTimestamp), []byte(specBody))
	f.Add("", "", int64(0), []byte(nil))
	f.Add("v1,", "msg", int64(-1), []byte("x"))
	f.Add("v1a,abc v2,def v1,===", "msg", int64(1), []byte("{}"))
	f.Add("  v1,"+strings.Repeat("A", 44)+"  ", "msg.1", int64(1<<62), []byte("."))
	s := signing.NewSigner(keys...)
	f.Fuzz(func(t *testing.T, header, msgID string, ts int64, body []byte) {
		_ = signing.Verify(header, keys, msgID, ts, body)
		ours := s.AppendSignature(nil, msgID, ts, body)
		if err := signing.Verify(string(ours), keys[1:], msgID, ts, body); err != nil {
			t.Fatalf("Verify refused our own %q: %v", ours, err)
		}
		if err := signing.Verify(header+" "+string(ours), keys[:1], msgID, ts, body); err != nil {
			t.Fatalf("Verify refused our %q after %q: %v", ours, header, err)
		}
	})
}

// FuzzParseSecret: ParseSecret reads secrets from API callers. It must never
// panic, accept only keys in range with one spelling each, and never repeat
// the input in its error.
func FuzzParseSecret(f *testing.F) {
	for _, s := range []string{specSecret, handCurrent, handPrevious, "", "whsec_", "whsec_!!!!", "whsec_====", "whsec_\n", strings.TrimPrefix(specSecret, "whsec_")} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		key, err := signing.ParseSecret(s)
		if err != nil {
			wantSafeError(t, err, s)
			return
		}
		if len(key) < signing.MinKeyBytes || len(key) > signing.MaxKeyBytes {
			t.Fatalf("accepted a %d-byte key", len(key))
		}
		if got := signing.FormatSecret(key); got != s {
			t.Fatalf("accepted %q, which is not how its key is written (%q)", s, got)
		}
	})
}

// wantSafeError checks err is ParseSecret's refusal and does not repeat
// secret, which may be real.
func wantSafeError(tb testing.TB, err error, secret string) {
	tb.Helper()
	const want = "must be whsec_ followed by base64 of 24 to 64 bytes"
	if err.Error() != want {
		tb.Fatalf("error %q, want %q", err, want)
	}
	// Inputs such as "whsec" or "64" occur in the fixed message itself.
	if !strings.Contains(want, secret) && strings.Contains(err.Error(), secret) {
		tb.Fatalf("error %q repeats the secret", err)
	}
}

func parseAll(tb testing.TB, secrets ...string) [][]byte {
	tb.Helper()
	keys := make([][]byte, len(secrets))
	for i, s := range secrets {
		key, err := signing.ParseSecret(s)
		if err != nil {
			tb.Fatalf("secret %d: %v", i, err)
		}
		keys[i] = key
	}
	return keys
}

func newKeys(n int) [][]byte {
	keys := make([][]byte, n)
	for i := range keys {
		keys[i] = signing.NewKey()
	}
	return keys
}

// libVerifier returns the reference library's verifier for key, built from
// the secret as a receiver would be given it.
func libVerifier(tb testing.TB, key []byte) *standardwebhooks.Webhook {
	tb.Helper()
	wh, err := standardwebhooks.NewWebhook(signing.FormatSecret(key))
	if err != nil {
		tb.Fatal(err)
	}
	return wh
}

func libHeader(msgID string, timestamp int64, signature string) http.Header {
	h := http.Header{}
	h.Set(standardwebhooks.HeaderWebhookID, msgID)
	h.Set(standardwebhooks.HeaderWebhookTimestamp, strconv.FormatInt(timestamp, 10))
	h.Set(standardwebhooks.HeaderWebhookSignature, signature)
	return h
}

// randomID returns an id like Sluice's: a prefix and letters, digits, _ and -.
func randomID(rng *rand.Rand) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
	b := []byte("msg_")
	for range 1 + rng.IntN(40) {
		b = append(b, alphabet[rng.IntN(len(alphabet))])
	}
	return string(b)
}

func randomBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}
