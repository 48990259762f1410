package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"
	"github.com/nbd-wtf/go-nostr/nip19"

	"github.com/anchorchat/anchorchat/internal/freeport"
	"github.com/anchorchat/anchorchat/internal/relaytest"
	"github.com/anchorchat/anchorchat/internal/testutil"
)

// freeAddrs are n distinct loopback addresses for node processes to listen
// on, outside the ephemeral range that this package's and others'
// connections draw from while the processes start.
func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	ports, err := freeport.Loopback(n)
	if err != nil {
		t.Fatal(err)
	}
	addrs := make([]string, n)
	for i, p := range ports {
		addrs[i] = net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
	}
	return addrs
}

// newUser creates an identity with a handle in a fresh data dir.
func newUser(t *testing.T, handle string) (dir, pk string) {
	t.Helper()
	dir = t.TempDir()
	sk := nostr.GeneratePrivateKey()
	pk, _ = nostr.GetPublicKey(sk)
	keyFile := filepath.Join(t.TempDir(), "key")
	_ = os.WriteFile(keyFile, []byte(sk), 0o600)
	if out, err := cli(t, []string{"ANCHORCHAT_PASSPHRASE=" + testPass}, "init", "--scrypt-logn", "10", "--handle", handle, "--key-file", keyFile, "--network", "regtest", "--datadir", dir); err != nil {
		t.Fatalf("init %s: %v\n%s", handle, err, out)
	}
	return dir, pk
}

func TestTwoNodesConverse(t *testing.T) {
	aliceDir, alicePK := newUser(t, "alice")
	bobDir, _ := newUser(t, "bob")
	addrs := freeAddrs(t, 2)
	aliceAddr, bobAddr := addrs[0], addrs[1]
	env := []string{"ANCHORCHAT_PASSPHRASE=" + testPass}
	// Each node looks up the other's claims and DM relays on the other's relay.
	startProcEnv(t, bobDir, env, "--listen", bobAddr, "--api.listen", "127.0.0.1:0", "--publish-relays", "ws://"+aliceAddr)
	startProcEnv(t, aliceDir, env, "--listen", aliceAddr, "--api.listen", "127.0.0.1:0", "--publish-relays", "ws://"+bobAddr)
	alice := []string{"--network", "regtest", "--datadir", aliceDir}
	bob := []string{"--network", "regtest", "--datadir", bobDir}
	aliceNpub, _ := nip19.EncodePublicKey(alicePK)

	out, err := cli(t, nil, append(append([]string{"send", "--wait"}, alice...), "@bob", "hello bob, this is alice")...)
	if err != nil || !strings.Contains(out, "sent to") {
		t.Fatalf("send: %v\n%s", err, out)
	}
	firstID := strings.Fields(out)[0]
	waitFor(t, "bob's inbox shows the message", func() (bool, string) {
		out, _ := cli(t, nil, append([]string{"inbox"}, bob...)...)
		return strings.Contains(out, "1 unread") && strings.Contains(out, "@alice"), out
	})

	// A file, encrypted, through alice's blob store.
	photo := bytes.Repeat([]byte("not really a jpeg "), 1000)
	photoPath := filepath.Join(t.TempDir(), "photo.jpg")
	_ = os.WriteFile(photoPath, photo, 0o600)
	out, err = cli(t, nil, append(append([]string{"send", "--wait", "--file", photoPath}, alice...), "@bob")...)
	if err != nil {
		t.Fatalf("send --file: %v\n%s", err, out)
	}
	fileMsgID := strings.Fields(out)[0]

	// bob's chat view shows both, with alice's identity status, then exits on our deadline.
	var view string
	waitFor(t, "bob's chat view shows text and file", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, binPath, append(append([]string{"chat", "--no-input"}, bob...), aliceNpub)...)
		b, _ := cmd.Output()
		view = string(b)
		return strings.Contains(view, "hello bob, this is alice") && strings.Contains(view, fileMsgID) && strings.Contains(view, "claimed"), view
	})

	dst := filepath.Join(t.TempDir(), "got.jpg")
	out, err = cli(t, nil, append(append([]string{"fetch", "-o", dst}, bob...), fileMsgID)...)
	if err != nil {
		t.Fatalf("fetch: %v\n%s", err, out)
	}
	if got, _ := os.ReadFile(dst); !bytes.Equal(got, photo) {
		t.Fatalf("fetched file differs (%d bytes vs %d)", len(got), len(photo))
	}

	// bob answers by npub; alice's live chat view shows it as it arrives.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	watcher := exec.CommandContext(ctx, binPath, append(append([]string{"chat", "--no-input"}, alice...), "@bob")...)
	stdout, _ := watcher.StdoutPipe()
	if err := watcher.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = watcher.Wait() }()
	lines := bufio.NewScanner(stdout)
	for lines.Scan() { // history first, up to alice's own file message
		if strings.Contains(lines.Text(), fileMsgID) {
			break
		}
	}
	if out, err := cli(t, nil, append(append([]string{"send"}, bob...), aliceNpub, "hi alice, got it")...); err != nil {
		t.Fatalf("bob's reply: %v\n%s", err, out)
	}
	replied := false
	for !replied && lines.Scan() {
		replied = strings.Contains(lines.Text(), "hi alice, got it")
	}
	if !replied {
		t.Fatalf("alice's live chat view never showed bob's reply (%v)", lines.Err())
	}

	history := func(args []string, with string) string {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		b, _ := exec.CommandContext(ctx, binPath, append(append([]string{"chat", "--no-input"}, args...), with)...).Output()
		return string(b)
	}
	// A disappearing conversation: the message goes from both sides' stores.
	if out, err := cli(t, nil, append(append([]string{"disappear"}, alice...), "@bob", "3s")...); err != nil || !strings.Contains(out, "3s") {
		t.Fatalf("disappear: %v\n%s", err, out)
	}
	if out, err := cli(t, nil, append(append([]string{"send", "--wait"}, alice...), "@bob", "this will vanish")...); err != nil {
		t.Fatalf("send: %v\n%s", err, out)
	}
	waitFor(t, "bob receives the disappearing message", func() (bool, string) {
		h := history(bob, aliceNpub)
		return strings.Contains(h, "this will vanish") && strings.Contains(h, "disappears"), h
	})
	waitFor(t, "the message disappears on both sides", func() (bool, string) {
		a, b := history(alice, "@bob"), history(bob, aliceNpub)
		return !strings.Contains(a, "this will vanish") && !strings.Contains(b, "this will vanish"), a + b
	})

	// Deleting a sent message removes it from the recipient's conversation.
	if out, err := cli(t, nil, append(append([]string{"delete"}, alice...), firstID)...); err != nil {
		t.Fatalf("delete: %v\n%s", err, out)
	}
	waitFor(t, "bob's copy of the deleted message is gone", func() (bool, string) {
		h := history(bob, aliceNpub)
		return !strings.Contains(h, "hello bob, this is alice") && strings.Contains(h, "hi alice, got it"), h
	})
}

// waitFor polls cond until it holds or 20 s pass; on failure it shows the last state.
func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	testutil.Eventually(t, 20*time.Second, what, func() (bool, error) {
		ok, state := cond()
		if ok {
			return true, nil
		}
		return false, fmt.Errorf("last state:\n%s", state)
	})
}

// Behind a public name (relay.url), listening on all interfaces, with
// private file hosts refused: alice's own messenger still authenticates to
// her relay (it reaches it on loopback, not the public name), her file messages carry the
// public URL, she can fetch her own file, and bob's node refuses to fetch
// from a loopback host, saying which setting allows it.
func TestPublicRelayURLAndFileHosts(t *testing.T) {
	aliceDir, alicePK := newUser(t, "alice")
	bobDir, _ := newUser(t, "bob")
	addrs := freeAddrs(t, 2)
	aliceAddr, bobAddr := addrs[0], addrs[1]
	_, alicePort, _ := net.SplitHostPort(aliceAddr)
	alicePublic := "ws://localhost:" + alicePort + "/"
	env := []string{"ANCHORCHAT_PASSPHRASE=" + testPass}
	startProcEnv(t, bobDir, env, "--listen", bobAddr, "--api.listen", "127.0.0.1:0", "--publish-relays", "ws://"+aliceAddr,
		"--files.allow-private-hosts=false")
	// alice listens on every interface: her messenger dials loopback.
	startProcEnv(t, aliceDir, env, "--listen", "0.0.0.0:"+alicePort, "--api.listen", "127.0.0.1:0", "--publish-relays", "ws://"+bobAddr,
		"--relay.url", alicePublic, "--dm-relays", "ws://"+aliceAddr, "--files.allow-private-hosts=false")
	alice := []string{"--network", "regtest", "--datadir", aliceDir}
	bob := []string{"--network", "regtest", "--datadir", bobDir}
	aliceNpub, _ := nip19.EncodePublicKey(alicePK)

	if out, err := cli(t, nil, append(append([]string{"send", "--wait"}, bob...), aliceNpub, "hello alice")...); err != nil {
		t.Fatalf("bob's send: %v\n%s", err, out)
	}
	waitFor(t, "alice's messenger reads her inbox (AUTH with relay.url set)", func() (bool, string) {
		out, _ := cli(t, nil, append([]string{"inbox"}, alice...)...)
		return strings.Contains(out, "1 unread"), out
	})

	photoPath := filepath.Join(t.TempDir(), "photo.jpg")
	photo := bytes.Repeat([]byte("still not a jpeg "), 500)
	_ = os.WriteFile(photoPath, photo, 0o600)
	out, err := cli(t, nil, append(append([]string{"send", "--wait", "--file", photoPath}, alice...), "@bob")...)
	if err != nil {
		t.Fatalf("send --file: %v\n%s", err, out)
	}
	fileMsgID := strings.Fields(out)[0]
	dst := filepath.Join(t.TempDir(), "mine.jpg")
	// Flags after the id, as the help shows: fetch MESSAGE_ID -o FILE.
	if out, err := cli(t, nil, append([]string{"fetch", fileMsgID, "-o", dst}, alice...)...); err != nil {
		t.Fatalf("alice fetches her own file: %v\n%s", err, out)
	}
	if got, _ := os.ReadFile(dst); !bytes.Equal(got, photo) {
		t.Fatal("alice's own file differs")
	}
	waitFor(t, "bob has the file message, on alice's public host", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		b, _ := exec.CommandContext(ctx, binPath, append(append([]string{"chat", "--no-input"}, bob...), aliceNpub)...).Output()
		return strings.Contains(string(b), "on localhost:"+alicePort+": anchorchat fetch "+fileMsgID), string(b)
	})
	out, err = cli(t, nil, append(append([]string{"fetch", "-o", filepath.Join(t.TempDir(), "x")}, bob...), fileMsgID)...)
	if err == nil || !strings.Contains(out, "not a public address") || !strings.Contains(out, "--files.allow-private-hosts") {
		t.Fatalf("bob fetching from loopback: %v\n%s", err, out)
	}
}

// A node's --dm-relays are its inbox from its first start: alice's message,
// delivered only to bob's outside DM relay, reaches bob without a restart.
// (The inbox used to be looked up as the kind 10050 list on the own relay,
// which the node publishes only after its messenger has started: a new or
// changed --dm-relays took effect at the next start.)
func TestDMRelaysAreTheInboxFromTheStart(t *testing.T) {
	outside := relaytest.Start(t, relaytest.Options{Open: true})
	aliceDir, _ := newUser(t, "alice")
	bobDir, _ := newUser(t, "bob")
	addrs := freeAddrs(t, 2)
	env := []string{"ANCHORCHAT_PASSPHRASE=" + testPass}
	// Both find each other's claims and DM relay lists on the outside relay;
	// bob's list names it alone, so that is where alice delivers.
	startProcEnv(t, bobDir, env, "--listen", addrs[1], "--api.listen", "127.0.0.1:0", "--publish-relays", outside.URL, "--dm-relays", outside.URL)
	startProcEnv(t, aliceDir, env, "--listen", addrs[0], "--api.listen", "127.0.0.1:0", "--publish-relays", outside.URL)
	alice := []string{"--network", "regtest", "--datadir", aliceDir}
	bob := []string{"--network", "regtest", "--datadir", bobDir}
	out, err := cli(t, nil, append(append([]string{"send", "--wait"}, alice...), "@bob", "only on your DM relay")...)
	if err != nil || !strings.Contains(out, "sent to 1 of 1") {
		t.Fatalf("send: %v\n%s", err, out)
	}
	waitFor(t, "bob's inbox shows the message", func() (bool, string) {
		out, _ := cli(t, nil, append([]string{"inbox"}, bob...)...)
		return strings.Contains(out, "1 unread") && strings.Contains(out, "@alice"), out
	})
}

// send --wait fails when the message does: a script could not tell a
// message no relay took ("failed: ...", exit status 0) from one sent.
// The recipient's one relay is on loopback, which this node may not dial.
func TestSendWaitFailsWithTheMessage(t *testing.T) {
	dir, _ := newUser(t, "fay")
	startProcEnv(t, dir, []string{"ANCHORCHAT_PASSPHRASE=" + testPass}, "--api.listen", "127.0.0.1:0", "--chat.allow-private-relays=false")
	pk, _ := nostr.GetPublicKey(nostr.GeneratePrivateKey())
	to, _ := nip19.EncodeProfile(pk, []string{"ws://127.0.0.1:9"})
	out, err := cli(t, nil, "send", "--wait", "--network", "regtest", "--datadir", dir, to, "anyone there?")
	if err == nil || !strings.Contains(out, "failed") {
		t.Fatalf("send --wait of a message that failed: %v\n%s", err, out)
	}
	// Without --wait the message is only queued: that is no failure.
	if out, err := cli(t, nil, "send", "--network", "regtest", "--datadir", dir, to, "anyone?"); err != nil {
		t.Fatalf("send without --wait: %v\n%s", err, out)
	}
}
