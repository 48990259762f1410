package node

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/anchorchat/anchorchat/anchor"
	"github.com/anchorchat/anchorchat/identity"
	"github.com/anchorchat/anchorchat/wallet"
)

// The relay's dispatcher hands claims over without waiting, even while the
// batcher cannot take them (an anchoring round holds its lock across btcd
// calls); they reach it later, in order.
func TestClaimQueueNeverBlocksTheDispatcher(t *testing.T) {
	release := make(chan struct{})
	got := make(chan string, 100)
	q := newClaimQueue(func(ctx context.Context, evt *nostr.Event) {
		<-release // the batcher's lock, held by a round waiting on btcd
		got <- evt.ID
	})
	ctx, cancel := context.WithCancel(context.Background())
	left := make(chan int, 1)
	go func() { left <- q.run(ctx) }()

	pushed := make(chan struct{})
	go func() {
		for i := range 50 {
			q.push(&nostr.Event{ID: fmt.Sprint(i)})
		}
		close(pushed)
	}()
	select {
	case <-pushed:
	case <-time.After(5 * time.Second):
		t.Fatal("push waited for the batcher")
	}
	close(release)
	for i := range 50 {
		select {
		case id := <-got:
			if id != fmt.Sprint(i) {
				t.Fatalf("claim %s submitted in place %d: out of order", id, i)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("only %d of 50 claims submitted", i)
		}
	}
	cancel()
	if n := <-left; n != 0 {
		t.Fatalf("%d claims left unsubmitted", n)
	}
}

// When the node stops, the queue's goroutine ends and says how many claims it
// did not hand over.
func TestClaimQueueStops(t *testing.T) {
	entered := make(chan struct{}, 3)
	q := newClaimQueue(func(ctx context.Context, evt *nostr.Event) {
		entered <- struct{}{}
		<-ctx.Done() // the batcher is busy until the node stops
	})
	ctx, cancel := context.WithCancel(context.Background())
	left := make(chan int, 1)
	go func() { left <- q.run(ctx) }()
	for i := range 3 {
		q.push(&nostr.Event{ID: fmt.Sprint(i)})
	}
	<-entered // the first is being submitted
	cancel()
	select {
	case n := <-left:
		if n != 2 {
			t.Fatalf("%d claims reported left, want 2", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the queue did not stop with the node")
	}
}

// Submitting never reaches the wallet or the chain: a call would panic on the
// nil interface.
type noWallet struct{ anchor.Wallet }
type noChain struct{ wallet.Chain }

// At start the node hands the batcher every claim and revocation in its store
// that the batcher never saw (stored while the node ran without btcd, or
// queued when it stopped): its owner's, and with anchor.accept-others
// everyone's, however many share a second; nothing twice.
func TestCatchUpClaims(t *testing.T) {
	ctx := context.Background()
	st := tempStore(t)
	owner, err := identity.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{store: st, key: owner, cfg: &Config{}}
	n.batcher, err = anchor.Open(ctx, anchor.Config{Path: filepath.Join(t.TempDir(), "anchor.db"), Wallet: noWallet{}, Chain: noChain{}, Signer: owner,
		Accept: func(c *identity.Claim) error {
			if c.PubKey == owner.PublicKey() || n.cfg.Anchor.AcceptOthers {
				return nil
			}
			return errors.New("not the owner's")
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.batcher.Close()

	at := time.Now().Add(-time.Hour)
	mine, err := identity.NewClaim(owner, identity.ClaimParams{Handle: "dave", CreatedAt: at})
	if err != nil {
		t.Fatal(err)
	}
	c, err := identity.ValidateClaim(mine)
	if err != nil {
		t.Fatal(err)
	}
	rev, err := identity.NewRevocation(owner, c, "lost", at.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	note := &nostr.Event{Kind: 1, Content: "not a claim", CreatedAt: nostr.Timestamp(at.Unix())}
	if err := owner.Sign(note); err != nil {
		t.Fatal(err)
	}
	// More strangers' claims in one second than one page of the store.
	theirs := make([]*nostr.Event, 1100)
	for i := range theirs {
		k, err := identity.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		if theirs[i], err = identity.NewClaim(k, identity.ClaimParams{Handle: fmt.Sprintf("user%d", i), CreatedAt: at}); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(theirs)+3)
	for _, e := range append([]*nostr.Event{mine, rev, note}, theirs...) {
		wg.Add(1)
		st.SaveAsync(e, func(err error) { errs <- err; wg.Done() })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}

	if added, err := n.catchUpClaims(ctx); err != nil || added != 2 {
		t.Fatalf("catch-up: %d handed over, %v; want the owner's claim and revocation", added, err)
	}
	for _, e := range []*nostr.Event{mine, rev} {
		if s, err := n.batcher.Status(ctx, e.ID); err != nil || !s.Pending {
			t.Fatalf("%s: %+v %v; want pending", e.ID, s, err)
		}
	}
	if _, err := n.batcher.Status(ctx, theirs[0].ID); err == nil {
		t.Fatal("a stranger's claim handed over without anchor.accept-others")
	}
	if added, err := n.catchUpClaims(ctx); err != nil || added != 0 {
		t.Fatalf("second catch-up: %d handed over, %v; want none", added, err)
	}
	n.cfg.Anchor.AcceptOthers = true
	if added, err := n.catchUpClaims(ctx); err != nil || added != len(theirs) {
		t.Fatalf("catch-up with accept-others: %d handed over, %v; want %d", added, err, len(theirs))
	}
}
