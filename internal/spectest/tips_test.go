package spectest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"regexp"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/nbd-wtf/go-nostr"

	"github.com/anchorchat/anchorchat/chat"
	"github.com/anchorchat/anchorchat/identity"
	"github.com/anchorchat/anchorchat/internal/nostrclient"
	"github.com/anchorchat/anchorchat/internal/relaytest"
	"github.com/anchorchat/anchorchat/payments"
	"github.com/anchorchat/anchorchat/relay"
	"github.com/anchorchat/anchorchat/storage"
)

// lnNet is a fake Lightning network of two nodes: invoices made by one can
// be paid by the other, and settle at once.
type lnNet struct {
	mu       sync.Mutex
	invoices map[string]*fakeInvoice // by bolt11
	subs     []chan struct{}
	keysends []payments.PaymentRequest
}

type fakeInvoice struct {
	node     string
	inv      payments.Invoice
	amount   int64
	descHash []byte
	preimage []byte
	created  time.Time
	expiry   time.Duration
}

type fakeLN struct {
	net    *lnNet
	pubkey string
	seq    uint64
}

func (l *fakeLN) Info(context.Context) (*payments.NodeInfo, error) {
	return &payments.NodeInfo{Pubkey: l.pubkey, SyncedToChain: true, SyncedToGraph: true, ActiveChannels: 1, BlockHeight: 100}, nil
}

func (l *fakeLN) AddInvoice(_ context.Context, req payments.InvoiceRequest) (*payments.Invoice, error) {
	l.net.mu.Lock()
	defer l.net.mu.Unlock()
	pre := make([]byte, 32)
	_, _ = rand.Read(pre)
	h := sha256.Sum256(pre)
	l.seq++
	bolt := fmt.Sprintf("lnbcrt%dn1fake%x", req.AmountMsat, h[:8])
	fi := &fakeInvoice{node: l.pubkey, amount: req.AmountMsat, descHash: req.DescriptionHash, preimage: pre, created: time.Now(), expiry: req.Expiry,
		inv: payments.Invoice{PaymentRequest: bolt, PaymentHash: h[:], AddIndex: l.seq, State: payments.InvoiceOpen, ExpiresAt: time.Now().Add(req.Expiry)}}
	l.net.invoices[bolt] = fi
	inv := fi.inv
	return &inv, nil
}

func (l *fakeLN) find(hash []byte) *fakeInvoice {
	for _, fi := range l.net.invoices {
		if fi.node == l.pubkey && string(fi.inv.PaymentHash) == string(hash) {
			return fi
		}
	}
	return nil
}

func (l *fakeLN) CancelInvoice(_ context.Context, hash []byte) error {
	l.net.mu.Lock()
	defer l.net.mu.Unlock()
	if fi := l.find(hash); fi != nil && fi.inv.State == payments.InvoiceOpen {
		fi.inv.State = payments.InvoiceCanceled
	}
	return nil
}

func (l *fakeLN) LookupInvoice(_ context.Context, hash []byte) (*payments.Invoice, error) {
	l.net.mu.Lock()
	defer l.net.mu.Unlock()
	if fi := l.find(hash); fi != nil {
		inv := fi.inv
		return &inv, nil
	}
	return nil, payments.ErrInvoiceNotFound
}

func (l *fakeLN) DecodePayReq(_ context.Context, bolt string) (*payments.PayReq, error) {
	l.net.mu.Lock()
	defer l.net.mu.Unlock()
	fi, ok := l.net.invoices[bolt]
	if !ok {
		return nil, fmt.Errorf("unknown invoice")
	}
	return &payments.PayReq{Destination: fi.node, PaymentHash: hex.EncodeToString(fi.inv.PaymentHash), AmountMsat: fi.amount,
		DescriptionHash: hex.EncodeToString(fi.descHash), Timestamp: fi.created, Expiry: fi.expiry}, nil
}

func (l *fakeLN) Pay(_ context.Context, req payments.PaymentRequest) (*payments.Payment, error) {
	l.net.mu.Lock()
	defer l.net.mu.Unlock()
	if req.Dest != "" {
		l.net.keysends = append(l.net.keysends, req)
		h := sha256.Sum256(req.Preimage)
		l.seq++
		bolt := fmt.Sprintf("keysend-%x", h[:8])
		l.net.invoices[bolt] = &fakeInvoice{node: req.Dest, amount: req.AmountMsat, preimage: req.Preimage, created: time.Now(),
			inv: payments.Invoice{PaymentHash: h[:], AddIndex: l.seq, SettleIndex: l.seq, State: payments.InvoiceSettled,
				AmountPaidMsat: req.AmountMsat, SettledAt: time.Now(), Keysend: true, CustomRecords: req.CustomRecords}}
		for _, c := range l.net.subs {
			select {
			case c <- struct{}{}:
			default:
			}
		}
		return &payments.Payment{Status: payments.PaymentSucceeded, PaymentHash: hex.EncodeToString(h[:]), Preimage: req.Preimage}, nil
	}
	fi, ok := l.net.invoices[req.Invoice]
	if !ok {
		return &payments.Payment{Status: payments.PaymentFailed, Failure: "no route", NoRoute: true}, nil
	}
	l.seq++
	fi.inv.State = payments.InvoiceSettled
	fi.inv.SettleIndex = l.seq
	fi.inv.AmountPaidMsat = fi.amount
	fi.inv.SettledAt = time.Now()
	for _, c := range l.net.subs {
		select {
		case c <- struct{}{}:
		default:
		}
	}
	return &payments.Payment{Status: payments.PaymentSucceeded, PaymentHash: hex.EncodeToString(fi.inv.PaymentHash), Preimage: fi.preimage}, nil
}

func (l *fakeLN) TrackPayment(_ context.Context, hash []byte) (*payments.Payment, error) {
	l.net.mu.Lock()
	defer l.net.mu.Unlock()
	for _, fi := range l.net.invoices {
		if string(fi.inv.PaymentHash) == string(hash) && fi.inv.State == payments.InvoiceSettled {
			return &payments.Payment{Status: payments.PaymentSucceeded, PaymentHash: hex.EncodeToString(hash), Preimage: fi.preimage}, nil
		}
	}
	return &payments.Payment{Status: payments.PaymentUnknown}, nil
}

func (l *fakeLN) SubscribeInvoices(ctx context.Context, addIndex, settleIndex uint64, fn func(*payments.Invoice) error) error {
	wake := make(chan struct{}, 1)
	l.net.mu.Lock()
	l.net.subs = append(l.net.subs, wake)
	l.net.mu.Unlock()
	seen := map[string]bool{}
	for {
		l.net.mu.Lock()
		var todo []payments.Invoice
		for _, fi := range l.net.invoices {
			if fi.node == l.pubkey && fi.inv.State == payments.InvoiceSettled && fi.inv.SettleIndex > settleIndex && !seen[fi.inv.PaymentRequest] {
				seen[fi.inv.PaymentRequest] = true
				todo = append(todo, fi.inv)
			}
		}
		l.net.mu.Unlock()
		for i := range todo {
			if err := fn(&todo[i]); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-wake:
		case <-time.After(100 * time.Millisecond):
		}
	}
}

type tipUser struct {
	key *identity.Key
	svc *chat.Service
	eng *payments.Engine
	wr  *chat.Wrapper
}

func startTipUser(t *testing.T, ctx context.Context, r *relaytest.Relay, net *lnNet, n byte, node string, maxRecvSat int64) *tipUser {
	t.Helper()
	key := secretN(t, n)
	dir := t.TempDir()
	log := slog.New(slog.DiscardHandler)
	svc, err := chat.New(chat.Config{Key: key, RelayURL: r.URL, DBPath: filepath.Join(dir, "chat.db"), Logger: log,
		FallbackRelays: []string{r.URL}, AllowPrivateRelays: true, RetryBase: 100 * time.Millisecond, RetryMax: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close() })
	eng, err := payments.New(payments.Config{Lightning: &fakeLN{net: net, pubkey: node}, Chat: svc, DBPath: filepath.Join(dir, "tips.db"),
		Logger: log, MaxReceiveSat: maxRecvSat, RetryBase: 100 * time.Millisecond, RetryMax: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = eng.Close() })
	sec, _ := key.SecretHex()
	wr, err := chat.NewWrapper(sec)
	if err != nil {
		t.Fatal(err)
	}
	return &tipUser{key: key, svc: svc, eng: eng, wr: wr}
}

// rumorsFor unwraps every gift wrap the relay holds for u: the tip rumors
// exactly as they travel.
func rumorsFor(t *testing.T, r *relaytest.Relay, u *tipUser) []*nostr.Event {
	t.Helper()
	pk := u.key.PublicKey()
	wraps, err := r.Store.Query(context.Background(), nostr.Filter{Kinds: []int{1059}, Tags: nostr.TagMap{"p": {pk}}},
		storage.Visibility{PrivateKinds: relay.PrivateKinds, Readers: []string{pk}})
	if err != nil {
		t.Fatal(err)
	}
	var out []*nostr.Event
	for _, w := range wraps {
		rm, err := u.wr.Unwrap(w)
		if err != nil {
			t.Fatalf("unwrap: %v", err)
		}
		if rm.Kind >= 3790 && rm.Kind <= 3793 {
			out = append(out, rm)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].CreatedAt < out[j].CreatedAt || out[i].CreatedAt == out[j].CreatedAt && out[i].Kind < out[j].Kind
	})
	return out
}

var (
	tipID  = regexp.MustCompile(`^[0-9a-f]{32}$`)
	msat   = regexp.MustCompile(`^[1-9][0-9]*$`)
	hex64s = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// TestTipMessages runs a tip between two real payment engines over real chat
// services and a relay (Lightning faked), unwraps the rumors from the relay
// and checks them against the doc's tag table and the hash rule.
func TestTipMessages(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a relay")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r := relaytest.Start(t, relaytest.Options{Open: true})
	net := &lnNet{invoices: map[string]*fakeInvoice{}}
	bobNode := "02eec7245d6b7d2ccb30380bfbe2a3648cd7a942653f5aa340edcea1f283686619"
	alice := startTipUser(t, ctx, r, net, 21, "02"+hex.EncodeToString(make([]byte, 32)), 0)
	bob := startTipUser(t, ctx, r, net, 22, bobNode, 5000)

	// Bob's handle claim names his LND node: invoices must come from it,
	// and keysend pays it.
	claim, err := identity.NewClaim(bob.key, identity.ClaimParams{Handle: "bob", LNNode: bobNode, Relays: []string{r.URL}})
	if err != nil {
		t.Fatal(err)
	}
	// The project's client: go-nostr's Relay races between Connect's
	// reader and Close (seen under -race).
	rc, err := nostrclient.Dial(ctx, r.URL, nostrclient.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Publish(ctx, claim); err != nil {
		t.Fatal(err)
	}
	rc.Close()

	tip, err := alice.eng.Tip(ctx, payments.TipRequest{To: "@bob", AmountSat: 1000, Memo: "thanks", Mode: payments.ModeInvoice})
	if err != nil {
		t.Fatal(err)
	}
	// A second tip above bob's limit: answered with 3793 failed.
	big, err := alice.eng.Tip(ctx, payments.TipRequest{To: bob.key.PublicKey(), AmountSat: 9000, Mode: payments.ModeInvoice})
	if err != nil {
		t.Fatal(err)
	}
	// A third by keysend.
	ks, err := alice.eng.Tip(ctx, payments.TipRequest{To: "@bob", AmountSat: 2000, Memo: "ks", Mode: payments.ModeKeysend})
	if err != nil {
		t.Fatal(err)
	}
	if tip.PeerLNNode != bobNode || ks.PeerLNNode != bobNode {
		t.Errorf("PeerLNNode %q %q", tip.PeerLNNode, ks.PeerLNNode)
	}
	for {
		a, _ := alice.eng.Get(ctx, tip.ID)
		b, _ := alice.eng.Get(ctx, big.ID)
		k, _ := alice.eng.Get(ctx, ks.ID)
		if a != nil && a.State == payments.StateSettled && b != nil && b.State.Final() && k != nil && k.State == payments.StateSettled {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("tips did not finish: %+v / %+v / %+v", a, b, k)
		case <-time.After(100 * time.Millisecond):
		}
	}
	time.Sleep(300 * time.Millisecond) // the last copies reach the relay

	ap, bp := alice.key.PublicKey(), bob.key.PublicKey()
	toBob, toAlice := rumorsFor(t, r, bob), rumorsFor(t, r, alice)
	byKind := map[int][]*nostr.Event{}
	seen := map[string]bool{}
	for _, rm := range append(toBob, toAlice...) {
		if seen[rm.ID] {
			continue // the author's own copy
		}
		seen[rm.ID] = true
		byKind[rm.Kind] = append(byKind[rm.Kind], rm)
	}
	t.Logf("rumors: 3790×%d 3791×%d 3792×%d 3793×%d", len(byKind[3790]), len(byKind[3791]), len(byKind[3792]), len(byKind[3793]))

	for _, rm := range seenList(byKind) {
		if rm.GetID() != rm.ID {
			t.Errorf("kind %d: rumor id %s is not the NIP-01 hash %s", rm.Kind, rm.ID, rm.GetID())
		}
		if rm.Sig != "" {
			t.Errorf("kind %d: rumor is signed", rm.Kind)
		}
		other := bp
		if rm.PubKey == bp {
			other = ap
		}
		if p := tagsNamed(rm.Tags, "p"); len(p) != 1 || p[0][1] != other {
			t.Errorf("kind %d: p tags %v, want exactly [p %s]", rm.Kind, p, other)
		}
		if tg := tagsNamed(rm.Tags, "tip"); len(tg) != 1 || !tipID.MatchString(tg[0][1]) {
			t.Errorf("kind %d: tip tags %v", rm.Kind, tg)
		}
		for _, name := range []string{"amount", "e", "bolt11", "preimage", "payment_hash", "keysend", "state"} {
			if n := len(tagsNamed(rm.Tags, name)); n > 1 {
				t.Errorf("kind %d: %d %s tags", rm.Kind, n, name)
			}
		}
		allowed := map[int][]string{
			3790: {"p", "tip", "amount"},
			3791: {"p", "tip", "e", "amount", "bolt11"},
			3792: {"p", "tip", "amount", "preimage", "payment_hash", "e", "keysend"},
			3793: {"p", "tip", "state"},
		}[rm.Kind]
		checkOnlyTags(t, fmt.Sprintf("tip kind %d", rm.Kind), rm, allowed...)
	}

	one := func(e *nostr.Event, name string) string {
		tg := tagsNamed(e.Tags, name)
		if len(tg) != 1 || len(tg[0]) < 2 {
			t.Errorf("kind %d: %s tags %v", e.Kind, name, tg)
			return ""
		}
		return tg[0][1]
	}
	find := func(kind int, id string) *nostr.Event {
		for _, e := range byKind[kind] {
			if tg := tagsNamed(e.Tags, "tip"); len(tg) == 1 && tg[0][1] == id {
				return e
			}
		}
		t.Fatalf("no kind %d rumor for tip %s", kind, id)
		return nil
	}

	req := find(3790, tip.ID)
	if req.PubKey != ap || req.Content != "thanks" || one(req, "amount") != "1000000" || !msat.MatchString(one(req, "amount")) {
		t.Errorf("request: %+v", req)
	}
	inv := find(3791, tip.ID)
	if inv.PubKey != bp || one(inv, "e") != req.ID || one(inv, "amount") != "1000000" {
		t.Errorf("invoice rumor: %+v (request %s)", inv, req.ID)
	}
	// The hash rule: the invoice's description_hash is the request rumor's
	// id, SHA-256 of [0, pubkey, created_at, 3790, tags, content].
	ser := req.Serialize()
	want := sha256.Sum256(ser)
	fi := net.invoices[one(inv, "bolt11")]
	if fi == nil || hex.EncodeToString(fi.descHash) != hex.EncodeToString(want[:]) || req.ID != hex.EncodeToString(want[:]) {
		t.Errorf("description hash %x, request id %s, SHA-256 of %s", fi.descHash, req.ID, ser)
	}
	if fi != nil && fi.amount != 1000000 {
		t.Errorf("invoice amount %d", fi.amount)
	}
	rec := find(3792, tip.ID)
	pre, ph := one(rec, "preimage"), one(rec, "payment_hash")
	pb, _ := hex.DecodeString(pre)
	if h := sha256.Sum256(pb); rec.PubKey != ap || !hex64s.MatchString(pre) || !hex64s.MatchString(ph) || hex.EncodeToString(h[:]) != ph || one(rec, "amount") != "1000000" {
		t.Errorf("receipt: %+v", rec)
	}
	if e := tagsNamed(rec.Tags, "e"); len(e) == 1 && e[0][1] != inv.ID {
		t.Errorf("receipt e tag %v, want the invoice rumor %s", e, inv.ID)
	}
	if k := tagsNamed(rec.Tags, "keysend"); len(k) != 0 {
		t.Errorf("invoice-paid receipt has %v", k)
	}
	st := find(3793, tip.ID)
	if st.PubKey != bp || one(st, "state") != "settled" {
		t.Errorf("status: %+v", st)
	}
	bst := find(3793, big.ID)
	if bst.PubKey != bp || one(bst, "state") != "failed" || len(bst.Content) > 300 {
		t.Errorf("status of the tip above the limit: %+v", bst)
	}
	t.Logf("refusal reason: %q", bst.Content)
	for _, rm := range seenList(byKind) {
		t.Logf("kind %d tags %v content %q", rm.Kind, rm.Tags, rm.Content)
	}

	// Keysend: records 5482373484 (preimage) and 1634624360 (the JSON),
	// and the receipt's ["keysend", "1"].
	kreq := find(3790, ks.ID)
	krec := find(3792, ks.ID)
	if one(krec, "keysend") != "1" || one(krec, "amount") != "2000000" {
		t.Errorf("keysend receipt: %v", krec.Tags)
	}
	if len(net.keysends) != 1 {
		t.Fatalf("%d keysends", len(net.keysends))
	}
	kp := net.keysends[0]
	if kp.Dest != bobNode || kp.AmountMsat != 2000000 || len(kp.CustomRecords) != 1 {
		t.Errorf("keysend %+v", kp)
	}
	// The engine hands the preimage to its Lightning interface, whose LND
	// implementation puts it in record 5482373484 (not exercised here: no LND).
	if hex.EncodeToString(kp.Preimage) != one(krec, "preimage") || payments.RecordKeysendPreimage != 5482373484 || payments.RecordTip != 1634624360 {
		t.Errorf("keysend preimage %x, receipt preimage %s", kp.Preimage, one(krec, "preimage"))
	}
	var anch map[string]any
	dec := json.NewDecoder(bytes.NewReader(kp.CustomRecords[1634624360]))
	if err := dec.Decode(&anch); err != nil || len(anch) != 3 || anch["tip"] != ks.ID || anch["from"] != ap || anch["request"] != kreq.ID {
		t.Errorf("record 1634624360 %s: %v (request %s)", kp.CustomRecords[1634624360], err, kreq.ID)
	}
	if kst := find(3793, ks.ID); kst.PubKey != bp || one(kst, "state") != "settled" {
		t.Errorf("keysend status %v", kst.Tags)
	}

	// A request built here from the doc (tags in the table's order) is the
	// same rumor id as the one the engine sent.
	own := nostr.Event{Kind: 3790, PubKey: ap, CreatedAt: req.CreatedAt, Content: "thanks",
		Tags: nostr.Tags{{"p", bp}, {"tip", tip.ID}, {"amount", "1000000"}}}
	if own.GetID() != req.ID {
		t.Logf("tag order differs from the doc's example: engine %v", req.Tags)
	}
}

func seenList(m map[int][]*nostr.Event) []*nostr.Event {
	var out []*nostr.Event
	for _, k := range []int{3790, 3791, 3792, 3793} {
		out = append(out, m[k]...)
	}
	return out
}
