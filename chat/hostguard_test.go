package chat

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestPublicAddr(t *testing.T) {
	for addr, want := range map[string]bool{
		"1.1.1.1": true, "93.184.215.14": true, "2606:4700:4700::1111": true,
		"127.0.0.1": false, "127.1.2.3": false, "::1": false, "10.0.0.5": false, "172.16.3.4": false,
		"192.168.1.1": false, "169.254.169.254": false, "0.0.0.0": false, "::": false, "100.64.1.1": false,
		"fe80::1": false, "fc00::1": false, "fd12::1": false, "224.0.0.1": false, "ff02::1": false,
		"::ffff:127.0.0.1": false, "::ffff:10.1.1.1": false, "::ffff:8.8.8.8": true, "255.255.255.255": false,
		"198.18.0.1": false, "2001:db8::1": false,
		// IPv6 forms that carry an IPv4 address to a translator or tunnel.
		"64:ff9b::a00:5": false, "64:ff9b::7f00:1": false, "64:ff9b::a9fe:a9fe": false, "64:ff9b::808:808": true,
		"::ffff:0:a00:5": false, "::ffff:0:808:808": true, "2002:a00:5::1": false, "2002:808:808::1": true,
		"fec0::1": false, "100::1": false, "2001:0:4136:e378::1": false,
	} {
		if got := publicAddr(netip.MustParseAddr(addr)); got != want {
			t.Errorf("publicAddr(%s) = %v, want %v", addr, got, want)
		}
	}
}

// A sender names a URL on the recipient's loopback (or a name resolving to
// it): by default the recipient's node refuses to connect, and the server
// sees no request. With AllowPrivateFileHosts it fetches; and a URL of the
// node's own blob store is always read, from BlobURL.
func TestFetchFileRefusesPrivateHosts(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	data := []byte("a file only the recipient may read")
	blob, fi, err := EncryptFile(data)
	if err != nil {
		t.Fatal(err)
	}
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.URL.Path != "/blobs/"+fi.SHA256 {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write(blob)
	}))
	defer srv.Close()
	port := srv.URL[strings.LastIndex(srv.URL, ":"):]

	newSvc := func(mutate func(*Config)) *Service {
		cfg := Config{Key: newKey(t), RelayURL: "ws://127.0.0.1:1", DBPath: filepath.Join(t.TempDir(), "chat.db"), Logger: testLogger(t)}
		if mutate != nil {
			mutate(&cfg)
		}
		s, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	msg := func(url string) *Message {
		f := *fi
		f.URL = url
		return &Message{Kind: KindFileMessage, Content: url, File: &f}
	}

	guarded := newSvc(nil)
	for _, url := range []string{srv.URL + "/blobs/" + fi.SHA256, "http://localhost" + port + "/blobs/" + fi.SHA256} {
		_, err := guarded.FetchFile(ctx, msg(url))
		if !errors.Is(err, ErrPrivateAddress) {
			t.Fatalf("fetch %s: %v, want ErrPrivateAddress", url, err)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the loopback server saw %d requests", n)
	}

	open := newSvc(func(c *Config) { c.AllowPrivateFileHosts = true })
	got, err := open.FetchFile(ctx, msg(srv.URL+"/blobs/"+fi.SHA256))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("with AllowPrivateFileHosts: %q, %v", got, err)
	}

	// The own store, named by its public URL, is read from BlobURL.
	own := newSvc(func(c *Config) {
		c.BlobURL = srv.URL + "/blobs"
		c.BlobPublicURL = "https://chat.example.invalid/blobs/"
	})
	before := hits.Load()
	for _, url := range []string{"https://chat.example.invalid/blobs/" + fi.SHA256, srv.URL + "/blobs/" + fi.SHA256} {
		got, err = own.FetchFile(ctx, msg(url))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("own blob %s: %q, %v", url, got, err)
		}
	}
	if n := hits.Load() - before; n != 2 {
		t.Fatalf("own blob: %d requests to BlobURL, want 2", n)
	}
	// Not just a blob under the own URL: the guard applies.
	for _, url := range []string{srv.URL + "/blobs/../metrics", srv.URL + "/blobs/" + fi.SHA256 + ".x%2F..%2F..%2Fmetrics", srv.URL + "/blobs/" + fi.SHA256 + "?x=1"} {
		if _, err := own.FetchFile(ctx, msg(url)); !errors.Is(err, ErrPrivateAddress) {
			t.Fatalf("%s under BlobURL: %v, want ErrPrivateAddress", url, err)
		}
	}
}

// Through a proxy (Tor's socks5h, an egress proxy) the proxy is dialled,
// loopback or not, and resolves names itself; the client still refuses
// non-public IP literals and localhost names, without a DNS lookup.
func TestPublicOnlyClientThroughAProxy(t *testing.T) {
	var asked atomic.Value
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Store(r.URL.String()) // a forward proxy gets the absolute URL
		_, _ = w.Write([]byte("via proxy"))
	}))
	defer proxy.Close()
	pu, _ := url.Parse(proxy.URL)
	c := publicOnlyClient(5*time.Second, http.ProxyURL(pu))
	resp, err := c.Get("http://files.example.invalid/blobs/abc")
	if err != nil {
		t.Fatalf("through the proxy: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "via proxy" || asked.Load() != "http://files.example.invalid/blobs/abc" {
		t.Fatalf("proxy answered %q for %v", body, asked.Load())
	}
	for _, u := range []string{"http://127.0.0.1:9/x", "http://[::1]:9/x", "http://10.1.2.3/x", "http://localhost:9/x", "http://a.localhost/x"} {
		asked.Store("")
		if _, err := c.Get(u); !errors.Is(err, ErrPrivateAddress) || asked.Load() != "" {
			t.Errorf("%s through the proxy: %v (proxy asked %q)", u, err, asked.Load())
		}
	}
	// Without a proxy the loopback proxy server itself is off limits.
	if _, err := publicOnlyClient(5*time.Second, nil).Get(proxy.URL); !errors.Is(err, ErrPrivateAddress) {
		t.Errorf("direct to loopback: %v", err)
	}
}

// With a proxy from the environment, http.ProxyFromEnvironment sends
// loopback URLs direct (it never proxies localhost or 127.0.0.1), and the
// client dials a proxy's address unchecked. Once one download went through a
// loopback proxy (Tor's 127.0.0.1:9050, a local privoxy), a file URL naming
// that proxy's own address was fetched directly, past the guard against
// non-public addresses; it is refused.
func TestDirectRequestToTheProxyAddressIsGuarded(t *testing.T) {
	var direct int
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !r.URL.IsAbs() {
			direct++
			_, _ = w.Write([]byte("proxy's own endpoint reached directly"))
			return
		}
		_, _ = w.Write([]byte("via proxy"))
	}))
	defer proxy.Close()
	pu, _ := url.Parse(proxy.URL)
	// What http.ProxyFromEnvironment does with HTTPS_PROXY/HTTP_PROXY set:
	// proxy everything except localhost and loopback IPs.
	envLike := func(req *http.Request) (*url.URL, error) {
		h := req.URL.Hostname()
		if h == "localhost" {
			return nil, nil
		}
		if ip := net.ParseIP(h); ip != nil && ip.IsLoopback() {
			return nil, nil
		}
		return pu, nil
	}
	c := publicOnlyClient(5*time.Second, envLike)
	resp, err := c.Get("http://files.example.invalid/blobs/abc")
	if err != nil {
		t.Fatalf("through the proxy: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	resp, err = c.Get(proxy.URL + "/internal")
	if err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("a file URL naming the loopback proxy address was fetched directly (%d direct hits): %q", direct, body)
	}
	if !errors.Is(err, ErrPrivateAddress) {
		t.Fatalf("want ErrPrivateAddress, got %v", err)
	}
}
