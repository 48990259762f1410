package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/anchorchat/anchorchat/identity"
	"github.com/anchorchat/anchorchat/internal/nostrclient"
)

// KeystoreFile is the identity keystore's name inside the data dir.
const KeystoreFile = "identity.json"

// Keystore returns the keystore of a data dir.
func Keystore(dataDir string, log *slog.Logger) *identity.Keystore {
	ks := identity.NewKeystore(filepath.Join(dataDir, KeystoreFile))
	ks.Logger = log
	return ks
}

// unlockIdentity unlocks the node's key, if the data dir has one. The
// passphrase comes from --passphrase-file, ANCHORCHAT_PASSPHRASE or a
// no-echo prompt, in that order. The key lives only in this process's
// memory; the passphrase is returned once more to open the anchoring wallet
// and is not kept.
func (n *Node) unlockIdentity(ctx context.Context) (string, error) {
	ks := Keystore(n.cfg.DataDir, n.log.With("component", "identity"))
	ok, err := ks.Exists()
	if err != nil {
		return "", err
	}
	if !ok {
		if n.cfg.Relay.Owner == "" {
			n.log.Warn("this node has no identity yet: run `anchorchat init` to create one (until then the relay has no owner)")
		}
		return "", nil
	}
	pass, source, err := identity.ReadPassphrase(ctx, identity.PassphraseOptions{
		File:   n.cfg.PassphraseFile,
		Prompt: "Passphrase to unlock the anchorchat identity: ",
		Logger: n.log,
	})
	if err != nil {
		return "", fmt.Errorf("unlocking the identity: %w", err)
	}
	key, err := ks.Unlock(ctx, pass)
	if err != nil {
		return "", fmt.Errorf("unlocking the identity (passphrase from %s): %w", source, err)
	}
	n.key = key
	if n.cfg.Relay.Owner == "" {
		n.cfg.Relay.Owner = key.PublicKey()
	}
	// The keystore has logged "identity unlocked" with the npub.
	n.log.Info("identity in use", "fingerprint", key.Fingerprint(), "passphrase_source", source)
	return pass, nil
}

// dmRelays are the relays where this user receives DMs (kind 10050).
func (n *Node) dmRelays() []string {
	if len(n.cfg.DMRelays) > 0 {
		return n.cfg.DMRelays
	}
	if n.cfg.Relay.URL != "" {
		return []string{n.cfg.Relay.URL}
	}
	return []string{n.RelayURL()}
}

// publishIdentity signs and publishes the user's profile (kind 0), DM relay
// list (kind 10050) and, if a handle is configured and not yet claimed by
// this key, a handle claim: to the node's own relay and to --publish-relays.
func (n *Node) publishIdentity(ctx context.Context) error {
	if n.key == nil {
		return nil
	}
	now := time.Now()
	var evts []*nostr.Event
	profile := identity.Profile{Name: n.cfg.ProfileName, About: n.cfg.ProfileAbout}
	if profile.Name == "" {
		profile.Name = n.cfg.Handle
	}
	p, err := identity.NewProfileEvent(n.key, profile, now)
	if err != nil {
		return err
	}
	evts = append(evts, p)
	dm, err := identity.NewDMRelayListEvent(n.key, n.dmRelays(), now)
	if err != nil {
		return err
	}
	evts = append(evts, dm)
	if n.cfg.Handle != "" {
		claim, err := n.claimAndServe(ctx)
		if err != nil {
			return err
		}
		if claim != nil {
			evts = append(evts, claim)
		}
	}
	for _, evt := range evts {
		if err := n.relay.Publish(ctx, evt); err != nil {
			return fmt.Errorf("publishing kind %d: %w", evt.Kind, err)
		}
		n.log.Info("published", "kind", evt.Kind, "id", evt.ID)
	}
	n.publishRemote(ctx, evts)
	return nil
}

// claimAndServe returns a new claim of the configured handle (or nil) and
// serves the handle over NIP-05 if this key holds it; not while a
// revocation is being made, which Set would undo.
func (n *Node) claimAndServe(ctx context.Context) (*nostr.Event, error) {
	n.revokeMu.Lock()
	defer n.revokeMu.Unlock()
	claim, serve, err := n.handleClaim(ctx)
	if err != nil || !serve {
		return claim, err
	}
	if err := n.nip05.Set(n.cfg.Handle, n.key.PublicKey(), n.dmRelays()); err != nil {
		return nil, fmt.Errorf("NIP-05: %w", err)
	}
	return claim, nil
}

// handleClaim returns a new claim for the configured handle, or nil if this
// key has claimed it before; and whether the node serves the handle over
// NIP-05 (not once this key revoked it, or rotated it to another key).
func (n *Node) handleClaim(ctx context.Context) (*nostr.Event, bool, error) {
	handle, err := identity.NormalizeHandle(n.cfg.Handle)
	if err != nil {
		return nil, false, err
	}
	st, err := n.ownChain(ctx, handle)
	switch {
	case errors.Is(err, errNoClaim):
		claim, err := identity.NewClaim(n.key, identity.ClaimParams{Handle: handle, LNNode: n.cfg.LNNodePubkey, Relays: n.dmRelays()})
		if err == nil {
			n.setHandleState(HandleHeld)
		}
		return claim, err == nil, err
	case isChainError(err):
		n.log.Warn("cannot establish the handle's chain: not serving it over NIP-05", "handle", handle, "err", err)
		n.setHandleState(HandleUnsettled + ": " + err.Error())
		return nil, false, nil
	case err != nil:
		return nil, false, fmt.Errorf("the chain of @%s: %w", handle, err)
	case st.Revoked:
		msg := "this key revoked its handle: not serving it over NIP-05; remove handle from the config"
		if st.Revocation.PubKey != n.key.PublicKey() { // a fork decided for the revocation
			msg = "the handle was revoked by the key that held it: not serving it over NIP-05; remove handle from the config"
		}
		n.log.Warn(msg, "handle", handle, "revocation", st.Revocation.ID, "by", st.Revocation.PubKey)
		n.setHandleState(HandleRevoked)
		return nil, false, nil
	case st.Current.PubKey != n.key.PublicKey():
		n.log.Warn("the handle was rotated to another key: not serving it over NIP-05", "handle", handle, "key", st.Current.PubKey)
		n.setHandleState(HandleRotated + " " + st.Current.PubKey)
		return nil, false, nil
	}
	n.setHandleState(HandleHeld)
	return nil, true, nil
}

// What Status.HandleState starts with: the configured handle is held by
// this node's key and served over NIP-05, was revoked, was rotated to
// another key (whose hex pubkey follows), or its chain cannot be settled
// (why follows). Empty: no handle, or not looked at yet.
const (
	HandleHeld      = "held"
	HandleRevoked   = "revoked"
	HandleRotated   = "rotated to"
	HandleUnsettled = "unsettled"
)

func (n *Node) setHandleState(s string) { n.handleState.Store(&s) }

// publishRemote sends events to the configured outside relays, best effort.
func (n *Node) publishRemote(ctx context.Context, evts []*nostr.Event) {
	for _, url := range n.cfg.PublishRelays {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		r, err := nostrclient.Dial(rctx, url, nostrclient.Options{Sign: n.key.Sign})
		if err != nil {
			n.log.Warn("cannot reach relay to publish", "relay", url, "err", err)
			cancel()
			continue
		}
		for _, evt := range evts {
			if err := r.Publish(rctx, evt); err != nil {
				n.log.Warn("relay refused event", "relay", url, "kind", evt.Kind, "err", err)
			}
		}
		r.Close()
		cancel()
	}
}

// isChainError tells a claim chain that does not validate from a failure to
// read it.
func isChainError(err error) bool {
	for _, e := range []error{identity.ErrInvalidClaim, identity.ErrClaimSignature, identity.ErrMissingConsent, identity.ErrBadConsent, identity.ErrNotCurrentKey, identity.ErrBrokenChain} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
