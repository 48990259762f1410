package identity

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/nbd-wtf/go-nostr"
)

// KindDMRelayList is NIP-17's "relays to receive DMs" list.
const KindDMRelayList = 10050

// MaxDMRelays bounds a kind 10050 list.
const MaxDMRelays = 10

// Profile is the NIP-01/NIP-24 kind 0 metadata. Empty fields are omitted.
type Profile struct {
	Name        string `json:"name,omitempty"`
	DisplayName string `json:"display_name,omitempty"`
	About       string `json:"about,omitempty"`
	Picture     string `json:"picture,omitempty"`
	Banner      string `json:"banner,omitempty"`
	Website     string `json:"website,omitempty"`
	NIP05       string `json:"nip05,omitempty"`
	LUD16       string `json:"lud16,omitempty"`
}

// NewProfileEvent builds and signs the kind 0 profile event. createdAt
// zero means now.
func NewProfileEvent(key *Key, p Profile, createdAt time.Time) (*nostr.Event, error) {
	if p.NIP05 != "" {
		if _, _, err := ParseNIP05(p.NIP05); err != nil {
			return nil, fmt.Errorf("identity: profile: %w", err)
		}
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("identity: profile: %w", err)
	}
	evt := &nostr.Event{Kind: nostr.KindProfileMetadata, CreatedAt: ts(createdAt), Content: string(b), Tags: nostr.Tags{}}
	if err := key.Sign(evt); err != nil {
		return nil, err
	}
	return evt, nil
}

// NewDMRelayListEvent builds and signs the NIP-17 kind 10050 list of the
// relays where the user receives DMs: one ["relay", url] tag each.
func NewDMRelayListEvent(key *Key, relays []string, createdAt time.Time) (*nostr.Event, error) {
	if len(relays) == 0 {
		return nil, fmt.Errorf("identity: dm relay list: no relays")
	}
	if len(relays) > MaxDMRelays {
		return nil, fmt.Errorf("identity: dm relay list: %d relays, at most %d", len(relays), MaxDMRelays)
	}
	tags := make(nostr.Tags, 0, len(relays))
	seen := map[string]bool{}
	for _, r := range relays {
		if err := CheckRelayURL(r); err != nil {
			return nil, fmt.Errorf("identity: dm relay list: %w", err)
		}
		if !seen[r] {
			seen[r] = true
			tags = append(tags, nostr.Tag{"relay", r})
		}
	}
	evt := &nostr.Event{Kind: KindDMRelayList, CreatedAt: ts(createdAt), Tags: tags}
	if err := key.Sign(evt); err != nil {
		return nil, err
	}
	return evt, nil
}
