package chat

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nbd-wtf/go-nostr"
)

// ErrNotFound: no such message or conversation.
var ErrNotFound = errors.New("chat: not found")

// State is a message's delivery state.
type State string

const (
	// StateQueued: outgoing, no relay has acknowledged it yet (retrying).
	StateQueued State = "queued"
	// StateSent: outgoing, at least one recipient relay answered OK true.
	StateSent State = "sent"
	// StateFailed: outgoing, every recipient relay refused it or retries gave up.
	StateFailed State = "failed"
	// StateReceived: incoming.
	StateReceived State = "received"
)

// Delivery counts the recipient relays of an outgoing message (the
// sender's own copy is not counted).
type Delivery struct {
	Relays int      // relays the message is addressed to (m)
	Acked  int      // relays that answered OK true (n)
	Failed int      // relays given up on
	Errors []string // why, for the failed ones
}

// Message is a stored conversation message (a kind 14 or 15 rumor).
type Message struct {
	ID           string // rumor id
	Conversation string
	Sender       string // hex pubkey, authenticated by the seal
	Kind         int
	Content      string // text, or for a file message the blob URL
	Tags         nostr.Tags
	Subject      string
	CreatedAt    time.Time
	ExpiresAt    time.Time // zero: does not disappear
	Outgoing     bool
	Read         bool
	State        State
	Delivery     Delivery
	File         *FileInfo // kind 15 only
}

// TipID is the tip a tip message (KindTipRequest … KindTipStatus) is
// about, "" for other messages. The payments engine knows its state.
func (m *Message) TipID() string {
	if !IsTipKind(m.Kind) {
		return ""
	}
	return tagValue(m.Tags, "tip")
}

// Status renders the delivery state for people: "queued", "sent to 2 of 3
// relays", "failed: <reason>", "received".
func (m *Message) Status() string {
	switch m.State {
	case StateSent:
		if m.Delivery.Relays == 0 {
			return "sent"
		}
		return fmt.Sprintf("sent to %d of %d relays", m.Delivery.Acked, m.Delivery.Relays)
	case StateFailed:
		return "failed: " + strings.Join(m.Delivery.Errors, "; ")
	case StateQueued:
		return fmt.Sprintf("queued (0 of %d relays)", m.Delivery.Relays)
	}
	return string(m.State)
}

// Conversation is a NIP-17 room: the set of participants (the sender and
// the p tags of its messages, ourselves included).
type Conversation struct {
	ID           string
	Participants []string // sorted hex pubkeys, including ours
	Peers        []*Contact
	Subject      string
	Disappear    time.Duration // 0: messages do not disappear
	LastAt       time.Time
	Unread       int
	Messages     int
}

// Identity status of a contact, weakest to strongest. The anchoring layer
// adds its own verdict in Contact.Verdict.
const (
	IdentityKeyOnly = "key-only" // known only by its key
	IdentityNIP05   = "nip05"    // a NIP-05 name@domain resolved to this key
	IdentityClaimed = "claimed"  // a valid handle claim by this key was found
)

// Contact is someone we talk to, and what we know about their identity.
type Contact struct {
	PubKey   string
	Npub     string
	Handle   string // from a valid kind 3780 claim, "" if none
	NIP05    string // name@domain that resolved to PubKey, "" if none
	Relays   []string
	DMRelays []string // their kind 10050 list
	// LNNode is the LND node pubkey (66 hex) named by their valid handle
	// claim, "" if none: tips to them must be paid to this node.
	LNNode string
	// Verdict is the anchoring layer's judgement of the handle claim (e.g.
	// "anchored at block 812345", "conflict: earlier claim by ..."), filled
	// by Config.Verdict; "" when unknown.
	Verdict string
}

// Status summarises how the contact's identity is known: the strongest of
// IdentityKeyOnly, IdentityNIP05, IdentityClaimed, followed by the anchoring
// verdict when there is one ("claimed; anchored at block 812345").
func (c *Contact) Status() string {
	s := IdentityKeyOnly
	switch {
	case c.Handle != "":
		s = IdentityClaimed
	case c.NIP05 != "":
		s = IdentityNIP05
	}
	if c.Verdict != "" {
		s += "; " + c.Verdict
	}
	return s
}

// Name is the best human name: @handle, name@domain or the npub.
func (c *Contact) Name() string {
	switch {
	case c.Handle != "":
		return "@" + c.Handle
	case c.NIP05 != "":
		return c.NIP05
	}
	return c.Npub
}

// ConversationID is the id of the room made of these participants (order
// and duplicates do not matter): hex SHA-256 of the sorted pubkeys joined by
// commas.
func ConversationID(participants []string) string {
	p := normParticipants(participants)
	h := sha256.Sum256([]byte(strings.Join(p, ",")))
	return hex.EncodeToString(h[:])
}

func normParticipants(ps []string) []string {
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		out = append(out, strings.ToLower(p))
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// participantsOf returns the room of a rumor: its author and its p tags.
func participantsOf(rumor *nostr.Event) []string {
	ps := []string{rumor.PubKey}
	for t := range rumor.Tags.FindAll("p") {
		if nostr.IsValidPublicKey(t[1]) {
			ps = append(ps, t[1])
		}
	}
	return normParticipants(ps)
}

// EventType says what a watch Event is about.
type EventType string

const (
	EventMessage EventType = "message" // a new message (incoming or sent by us)
	EventState   EventType = "state"   // an outgoing message's delivery state changed
	EventDeleted EventType = "deleted" // a message was deleted by its sender
	EventExpired EventType = "expired" // a disappearing message was purged
)

// Event is what Watch delivers.
type Event struct {
	Type         EventType
	Conversation string
	MessageID    string
	Message      *Message // for EventMessage and EventState
}
