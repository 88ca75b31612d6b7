package tlsconf_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/tlsconf"
)

// pki is a CA and certificates it signed, written as PEM files.
type pki struct {
	dir    string
	caCert *x509.Certificate
	caKey  *ecdsa.PrivateKey
	CAFile string
}

func newPKI(t *testing.T, name string) *pki {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	p := &pki{dir: t.TempDir(), caCert: cert, caKey: key}
	p.CAFile = p.write(t, "ca.pem", "CERTIFICATE", der)
	return p
}

func (p *pki) write(t *testing.T, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// leaf issues a certificate for cn (and 127.0.0.1 for a server) and writes
// it and its key to name.pem and name.key.
func (p *pki) leaf(t *testing.T, name, cn string, server bool) (certFile, keyFile string, cert tls.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
		tmpl.DNSNames = []string{"localhost"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile = p.write(t, name+".pem", "CERTIFICATE", der)
	keyFile = p.write(t, name+".key", "PRIVATE KEY", kder)
	cert, err = tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, cert
}

// registered is c as the Kafka settings, so errors name SLUICE_KAFKA_TLS_*.
func registered(t *testing.T, env map[string]string) tlsconf.Config {
	t.Helper()
	var c tlsconf.Config
	l := config.NewLoader("test", func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	c.Register(l, "kafka", "Kafka")
	if err := l.Parse(nil); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestValidate(t *testing.T) {
	p := newPKI(t, "ca")
	certFile, keyFile, _ := p.leaf(t, "client", "client", false)
	_, otherKey, _ := p.leaf(t, "other", "other", false)
	notPEM := filepath.Join(t.TempDir(), "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		desc string
		env  map[string]string
		want string // "" means valid
	}{
		{"off", nil, ""},
		{"on, system roots", map[string]string{"SLUICE_KAFKA_TLS": "true"}, ""},
		{"CA file", map[string]string{"SLUICE_KAFKA_TLS": "true", "SLUICE_KAFKA_TLS_CA_FILE": p.CAFile}, ""},
		{"mTLS pair", map[string]string{"SLUICE_KAFKA_TLS": "true", "SLUICE_KAFKA_TLS_CERT_FILE": certFile,
			"SLUICE_KAFKA_TLS_KEY_FILE": keyFile}, ""},
		{"file with TLS off", map[string]string{"SLUICE_KAFKA_TLS_CA_FILE": p.CAFile},
			"SLUICE_KAFKA_TLS_CA_FILE is set but SLUICE_KAFKA_TLS is false"},
		{"server name with TLS off", map[string]string{"SLUICE_KAFKA_TLS_SERVER_NAME": "kafka"},
			"SLUICE_KAFKA_TLS_SERVER_NAME is set but SLUICE_KAFKA_TLS is false"},
		{"cert without key", map[string]string{"SLUICE_KAFKA_TLS": "true", "SLUICE_KAFKA_TLS_CERT_FILE": certFile},
			"SLUICE_KAFKA_TLS_CERT_FILE is set without SLUICE_KAFKA_TLS_KEY_FILE"},
		{"key without cert", map[string]string{"SLUICE_KAFKA_TLS": "true", "SLUICE_KAFKA_TLS_KEY_FILE": keyFile},
			"SLUICE_KAFKA_TLS_KEY_FILE is set without SLUICE_KAFKA_TLS_CERT_FILE"},
		{"missing CA file", map[string]string{"SLUICE_KAFKA_TLS": "true", "SLUICE_KAFKA_TLS_CA_FILE": "/nonexistent/ca.pem"},
			"SLUICE_KAFKA_TLS_CA_FILE: reading the CA file: open /nonexistent/ca.pem"},
		{"CA file without PEM", map[string]string{"SLUICE_KAFKA_TLS": "true", "SLUICE_KAFKA_TLS_CA_FILE": notPEM},
			"holds no PEM certificate"},
		{"key of another certificate", map[string]string{"SLUICE_KAFKA_TLS": "true", "SLUICE_KAFKA_TLS_CERT_FILE": certFile,
			"SLUICE_KAFKA_TLS_KEY_FILE": otherKey}, "SLUICE_KAFKA_TLS_CERT_FILE and SLUICE_KAFKA_TLS_KEY_FILE: loading the client certificate"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			err := registered(t, tc.env).Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Validate() = %v, want an error saying %q", err, tc.want)
			}
		})
	}
}

func TestBuild(t *testing.T) {
	if tc, err := (tlsconf.Config{}).Build(); tc != nil || err != nil {
		t.Fatalf("TLS off: Build() = %v, %v; want nil, nil", tc, err)
	}
	p := newPKI(t, "ca")
	_, _, server := p.leaf(t, "server", "server", true)
	certFile, keyFile, first := p.leaf(t, "client", "client-1", false)
	tc, err := tlsconf.Config{Enabled: true, CAFile: p.CAFile, CertFile: certFile, KeyFile: keyFile, ServerName: "kafka.internal"}.Build()
	if err != nil {
		t.Fatal(err)
	}
	if tc.MinVersion != tls.VersionTLS12 || tc.ServerName != "kafka.internal" {
		t.Errorf("MinVersion %x, ServerName %q; want TLS 1.2 and kafka.internal", tc.MinVersion, tc.ServerName)
	}
	// The CA file is what verifies the server.
	leaf, _ := x509.ParseCertificate(server.Certificate[0])
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: tc.RootCAs, DNSName: "localhost"}); err != nil {
		t.Errorf("the server certificate does not verify against the CA file's pool: %v", err)
	}
	// The client certificate is read at each handshake: a renewed one
	// (cert-manager rewrote both files) is what the next handshake shows.
	got, err := tc.GetClientCertificate(&tls.CertificateRequestInfo{})
	if err != nil || string(got.Certificate[0]) != string(first.Certificate[0]) {
		t.Fatalf("first handshake: certificate %v (%v), want the first one", got != nil, err)
	}
	renewedCert, renewedKey, renewed := p.leaf(t, "renewed", "client-2", false)
	for from, to := range map[string]string{renewedCert: certFile, renewedKey: keyFile} {
		b, _ := os.ReadFile(from)
		if err := os.WriteFile(to, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	got, err = tc.GetClientCertificate(&tls.CertificateRequestInfo{})
	if err != nil || string(got.Certificate[0]) != string(renewed.Certificate[0]) {
		t.Fatalf("after renewal: %v; want the renewed certificate", err)
	}
}

// serve accepts one connection at a time on 127.0.0.1 and runs each
// through handle, until the test ends.
func serve(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			handle(c)
			c.Close()
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

func TestDiagnose(t *testing.T) {
	p := newPKI(t, "ca")
	other := newPKI(t, "other")
	_, _, server := p.leaf(t, "server", "server", true)
	tlsAddr := serve(t, func(c net.Conn) {
		s := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{server}})
		_ = s.SetDeadline(time.Now().Add(5 * time.Second))
		_ = s.Handshake()
	})
	plainAddr := serve(t, func(c net.Conn) {
		_, _ = c.Write([]byte("HTTP/1.0 400 Bad Request\r\n\r\n"))
	})
	dial := func(c tlsconf.Config, addr string) error {
		tc, err := c.Build()
		if err != nil {
			t.Fatal(err)
		}
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, tc)
		if err == nil {
			conn.Close()
		}
		return err
	}
	kafka := func(c tlsconf.Config) tlsconf.Config { return c.Named("kafka") }
	for _, tc := range []struct {
		desc, addr string
		cfg        tlsconf.Config
		reason     string
		check      string
	}{
		{"unknown authority", tlsAddr, kafka(tlsconf.Config{Enabled: true, CAFile: other.CAFile}),
			"certificate of " + tlsAddr + " is not signed by a trusted authority (x509: ", "SLUICE_KAFKA_TLS_CA_FILE"},
		{"wrong name", tlsAddr, kafka(tlsconf.Config{Enabled: true, CAFile: p.CAFile, ServerName: "kafka.example.com"}),
			`is not valid for the name "kafka.example.com"`, "SLUICE_KAFKA_TLS_SERVER_NAME"},
		{"plaintext port", plainAddr, kafka(tlsconf.Config{Enabled: true, CAFile: p.CAFile}),
			plainAddr + " does not speak TLS", "SLUICE_KAFKA_TLS"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			err := dial(tc.cfg, tc.addr)
			if err == nil {
				t.Fatal("the handshake succeeded")
			}
			r, ok := tc.cfg.Diagnose(err, tc.addr)
			if !ok || !strings.Contains(r.Reason, tc.reason) || !strings.Contains(tlsconf.Hint(r.Check...), tc.check) {
				t.Fatalf("Diagnose(%v) = %+v, %v; want a refusal saying %q, checking %s", err, r, ok, tc.reason, tc.check)
			}
		})
	}
	t.Run("trusted", func(t *testing.T) {
		if err := dial(kafka(tlsconf.Config{Enabled: true, CAFile: p.CAFile}), tlsAddr); err != nil {
			t.Fatalf("the dev CA's server certificate is refused: %v", err)
		}
	})
	t.Run("nothing listening is no refusal", func(t *testing.T) {
		err := dial(kafka(tlsconf.Config{Enabled: true, CAFile: p.CAFile}), "127.0.0.1:1")
		if r, ok := (tlsconf.Config{}).Diagnose(err, "127.0.0.1:1"); err == nil || ok {
			t.Fatalf("connection refused (%v) diagnosed as a refusal: %+v", err, r)
		}
	})
}
