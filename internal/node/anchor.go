package node

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/btcsuite/btcd/chaincfg"
	"github.com/btcsuite/btcd/rpcclient"
	"github.com/nbd-wtf/go-nostr"

	"github.com/anchorchat/anchorchat/anchor"
	"github.com/anchorchat/anchorchat/identity"
	"github.com/anchorchat/anchorchat/storage"
	"github.com/anchorchat/anchorchat/wallet"
)

// Files of the anchoring layer inside the data dir.
const (
	WalletFile   = "wallet.json"
	AnchorDBFile = "anchor.db"
)

// BtcdConfig is how the node reaches a btcd for anchoring and verification.
type BtcdConfig struct {
	RPCServer, RPCUser, RPCPass, RPCCert string
}

// Configured reports whether a btcd connection is set.
func (b BtcdConfig) Configured() bool { return b.RPCServer != "" }

// AnchorConfig tunes the batcher and the verifier.
type AnchorConfig struct {
	Interval      time.Duration
	MaxBatch      int
	Confirmations int // attest, and call VERIFIED, from this many confirmations
	PollInterval  time.Duration
	AcceptOthers  bool
}

var networkParams = map[string]*chaincfg.Params{
	"mainnet": &chaincfg.MainNetParams, "testnet": &chaincfg.TestNet3Params,
	"signet": &chaincfg.SigNetParams, "regtest": &chaincfg.RegressionNetParams,
}

// setupAnchor connects to btcd, opens the on-chain wallet (creating it on
// first use, encrypted with the identity's passphrase) and the batcher, and
// makes the verifier that gives chat contacts their on-chain verdict.
func (n *Node) setupAnchor(ctx context.Context, passphrase string) error {
	if n.key == nil || !n.cfg.Btcd.Configured() {
		return nil
	}
	b := n.cfg.Btcd
	cert, err := os.ReadFile(b.RPCCert)
	if err != nil {
		return fmt.Errorf("btcd.rpccert: %w", err)
	}
	n.btcd, err = rpcclient.New(&rpcclient.ConnConfig{
		Host: b.RPCServer, User: b.RPCUser, Pass: b.RPCPass, Certificates: cert,
		HTTPPostMode: true, DisableConnectOnNew: true,
	}, nil)
	if err != nil {
		return fmt.Errorf("btcd client: %w", err)
	}
	chain := wallet.NewRPCChain(n.btcd)
	wcfg := wallet.Config{Params: networkParams[n.cfg.Network], Chain: chain, Logger: n.log}
	path := filepath.Join(n.cfg.DataDir, WalletFile)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		height, err := n.btcd.GetBlockCount()
		if err != nil {
			return fmt.Errorf("btcd unreachable (%s): %w", b.RPCServer, err)
		}
		wcfg.Birthday = int32(height)
		if n.wallet, err = wallet.Create(path, []byte(passphrase), wcfg); err != nil {
			return fmt.Errorf("creating the anchoring wallet: %w", err)
		}
		n.log.Info("anchoring wallet created", "path", path, "birthday", height)
	} else if n.wallet, err = wallet.Open(path, []byte(passphrase), wcfg); err != nil {
		if errors.Is(err, wallet.ErrWrongPassword) {
			return fmt.Errorf("opening the anchoring wallet %s (encrypted under the identity's passphrase; if `anchorchat id passwd` was interrupted, run it again with the same passphrases): %w", path, err)
		}
		return fmt.Errorf("opening the anchoring wallet: %w", err)
	}
	a := n.cfg.Anchor
	n.batcher, err = anchor.Open(ctx, anchor.Config{
		Path: filepath.Join(n.cfg.DataDir, AnchorDBFile), Wallet: n.wallet, Chain: chain, Signer: n.key,
		Publish: func(ctx context.Context, evt *nostr.Event) error {
			if err := n.relay.Publish(ctx, evt); err != nil {
				return err
			}
			n.publishRemote(ctx, []*nostr.Event{evt})
			return nil
		},
		Accept: func(c *identity.Claim) error {
			if c.PubKey == n.key.PublicKey() || a.AcceptOthers {
				return nil
			}
			return errors.New("this node anchors only its owner's claims (anchor.accept-others)")
		},
		Interval: a.Interval, MaxBatch: a.MaxBatch, Confirmations: int32(a.Confirmations), PollInterval: a.PollInterval,
		Logger: n.log,
	})
	if err != nil {
		return fmt.Errorf("anchor batcher: %w", err)
	}
	// Two verifiers: conversations ask often and may see a verdict up to ten
	// seconds old; `anchorchat verify` always checks afresh.
	newVerifier := func(cacheTTL time.Duration) *anchor.Verifier {
		return &anchor.Verifier{
			Chain:    anchor.NewBtcdChain(n.btcd),
			Relays:   append([]string{n.RelayURL()}, n.cfg.PublishRelays...),
			Sources:  []anchor.Source{anchor.BatcherSource(n.batcher)},
			Keep:     n.batcher.KeepEvidence,
			Options:  anchor.Options{MinConfirmations: int32(a.Confirmations)},
			CacheTTL: cacheTTL,
			Logger:   n.log.With("component", "verify"),
		}
	}
	n.verifier, n.freshVerifier = newVerifier(10*time.Second), newVerifier(-1)
	return nil
}

// submitClaims queues the handle claims and revocations the relay stored
// for the batcher (its Accept policy decides); it is the relay's OnSaved
// and returns at once (claimQueue).
func (n *Node) submitClaims(evt *nostr.Event) {
	if n.claims == nil || (evt.Kind != identity.KindHandleClaim && evt.Kind != identity.KindHandleRevocation) {
		return
	}
	n.claims.push(evt)
}

// startClaimQueue starts the goroutine that hands queued claims to the
// batcher, until the node stops.
func (n *Node) startClaimQueue() {
	n.claims = newClaimQueue(func(ctx context.Context, evt *nostr.Event) {
		if _, err := n.batcher.Submit(ctx, evt); err != nil && ctx.Err() == nil {
			n.log.Info("claim not submitted for anchoring", "id", evt.ID, "err", err)
		}
	})
	ctx, stop := context.WithCancel(n.ctx)
	n.stopClaims = stop
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if added, err := n.catchUpClaims(ctx); err != nil && ctx.Err() == nil {
			n.log.Warn("cannot hand the stored claims to the anchor batcher", "err", err)
		} else if added > 0 {
			n.log.Info("stored claims the anchor batcher had not seen handed to it", "claims", added)
		}
		if left := n.claims.run(ctx); left > 0 {
			n.log.Warn("node stopping: claims stored but not yet handed to the anchor batcher; the next start hands them over", "claims", left)
		}
	}()
}

// catchUpClaims hands the batcher the handle claims, rotations and
// revocations in the store that it never saw: those stored while the node ran
// without btcd, and those still queued for it when the node last stopped.
// The batcher skips the events it knows and those its policy refuses, so this
// runs at every start; it returns how many events were new to the batcher.
func (n *Node) catchUpClaims(ctx context.Context) (int, error) {
	f := nostr.Filter{Kinds: []int{identity.KindHandleClaim, identity.KindHandleRevocation}, Limit: math.MaxInt32}
	if !n.cfg.Anchor.AcceptOthers {
		f.Authors = []string{n.key.PublicKey()}
	}
	// Read in full first: the batcher may wait for its lock (an anchoring
	// round on btcd), and the store's read must not wait with it.
	evts, err := n.store.Query(ctx, f, storage.Visibility{})
	if err != nil {
		return 0, err
	}
	added := 0
	for len(evts) > 0 {
		chunk := evts[:min(len(evts), 500)]
		evts = evts[len(chunk):]
		k, _, err := n.batcher.SubmitStored(ctx, chunk)
		added += k
		if err != nil {
			return added, err
		}
	}
	return added, nil
}

// WalletView is the answer of GET /v1/wallet.
type WalletView struct {
	Address     string `json:"address"`
	Confirmed   int64  `json:"confirmed_sat"`
	Unconfirmed int64  `json:"unconfirmed_sat"`
}

func (n *Node) anchorRoutes(mux *http.ServeMux) {
	need := requires(func() bool { return n.batcher != nil }, "anchoring needs an identity and a btcd connection: set btcd.rpcserver, btcd.rpcuser, btcd.rpcpass, btcd.rpccert")
	mux.HandleFunc("POST /v1/anchor/now", need(func(w http.ResponseWriter, r *http.Request) {
		batches, err := n.batcher.AnchorNow(r.Context())
		if errors.Is(err, anchor.ErrNothingToAnchor) {
			apiError(w, http.StatusConflict, err)
			return
		}
		if err != nil {
			apiError(w, http.StatusBadGateway, err)
			return
		}
		writeJSON(w, batches)
	}))
	mux.HandleFunc("GET /v1/anchor/batches", need(func(w http.ResponseWriter, r *http.Request) {
		batches, err := n.batcher.Batches(r.Context())
		if err != nil {
			apiError(w, http.StatusInternalServerError, err)
			return
		}
		writeJSON(w, batches)
	}))
	mux.HandleFunc("GET /v1/wallet", need(func(w http.ResponseWriter, r *http.Request) {
		if err := n.wallet.Sync(r.Context()); err != nil {
			apiError(w, http.StatusBadGateway, err)
			return
		}
		addr, err := n.wallet.NewAddress()
		if err != nil {
			apiError(w, http.StatusInternalServerError, err)
			return
		}
		bal := n.wallet.Balance()
		writeJSON(w, WalletView{Address: addr.EncodeAddress(), Confirmed: int64(bal.Confirmed), Unconfirmed: int64(bal.Unconfirmed)})
	}))
	mux.HandleFunc("GET /v1/verify", func(w http.ResponseWriter, r *http.Request) {
		if n.verifier == nil {
			apiError(w, http.StatusConflict, errors.New("verification needs a btcd connection: set btcd.rpcserver, btcd.rpcuser, btcd.rpcpass, btcd.rpccert"))
			return
		}
		q, err := n.verifyQuery(r.Context(), r.URL.Query().Get("q"))
		if err != nil {
			apiError(w, http.StatusBadRequest, err)
			return
		}
		v, err := n.freshVerifier.Check(r.Context(), q)
		if err != nil {
			apiError(w, http.StatusBadGateway, err)
			return
		}
		writeJSON(w, v)
	})
}

// verifyQuery turns @handle, handle, npub, hex or name@domain into a query.
func (n *Node) verifyQuery(ctx context.Context, s string) (anchor.Query, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return anchor.Query{}, errors.New("verify what? a handle, an npub or name@domain")
	case strings.HasPrefix(s, "npub1"), len(s) == 64:
		pk, err := identity.ParsePublicKey(s)
		return anchor.Query{PubKey: pk}, err
	case strings.HasPrefix(s, "@"):
		h, err := identity.NormalizeHandle(s)
		return anchor.Query{Handle: h}, err
	case strings.Contains(s, "@"):
		res, err := (&identity.Resolver{}).Resolve(ctx, s)
		if err != nil {
			return anchor.Query{}, err
		}
		return anchor.Query{PubKey: res.PubKey}, nil
	default:
		h, err := identity.NormalizeHandle(s)
		return anchor.Query{Handle: h}, err
	}
}
