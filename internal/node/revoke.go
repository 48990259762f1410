package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/nbd-wtf/go-nostr"
	"github.com/tidwall/gjson"

	"github.com/anchorchat/anchorchat/anchor"
	"github.com/anchorchat/anchorchat/identity"
	"github.com/anchorchat/anchorchat/internal/nostrclient"
	"github.com/anchorchat/anchorchat/storage"
)

// errNoClaim says that this node's key never claimed the handle.
var errNoClaim = errors.New("no claim of this handle by this node's key")

// ownChain returns the chain of handle that this node's key holds or held,
// built from the store: the key's newest claim of handle, the claims back to
// the first one, the rotations after it, and each claim's revocations by its
// key. What the store lacks of the key's claims and the earlier claims is
// copied from the publish relays (fetchOwnClaims, fetchHistory); an earlier
// claim they do not have either is a *missingClaimError. A claim with a
// rotation and another successor (a rotation, or a revocation signed before
// or after the rotation) is a fork, decided as a verifier decides it, by
// anchoring (decideFork); undecided, it is a *forkError. It fails with
// errNoClaim if the key never claimed handle.
func (n *Node) ownChain(ctx context.Context, handle string) (*identity.ChainState, error) {
	const most = 1000
	newest, err := n.newestOwnClaim(ctx, handle)
	if err != nil {
		return nil, err
	}
	if newest == nil && len(n.publishRelays()) > 0 {
		// None stored: a node set up afresh with the key a rotation handed
		// the handle to, or a lost store. Before it is taken for a key
		// that never claimed the handle, ask the publish relays.
		n.fetchOwnClaims(ctx, handle)
		if newest, err = n.newestOwnClaim(ctx, handle); err != nil {
			return nil, err
		}
	}
	if newest == nil {
		return nil, errNoClaim
	}
	chain := map[string]*identity.Claim{}
	// Back to the first claim. What the store lacks (a node set up afresh
	// with the key a rotation handed the handle to, or a lost store) is
	// copied from the publish relays, once.
	fetched := false
	var fetchErr error
	for c := newest; ; {
		chain[c.ID] = c
		if c.Type == identity.ClaimFirst {
			break
		}
		byID := nostr.Filter{IDs: []string{c.PrevID}, Kinds: []int{identity.KindHandleClaim}}
		prev, err := n.store.Query(ctx, byID, storage.Visibility{})
		if err != nil {
			return nil, err
		}
		if len(prev) == 0 && !fetched {
			fetched, fetchErr = true, n.fetchHistory(ctx, handle, c)
			if prev, err = n.store.Query(ctx, byID, storage.Visibility{}); err != nil {
				return nil, err
			}
		}
		if len(prev) == 0 {
			return nil, &missingClaimError{handle: handle, claim: c, relays: n.publishRelays(), err: fetchErr}
		}
		if c, err = identity.ValidateClaim(prev[0]); err != nil {
			return nil, err
		}
	}
	// Forward: rotations of a claim in the chain, consented to by that
	// claim's key, until none is left to add.
	for grew := true; grew; {
		grew = false
		err := n.eachClaim(ctx, handle, func(raw []byte) error {
			if !bytes.Contains(raw, []byte(`"prev"`)) {
				return nil // a first claim: not a rotation of anything
			}
			evt := &nostr.Event{}
			if err := evt.UnmarshalJSON(raw); err != nil {
				return fmt.Errorf("decoding a stored claim: %w", err)
			}
			c, err := identity.ValidateClaim(evt)
			if err != nil || c.Type != identity.ClaimRotation || chain[c.ID] != nil {
				return nil
			}
			if prev := chain[c.PrevID]; prev != nil && prev.PubKey == c.PrevPubKey {
				chain[c.ID], grew = c, true
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	// Every claim's successors: the rotations of it in the chain, and its
	// revocations by its own key. The current claim's revocations end the
	// chain; an earlier claim's, like a second rotation of it, fork it
	// (docs/protocol.md, "Deciding a handle", step 4), and only anchoring
	// decides a fork.
	evts := make([]*nostr.Event, 0, len(chain)+1)
	succ := map[string][]*identity.Claim{}
	for _, c := range chain {
		evts = append(evts, c.Event)
		if c.Type == identity.ClaimRotation {
			succ[c.PrevID] = append(succ[c.PrevID], c)
		}
	}
	for _, c := range chain {
		revs, err := n.store.Query(ctx, nostr.Filter{Kinds: []int{identity.KindHandleRevocation}, Authors: []string{c.PubKey}, Tags: nostr.TagMap{"e": {c.ID}}, Limit: most}, storage.Visibility{})
		if err != nil {
			return nil, err
		}
		for _, evt := range revs {
			if rv, err := identity.ValidateClaim(evt); err == nil && rv.Handle == handle && rv.Revokes == c.ID {
				evts = append(evts, evt)
				succ[c.ID] = append(succ[c.ID], rv)
			}
		}
	}
	var genesis *identity.Claim
	for _, c := range chain {
		if c.Type == identity.ClaimFirst {
			genesis = c
		}
	}
	for id, s := range succ {
		if len(s) > 1 && slices.ContainsFunc(s, func(c *identity.Claim) bool { return c.Type == identity.ClaimRotation }) {
			return n.decideFork(ctx, handle, genesis, id, s)
		}
	}
	return identity.ValidateChain(evts)
}

// newestOwnClaim returns the newest stored claim of handle by the node's
// key, or nil.
func (n *Node) newestOwnClaim(ctx context.Context, handle string) (*identity.Claim, error) {
	mine, err := n.store.Query(ctx, nostr.Filter{Kinds: []int{identity.KindHandleClaim}, Authors: []string{n.key.PublicKey()}, Tags: nostr.TagMap{"n": {handle}}, Limit: 1000}, storage.Visibility{})
	if err != nil {
		return nil, err
	}
	for _, evt := range mine { // newest first
		if c, err := identity.ValidateClaim(evt); err == nil && c.Handle == handle {
			return c, nil
		}
	}
	return nil, nil
}

// fetchOwnClaims copies into the store the claims of handle by the node's
// key that its publish relays have, and the key's revocations of them (a
// lost store must not make a revoked handle look held). Failures are
// logged: with nothing found, the key is taken never to have claimed
// handle, as before.
func (n *Node) fetchOwnClaims(ctx context.Context, handle string) {
	for _, url := range n.publishRelays() {
		err := n.atRelay(ctx, url, func(r *nostrclient.Conn) error {
			got, err := r.Query(ctx, nostr.Filter{Kinds: []int{identity.KindHandleClaim, identity.KindHandleRevocation}, Authors: []string{n.key.PublicKey()}, Tags: nostr.TagMap{"n": {handle}}, Limit: 1000})
			if err != nil {
				return err
			}
			for _, evt := range got {
				if c, err := identity.ValidateClaim(evt); err == nil && c.Handle == handle && c.PubKey == n.key.PublicKey() {
					if err := n.keep(ctx, evt); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil && n.log != nil {
			n.log.Warn("cannot ask a publish relay for this key's claims of the handle", "handle", handle, "relay", url, "err", err)
		}
	}
}

// atRelay calls fn with a connection to url, closed after it, within 15 s.
func (n *Node) atRelay(ctx context.Context, url string, fn func(r *nostrclient.Conn) error) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	r, err := nostrclient.Dial(ctx, url, nostrclient.Options{Sign: n.key.Sign})
	if err != nil {
		return err
	}
	defer r.Close()
	return fn(r)
}

// keep saves evt, fetched from a relay, in the store.
func (n *Node) keep(ctx context.Context, evt *nostr.Event) error {
	if err := n.store.Save(ctx, evt); err != nil && !errors.Is(err, storage.ErrDuplicate) {
		return fmt.Errorf("storing event %s: %w", evt.ID, err)
	}
	return nil
}

// missingClaimError says that an earlier claim of the node's chain is
// neither in its store nor on its publish relays.
type missingClaimError struct {
	handle string
	claim  *identity.Claim // the rotation whose prev is missing
	relays []string        // asked
	err    error           // why the relays did not give it
}

func (e *missingClaimError) Error() string {
	msg := fmt.Sprintf("@%s: claim %s (by %s) replaces claim %s (by %s), which this node's store lacks", e.handle, e.claim.ID, e.claim.PubKey, e.claim.PrevID, e.claim.PrevPubKey)
	if len(e.relays) == 0 {
		return msg + ", and it has no publish-relays to fetch it from: set publish-relays to relays holding the handle's earlier claims (those the earlier key published to), then retry or restart the node: it copies them into its store"
	}
	msg += fmt.Sprintf(", and its publish-relays (%s) do not give it", strings.Join(e.relays, ", "))
	if e.err != nil {
		msg += fmt.Sprintf(" (%v)", e.err)
	}
	return msg + ": add to publish-relays a relay holding the handle's earlier claims (one the earlier key published to), then retry or restart the node: it copies them into its store"
}

// Unwrap makes a missing claim a chain error (isChainError).
func (e *missingClaimError) Unwrap() error { return identity.ErrBrokenChain }

func (n *Node) publishRelays() []string {
	if n.cfg == nil {
		return nil
	}
	return n.cfg.PublishRelays
}

// fetchHistory copies into the store the claims before from that it lacks,
// asking the publish relays by id, back to the first claim, with each such
// claim's revocations by its key (which fork the chain, ownChain). It
// returns what failed if it did not reach the first claim.
func (n *Node) fetchHistory(ctx context.Context, handle string, from *identity.Claim) error {
	relays := n.publishRelays()
	if len(relays) == 0 {
		return nil
	}
	var errs []error
	c := from
	for _, url := range relays {
		if c.Type == identity.ClaimFirst {
			break
		}
		var err error
		if c, err = n.fetchFrom(ctx, url, handle, c); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", url, err))
		}
	}
	if c.Type == identity.ClaimFirst {
		return nil
	}
	return errors.Join(errs...)
}

// fetchFrom is fetchHistory at one relay; it returns the earliest claim
// the store now has.
func (n *Node) fetchFrom(ctx context.Context, url, handle string, c *identity.Claim) (*identity.Claim, error) {
	err := n.atRelay(ctx, url, func(r *nostrclient.Conn) error {
		for c.Type == identity.ClaimRotation {
			got, err := r.Query(ctx, nostr.Filter{IDs: []string{c.PrevID}, Kinds: []int{identity.KindHandleClaim}})
			if err != nil {
				return err
			}
			var prev *identity.Claim
			for _, evt := range got {
				if p, err := identity.ValidateClaim(evt); err == nil && p.ID == c.PrevID && p.Handle == handle {
					prev = p
				}
			}
			if prev == nil {
				return nil // not here
			}
			revs, err := r.Query(ctx, nostr.Filter{Kinds: []int{identity.KindHandleRevocation}, Authors: []string{prev.PubKey}, Tags: nostr.TagMap{"e": {prev.ID}}})
			if err != nil {
				return err
			}
			keep := []*nostr.Event{prev.Event}
			for _, evt := range revs {
				if rv, err := identity.ValidateClaim(evt); err == nil && rv.Handle == handle && rv.Revokes == prev.ID && rv.PubKey == prev.PubKey {
					keep = append(keep, evt)
				}
			}
			for _, evt := range keep {
				if err := n.keep(ctx, evt); err != nil {
					return err
				}
			}
			if n.log != nil {
				n.log.Info("copied an earlier claim of the handle from a relay", "handle", handle, "claim", prev.ID, "relay", url, "revocations", len(keep)-1)
			}
			c = prev
		}
		return nil
	})
	return c, err
}

// forkError is a chain of this node's key that forks: a claim with a
// rotation and another successor (a rotation or a revocation), which only
// anchoring decides, and this node could not decide by a verifier.
type forkError struct {
	handle, claim string
	successors    []*identity.Claim
	verdict       string // why the verifier did not decide it
}

func (e *forkError) Error() string {
	var what []string
	for _, s := range e.successors {
		what = append(what, fmt.Sprintf("%s %s by %s", s.Type, s.ID, s.PubKey))
	}
	slices.Sort(what)
	return fmt.Sprintf("the chain of @%s forks at claim %s (%s): the earliest anchored successor wins, and %s; `anchorchat verify @%s` shows the verdict",
		e.handle, e.claim, strings.Join(what, ", "), e.verdict, e.handle)
}

// Unwrap makes a fork a chain error (isChainError): the node does not
// serve a handle whose chain it cannot decide.
func (e *forkError) Unwrap() error { return identity.ErrBrokenChain }

// decideFork decides the fork of handle's chain at claim (whose successors
// are succ) as a verifier does, by anchoring: it returns the chain the
// node's fresh verifier names if that chain starts at genesis, and a
// *forkError otherwise (no btcd connection, no successor anchored, or the
// handle held by another first claim).
func (n *Node) decideFork(ctx context.Context, handle string, genesis *identity.Claim, claim string, succ []*identity.Claim) (*identity.ChainState, error) {
	fe := &forkError{handle: handle, claim: claim, successors: succ}
	if n.freshVerifier == nil {
		fe.verdict = "this node, without a btcd connection, cannot tell which"
		return nil, fe
	}
	v, err := n.freshVerifier.Check(ctx, anchor.Query{Handle: handle})
	if err != nil {
		fe.verdict = fmt.Sprintf("the verifier gave no verdict: %v", err)
		return nil, fe
	}
	var evts []*nostr.Event
	for _, e := range v.Evidence() {
		if e.Kind != anchor.KindAttestation {
			evts = append(evts, e)
		}
	}
	if len(evts) == 0 || genesis == nil || evts[0].ID != genesis.ID {
		fe.verdict = fmt.Sprintf("the verifier names no holder on this chain: %s", v)
		return nil, fe
	}
	return identity.ValidateChain(evts)
}

// eachClaim calls fn with every stored claim or rotation (kind 3780) of
// handle, newest first, a page at a time: however many first claims others
// stored for the handle, no rotation is missed.
func (n *Node) eachClaim(ctx context.Context, handle string, fn func(raw []byte) error) error {
	const page = 1000
	f := nostr.Filter{Kinds: []int{identity.KindHandleClaim}, Tags: nostr.TagMap{"n": {handle}}, Limit: page}
	for {
		got, last := 0, nostr.Timestamp(0)
		done := map[string]bool{} // ids of second last, already passed to fn
		err := n.store.QueryRaw(ctx, f, storage.Visibility{}, func(raw []byte) error {
			got++
			if at := nostr.Timestamp(gjson.GetBytes(raw, "created_at").Int()); at != last {
				last, done = at, map[string]bool{}
			}
			done[gjson.GetBytes(raw, "id").Str] = true
			return fn(raw)
		})
		if err != nil || got < page {
			return err
		}
		// The page may have cut second last short: take all of it, then
		// go on before it.
		rest := nostr.Filter{Kinds: f.Kinds, Tags: f.Tags, Since: &last, Until: &last, Limit: math.MaxInt32}
		err = n.store.QueryRaw(ctx, rest, storage.Visibility{}, func(raw []byte) error {
			if done[gjson.GetBytes(raw, "id").Str] {
				return nil
			}
			return fn(raw)
		})
		if err != nil {
			return err
		}
		before := last - 1
		f.Until = &before
	}
}

// RevokeRequest is the body of POST /v1/identity/revoke.
type RevokeRequest struct {
	Reason string `json:"reason,omitempty"` // shown to whoever verifies the handle
}

// RevokeResult is the answer of POST /v1/identity/revoke.
type RevokeResult struct {
	Handle     string `json:"handle"`
	Revocation string `json:"revocation"` // id of the kind 3781 event
	Claim      string `json:"claim"`      // id of the claim it revokes
	Anchoring  bool   `json:"anchoring"`  // queued to be anchored with the next batch
}

// errRevoke is a revocation the node refuses, with why (409).
type errRevoke struct{ msg string }

func (e errRevoke) Error() string { return e.msg }

// revoke signs and publishes a revocation of the configured handle's current
// claim, which this node's key must hold, and stops serving the handle over
// NIP-05.
func (n *Node) revoke(ctx context.Context, reason string) (*RevokeResult, error) {
	handle, err := identity.NormalizeHandle(n.cfg.Handle)
	if err != nil {
		return nil, err
	}
	n.revokeMu.Lock()
	defer n.revokeMu.Unlock()
	st, err := n.ownChain(ctx, handle)
	var fork *forkError
	var missing *missingClaimError
	switch {
	case errors.Is(err, errNoClaim):
		return nil, errRevoke{fmt.Sprintf("this node's key never claimed @%s, so it has nothing to revoke", handle)}
	case errors.As(err, &fork):
		return nil, errRevoke{fmt.Sprintf("cannot tell which key holds @%s: %v", handle, err)}
	case errors.As(err, &missing):
		return nil, errRevoke{err.Error()}
	case err != nil:
		return nil, fmt.Errorf("the chain of @%s: %w", handle, err)
	case st.Revoked:
		return nil, errRevoke{fmt.Sprintf("@%s is already revoked, by event %s", handle, st.Revocation.ID)}
	case st.Current.PubKey != n.key.PublicKey():
		return nil, errRevoke{fmt.Sprintf("@%s was rotated to key %s (claim %s): only that key can revoke it", handle, st.Current.PubKey, st.Current.ID)}
	}
	evt, err := identity.NewRevocation(n.key, st.Current, reason, time.Now())
	if err != nil {
		return nil, err
	}
	if err := n.relay.Publish(ctx, evt); err != nil {
		return nil, fmt.Errorf("storing the revocation: %w", err)
	}
	n.nip05.Remove(handle)
	n.setHandleState(HandleRevoked)
	n.log.Warn("handle revoked", "handle", handle, "revocation", evt.ID, "claim", st.Current.ID)
	n.publishRemote(ctx, []*nostr.Event{evt})
	return &RevokeResult{Handle: handle, Revocation: evt.ID, Claim: st.Current.ID, Anchoring: n.claims != nil}, nil
}

func (n *Node) identityRoutes(mux *http.ServeMux) {
	need := requires(func() bool { return n.key != nil && n.cfg.Handle != "" }, "revoking needs an identity with a handle: run `anchorchat init --handle NAME`, or set handle in the config")
	mux.HandleFunc("POST /v1/identity/revoke", need(func(w http.ResponseWriter, r *http.Request) {
		var req RevokeRequest
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil && !errors.Is(err, io.EOF) { // no body: no reason
			apiError(w, http.StatusBadRequest, fmt.Errorf("request body: %w", err))
			return
		}
		if len(req.Reason) > identity.MaxRevokeReason {
			apiError(w, http.StatusBadRequest, fmt.Errorf("the reason is %d bytes; at most %d", len(req.Reason), identity.MaxRevokeReason))
			return
		}
		res, err := n.revoke(r.Context(), req.Reason)
		var refused errRevoke
		switch {
		case errors.As(err, &refused):
			apiError(w, http.StatusConflict, err)
		case err != nil:
			apiError(w, http.StatusInternalServerError, err)
		default:
			writeJSON(w, res)
		}
	}))
}
