package chat

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrPrivateAddress is returned (wrapped) when a file message names a URL
// whose host resolves to an address that is not on the public internet.
var ErrPrivateAddress = errors.New("not a public address")

// nonPublic are the prefixes no file download may connect to by default:
// a sender could otherwise make the recipient's node send GET requests into
// the recipient's own machine or network. Loopback, private, link-local,
// unspecified and multicast addresses are checked with netip's predicates.
var nonPublic = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),      // "this network"
	netip.MustParsePrefix("100.64.0.0/10"),  // carrier-grade NAT
	netip.MustParsePrefix("192.0.0.0/24"),   // IETF protocol assignments
	netip.MustParsePrefix("198.18.0.0/15"),  // benchmarking
	netip.MustParsePrefix("240.0.0.0/4"),    // reserved, and broadcast
	netip.MustParsePrefix("64:ff9b:1::/48"), // local-use IPv4/IPv6 translation
	netip.MustParsePrefix("100::/64"),       // discard
	netip.MustParsePrefix("2001::/32"),      // Teredo: the IPv4 inside is obfuscated
	netip.MustParsePrefix("2001:db8::/32"),  // documentation
	netip.MustParsePrefix("fec0::/10"),      // site-local (deprecated, still routed on some LANs)
}

// embedsIPv4 are IPv6 prefixes whose addresses carry an IPv4 address a
// translator or tunnel delivers to: NAT64's well-known prefix and SIIT
// (the last 32 bits), and 6to4 (bits 16 to 47).
var (
	nat64  = netip.MustParsePrefix("64:ff9b::/96")
	siit   = netip.MustParsePrefix("::ffff:0:0:0/96")
	sixTo4 = netip.MustParsePrefix("2002::/16")
)

// publicAddr reports whether ip is an address on the public internet.
func publicAddr(ip netip.Addr) bool {
	ip = ip.Unmap()
	if !ip.IsValid() || ip.IsLoopback() || ip.IsPrivate() || ip.IsUnspecified() ||
		ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip.IsInterfaceLocalMulticast() || ip.IsMulticast() {
		return false
	}
	for _, p := range nonPublic {
		if p.Contains(ip) {
			return false
		}
	}
	if ip.Is6() {
		b := ip.As16()
		switch {
		case nat64.Contains(ip), siit.Contains(ip):
			return publicAddr(netip.AddrFrom4([4]byte(b[12:16])))
		case sixTo4.Contains(ip):
			return publicAddr(netip.AddrFrom4([4]byte(b[2:6])))
		}
	}
	return true
}

// publicOnlyClient is an HTTP client whose connections may only go to
// public addresses. The check runs on the address actually dialled, after
// DNS resolution and on every redirect, so neither a name that resolves to
// 127.0.0.1 nor a redirect to a LAN host gets through.
//
// With a proxy (proxy, normally http.ProxyFromEnvironment: a Tor user's
// socks5h, a company's egress proxy), the connection goes to the proxy,
// which resolves the name itself; the client then refuses IP literals that
// are not public and localhost names, and makes no DNS lookup of its own
// (that would leak the name outside the proxy).
func publicOnlyClient(timeout time.Duration, proxy func(*http.Request) (*url.URL, error)) *http.Client {
	return &http.Client{Timeout: timeout, Transport: publicOnlyTransport(proxy)}
}

// publicOnlyTransport is publicOnlyClient's transport: the guard against
// non-public addresses on every connection it makes, through proxy if
// that names one (see publicOnlyClient).
func publicOnlyTransport(proxy func(*http.Request) (*url.URL, error)) *http.Transport {
	guarded := &net.Dialer{
		Timeout: 30 * time.Second,
		Control: func(network, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("%s: %w", address, ErrPrivateAddress)
			}
			if !publicAddr(ap.Addr()) {
				return fmt.Errorf("%s: %w", ap.Addr(), ErrPrivateAddress)
			}
			return nil
		},
	}
	direct := &net.Dialer{Timeout: 30 * time.Second}
	var proxies sync.Map // addresses of the proxies in use: dialled unchecked
	return &http.Transport{
		Proxy: func(req *http.Request) (*url.URL, error) {
			if proxy == nil {
				return nil, nil
			}
			u, err := proxy(req)
			if err != nil {
				return nil, err
			}
			if u == nil { // direct (NO_PROXY, loopback): guarded, unless it names a proxy
				if _, ok := proxies.Load(withDefaultPort(req.URL)); ok {
					return nil, fmt.Errorf("%s is the proxy's address: %w", req.URL.Host, ErrPrivateAddress)
				}
				return nil, nil
			}
			if err := checkHostName(req.URL.Hostname()); err != nil {
				return nil, err
			}
			proxies.Store(u.Host, true)
			proxies.Store(withDefaultPort(u), true)
			return u, nil
		},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			// Only the Proxy hook's proxied requests dial these: a direct
			// request naming one is refused there.
			if _, ok := proxies.Load(addr); ok {
				return direct.DialContext(ctx, network, addr)
			}
			return guarded.DialContext(ctx, network, addr)
		},
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          16,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

// checkHostName refuses, without a DNS lookup, a URL host that is a
// non-public IP literal or a localhost name.
func checkHostName(host string) error {
	if ip, err := netip.ParseAddr(host); err == nil {
		if !publicAddr(ip) {
			return fmt.Errorf("%s: %w", ip, ErrPrivateAddress)
		}
		return nil
	}
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return fmt.Errorf("%s: %w", host, ErrPrivateAddress)
	}
	return nil
}

// withDefaultPort is a proxy URL's host:port, with the scheme's port when
// the URL names none.
func withDefaultPort(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	port := map[string]string{"http": "80", "https": "443", "socks5": "1080", "socks5h": "1080"}[u.Scheme]
	return net.JoinHostPort(u.Hostname(), port)
}
