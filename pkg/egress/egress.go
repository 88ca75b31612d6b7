// Package egress is the SSRF guard of the webhook sender's dialer. Webhook
// URLs are chosen by customers, so a URL naming an internal address (a
// loopback admin port, a private service, the cloud metadata endpoint that
// hands out credentials) must never be connected to.
//
// The guard resolves the host itself, checks every address, and dials the
// checked IP address — never the hostname again — so a DNS answer that
// changes between a check and a connect (DNS rebinding) cannot slip an
// internal address past it. Addresses that embed an IPv4 address
// (IPv4-mapped, IPv4-compatible, NAT64, 6to4) are judged by that IPv4
// address, since that is where the packets end up.
//
// An operator who does need an internal receiver (a test stack, a
// self-hosted endpoint) lists its prefix in the allow-list (WithAllow,
// parsed by ParseAllowList).
package egress

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice/pkg/errtext"
)

// DefaultDialTimeout bounds Dial, and DialTimeout when given no positive
// timeout. 10 s holds a DNS answer that needed one retry of a lost query
// (resolv.conf's default timeout is 5 s) plus a TCP connect whose SYN was
// lost twice (Linux resends it after 1 s and again 2 s later, at 3 s). A
// receiver slower than that to accept a connection is treated as down: the
// delivery fails and is retried later rather than holding a sender worker.
const DefaultDialTimeout = 10 * time.Second

// minAttemptTimeout is the least time one address of several gets, the same
// floor net.Dialer uses when it splits a deadline across addresses: a
// connect given less than 2 s fails on a single lost SYN (resent after 1 s).
const minAttemptTimeout = 2 * time.Second

// Resolver is what the guard needs of DNS; *net.Resolver satisfies it.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Option configures a Guard.
type Option func(*Guard)

// WithResolver overrides the resolver, by default net.DefaultResolver (the
// system's, so /etc/hosts and the cluster's DNS apply). Tests pass a fake.
func WithResolver(r Resolver) Option {
	return func(g *Guard) { g.resolver = r }
}

// WithAllow adds prefixes to the allow-list, empty by default: an address
// inside any of them passes even if it is otherwise refused. Several
// WithAllow options add up.
//
// The allow-list is matched against the address as dialled and, for an
// address that embeds an IPv4 address (::ffff:127.0.0.1, 64:ff9b::7f00:1,
// 2002:7f00:1::1, ::127.0.0.1), also against that IPv4 address: allowing
// 127.0.0.1/32 allows ::ffff:127.0.0.1 too. The refusal already judges these
// forms by their IPv4 address because that is where the connection goes, so
// the allowance follows the same destination; otherwise an operator would
// have to list every spelling of one receiver, and an allowed receiver would
// break on a resolver that answers with mapped addresses: Go's does for names
// in /etc/hosts (localhost resolves to ::ffff:127.0.0.1).
func WithAllow(prefixes ...netip.Prefix) Option {
	return func(g *Guard) { g.allow = append(g.allow, prefixes...) }
}

// Guard decides which addresses the sender may connect to and dials only
// those. It is safe for concurrent use: it is not changed after New.
type Guard struct {
	resolver Resolver
	allow    []netip.Prefix
	dialer   net.Dialer
}

// New returns a Guard refusing every non-public address (see Check) except
// those in the allow-list.
func New(opts ...Option) *Guard {
	g := &Guard{resolver: net.DefaultResolver}
	for _, opt := range opts {
		opt(g)
	}
	// Copy, so a caller's later append to the slice it passed cannot change
	// what a running guard allows.
	g.allow = append([]netip.Prefix(nil), g.allow...)
	return g
}

// BlockedError says which address was refused and why. The sender must not
// retry a delivery that failed with it: the answer will not change until
// the customer's DNS or the allow-list does.
type BlockedError struct {
	// Host is the host name being dialled, or the IP literal as given; empty
	// when the error came from Check.
	Host string
	// Addr is the refused address, as resolved (zone included).
	Addr netip.Addr
	// Reason completes "Addr is …", e.g. "a private address (10.0.0.0/8)";
	// it contains "cloud metadata" for the metadata endpoints.
	Reason string
}

func (e *BlockedError) Error() string {
	host := ""
	if e.Host != "" && e.Host != e.Addr.String() {
		host = " (host " + errtext.Quote(e.Host) + ")"
	}
	return fmt.Sprintf("egress: %s%s is %s; allow it with the egress allow-list", e.Addr, host, e.Reason)
}

// ParseAllowList parses allow-list items, a config value already split at
// commas, each a CIDR prefix ("10.1.0.0/16", "fd00::/8") or a bare IP
// address ("10.1.2.3", which becomes 10.1.2.3/32; an IPv6 one becomes /128).
// Surrounding spaces are ignored. An empty list is fine. A prefix with host
// bits set ("10.1.2.3/8") is refused rather than widened to 10.0.0.0/8,
// since the list opens holes in the guard and a typo should not open a
// bigger one than meant.
func ParseAllowList(items []string) ([]netip.Prefix, error) {
	var prefixes []netip.Prefix
	for _, item := range items {
		p, err := parseAllowItem(strings.TrimSpace(item))
		if err != nil {
			return nil, fmt.Errorf("egress: allow-list item %s: %w", errtext.Quote(item), err)
		}
		prefixes = append(prefixes, p)
	}
	return prefixes, nil
}

func parseAllowItem(s string) (netip.Prefix, error) {
	if s == "" {
		return netip.Prefix{}, fmt.Errorf("empty; want a CIDR prefix or an IP address")
	}
	if strings.Contains(s, "%") {
		return netip.Prefix{}, fmt.Errorf("has a zone; zones are not part of an address check")
	}
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("not an IP address: %w", err)
		}
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("not a CIDR prefix: %w", err)
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Errorf("has host bits set; write %s for the network or %s for the one address",
			m, netip.PrefixFrom(p.Addr(), p.Addr().BitLen()))
	}
	return p, nil
}

// Check returns nil if a connection to a may be made, else a *BlockedError.
// Refused unless allowed, for IPv4 and IPv6: unspecified, "this network",
// loopback, private (including IPv6 unique local), link-local, carrier-grade
// NAT, multicast, reserved and broadcast, IETF protocol assignments,
// benchmarking, deprecated site-local, Teredo, IPv6 outside global unicast,
// and the cloud metadata endpoints by name. IPv4-mapped, IPv4-compatible,
// NAT64 and 6to4 addresses are judged by the IPv4 address they embed. A
// zone (fe80::1%eth0) is ignored.
func (g *Guard) Check(a netip.Addr) error {
	if err := g.check("", a); err != nil {
		return err
	}
	return nil
}

// check returns a *BlockedError, not error, so that DialTimeout can tell
// refusals apart without a type assertion; Check converts it to a nil error
// interface when there is none. It does not allocate for an allowed address.
func (g *Guard) check(host string, a netip.Addr) *BlockedError {
	bare := a.WithZone("")
	if g.allowed(bare) {
		return nil
	}
	v := judge(bare)
	if v.reason == "" {
		return nil
	}
	if v.embedded.IsValid() && g.allowed(v.embedded) {
		return nil
	}
	return &BlockedError{Host: host, Addr: a, Reason: v.String()}
}

func (g *Guard) allowed(a netip.Addr) bool {
	for _, p := range g.allow {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Dial is DialTimeout with DefaultDialTimeout, for fasthttp.Client's Dial
// field. Prefer the DialTimeout field: fasthttp passes it the request's
// remaining time, whereas through Dial a connect may outlast the request
// timeout by up to the 10 s.
func (g *Guard) Dial(addr string) (net.Conn, error) {
	return g.DialTimeout(addr, DefaultDialTimeout)
}

// DialTimeout connects over TCP to addr ("host:port", port numeric), with
// the signature of fasthttp.DialFuncWithTimeout. It resolves host once (an
// IP literal is not resolved), checks every address, and dials the allowed
// ones in the resolver's order, returning the first connection; the timeout
// covers resolution and every connect. A timeout of zero or less means
// DefaultDialTimeout.
//
// If every address is refused it returns the *BlockedError of the first; if
// some were allowed but none connected, the first connect error, wrapped
// with the host. A resolution failure is returned wrapped with the host. A
// timeout, of resolution or of connecting, is a net.Error whose Timeout
// reports true (found with errors.As).
func (g *Guard) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if timeout <= 0 {
		timeout = DefaultDialTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	host, portText, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("egress: dialing %s: %w", errtext.Quote(addr), err)
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("egress: dialing %s: port %s is not a number from 0 to 65535",
			errtext.Quote(addr), errtext.Quote(portText))
	}
	addrs, err := g.resolve(ctx, host)
	if err != nil {
		return nil, err
	}

	var (
		allowed      []netip.Addr
		firstBlocked *BlockedError
	)
	for _, a := range addrs {
		if blocked := g.check(host, a); blocked != nil {
			if firstBlocked == nil {
				firstBlocked = blocked
			}
			continue
		}
		allowed = append(allowed, a)
	}
	if len(allowed) == 0 {
		return nil, firstBlocked
	}

	var firstErr error
	for i, a := range allowed {
		// A mapped address is the IPv4 address itself; dialling it as IPv4
		// works where the host has no IPv6 socket support.
		a = a.Unmap()
		attemptCtx, attemptCancel := attemptContext(ctx, len(allowed)-i)
		conn, err := g.dialer.DialContext(attemptCtx, "tcp", netip.AddrPortFrom(a, uint16(port)).String())
		attemptCancel()
		if err == nil {
			return conn, nil
		}
		if firstErr == nil {
			firstErr = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("egress: connecting to %s: %w", errtext.Quote(host), firstErr)
}

// resolve returns host's addresses: the address itself for an IP literal,
// else one answer of the resolver, which is the only one used.
func (g *Guard) resolve(ctx context.Context, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a}, nil
	}
	if host == "" {
		return nil, fmt.Errorf("egress: dialing: empty host")
	}
	addrs, err := g.resolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, fmt.Errorf("egress: resolving %s: %w", errtext.Quote(host), err)
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("egress: resolving %s: no addresses", errtext.Quote(host))
	}
	return addrs, nil
}

// attemptContext gives one of left remaining addresses an equal share of the
// time remaining, at least minAttemptTimeout (net.Dialer does the same), so
// one address that never answers does not use up the whole timeout.
func attemptContext(ctx context.Context, left int) (context.Context, context.CancelFunc) {
	deadline, ok := ctx.Deadline()
	if !ok || left <= 1 {
		return context.WithCancel(ctx)
	}
	share := time.Until(deadline) / time.Duration(left)
	if share < minAttemptTimeout {
		share = minAttemptTimeout
	}
	return context.WithTimeout(ctx, share)
}
