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
	"time"

	"github.com/nbd-wtf/go-nostr"
	"github.com/tidwall/gjson"

	"github.com/anchorchat/anchorchat/identity"
	"github.com/anchorchat/anchorchat/storage"
)

// errNoClaim says that this node's key never claimed the handle.
var errNoClaim = errors.New("no claim of this handle by this node's key")

// ownChain returns the chain of handle that this node's key holds or held,
// built from the store: the key's newest claim of handle, the claims back to
// the first one, the rotations after it, and the revocations of the current
// claim by its key. It fails with errNoClaim if the key never claimed
// handle.
func (n *Node) ownChain(ctx context.Context, handle string) (*identity.ChainState, error) {
	const most = 1000
	mine, err := n.store.Query(ctx, nostr.Filter{Kinds: []int{identity.KindHandleClaim}, Authors: []string{n.key.PublicKey()}, Tags: nostr.TagMap{"n": {handle}}, Limit: most}, storage.Visibility{})
	if err != nil {
		return nil, err
	}
	chain := map[string]*identity.Claim{}
	var newest *identity.Claim
	for _, evt := range mine { // newest first
		if c, err := identity.ValidateClaim(evt); err == nil && c.Handle == handle {
			newest = c
			break
		}
	}
	if newest == nil {
		return nil, errNoClaim
	}
	// Back to the first claim.
	for c := newest; ; {
		chain[c.ID] = c
		if c.Type == identity.ClaimFirst {
			break
		}
		prev, err := n.store.Query(ctx, nostr.Filter{IDs: []string{c.PrevID}}, storage.Visibility{})
		if err != nil {
			return nil, err
		}
		if len(prev) == 0 {
			return nil, fmt.Errorf("%w: claim %s replaces claim %s, which this node does not have", identity.ErrBrokenChain, c.ID, c.PrevID)
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
	evts := make([]*nostr.Event, 0, len(chain)+1)
	for _, c := range chain {
		evts = append(evts, c.Event)
	}
	st, err := identity.ValidateChain(evts)
	if err != nil {
		return nil, err
	}
	// Revocations of the current claim by its key end the chain. (One of an
	// earlier claim would be a fork with the rotation that followed it:
	// anchoring decides those, and this node never makes one.)
	revs, err := n.store.Query(ctx, nostr.Filter{Kinds: []int{identity.KindHandleRevocation}, Authors: []string{st.Current.PubKey}, Tags: nostr.TagMap{"e": {st.Current.ID}}, Limit: most}, storage.Visibility{})
	if err != nil {
		return nil, err
	}
	for _, evt := range revs {
		if c, err := identity.ValidateClaim(evt); err == nil && c.Handle == handle {
			evts = append(evts, evt)
		}
	}
	if len(evts) == len(chain) {
		return st, nil
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
	switch {
	case errors.Is(err, errNoClaim):
		return nil, errRevoke{fmt.Sprintf("this node's key never claimed @%s, so it has nothing to revoke", handle)}
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
