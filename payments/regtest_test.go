package payments

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/lightningnetwork/lnd/lnrpc"
	"github.com/nbd-wtf/go-nostr"

	"github.com/anchorchat/anchorchat/chat"
	"github.com/anchorchat/anchorchat/identity"
	"github.com/anchorchat/anchorchat/regtest"
	"github.com/anchorchat/anchorchat/relay"
	"github.com/anchorchat/anchorchat/storage"
)

// tamperLN lets a test turn a recipient malicious: its invoices ask for
// more than requested.
type tamperLN struct {
	Lightning
	extraMsat atomic.Int64
}

func (l *tamperLN) AddInvoice(ctx context.Context, req InvoiceRequest) (*Invoice, error) {
	req.AmountMsat += l.extraMsat.Load()
	return l.Lightning.AddInvoice(ctx, req)
}

type tuser struct {
	name   string
	handle string
	key    *identity.Key
	relay  *testRelay
	lndIdx int
	lnd    *LND
	ln     *tamperLN
	dir    string
	svc    *chat.Service
	eng    *Engine
}

type tenv struct {
	n     *regtest.Network
	users map[string]*tuser
	urls  []string
}

func (e *tenv) start(t *testing.T, u *tuser) {
	t.Helper()
	svc, err := chat.New(chat.Config{
		Key: u.key, RelayURL: u.relay.url, DBPath: filepath.Join(u.dir, "chat.db"), Logger: testLogger(t).With("user", u.name),
		DiscoveryRelays: e.urls, RetryBase: 50 * time.Millisecond, RetryMax: 500 * time.Millisecond,
		ReconnectDelay: 50 * time.Millisecond, PurgeInterval: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	eng, err := New(Config{
		Lightning: u.ln, Chat: svc, DBPath: filepath.Join(u.dir, "payments.db"), Logger: testLogger(t).With("user", u.name),
		RetryBase: 200 * time.Millisecond, RetryMax: 2 * time.Second, PaymentTimeout: 30 * time.Second,
		DailyLimitSat: 10_000_000,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	u.svc, u.eng = svc, eng
	t.Cleanup(func() { e.stop(u) })
}

func (e *tenv) stop(u *tuser) {
	if u.eng != nil {
		_ = u.eng.Close()
		_ = u.svc.Close()
		u.eng, u.svc = nil, nil
	}
}

func newEnv(t *testing.T) *tenv {
	if testing.Short() {
		t.Skip("starts btcd and three LND")
	}
	n := regtest.Start(t, regtest.Options{LNDs: 3, Channels: []regtest.ChannelSpec{{From: 0, To: 1}}})
	e := &tenv{n: n, users: map[string]*tuser{}}
	names := []string{"alice", "bob", "carol"}
	keys := map[string]*identity.Key{}
	var pks []string
	for _, nm := range names {
		keys[nm] = newKey(t)
		pks = append(pks, keys[nm].PublicKey())
	}
	for i, nm := range names {
		u := &tuser{name: nm, handle: nm + strconv.Itoa(int(time.Now().UnixNano()%1000)), key: keys[nm], lndIdx: i, dir: t.TempDir()}
		u.relay = startRelay(t, u.key.PublicKey(), pks...)
		l := n.LNDs[i]
		lnd, err := NewLND(LNDConfig{RPCServer: l.RPCAddr, TLSCertPath: l.TLSCertPath, MacaroonPath: l.MacaroonPath, MaxBackoff: 2 * time.Second, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = lnd.Close() })
		u.lnd, u.ln = lnd, &tamperLN{Lightning: lnd}
		e.users[nm] = u
		e.urls = append(e.urls, u.relay.url)
	}
	// Every user's claim (naming their LND) and DM relay list on every relay.
	for _, nm := range names {
		u := e.users[nm]
		cl := claim(t, u.key, u.handle, n.LNDs[u.lndIdx].Pubkey, u.relay.url)
		dm := dmRelayList(t, u.key, u.relay.url)
		for _, o := range names {
			e.users[o].relay.save(t, cl)
			e.users[o].relay.save(t, dm)
		}
	}
	for _, nm := range names {
		e.start(t, e.users[nm])
	}
	return e
}

func waitState(t *testing.T, eng *Engine, id string, want State, d time.Duration) *Tip {
	t.Helper()
	var tip *Tip
	eventually(t, d, fmt.Sprintf("tip %s %s", id, want), func() (bool, error) {
		var err error
		tip, err = eng.Get(context.Background(), id)
		if err != nil {
			return false, err
		}
		if tip.State.Final() && tip.State != want {
			t.Fatalf("tip %s ended %s, want %s", id, tip.Status(), want)
		}
		return tip.State == want, errors.New(tip.Status())
	})
	return tip
}

// tipKinds returns the kinds of the conversation's messages about tip id.
func tipKinds(t *testing.T, svc *chat.Service, conv, id string) []int {
	t.Helper()
	ms, err := svc.History(context.Background(), conv, chat.HistoryOptions{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, m := range ms {
		if m.TipID() == id {
			out = append(out, m.Kind)
		}
	}
	slices.Sort(out)
	return out
}

func paymentsCount(t *testing.T, l *regtest.LND) int {
	t.Helper()
	r, err := l.Client.ListPayments(context.Background(), &lnrpc.ListPaymentsRequest{IncludeIncomplete: true})
	if err != nil {
		t.Fatal(err)
	}
	return len(r.Payments)
}

func TestRegtestTips(t *testing.T) {
	e := newEnv(t)
	alice, bob, carol := e.users["alice"], e.users["bob"], e.users["carol"]
	ctx := context.Background()
	const wait = 60 * time.Second
	top := t // processes started in subtests live until the whole test ends

	var first *Tip
	t.Run("tip succeeds, both conversations show it", func(t *testing.T) {
		tip, err := alice.eng.Tip(ctx, TipRequest{To: "@" + bob.handle, AmountSat: 1000, Memo: "thanks"})
		if err != nil {
			t.Fatal(err)
		}
		if tip.PeerLNNode != e.n.LNDs[1].Pubkey {
			t.Fatalf("payee from the claim = %q, want bob's LND %s", tip.PeerLNNode, e.n.LNDs[1].Pubkey)
		}
		out := waitState(t, alice.eng, tip.ID, StateSettled, wait)
		in := waitState(t, bob.eng, tip.ID, StateSettled, wait)
		eventually(t, wait, "receipt at bob", func() (bool, error) {
			in, _ = bob.eng.Get(ctx, tip.ID)
			return in.ReceiptReceived, nil
		})
		pre, _ := hex.DecodeString(out.Preimage)
		h := sha256.Sum256(pre)
		pr, err := alice.lnd.DecodePayReq(ctx, in.Invoice)
		if err != nil {
			t.Fatal(err)
		}
		if hex.EncodeToString(h[:]) != pr.PaymentHash || in.PaymentHash != pr.PaymentHash {
			t.Fatalf("preimage hashes to %x, invoice payment hash %s", h, pr.PaymentHash)
		}
		if pr.DescriptionHash != out.RequestID || pr.AmountMsat != 1_000_000 || in.Memo != "thanks" {
			t.Fatalf("invoice: %+v; request %s", pr, out.RequestID)
		}
		hb, _ := hex.DecodeString(pr.PaymentHash)
		inv, err := bob.lnd.LookupInvoice(ctx, hb)
		if err != nil || inv.State != InvoiceSettled {
			t.Fatalf("bob's LND: %+v %v", inv, err)
		}
		want := []int{chat.KindTipRequest, chat.KindTipInvoice, chat.KindTipReceipt, chat.KindTipStatus}
		eventually(t, wait, "tip messages in both conversations", func() (bool, error) {
			a, b := tipKinds(t, alice.svc, out.Conversation, tip.ID), tipKinds(t, bob.svc, in.Conversation, tip.ID)
			return slices.Equal(a, want) && slices.Equal(b, want), fmt.Errorf("alice %v bob %v", a, b)
		})
		first = out
	})
	if first == nil {
		t.FailNow()
	}

	t.Run("a duplicated request and a replayed invoice pay once", func(t *testing.T) {
		before := paymentsCount(t, e.n.LNDs[0])
		// The same request again (a retry: same tip id, new rumor).
		if _, err := alice.svc.SendRumor(ctx, []string{bob.key.PublicKey()}, chat.KindTipRequest, "thanks",
			nostr.Tags{{"tip", first.ID}, {"amount", "1000000"}}, chat.SendOptions{}); err != nil {
			t.Fatal(err)
		}
		// A second, valid invoice for the same tip and request.
		dh, _ := hex.DecodeString(first.RequestID)
		inv, err := bob.lnd.AddInvoice(ctx, InvoiceRequest{AmountMsat: 1_000_000, DescriptionHash: dh, Expiry: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		m, err := bob.svc.SendRumor(ctx, []string{alice.key.PublicKey()}, chat.KindTipInvoice, "",
			nostr.Tags{{"tip", first.ID}, {"e", first.RequestID}, {"amount", "1000000"}, {"bolt11", inv.PaymentRequest}}, chat.SendOptions{})
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, wait, "the replayed invoice reaches alice", func() (bool, error) {
			_, err := alice.svc.Message(ctx, m.ID)
			return err == nil, err
		})
		// Also the identical gift wraps again, straight into the inbox.
		for _, u := range []*tuser{alice, bob} {
			pk := u.key.PublicKey()
			wraps, err := u.relay.store.Query(ctx, nostr.Filter{Kinds: []int{chat.KindGiftWrap}, Tags: nostr.TagMap{"p": {pk}}},
				storage.Visibility{PrivateKinds: relay.PrivateKinds, Readers: []string{pk}})
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range wraps {
				_ = u.svc.Ingest(ctx, w)
			}
		}
		time.Sleep(2 * time.Second)
		if n := paymentsCount(t, e.n.LNDs[0]); n != before {
			t.Fatalf("alice's LND made %d payments, want %d", n, before)
		}
		if got, _ := bob.lnd.LookupInvoice(ctx, inv.PaymentHash); got.State != InvoiceOpen {
			t.Fatalf("the second invoice is %s", got.State)
		}
		ts, _ := bob.eng.List(ctx, ListOptions{})
		n := 0
		for _, x := range ts {
			if x.ID == first.ID {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("bob has %d tips with id %s", n, first.ID)
		}
	})

	t.Run("inflated invoice refused, nothing paid", func(t *testing.T) {
		before := paymentsCount(t, e.n.LNDs[0])
		bob.ln.extraMsat.Store(1000)
		defer bob.ln.extraMsat.Store(0)
		tip, err := alice.eng.Tip(ctx, TipRequest{To: "@" + bob.handle, AmountSat: 500})
		if err != nil {
			t.Fatal(err)
		}
		out := waitState(t, alice.eng, tip.ID, StateFailed, wait)
		if !strings.Contains(out.Reason, "refused: the invoice asks for 501 sat, the tip is 500 sat") {
			t.Fatalf("reason %q", out.Reason)
		}
		in := waitState(t, bob.eng, tip.ID, StateFailed, wait)
		if !strings.Contains(in.Reason, "sender: refused") {
			t.Fatalf("bob's reason %q", in.Reason)
		}
		if n := paymentsCount(t, e.n.LNDs[0]); n != before {
			t.Fatalf("alice's LND made %d payments, want %d", n, before)
		}
		t.Logf("alice sees: %s; bob sees: %s", out.Status(), in.Status())
	})

	t.Run("no route: a clear failure in both conversations", func(t *testing.T) {
		tip, err := alice.eng.Tip(ctx, TipRequest{To: "@" + carol.handle, AmountSat: 1000})
		if err != nil {
			t.Fatal(err)
		}
		out := waitState(t, alice.eng, tip.ID, StateFailed, wait)
		if !strings.Contains(out.Reason, "no route") {
			t.Fatalf("reason %q", out.Reason)
		}
		in := waitState(t, carol.eng, tip.ID, StateFailed, wait)
		t.Logf("alice sees: %s; carol sees: %s", out.Status(), in.Status())
		eventually(t, wait, "status message at carol", func() (bool, error) {
			k := tipKinds(t, carol.svc, in.Conversation, tip.ID)
			return slices.Contains(k, chat.KindTipStatus), fmt.Errorf("%v", k)
		})
	})

	t.Run("LND stopped mid-flow: pending, then settled after it returns", func(t *testing.T) {
		l := e.n.LNDs[0]
		cmd := stopLND(t, l)
		tip, err := alice.eng.Tip(ctx, TipRequest{To: "@" + bob.handle, AmountSat: 700, Memo: "while down"})
		if err != nil {
			t.Fatal(err)
		}
		// Bob answers; alice's LND is down: the tip waits with a clear error.
		var out *Tip
		eventually(t, wait, "pending with an LND error", func() (bool, error) {
			out, _ = alice.eng.Get(ctx, tip.ID)
			return out.State == StateInvoiced && strings.Contains(out.LastError, "LND unreachable"), errors.New(out.Status())
		})
		t.Logf("while LND is down alice sees: %s", out.Status())
		// A second tip while down can be cancelled explicitly.
		tip2, err := alice.eng.Tip(ctx, TipRequest{To: "@" + bob.handle, AmountSat: 300})
		if err != nil {
			t.Fatal(err)
		}
		waitState(t, alice.eng, tip2.ID, StateInvoiced, wait)
		// Refused only while an attempt to pay it is running (each fails
		// at once, LND being down): a user tries again.
		eventually(t, wait, "tip cancelled", func() (bool, error) {
			c, err := alice.eng.Cancel(ctx, tip2.ID)
			if errors.Is(err, ErrNotCancellable) && c != nil && c.State == StateInvoiced {
				return false, err
			}
			if err != nil || c.State != StateCancelled {
				t.Fatalf("cancel: %v %v", c, err)
			}
			return true, nil
		})
		waitState(t, bob.eng, tip2.ID, StateCancelled, wait)
		h := alice.eng.Health(ctx)
		if h.LND != nil || h.LNDError == "" {
			t.Fatalf("health while down: %+v", h)
		}
		startLND(top, cmd)
		waitState(t, alice.eng, tip.ID, StateSettled, 3*time.Minute)
		waitState(t, bob.eng, tip.ID, StateSettled, wait)
		if got, _ := alice.eng.Get(ctx, tip2.ID); got.State != StateCancelled || got.PaymentHash != "" {
			t.Fatalf("cancelled tip: %s %s", got.Status(), got.PaymentHash)
		}
	})

	// A peer (here alice, towards bob) sends a receipt for a tip bob never
	// heard of, then keysends naming bob himself as the sender, and keysends
	// with the made-up receipt's preimage. The receipt used to count as a
	// paid tip; the keysend naming bob queued a message to himself that
	// could never be sent and held up every tip message after it; and the
	// third keysend's payment hash clashed with the made-up receipt's row,
	// which stopped bob's invoice stream for good.
	t.Run("made-up receipts and keysends naming us break nothing", func(t *testing.T) {
		pre := make([]byte, 32)
		if _, err := rand.Read(pre); err != nil {
			t.Fatal(err)
		}
		h := sha256.Sum256(pre)
		madeUp, self, clash := newTipID(), newTipID(), newTipID()
		_, err := alice.svc.SendRumor(ctx, []string{bob.key.PublicKey()}, chat.KindTipReceipt, "paid",
			nostr.Tags{{"tip", madeUp}, {"amount", "1000000000000"}, {"preimage", hex.EncodeToString(pre)}, {"payment_hash", hex.EncodeToString(h[:])}}, chat.SendOptions{})
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, wait, "bob has the made-up receipt", func() (bool, error) {
			return slices.Contains(tipKinds(t, bob.svc, first.Conversation, madeUp), chat.KindTipReceipt), nil
		})
		if tip, err := bob.eng.Get(ctx, madeUp); !errors.Is(err, ErrNotFound) {
			t.Fatalf("a receipt for an unknown tip made a tip: %+v %v", tip, err)
		}
		other := make([]byte, 32)
		if _, err := rand.Read(other); err != nil {
			t.Fatal(err)
		}
		for _, k := range []struct {
			tip, from string
			pre       []byte
		}{{self, bob.key.PublicKey(), other}, {clash, alice.key.PublicKey(), pre}} {
			rec, _ := json.Marshal(tipRecord{Tip: k.tip, From: k.from})
			p, err := alice.lnd.Pay(ctx, PaymentRequest{Dest: e.n.LNDs[1].Pubkey, AmountMsat: 1000, Preimage: k.pre,
				CustomRecords: map[uint64][]byte{RecordTip: rec}, FeeLimitMsat: 10_000, Timeout: 30 * time.Second})
			if err != nil || p.Status != PaymentSucceeded {
				t.Fatalf("keysend: %+v %v", p, err)
			}
		}
		in := waitState(t, bob.eng, clash, StateSettled, wait)
		if in.AmountMsat != 1000 || in.ReceiptReceived {
			t.Fatalf("the 1-sat keysend at bob: %+v", in)
		}
		if tip, err := bob.eng.Get(ctx, self); !errors.Is(err, ErrNotFound) {
			t.Fatalf("a keysend naming bob as its sender made a tip: %+v %v", tip, err)
		}
		// Bob's outbox and invoice stream still work: a tip goes through.
		tip, err := alice.eng.Tip(ctx, TipRequest{To: "@" + bob.handle, AmountSat: 321})
		if err != nil {
			t.Fatal(err)
		}
		waitState(t, bob.eng, tip.ID, StateSettled, wait)
		waitState(t, alice.eng, tip.ID, StateSettled, wait)
	})

	t.Run("keysend with the recipient's node offline", func(t *testing.T) {
		e.stop(bob)
		bob.relay.stop()
		tip, err := alice.eng.Tip(ctx, TipRequest{To: "@" + bob.handle, AmountSat: 1234, Memo: "offline", Mode: ModeKeysend})
		if err != nil {
			t.Fatal(err)
		}
		out := waitState(t, alice.eng, tip.ID, StatePaid, wait)
		if !out.Keysend {
			t.Fatal("not a keysend")
		}
		bob.relay.start()
		e.start(top, bob)
		in := waitState(t, bob.eng, tip.ID, StateSettled, wait)
		waitState(t, alice.eng, tip.ID, StateSettled, wait)
		eventually(t, wait, "bob has the request and the receipt", func() (bool, error) {
			in, _ = bob.eng.Get(ctx, tip.ID)
			k := tipKinds(t, bob.svc, in.Conversation, tip.ID)
			return in.ReceiptReceived && in.Memo == "offline" && slices.Contains(k, chat.KindTipRequest) && slices.Contains(k, chat.KindTipReceipt),
				fmt.Errorf("%v %+v", k, in)
		})
		if in.AmountMsat != 1_234_000 || !in.Keysend {
			t.Fatalf("bob's tip %+v", in)
		}
	})

	// Every open request makes an invoice in the recipient's LND, so one
	// peer may keep only MaxOpenPerPeer open; longer memos are refused too.
	t.Run("a peer's open requests are capped", func(t *testing.T) {
		ids := make([]string, MaxOpenPerPeer+2)
		for i := range ids {
			ids[i] = newTipID()
			memo := fmt.Sprint("request ", i)
			if i == len(ids)-1 {
				memo = strings.Repeat("m", MaxMemoBytes+1)
			}
			_, err := alice.svc.SendRumor(ctx, []string{bob.key.PublicKey()}, chat.KindTipRequest, memo,
				nostr.Tags{{"p", bob.key.PublicKey()}, {"tip", ids[i]}, {"amount", "1000"}}, chat.SendOptions{})
			if err != nil {
				t.Fatal(err)
			}
			// One at a time, so which one is over the cap is known.
			waitFor := StateInvoiced
			if i >= MaxOpenPerPeer {
				waitFor = StateFailed
			}
			got := waitState(t, bob.eng, ids[i], waitFor, wait)
			if i == MaxOpenPerPeer && !strings.Contains(got.Reason, "already open") {
				t.Fatalf("request over the cap: %+v", got)
			}
			if i == len(ids)-1 && !strings.Contains(got.Reason, "memo") {
				t.Fatalf("long memo: %+v", got)
			}
		}
		for _, id := range ids[:MaxOpenPerPeer] {
			if _, err := bob.eng.Cancel(ctx, id); err != nil {
				t.Fatal(err)
			}
		}
	})

	if n, _ := strconv.Atoi(os.Getenv("TIP_BENCH")); n > 0 {
		t.Run("bench", func(t *testing.T) { benchTips(t, e, n) })
	}
}

// stopLND stops an LND of the network (SIGTERM, as lncli stop would) and
// returns its command line to start it again.
func stopLND(t *testing.T, l *regtest.LND) []string {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", l.PID))
	if err != nil {
		t.Fatal(err)
	}
	args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
	if err := syscall.Kill(l.PID, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, "lnd to exit", func() (bool, error) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", l.PID))
		return err != nil || bytes.Contains(b, []byte(") Z ")), nil
	})
	return args
}

// startLND starts LND again with the same command line (and stops it at
// the end of the test, before the harness stops btcd).
func startLND(t *testing.T, args []string) {
	t.Helper()
	logf, err := os.Create(filepath.Join(t.TempDir(), "lnd-restarted.out"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		_ = logf.Close()
	})
}
