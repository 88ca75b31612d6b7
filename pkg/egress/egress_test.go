package egress_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/sluicehq/sluice/pkg/egress"
)

// The sender plugs the guard into fasthttp and the standard resolver into
// the guard; these fail to compile if a signature drifts.
var (
	_ fasthttp.DialFuncWithTimeout = (*egress.Guard)(nil).DialTimeout
	_ fasthttp.DialFunc            = (*egress.Guard)(nil).Dial
	_ egress.Resolver              = net.DefaultResolver
)

func TestCheckDefault(t *testing.T) {
	for _, tc := range []struct {
		desc       string
		addr       string
		refused    bool
		wantReason string // a substring of BlockedError.Reason
	}{
		{"IPv4 loopback", "127.0.0.1", true, "loopback"},
		{"IPv4 loopback, not the usual address", "127.255.0.1", true, "loopback"},
		{"private 10/8", "10.0.0.1", true, "private"},
		{"private 172.16/12", "172.16.5.4", true, "private"},
		{"private 192.168/16", "192.168.1.1", true, "private"},
		{"AWS/GCP/Azure metadata", "169.254.169.254", true, "cloud metadata"},
		{"AWS ECS task metadata", "169.254.170.2", true, "cloud metadata"},
		{"Alibaba metadata", "100.100.100.200", true, "cloud metadata"},
		{"Oracle metadata", "192.0.0.192", true, "cloud metadata"},
		{"Azure WireServer", "168.63.129.16", true, "cloud metadata"},
		{"IPv4 link-local", "169.254.1.1", true, "link-local"},
		{"carrier-grade NAT", "100.64.0.1", true, "carrier-grade NAT"},
		{"IPv4 unspecified", "0.0.0.0", true, "unspecified"},
		{"this network", "0.1.2.3", true, "this network"},
		{"IPv4 multicast", "224.0.0.1", true, "multicast"},
		{"broadcast", "255.255.255.255", true, "broadcast"},
		{"reserved 240/4", "240.0.0.1", true, "reserved"},
		{"IETF protocol assignments", "192.0.0.8", true, "IETF protocol assignment"},
		{"benchmarking", "198.18.0.1", true, "benchmarking"},
		{"IPv6 loopback", "::1", true, "loopback"},
		{"IPv6 unspecified", "::", true, "unspecified"},
		{"IPv4-mapped loopback", "::ffff:127.0.0.1", true, "IPv4-mapped address of 127.0.0.1, a loopback"},
		{"IPv4-mapped private", "::ffff:10.0.0.1", true, "private"},
		{"IPv4-mapped metadata", "::ffff:169.254.169.254", true, "cloud metadata"},
		{"IPv4-compatible loopback", "::127.0.0.1", true, "IPv4-compatible address of 127.0.0.1, a loopback"},
		{"NAT64 of metadata", "64:ff9b::a9fe:a9fe", true, "NAT64 address of 169.254.169.254, a cloud metadata"},
		{"NAT64 local-use of 10.0.0.1", "64:ff9b:1::0a00:0001", true, "private"},
		{"NAT64 local-use, IPv4 not in the last 32 bits", "64:ff9b:1:0808:0800:0008:0808:0808", true, "not of the form"},
		{"6to4 of loopback", "2002:7f00:0001::1", true, "6to4 address of 127.0.0.1, a loopback"},
		{"6to4 of metadata", "2002:a9fe:a9fe::1", true, "cloud metadata"},
		{"Teredo", "2001:0::1", true, "Teredo"},
		{"IPv6 benchmarking", "2001:2::1", true, "benchmarking"},
		{"IPv6 link-local", "fe80::1", true, "link-local"},
		{"IPv6 link-local with a zone", "fe80::1%eth0", true, "link-local"},
		{"unique local", "fc00::1", true, "private"},
		{"unique local fd00::/8", "fd12:3456::1", true, "private"},
		{"AWS IPv6 metadata", "fd00:ec2::254", true, "cloud metadata"},
		{"deprecated site-local", "fec0::1", true, "site-local"},
		{"IPv6 multicast", "ff02::1", true, "multicast"},
		{"IPv6 discard-only", "100::1", true, "global unicast"},
		{"IPv4-translated", "::ffff:0:7f00:1", true, "global unicast"},

		{"Cloudflare DNS", "1.1.1.1", false, ""},
		{"Google DNS", "8.8.8.8", false, ""},
		{"example.com", "93.184.216.34", false, ""},
		{"just outside 172.16/12", "172.32.0.1", false, ""},
		{"just outside CGNAT", "100.128.0.1", false, ""},
		{"public IPv6", "2606:4700:4700::1111", false, ""},
		{"NAT64 of a public address", "64:ff9b::0808:0808", false, ""},
		{"NAT64 local-use of a public address", "64:ff9b:1::0808:0808", false, ""},
		{"IPv4-mapped public", "::ffff:8.8.8.8", false, ""},
		{"6to4 of a public address", "2002:0808:0808::1", false, ""},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			err := egress.New().Check(netip.MustParseAddr(tc.addr))
			if !tc.refused {
				if err != nil {
					t.Fatalf("Check(%s) = %v, want nil", tc.addr, err)
				}
				return
			}
			var blocked *egress.BlockedError
			if !errors.As(err, &blocked) {
				t.Fatalf("Check(%s) = %v, want a *BlockedError", tc.addr, err)
			}
			if blocked.Addr != netip.MustParseAddr(tc.addr) {
				t.Errorf("Addr = %s, want %s", blocked.Addr, tc.addr)
			}
			if !strings.Contains(blocked.Reason, tc.wantReason) {
				t.Errorf("Reason = %q, want it to contain %q", blocked.Reason, tc.wantReason)
			}
		})
	}
}

func TestCheckAllowList(t *testing.T) {
	g := egress.New(egress.WithAllow(
		netip.MustParsePrefix("127.0.0.1/32"),
		netip.MustParsePrefix("fd00:1::/32"),
	))
	for _, tc := range []struct {
		desc    string
		addr    string
		allowed bool
	}{
		{"the allowed address", "127.0.0.1", true},
		{"its IPv4-mapped form, matched by the embedded IPv4", "::ffff:127.0.0.1", true},
		{"its NAT64 form", "64:ff9b::7f00:1", true},
		{"its 6to4 form", "2002:7f00:1::1", true},
		{"another loopback address", "127.0.0.2", false},
		{"another loopback address, mapped", "::ffff:127.0.0.2", false},
		{"IPv6 loopback: not the same address", "::1", false},
		{"a private address", "10.0.0.1", false},
		{"inside an allowed IPv6 prefix", "fd00:1::5", true},
		{"outside it", "fd00:2::5", false},
		{"a public address stays allowed", "8.8.8.8", true},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			err := g.Check(netip.MustParseAddr(tc.addr))
			if tc.allowed && err != nil {
				t.Fatalf("Check(%s) = %v, want nil", tc.addr, err)
			}
			if !tc.allowed && err == nil {
				t.Fatalf("Check(%s) = nil, want refused", tc.addr)
			}
		})
	}
}

func TestWithAllowCopiesTheSlice(t *testing.T) {
	prefixes := make([]netip.Prefix, 1, 2)
	prefixes[0] = netip.MustParsePrefix("127.0.0.1/32")
	g := egress.New(egress.WithAllow(prefixes...))
	_ = append(prefixes, netip.MustParsePrefix("10.0.0.0/8")) // writes into the shared backing array
	if g.Check(netip.MustParseAddr("10.0.0.1")) == nil {
		t.Fatal("a prefix appended after New was allowed")
	}
}

func TestBlockedErrorMessage(t *testing.T) {
	for _, tc := range []struct {
		desc string
		err  *egress.BlockedError
		want string
	}{
		{
			"with a host name",
			&egress.BlockedError{Host: "internal.example", Addr: netip.MustParseAddr("10.0.0.1"), Reason: "a private address (10.0.0.0/8)"},
			`egress: 10.0.0.1 (host "internal.example") is a private address (10.0.0.0/8); allow it with the egress allow-list`,
		},
		{
			"an IP literal is not repeated",
			&egress.BlockedError{Host: "10.0.0.1", Addr: netip.MustParseAddr("10.0.0.1"), Reason: "a private address (10.0.0.0/8)"},
			`egress: 10.0.0.1 is a private address (10.0.0.0/8); allow it with the egress allow-list`,
		},
		{
			"from Check, no host",
			&egress.BlockedError{Addr: netip.MustParseAddr("::1"), Reason: "a loopback address (::1)"},
			`egress: ::1 is a loopback address (::1); allow it with the egress allow-list`,
		},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			if got := tc.err.Error(); got != tc.want {
				t.Fatalf("Error() =\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}

func TestParseAllowList(t *testing.T) {
	for _, tc := range []struct {
		desc    string
		items   []string
		want    []string // prefixes, as String prints them
		wantErr string   // a substring of the error; "" for success
	}{
		{"empty list", nil, nil, ""},
		{"CIDR prefixes", []string{"127.0.0.1/32", "10.1.0.0/16", "fd00::/8"}, []string{"127.0.0.1/32", "10.1.0.0/16", "fd00::/8"}, ""},
		{"bare IPv4 becomes /32", []string{"10.1.2.3"}, []string{"10.1.2.3/32"}, ""},
		{"bare IPv6 becomes /128", []string{"fd00::1"}, []string{"fd00::1/128"}, ""},
		{"spaces around items are ignored", []string{" 10.1.2.3", "fd00::/8 "}, []string{"10.1.2.3/32", "fd00::/8"}, ""},
		{"prefix too long", []string{"10.0.0.0/8", "10.0.0.0/33"}, nil, `item "10.0.0.0/33"`},
		{"not an address", []string{"nope"}, nil, `item "nope": not an IP address`},
		{"empty item", []string{"10.0.0.0/8", ""}, nil, `item "": empty`},
		{"blank item", []string{"  "}, nil, `item "  ": empty`},
		{"host bits set", []string{"10.1.2.3/8"}, nil, `item "10.1.2.3/8": has host bits set; write 10.0.0.0/8 for the network or 10.1.2.3/32`},
		{"zone", []string{"fe80::1%eth0"}, nil, "has a zone"},
		{"a host name", []string{"localhost"}, nil, `item "localhost"`},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			got, err := egress.ParseAllowList(tc.items)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseAllowList(%q) error = %v, want one containing %q", tc.items, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseAllowList(%q): %v", tc.items, err)
			}
			var gotText []string
			for _, p := range got {
				gotText = append(gotText, p.String())
			}
			if strings.Join(gotText, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("ParseAllowList(%q) = %v, want %v", tc.items, gotText, tc.want)
			}
		})
	}
}

// fakeResolver answers from a map; a missing name is NXDOMAIN.
type fakeResolver map[string][]netip.Addr

func (r fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	addrs, ok := r[host]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return addrs, nil
}

// rebindingResolver answers first with first, then always with later, as an
// attacker's DNS server with a zero TTL would; it counts the questions.
type rebindingResolver struct {
	first, later netip.Addr
	calls        atomic.Int32
}

func (r *rebindingResolver) LookupNetIP(context.Context, string, string) ([]netip.Addr, error) {
	if r.calls.Add(1) == 1 {
		return []netip.Addr{r.first}, nil
	}
	return []netip.Addr{r.later}, nil
}

// recordingListener records the remote address of every connection it
// accepts, so a test can prove none came from the guard.
type recordingListener struct {
	net.Listener
	accepted chan string
}

func (l *recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		select {
		case l.accepted <- c.RemoteAddr().String():
		default: // tests make a handful of connections; never block serving
		}
	}
	return c, err
}

// listen opens a listener on 127.0.0.1 that accepts and closes connections.
func listen(t testing.TB) *recordingListener {
	t.Helper()
	l := listenOnly(t)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	return l
}

func listenOnly(t testing.TB) *recordingListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listening: %v", err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return &recordingListener{Listener: ln, accepted: make(chan string, 64)}
}

func (l *recordingListener) port() string {
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}

// assertNoConnection proves nothing connected to l so far. It connects
// itself and waits for that connection to be accepted: a connection the
// guard had made would have completed its handshake earlier and be queued
// before it, so the first one accepted must be this one.
func (l *recordingListener) assertNoConnection(t testing.TB) {
	t.Helper()
	sentinel, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatalf("dialing the listener directly: %v", err)
	}
	defer func() { _ = sentinel.Close() }()
	select {
	case got := <-l.accepted:
		if want := sentinel.LocalAddr().String(); got != want {
			t.Fatalf("the listener accepted a connection from %s before the test's own (%s): the guard connected", got, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the listener did not accept the test's own connection within 5 s")
	}
}

func TestDialTimeout(t *testing.T) {
	const timeout = 5 * time.Second
	loopback := netip.MustParsePrefix("127.0.0.1/32")

	t.Run("a loopback listener is refused by default and not connected to", func(t *testing.T) {
		l := listen(t)
		conn, err := egress.New().DialTimeout(l.Addr().String(), timeout)
		if conn != nil {
			_ = conn.Close()
		}
		var blocked *egress.BlockedError
		if !errors.As(err, &blocked) {
			t.Fatalf("DialTimeout = %v, want a *BlockedError", err)
		}
		if blocked.Addr != netip.MustParseAddr("127.0.0.1") {
			t.Errorf("Addr = %s, want 127.0.0.1", blocked.Addr)
		}
		l.assertNoConnection(t)
	})

	t.Run("the allow-list lets it through", func(t *testing.T) {
		l := listen(t)
		conn, err := egress.New(egress.WithAllow(loopback)).DialTimeout(l.Addr().String(), timeout)
		if err != nil {
			t.Fatalf("DialTimeout: %v", err)
		}
		_ = conn.Close()
	})

	t.Run("a host resolving to a private address is refused, naming the host", func(t *testing.T) {
		g := egress.New(egress.WithResolver(fakeResolver{"internal.example": {netip.MustParseAddr("10.0.0.5")}}))
		_, err := g.DialTimeout("internal.example:443", timeout)
		var blocked *egress.BlockedError
		if !errors.As(err, &blocked) {
			t.Fatalf("DialTimeout = %v, want a *BlockedError", err)
		}
		if blocked.Host != "internal.example" || blocked.Addr != netip.MustParseAddr("10.0.0.5") {
			t.Errorf("refused %s for host %q, want 10.0.0.5 for internal.example", blocked.Addr, blocked.Host)
		}
		if !strings.Contains(err.Error(), `(host "internal.example") is a private address`) {
			t.Errorf("error %q does not name the host and the reason", err)
		}
	})

	t.Run("refused addresses are skipped and an allowed one is dialled", func(t *testing.T) {
		l := listen(t)
		g := egress.New(
			egress.WithAllow(loopback),
			egress.WithResolver(fakeResolver{"mixed.example": {netip.MustParseAddr("10.0.0.5"), netip.MustParseAddr("127.0.0.1")}}),
		)
		conn, err := g.DialTimeout("mixed.example:"+l.port(), timeout)
		if err != nil {
			t.Fatalf("DialTimeout: %v", err)
		}
		defer func() { _ = conn.Close() }()
		if got := conn.RemoteAddr().String(); got != l.Addr().String() {
			t.Fatalf("connected to %s, want %s", got, l.Addr())
		}
	})

	t.Run("every address refused: the first is reported", func(t *testing.T) {
		g := egress.New(egress.WithResolver(fakeResolver{"both.example": {netip.MustParseAddr("10.0.0.5"), netip.MustParseAddr("::1")}}))
		_, err := g.DialTimeout("both.example:80", timeout)
		var blocked *egress.BlockedError
		if !errors.As(err, &blocked) || blocked.Addr != netip.MustParseAddr("10.0.0.5") {
			t.Fatalf("DialTimeout = %v, want a *BlockedError for 10.0.0.5", err)
		}
	})

	t.Run("localhost through the system resolver is refused", func(t *testing.T) {
		l := listen(t)
		_, err := egress.New().DialTimeout("localhost:"+l.port(), timeout)
		var blocked *egress.BlockedError
		if !errors.As(err, &blocked) {
			t.Fatalf("DialTimeout = %v, want a *BlockedError", err)
		}
		if blocked.Host != "localhost" {
			t.Errorf("Host = %q, want localhost", blocked.Host)
		}
		l.assertNoConnection(t)
	})

	t.Run("localhost through the system resolver passes when 127.0.0.1 is allowed", func(t *testing.T) {
		// Go's resolver answers localhost from /etc/hosts as
		// ::ffff:127.0.0.1, so this also holds the allow-list to the
		// embedded IPv4 address.
		l := listen(t)
		conn, err := egress.New(egress.WithAllow(loopback)).DialTimeout("localhost:"+l.port(), timeout)
		if err != nil {
			t.Fatalf("DialTimeout: %v", err)
		}
		_ = conn.Close()
	})

	t.Run("IPv6 literals are checked", func(t *testing.T) {
		for _, addr := range []string{"[::1]:80", "[::ffff:127.0.0.1]:80", "[fe80::1%25eth0]:80", "[fe80::1%eth0]:80"} {
			_, err := egress.New().DialTimeout(addr, timeout)
			var blocked *egress.BlockedError
			if !errors.As(err, &blocked) {
				t.Errorf("DialTimeout(%s) = %v, want a *BlockedError", addr, err)
			}
		}
	})

	t.Run("rebinding after a check elsewhere: the guard judges its own answer", func(t *testing.T) {
		// A naive sender validates the URL, then dials the name: the
		// validation gets the public answer, the connect the internal one.
		l := listen(t)
		r := &rebindingResolver{first: netip.MustParseAddr("93.184.216.34"), later: netip.MustParseAddr("127.0.0.1")}
		if addrs, _ := r.LookupNetIP(context.Background(), "ip", "rebind.example"); addrs[0] != r.first {
			t.Fatalf("the validation step saw %v", addrs)
		}
		_, err := egress.New(egress.WithResolver(r)).DialTimeout("rebind.example:"+l.port(), timeout)
		var blocked *egress.BlockedError
		if !errors.As(err, &blocked) || blocked.Addr != r.later {
			t.Fatalf("DialTimeout = %v, want a *BlockedError for 127.0.0.1", err)
		}
		if got := r.calls.Load(); got != 2 {
			t.Errorf("resolver asked %d times in all, want 2: one for the validation, one for the dial", got)
		}
		l.assertNoConnection(t)
	})

	t.Run("rebinding after the guard's check: the checked address is the one dialled", func(t *testing.T) {
		// The first answer is allowed; were the dial to resolve the name
		// again it would get 127.0.0.2, which is refused (and nothing
		// listens there).
		l := listen(t)
		r := &rebindingResolver{first: netip.MustParseAddr("127.0.0.1"), later: netip.MustParseAddr("127.0.0.2")}
		conn, err := egress.New(egress.WithAllow(loopback), egress.WithResolver(r)).DialTimeout("rebind.example:"+l.port(), timeout)
		if err != nil {
			t.Fatalf("DialTimeout: %v", err)
		}
		defer func() { _ = conn.Close() }()
		if got := conn.RemoteAddr().String(); got != l.Addr().String() {
			t.Errorf("connected to %s, want the checked %s", got, l.Addr())
		}
		if got := r.calls.Load(); got != 1 {
			t.Errorf("resolver asked %d times, want exactly 1 per dial", got)
		}
	})

	t.Run("a resolution failure is wrapped with the host", func(t *testing.T) {
		_, err := egress.New(egress.WithResolver(fakeResolver{})).DialTimeout("missing.example:443", timeout)
		var dnsErr *net.DNSError
		if !errors.As(err, &dnsErr) || !dnsErr.IsNotFound {
			t.Fatalf("DialTimeout = %v, want a not-found *net.DNSError", err)
		}
		if !strings.Contains(err.Error(), `resolving "missing.example"`) {
			t.Errorf("error %q does not name the host", err)
		}
	})

	t.Run("no addresses is an error, not a panic", func(t *testing.T) {
		_, err := egress.New(egress.WithResolver(fakeResolver{"empty.example": nil})).DialTimeout("empty.example:443", timeout)
		if err == nil || !strings.Contains(err.Error(), "no addresses") {
			t.Fatalf("DialTimeout = %v, want a no-addresses error", err)
		}
	})

	t.Run("the timeout covers resolution", func(t *testing.T) {
		start := time.Now()
		_, err := egress.New(egress.WithResolver(hangingResolver{})).DialTimeout("slow.example:443", 50*time.Millisecond)
		var netErr net.Error
		if !errors.As(err, &netErr) || !netErr.Timeout() {
			t.Fatalf("DialTimeout = %v, want a net.Error that is a timeout", err)
		}
		if elapsed := time.Since(start); elapsed > 2*time.Second {
			t.Fatalf("DialTimeout returned after %s for a 50 ms timeout", elapsed)
		}
	})

	t.Run("a failed connect is wrapped with the host", func(t *testing.T) {
		l := listenOnly(t)
		addr := l.Addr().String()
		_ = l.Close() // now nothing listens on that port
		g := egress.New(egress.WithAllow(loopback), egress.WithResolver(fakeResolver{"gone.example": {netip.MustParseAddr("127.0.0.1")}}))
		_, port, _ := net.SplitHostPort(addr)
		_, err := g.DialTimeout("gone.example:"+port, timeout)
		var opErr *net.OpError
		if !errors.As(err, &opErr) || !strings.Contains(err.Error(), `connecting to "gone.example"`) {
			t.Fatalf("DialTimeout = %v, want a wrapped *net.OpError naming the host", err)
		}
		var blocked *egress.BlockedError
		if errors.As(err, &blocked) {
			t.Fatal("a connect failure claims to be a refusal")
		}
	})

	for _, tc := range []struct{ desc, addr, want string }{
		{"no port", "example.com", "missing port"},
		{"a named port", "example.com:http", "not a number"},
		{"a port out of range", "example.com:65536", "not a number"},
		{"no host", ":443", "empty host"},
	} {
		t.Run("bad address: "+tc.desc, func(t *testing.T) {
			_, err := egress.New(egress.WithResolver(fakeResolver{})).DialTimeout(tc.addr, timeout)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("DialTimeout(%q) = %v, want an error containing %q", tc.addr, err, tc.want)
			}
		})
	}
}

// hangingResolver answers only when the context ends.
type hangingResolver struct{}

func (hangingResolver) LookupNetIP(ctx context.Context, _, _ string) ([]netip.Addr, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// TestFasthttp runs the guard inside fasthttp.Client, as the sender does, and
// shows fasthttp hands the *BlockedError back unchanged.
func TestFasthttp(t *testing.T) {
	for _, tc := range []struct {
		desc   string
		client func(g *egress.Guard) *fasthttp.Client
	}{
		{"DialTimeout field", func(g *egress.Guard) *fasthttp.Client { return &fasthttp.Client{DialTimeout: g.DialTimeout} }},
		{"Dial field", func(g *egress.Guard) *fasthttp.Client { return &fasthttp.Client{Dial: g.Dial} }},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			var requests atomic.Int32
			l := listenOnly(t)
			srv := &http.Server{
				Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
					requests.Add(1)
					w.WriteHeader(http.StatusNoContent)
				}),
				ReadHeaderTimeout: 5 * time.Second,
			}
			go func() { _ = srv.Serve(l) }()
			t.Cleanup(func() { _ = srv.Close() })
			url := "http://" + l.Addr().String() + "/"

			err := do(tc.client(egress.New()), url)
			var blocked *egress.BlockedError
			if !errors.As(err, &blocked) {
				t.Fatalf("Do = %v (%T), want a *BlockedError through fasthttp", err, err)
			}
			if blocked.Addr != netip.MustParseAddr("127.0.0.1") {
				t.Errorf("Addr = %s, want 127.0.0.1", blocked.Addr)
			}
			l.assertNoConnection(t)
			if n := requests.Load(); n != 0 {
				t.Fatalf("the server saw %d requests, want none", n)
			}

			if err := do(tc.client(egress.New(egress.WithAllow(netip.MustParsePrefix("127.0.0.1/32")))), url); err != nil {
				t.Fatalf("Do with 127.0.0.1 allowed: %v", err)
			}
			if n := requests.Load(); n != 1 {
				t.Fatalf("the server saw %d requests, want 1", n)
			}
		})
	}
}

func do(c *fasthttp.Client, url string) error {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(url)
	if err := c.DoTimeout(req, resp, 5*time.Second); err != nil {
		return err
	}
	if resp.StatusCode() != http.StatusNoContent {
		return fmt.Errorf("status %d, want %d", resp.StatusCode(), http.StatusNoContent)
	}
	return nil
}

// FuzzCheck feeds Check arbitrary addresses: it must not panic, and the
// spellings of one IPv4 destination must get one answer.
func FuzzCheck(f *testing.F) {
	for _, s := range []string{"127.0.0.1", "8.8.8.8", "169.254.169.254", "::1", "::ffff:10.0.0.1",
		"64:ff9b::a9fe:a9fe", "64:ff9b:1::808:808", "2002:7f00:1::1", "2001::1", "fe80::1", "2606:4700:4700::1111"} {
		f.Add(netip.MustParseAddr(s).AsSlice(), "")
	}
	f.Add(make([]byte, 4), "eth0")
	g := egress.New()
	f.Fuzz(func(t *testing.T, raw []byte, zone string) {
		a, ok := netip.AddrFromSlice(raw)
		if !ok {
			_ = g.Check(netip.Addr{})
			return
		}
		err := g.Check(a)
		if a.Is6() {
			if withZone := g.Check(a.WithZone(zone)); (err == nil) != (withZone == nil) {
				t.Fatalf("Check(%s) = %v but with zone %q: %v", a, err, zone, withZone)
			}
		}
		var blocked *egress.BlockedError
		if err != nil && (!errors.As(err, &blocked) || blocked.Reason == "" || blocked.Addr != a) {
			t.Fatalf("Check(%s) = %#v, want a *BlockedError with a reason", a, err)
		}
		if v4 := a.Unmap(); v4.Is4() {
			mapped := netip.AddrFrom16(v4.As16())
			nat64 := netip.AddrFrom16([16]byte{0, 0x64, 0xff, 0x9b, 12: v4.As4()[0], v4.As4()[1], v4.As4()[2], v4.As4()[3]})
			plain := g.Check(v4)
			for _, form := range []netip.Addr{mapped, nat64} {
				if got := g.Check(form); (got == nil) != (plain == nil) {
					t.Fatalf("Check(%s) = %v but Check(%s) = %v", v4, plain, form, got)
				}
			}
		}
	})
}

// FuzzParseAllowList feeds the parser arbitrary config items: it must not
// panic, and what it accepts must be a valid prefix that reads back the same.
func FuzzParseAllowList(f *testing.F) {
	for _, s := range []string{"127.0.0.1/32", "10.1.2.3", "fd00::/8", "fd00::1", "10.0.0.0/33", "nope", "",
		"10.1.2.3/8", "fe80::1%eth0", "::ffff:10.0.0.0/104", " 10.0.0.0/8 "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, item string) {
		prefixes, err := egress.ParseAllowList([]string{item})
		if err != nil {
			if prefixes != nil {
				t.Fatalf("ParseAllowList(%q) returned prefixes with an error", item)
			}
			return
		}
		if len(prefixes) != 1 || !prefixes[0].IsValid() || prefixes[0] != prefixes[0].Masked() {
			t.Fatalf("ParseAllowList(%q) = %v, want one valid, masked prefix", item, prefixes)
		}
		again, err := egress.ParseAllowList([]string{prefixes[0].String()})
		if err != nil || again[0] != prefixes[0] {
			t.Fatalf("ParseAllowList(%q) = %v, but its text reads back as %v, %v", item, prefixes[0], again, err)
		}
	})
}

func BenchmarkCheck(b *testing.B) {
	allowList, err := egress.ParseAllowList([]string{"10.1.0.0/16", "127.0.0.1/32", "fd00:1::/32"})
	if err != nil {
		b.Fatal(err)
	}
	g := egress.New(egress.WithAllow(allowList...))
	// The hot path is an allowed address: every delivery dials one. A
	// refusal allocates its *BlockedError, one allocation, and is rare.
	for _, bc := range []struct {
		desc string
		addr string
	}{
		{"public IPv4", "93.184.216.34"},
		{"public IPv6", "2606:4700:4700::1111"},
		{"NAT64 of a public address", "64:ff9b::808:808"},
		{"allowed by the allow-list", "10.1.2.3"},
		{"refused", "10.0.0.1"},
	} {
		a := netip.MustParseAddr(bc.addr)
		b.Run(bc.desc, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = g.Check(a)
			}
		})
	}
}

// TestCheckDoesNotAllocate holds the benchmark's 0 allocations as a test, so
// a regression fails `go test`, not only a benchmark someone has to read.
func TestCheckDoesNotAllocate(t *testing.T) {
	g := egress.New(egress.WithAllow(netip.MustParsePrefix("10.1.0.0/16")))
	for _, s := range []string{"93.184.216.34", "2606:4700:4700::1111", "64:ff9b::808:808", "::ffff:8.8.8.8", "10.1.2.3"} {
		a := netip.MustParseAddr(s)
		if n := testing.AllocsPerRun(100, func() { _ = g.Check(a) }); n != 0 {
			t.Errorf("Check(%s) allocates %v times, want 0", s, n)
		}
	}
}
