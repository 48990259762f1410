package node_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lightningnetwork/lnd/lnrpc"
	"github.com/nbd-wtf/go-nostr/nip19"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/stats"

	"github.com/anchorchat/anchorchat/identity"
	"github.com/anchorchat/anchorchat/internal/node"
	"github.com/anchorchat/anchorchat/internal/testutil"
)

// A node that stops hangs up on its LND: the gRPC connection of its tip
// engine is closed with it, not left open (and redialled with backoff) for
// as long as the process lives. The LND here is a gRPC server with LND's
// Lightning service and a certificate of its own, which counts the
// connections it sees begin and end.
func TestCloseHangsUpOnLND(t *testing.T) {
	dir := identityDir(t)
	certPEM, keyPEM := selfSignedCert(t)
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	conns := &connCounter{}
	srv := grpc.NewServer(grpc.Creds(credentials.NewServerTLSFromCert(&cert)), grpc.StatsHandler(conns))
	lnrpc.RegisterLightningServer(srv, lnrpc.UnimplementedLightningServer{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	for name, data := range map[string][]byte{"tls.cert": certPEM, "x.macaroon": []byte("a macaroon")} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	n := startIdentityNode(t, dir, "--lnd.rpcserver", ln.Addr().String(), "--lnd.tlscertpath", filepath.Join(dir, "tls.cert"), "--lnd.macaroonpath", filepath.Join(dir, "x.macaroon"))
	testutil.Eventually(t, 30*time.Second, "the tip engine's connection to LND", func() (bool, error) {
		begun, _ := conns.counts()
		return begun > 0, nil
	})
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the LND connection closed after the node stopped", func() (bool, error) {
		begun, ended := conns.counts()
		return ended == begun, nil
	})
}

// startIdentityNode starts a regtest node on dir (made by identityDir) with
// args added to its flags, and closes it when the test ends.
func startIdentityNode(t *testing.T, dir string, args ...string) *node.Node {
	t.Helper()
	n, _ := startNodeArgs(t, append([]string{"--datadir", dir, "--passphrase-file", filepath.Join(dir, "pass")}, args...)...)
	return n
}

// identityDir is a data dir with an identity whose passphrase is in the
// file "pass" beside it.
func identityDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	key, err := identity.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	ks := node.Keystore(dir, slog.New(slog.DiscardHandler))
	ks.LogN = 4
	const pass = "a quiet lighthouse keeps seven ledgers"
	if err := ks.Create(context.Background(), key, pass); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "pass"), []byte(pass+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// selfSignedCert is a PEM certificate for 127.0.0.1 and its key, as LND
// makes its own tls.cert.
func selfSignedCert(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fake lnd"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

// connCounter is a gRPC server's stats handler that counts the connections
// that began and ended.
type connCounter struct {
	mu           sync.Mutex
	begun, ended int
}

func (c *connCounter) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (c *connCounter) HandleRPC(context.Context, stats.RPCStats)                       {}
func (c *connCounter) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}

func (c *connCounter) HandleConn(_ context.Context, s stats.ConnStats) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch s.(type) {
	case *stats.ConnBegin:
		c.begun++
	case *stats.ConnEnd:
		c.ended++
	}
}

func (c *connCounter) counts() (begun, ended int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.begun, c.ended
}

// A node that stops ends the live streams of its API (GET /v1/watch, what
// `anchorchat chat` reads) at once. Before, the API server's graceful
// shutdown waited for them until its timeout (15 s), since the messenger
// that feeds them closes only after it.
func TestCloseEndsWatchStreams(t *testing.T) {
	dir := identityDir(t)
	n := startIdentityNode(t, dir)
	c, err := node.Dial(dir)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Response(context.Background(), "GET", "/v1/watch", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	ended := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, resp.Body)
		ended <- err
	}()
	closed := make(chan error, 1)
	go func() { closed <- n.Close() }()
	select {
	case err := <-ended:
		if err != nil {
			t.Errorf("the watch stream ended with %v, want its clean end", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the watch stream was still open 10 s after the node began to stop")
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
}

// A `send --wait` in progress when the node stops is answered at once,
// instead of holding the API server's graceful shutdown until its timeout
// (15 s). The recipient's one relay (from its nprofile) accepts connections
// and never answers, so the send cannot finish.
func TestCloseAnswersAWaitingSend(t *testing.T) {
	dir := identityDir(t)
	hole, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hole.Close()
	dialled := make(chan struct{}, 1)
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := hole.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
			select {
			case dialled <- struct{}{}:
			default:
			}
		}
	}()
	n := startIdentityNode(t, dir, "--chat.allow-private-relays")
	c, err := node.Dial(dir)
	if err != nil {
		t.Fatal(err)
	}
	bob, err := identity.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	nprofile, err := nip19.EncodeProfile(bob.PublicKey(), []string{"ws://" + hole.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(node.SendRequest{To: []string{nprofile}, Text: "are you there?", Wait: true})
	answered := make(chan error, 1)
	var m node.MessageView
	go func() { answered <- c.Do(context.Background(), "POST", "/v1/send", bytes.NewReader(body), &m) }()
	select { // the send is under way
	case <-dialled:
	case err := <-answered:
		t.Fatalf("the send was answered before the node stopped: %v %+v", err, m)
	case <-time.After(30 * time.Second):
		t.Fatal("the recipient's relay was never dialled")
	}
	closed := make(chan error, 1)
	go func() { closed <- n.Close() }()
	select {
	case err := <-answered:
		if err != nil && !strings.Contains(err.Error(), "stopping") {
			t.Errorf("the waiting send was answered with %v; want the message, or that the node is stopping", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting send was still unanswered 10 s after the node began to stop")
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
}
