package regtest

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"gopkg.in/macaroon.v2"
)

// TestWaitFilesWantsAWholeMacaroon: LND writes admin.macaroon with
// os.WriteFile, so the file exists, empty, before its bytes are in it. The
// harness reads it once, to authenticate every RPC it makes: an empty or
// cut macaroon read then fails every RPC until Up gives up. waitFiles must
// wait for a macaroon that parses.
func TestWaitFilesWantsAWholeMacaroon(t *testing.T) {
	d := t.TempDir()
	l := &LND{LNDState: LNDState{Name: "lnd-0", Dir: d, TLSCertPath: filepath.Join(d, "tls.cert"),
		MacaroonPath: filepath.Join(d, "admin.macaroon"), LogPath: filepath.Join(d, "lnd.out")}}
	if err := os.WriteFile(l.TLSCertPath, []byte("cert"), 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := macaroon.New([]byte("root key"), []byte("id"), "lnd", macaroon.LatestVersion)
	if err != nil {
		t.Fatal(err)
	}
	whole, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	for _, partial := range [][]byte{nil, whole[:len(whole)/2]} {
		if err := os.WriteFile(l.MacaroonPath, partial, 0o600); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		err := l.waitFiles(ctx)
		cancel()
		if err == nil {
			t.Fatalf("waitFiles took a macaroon of %d of its %d bytes", len(partial), len(whole))
		}
	}
	if err := os.WriteFile(l.MacaroonPath, whole, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := l.waitFiles(context.Background()); err != nil {
		t.Fatal(err)
	}
}
