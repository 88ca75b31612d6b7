package secretbox_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/secretbox"
)

// A typical endpoint signing secret and endpoint id.
var (
	secret   = []byte("whsec_MfKQ9r8GKYqrTwJjPBmb5JcNhJ6tYhNaEfGSXy8mBs8")
	endpoint = "ep_01J8ZK4Q0V7W3R5T6Y8U9I0O1P"
)

// keyB64 is a fixed test key: bytes 0..31.
func keyB64(n int) string {
	k := make([]byte, n)
	for i := range k {
		k[i] = byte(i)
	}
	return base64.StdEncoding.EncodeToString(k)
}

func newBox(tb testing.TB, c secretbox.Config) *secretbox.Box {
	tb.Helper()
	b, err := secretbox.New(c)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	return b
}

func testBox(tb testing.TB) *secretbox.Box {
	tb.Helper()
	return newBox(tb, secretbox.Config{Key: keyB64(secretbox.KeySize)})
}

func TestRoundTrip(t *testing.T) {
	b := testBox(t)
	for name, plaintext := range map[string][]byte{
		"signing secret": secret,
		"empty":          {},
		"one byte":       {0},
		"binary 4 KiB":   bytes.Repeat([]byte{0xff, 0x00, 0x7f}, 4096/3),
	} {
		t.Run(name, func(t *testing.T) {
			sealed := b.Seal(plaintext, endpoint)
			if got, want := len(sealed), len(plaintext)+secretbox.Overhead; got != want {
				t.Errorf("sealed is %d bytes, want %d", got, want)
			}
			if sealed[0] != 1 {
				t.Errorf("version byte %d, want 1", sealed[0])
			}
			got, err := b.Open(sealed, endpoint)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if !bytes.Equal(got, plaintext) {
				t.Fatalf("Open = %q, want %q", got, plaintext)
			}
		})
	}
}

func TestSealDoesNotAliasPlaintext(t *testing.T) {
	b := testBox(t)
	p := append([]byte(nil), secret...)
	sealed := b.Seal(p, endpoint)
	p[0] ^= 0xff
	got, err := b.Open(sealed, endpoint)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("changing the plaintext after Seal changed what opens: %q, %v", got, err)
	}
}

func TestEachSealDiffers(t *testing.T) {
	b := testBox(t)
	seen := map[string]bool{}
	for range 1000 {
		s := b.Seal(secret, endpoint)
		nonce := string(s[1:13])
		if seen[nonce] {
			t.Fatalf("nonce %x repeated", nonce)
		}
		seen[nonce] = true
	}
	if x, y := b.Seal(secret, endpoint), b.Seal(secret, endpoint); bytes.Equal(x, y) {
		t.Fatal("two seals of the same plaintext are equal")
	}
}

func TestPlaintextNotInSealed(t *testing.T) {
	b := testBox(t)
	sealed := b.Seal(secret, endpoint)
	if bytes.Contains(sealed, secret) {
		t.Fatal("sealed bytes contain the plaintext")
	}
	// No 8-byte run of the secret survives either.
	for i := 0; i+8 <= len(secret); i++ {
		if bytes.Contains(sealed, secret[i:i+8]) {
			t.Fatalf("sealed bytes contain plaintext bytes %d..%d", i, i+8)
		}
	}
	if bytes.Contains(sealed, []byte(endpoint)) {
		t.Fatal("sealed bytes contain the aad; it is authenticated, not stored")
	}
}

func TestWrongAADFails(t *testing.T) {
	b := testBox(t)
	sealed := b.Seal(secret, endpoint)
	for name, aad := range map[string]string{
		"another endpoint": "ep_01J8ZK4Q0V7W3R5T6Y8U9I0O1Q",
		"empty":            "",
		"prefix":           endpoint[:len(endpoint)-1],
		"extended":         endpoint + "x",
		"case changed":     strings.ToUpper(endpoint),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := b.Open(sealed, aad); !errors.Is(err, secretbox.ErrCorrupt) {
				t.Fatalf("Open with aad %q: %v, want ErrCorrupt", aad, err)
			}
		})
	}
}

func TestEmptyAADRoundTrips(t *testing.T) {
	b := testBox(t)
	got, err := b.Open(b.Seal(secret, ""), "")
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("Open = %q, %v", got, err)
	}
}

func TestFlippedBitFails(t *testing.T) {
	b := testBox(t)
	sealed := b.Seal(secret, endpoint)
	for i := range len(sealed) * 8 {
		c := append([]byte(nil), sealed...)
		c[i/8] ^= 1 << (i % 8)
		if p, err := b.Open(c, endpoint); !errors.Is(err, secretbox.ErrCorrupt) {
			t.Fatalf("bit %d (byte %d) flipped: Open = %q, %v; want ErrCorrupt", i, i/8, p, err)
		}
	}
}

func TestTruncatedFails(t *testing.T) {
	b := testBox(t)
	sealed := b.Seal(secret, endpoint)
	for n := range len(sealed) {
		for name, in := range map[string][]byte{
			"prefix": sealed[:n],
			"suffix": sealed[len(sealed)-n:],
		} {
			if p, err := b.Open(in, endpoint); !errors.Is(err, secretbox.ErrCorrupt) {
				t.Fatalf("%s of %d bytes: Open = %q, %v; want ErrCorrupt", name, n, p, err)
			}
		}
	}
	if _, err := b.Open(nil, endpoint); !errors.Is(err, secretbox.ErrCorrupt) {
		t.Fatalf("nil: %v, want ErrCorrupt", err)
	}
	if _, err := b.Open(append(sealed, 0), endpoint); !errors.Is(err, secretbox.ErrCorrupt) {
		t.Fatalf("one byte appended: %v, want ErrCorrupt", err)
	}
}

func TestUnknownVersion(t *testing.T) {
	b := testBox(t)
	sealed := b.Seal(secret, endpoint)
	for _, v := range []byte{0, 2, 255} {
		c := append([]byte(nil), sealed...)
		c[0] = v
		_, err := b.Open(c, endpoint)
		if !errors.Is(err, secretbox.ErrCorrupt) || !strings.Contains(err.Error(), fmt.Sprintf("unknown version %d", v)) {
			t.Fatalf("version %d: %v, want ErrCorrupt naming the version", v, err)
		}
	}
}

func TestOtherKeyCannotOpen(t *testing.T) {
	a := testBox(t)
	other := make([]byte, secretbox.KeySize)
	other[31] = 1 // one bit away from nothing in particular; any other key
	b := newBox(t, secretbox.Config{Key: base64.StdEncoding.EncodeToString(other)})
	dev := newBox(t, secretbox.Config{InsecureDevKey: true})
	sealed := a.Seal(secret, endpoint)
	for name, box := range map[string]*secretbox.Box{"other key": b, "dev key": dev} {
		if p, err := box.Open(sealed, endpoint); !errors.Is(err, secretbox.ErrCorrupt) {
			t.Errorf("%s: Open = %q, %v; want ErrCorrupt", name, p, err)
		}
	}
}

func TestSameKeyOtherBoxOpens(t *testing.T) {
	sealed := testBox(t).Seal(secret, endpoint)
	got, err := testBox(t).Open(sealed, endpoint)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("a second Box with the same key: Open = %q, %v", got, err)
	}
}

// The development key is documented as sha256("sluice insecure development
// key"); a box given that key explicitly must interoperate with the dev box,
// so anything sealed in development can be opened by hand.
func TestInsecureDevKeyIsReproducible(t *testing.T) {
	dev := newBox(t, secretbox.Config{InsecureDevKey: true})
	if !dev.Insecure() {
		t.Fatal("dev box does not report Insecure")
	}
	k := sha256.Sum256([]byte("sluice insecure development key"))
	explicit := newBox(t, secretbox.Config{Key: base64.StdEncoding.EncodeToString(k[:])})
	if explicit.Insecure() {
		t.Fatal("a box with an explicit key reports Insecure")
	}
	got, err := explicit.Open(dev.Seal(secret, endpoint), endpoint)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("explicit dev key cannot open what the dev box sealed: %q, %v", got, err)
	}
}

func TestValidate(t *testing.T) {
	key32 := keyB64(32)
	for name, tc := range map[string]struct {
		c        secretbox.Config
		wantErr  error  // nil: valid
		wantMsg  string // fragment of the message
		insecure bool
	}{
		"no key": {
			c: secretbox.Config{}, wantErr: secretbox.ErrNoKey,
			wantMsg: "SLUICE_INSECURE_DEV_SECRETS_KEY=true",
		},
		"whitespace key": {
			c: secretbox.Config{Key: " \n"}, wantErr: secretbox.ErrNoKey,
			wantMsg: "set SLUICE_SECRETS_KEY",
		},
		"bad base64": {
			c: secretbox.Config{Key: "not*base64!"}, wantErr: secretbox.ErrBadKey,
			wantMsg: "SLUICE_SECRETS_KEY is not valid standard base64",
		},
		"url-safe base64": {
			c:       secretbox.Config{Key: strings.NewReplacer("+", "-", "/", "_").Replace(base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0xfb, 0xff}, 16)))},
			wantErr: secretbox.ErrBadKey, wantMsg: "not valid standard base64",
		},
		"16-byte key": {
			c: secretbox.Config{Key: keyB64(16)}, wantErr: secretbox.ErrBadKey,
			wantMsg: "SLUICE_SECRETS_KEY decodes to 16 bytes, want 32",
		},
		"33-byte key": {
			c: secretbox.Config{Key: keyB64(33)}, wantErr: secretbox.ErrBadKey,
			wantMsg: "decodes to 33 bytes, want 32",
		},
		"bad key with insecure flag still fails": {
			c: secretbox.Config{Key: keyB64(16), InsecureDevKey: true}, wantErr: secretbox.ErrBadKey,
			wantMsg: "decodes to 16 bytes",
		},
		"32-byte key":                     {c: secretbox.Config{Key: key32}},
		"32-byte key with newline":        {c: secretbox.Config{Key: key32 + "\n"}},
		"insecure flag":                   {c: secretbox.Config{InsecureDevKey: true}, insecure: true},
		"key wins over the insecure flag": {c: secretbox.Config{Key: key32, InsecureDevKey: true}},
	} {
		t.Run(name, func(t *testing.T) {
			err := tc.c.Validate()
			if tc.wantErr == nil {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				b, err := secretbox.New(tc.c)
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				if b.Insecure() != tc.insecure {
					t.Fatalf("Insecure() = %t, want %t", b.Insecure(), tc.insecure)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Validate = %v, want %v", err, tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("Validate = %q, want it to contain %q", err, tc.wantMsg)
			}
			if k := strings.TrimSpace(tc.c.Key); k != "" && strings.Contains(err.Error(), k) {
				t.Fatalf("error %q prints the key", err)
			}
			if b, err2 := secretbox.New(tc.c); b != nil || !errors.Is(err2, tc.wantErr) {
				t.Fatalf("New = %v, %v; want nil, %v", b, err2, tc.wantErr)
			}
		})
	}
}

func TestKeyNotPrinted(t *testing.T) {
	c := secretbox.Config{Key: keyB64(32)}
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("starting", "secrets", c)
	b := newBox(t, c)
	for name, out := range map[string]string{
		"%v":         fmt.Sprintf("%v", c),
		"%+v":        fmt.Sprintf("%+v", c),
		"String":     c.String(),
		"%#v":        fmt.Sprintf("%#v", c),
		"pointer %v": fmt.Sprintf("%v", &c),
		"slog JSON":  logged.String(),
		"box %v":     fmt.Sprintf("%v", b),
		"box %+v":    fmt.Sprintf("%+v", b),
	} {
		if strings.Contains(out, c.Key) || strings.Contains(out, c.Key[:8]) {
			t.Errorf("%s prints the key: %s", name, out)
		}
	}
	if !strings.Contains(logged.String(), `"key":"redacted"`) {
		t.Errorf("slog output %s does not say the key is redacted", logged.String())
	}
}

func TestRegister(t *testing.T) {
	for name, tc := range map[string]struct {
		env  map[string]string
		args []string
		want secretbox.Config
	}{
		"defaults": {want: secretbox.Config{}},
		"environment": {
			env:  map[string]string{"SLUICE_SECRETS_KEY": "abc=", "SLUICE_INSECURE_DEV_SECRETS_KEY": "true"},
			want: secretbox.Config{Key: "abc=", InsecureDevKey: true},
		},
		"flags": {
			args: []string{"-secrets-key", "xyz=", "-insecure-dev-secrets-key"},
			want: secretbox.Config{Key: "xyz=", InsecureDevKey: true},
		},
	} {
		t.Run(name, func(t *testing.T) {
			l := config.NewLoader("test", func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok })
			var c secretbox.Config
			c.Register(l)
			if err := l.Parse(tc.args); err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if c != tc.want {
				t.Fatalf("got Key %q InsecureDevKey %t, want Key %q InsecureDevKey %t",
					c.Key, c.InsecureDevKey, tc.want.Key, tc.want.InsecureDevKey)
			}
		})
	}

	l := config.NewLoader("test", func(string) (string, bool) { return "", false })
	var c secretbox.Config
	c.Register(l)
	knobs := map[string]config.Knob{}
	for _, k := range l.Knobs() {
		knobs[k.Flag] = k
	}
	for flag, want := range map[string]struct{ env, def string }{
		"secrets-key":              {"SLUICE_SECRETS_KEY", ""},
		"insecure-dev-secrets-key": {"SLUICE_INSECURE_DEV_SECRETS_KEY", "false"},
	} {
		k, ok := knobs[flag]
		if !ok {
			t.Fatalf("flag -%s not registered", flag)
		}
		if k.Env != want.env || k.Default != want.def || k.Usage == "" {
			t.Errorf("-%s: %+v, want env %s, default %q and a usage", flag, k, want.env, want.def)
		}
	}
}

// golden are values sealed once by testBox's key (bytes 0..31). Open must
// keep reading them: a secret sealed by an old release is still in the
// database after an upgrade. They are also FuzzOpen's seeds, which must be
// fixed bytes because every fuzz worker process runs the setup afresh and
// Seal's nonces are random.
var golden = []struct {
	sealed    string // hex
	aad       string
	plaintext []byte
}{
	{
		"01a637cc53073b923e150b3aee041080663594f09974bdf086e01280a95b401e3f9c2517ca17bf2f110d23c9e1766247819e54357c101f20eed79b356f2c0af137a1b1024b65649b04298a44f922",
		endpoint, secret,
	},
	{"01e45a5e387591fae4ba1c8f8fb485f6992f8188a3769c9339cdf8f144", "", nil},
	{"01bb4b69b4085b14c5f3d32cbd0086bd567363eb57fb735c4ecc60327fec", "ep_1", []byte("x")},
}

func goldenSealed(tb testing.TB, i int) []byte {
	tb.Helper()
	b, err := hex.DecodeString(golden[i].sealed)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func TestGoldenOpens(t *testing.T) {
	b := testBox(t)
	for i, g := range golden {
		p, err := b.Open(goldenSealed(t, i), g.aad)
		if err != nil || !bytes.Equal(p, g.plaintext) {
			t.Errorf("golden %d: Open = %q, %v; want %q", i, p, err, g.plaintext)
		}
	}
}

// FuzzOpen feeds Open arbitrary bytes and owners. It must never panic or
// modify its input, every error must be ErrCorrupt, and the only inputs it
// may accept are the golden seals: accepting anything else would be a
// forgery.
func FuzzOpen(f *testing.F) {
	b := testBox(f)
	for i, g := range golden {
		f.Add(goldenSealed(f, i), g.aad)
	}
	f.Add([]byte{}, "")
	f.Add([]byte{1}, endpoint)
	f.Add(bytes.Repeat([]byte{1}, secretbox.Overhead), endpoint)
	f.Add(bytes.Repeat([]byte{0}, 64), "")
	f.Fuzz(func(t *testing.T, sealed []byte, aad string) {
		in := append([]byte(nil), sealed...)
		p, err := b.Open(sealed, aad)
		if !bytes.Equal(in, sealed) {
			t.Fatal("Open modified its input")
		}
		if err != nil {
			if !errors.Is(err, secretbox.ErrCorrupt) || p != nil {
				t.Fatalf("Open = %q, %v; want nil and ErrCorrupt", p, err)
			}
			return
		}
		for i, g := range golden {
			if bytes.Equal(goldenSealed(t, i), sealed) && g.aad == aad {
				if !bytes.Equal(p, g.plaintext) {
					t.Fatalf("Open of golden %d = %q, want %q", i, p, g.plaintext)
				}
				return
			}
		}
		t.Fatalf("Open accepted %x with aad %q, which Seal never produced", sealed, aad)
	})
}

func BenchmarkSeal(b *testing.B) {
	box := testBox(b)
	b.ReportAllocs()
	b.SetBytes(int64(len(secret)))
	for b.Loop() {
		_ = box.Seal(secret, endpoint)
	}
}

func BenchmarkOpen(b *testing.B) {
	box := testBox(b)
	sealed := box.Seal(secret, endpoint)
	b.ReportAllocs()
	b.SetBytes(int64(len(secret)))
	for b.Loop() {
		if _, err := box.Open(sealed, endpoint); err != nil {
			b.Fatal(err)
		}
	}
}
