package egress

import "net/netip"

// rule refuses the addresses in prefix; reason completes "<address> is …".
type rule struct {
	prefix netip.Prefix
	reason string
}

// The rules are matched in order, first match wins, so single addresses come
// before the ranges holding them: 169.254.169.254 is reported as cloud
// metadata, not as link-local.
var (
	v4Rules = []rule{
		// The metadata endpoints hand out the cloud credentials of the
		// machine (or task) the sender runs on; they are the prize of an
		// SSRF, so the reason names them.
		{pfx("169.254.169.254/32"), "a cloud metadata address (AWS, GCP, Azure and Oracle instance metadata)"},
		{pfx("169.254.170.2/32"), "a cloud metadata address (AWS ECS task credentials)"},
		{pfx("169.254.170.23/32"), "a cloud metadata address (AWS EKS Pod Identity credentials)"},
		{pfx("100.100.100.200/32"), "a cloud metadata address (Alibaba Cloud instance metadata)"},
		{pfx("192.0.0.192/32"), "a cloud metadata address (Oracle Cloud instance metadata)"},
		// Azure's WireServer is a public-looking address that every Azure VM
		// reaches; it serves the VM's extension settings and certificates.
		{pfx("168.63.129.16/32"), "a cloud metadata address (Azure WireServer)"},

		{pfx("0.0.0.0/32"), "an unspecified address"},
		{pfx("0.0.0.0/8"), `a "this network" address (0.0.0.0/8)`},
		{pfx("127.0.0.0/8"), "a loopback address (127.0.0.0/8)"},
		{pfx("10.0.0.0/8"), "a private address (10.0.0.0/8)"},
		{pfx("172.16.0.0/12"), "a private address (172.16.0.0/12)"},
		{pfx("192.168.0.0/16"), "a private address (192.168.0.0/16)"},
		{pfx("169.254.0.0/16"), "a link-local address (169.254.0.0/16)"},
		{pfx("100.64.0.0/10"), "a carrier-grade NAT address (100.64.0.0/10)"},
		{pfx("224.0.0.0/4"), "a multicast address (224.0.0.0/4)"},
		{pfx("255.255.255.255/32"), "the broadcast address"},
		{pfx("240.0.0.0/4"), "a reserved address (240.0.0.0/4)"},
		{pfx("192.0.0.0/24"), "an IETF protocol assignment address (192.0.0.0/24)"},
		{pfx("198.18.0.0/15"), "a benchmarking address (198.18.0.0/15)"},
	}

	v6Rules = []rule{
		{pfx("fd00:ec2::254/128"), "a cloud metadata address (AWS IPv6 instance metadata)"},
		{pfx("fd00:ec2::23/128"), "a cloud metadata address (AWS EKS Pod Identity credentials)"},
		{pfx("fd20:ce::254/128"), "a cloud metadata address (GCP IPv6 instance metadata)"},

		{pfx("::/128"), "an unspecified address"},
		{pfx("::1/128"), "a loopback address (::1)"},
		{pfx("fc00::/7"), "a private address (unique local, fc00::/7)"},
		{pfx("fe80::/10"), "a link-local address (fe80::/10)"},
		{pfx("fec0::/10"), "a site-local address (fec0::/10, deprecated)"},
		{pfx("ff00::/8"), "a multicast address (ff00::/8)"},
		// Teredo tunnels to any IPv4 address through a relay; the client's
		// IPv4 address is stored obfuscated and the relay's is another
		// field, so no single embedded address can be judged.
		{pfx("2001::/32"), "a Teredo address (2001::/32), which can tunnel to any IPv4 address"},
		{pfx("2001:2::/48"), "a benchmarking address (2001:2::/48)"},
	}

	// globalUnicast is the only IPv6 space IANA hands out for the Internet
	// (RFC 4291 §2.4); every other address that reaches the catch-all is
	// reserved (for example 100::/64, discard-only) or is a translation form
	// that embeds no checkable IPv4 address (::ffff:0:0:0/96).
	globalUnicast = pfx("2000::/3")

	// The forms that carry an IPv4 address, judged by it.
	nat64          = pfx("64:ff9b::/96")   // RFC 6052 well-known prefix, IPv4 in the last 32 bits
	nat64LocalUse  = pfx("64:ff9b:1::/48") // RFC 8215 local-use prefix
	sixToFour      = pfx("2002::/16")      // RFC 3056, IPv4 in bits 16–48
	ipv4Compatible = pfx("::/96")          // RFC 4291 §2.5.5.1, deprecated
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// verdict is judge's answer: an empty reason means allowed.
type verdict struct {
	reason string
	// form and embedded are set when an IPv6 address was judged by the IPv4
	// address it embeds: form names the encoding, embedded is that address.
	form     string
	embedded netip.Addr
}

// String is the BlockedError reason. It builds the text only on refusal, so
// an allowed address costs no allocation.
func (v verdict) String() string {
	if v.form == "" {
		return v.reason
	}
	return v.form + " of " + v.embedded.String() + ", " + v.reason
}

// judge classifies a, which has no zone, ignoring the allow-list. For an
// address embedding an IPv4 address, the verdict carries that address even
// when allowed, so the caller can also match it against the allow-list.
func judge(a netip.Addr) verdict {
	if !a.IsValid() {
		return verdict{reason: "not a valid IP address"}
	}
	if a.Is4() {
		return verdict{reason: match(v4Rules, a)}
	}
	if r := match(v6Rules, a); r != "" {
		return verdict{reason: r}
	}
	b := a.As16()
	var form string
	var v4 netip.Addr
	switch {
	case a.Is4In6():
		form, v4 = "an IPv4-mapped address", a.Unmap()
	case ipv4Compatible.Contains(a): // :: and ::1 matched the rules above
		form, v4 = "an IPv4-compatible address", netip.AddrFrom4([4]byte(b[12:16]))
	case nat64.Contains(a):
		form, v4 = "a NAT64 address", netip.AddrFrom4([4]byte(b[12:16]))
	case nat64LocalUse.Contains(a):
		// A network may use the /48 with any RFC 6052 format, which places
		// the IPv4 address elsewhere (bits 48–63 and 72–87 for a /48 format). Only the
		// /96 format, with bits 48–96 zero, is accepted: then every other
		// format would read an address in 0.0.0.0/8, which goes nowhere.
		if [6]byte(b[6:12]) != [6]byte{} {
			return verdict{reason: "a NAT64 local-use address (64:ff9b:1::/48) not of the form " +
				"64:ff9b:1::a.b.c.d, so the IPv4 address it leads to is unknown"}
		}
		form, v4 = "a NAT64 local-use address", netip.AddrFrom4([4]byte(b[12:16]))
	case sixToFour.Contains(a):
		form, v4 = "a 6to4 address", netip.AddrFrom4([4]byte(b[2:6]))
	case !globalUnicast.Contains(a):
		return verdict{reason: "not a global unicast address (outside 2000::/3)"}
	default:
		return verdict{}
	}
	return verdict{reason: match(v4Rules, v4), form: form, embedded: v4}
}

func match(rules []rule, a netip.Addr) string {
	for _, r := range rules {
		if r.prefix.Contains(a) {
			return r.reason
		}
	}
	return ""
}
