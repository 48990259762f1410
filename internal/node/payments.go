package node

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"time"

	"github.com/anchorchat/anchorchat/payments"
)

// PaymentsDBFile is the tip store inside the data dir.
const PaymentsDBFile = "payments.db"

// PaymentsConfig holds the spending limits of tips (see docs/payments.md).
type PaymentsConfig struct {
	MaxTipSat, DailyLimitSat, MaxReceiveSat int64
	FeeLimitPPM, FeeLimitMinSat             int64
}

// setupPayments creates the tip engine when the node has an identity and an
// LND connection. The LND client connects lazily: an unreachable LND never
// stops the node; tips wait, and status says why.
func (n *Node) setupPayments() error {
	if n.chat == nil || !n.cfg.LND.Configured() {
		return nil
	}
	lnd, err := payments.NewLND(payments.LNDConfig{
		RPCServer: n.cfg.LND.RPCServer, TLSCertPath: n.cfg.LND.TLSCertPath, MacaroonPath: n.cfg.LND.MacaroonPath,
		Logger: n.log,
	})
	if err != nil {
		return fmt.Errorf("LND client: %w", err)
	}
	n.lnd = lnd
	p := n.cfg.Payments
	n.pay, err = payments.New(payments.Config{
		Lightning: lnd, Chat: n.chat, DBPath: filepath.Join(n.cfg.DataDir, PaymentsDBFile),
		Logger:    n.log,
		MaxTipSat: p.MaxTipSat, DailyLimitSat: p.DailyLimitSat, MaxReceiveSat: p.MaxReceiveSat,
		FeeLimitPPM: p.FeeLimitPPM, FeeLimitMinSat: p.FeeLimitMinSat,
	})
	if err != nil {
		return fmt.Errorf("tips: %w", err)
	}
	return nil
}

// TipView is a tip as the local API shows it.
type TipView struct {
	ID           string    `json:"id"`
	Outgoing     bool      `json:"outgoing"`
	Peer         string    `json:"peer"`
	Conversation string    `json:"conversation"`
	AmountSat    int64     `json:"amount_sat"`
	Memo         string    `json:"memo,omitempty"`
	State        string    `json:"state"`
	Status       string    `json:"status"`
	FeeMsat      int64     `json:"fee_msat,omitempty"`
	Keysend      bool      `json:"keysend,omitempty"`
	PaymentHash  string    `json:"payment_hash,omitempty"`
	Preimage     string    `json:"preimage,omitempty"` // the receipt, once paid
	CreatedAt    time.Time `json:"created_at"`
	DoneAt       time.Time `json:"done_at,omitzero"`
}

func tipView(t *payments.Tip) TipView {
	return TipView{
		ID: t.ID, Outgoing: t.Outgoing, Peer: t.Peer, Conversation: t.Conversation, AmountSat: t.AmountSat(),
		Memo: t.Memo, State: string(t.State), Status: t.Status(), FeeMsat: t.FeeMsat, Keysend: t.Keysend,
		PaymentHash: t.PaymentHash, Preimage: t.Preimage, CreatedAt: t.CreatedAt, DoneAt: t.DoneAt,
	}
}

// TipRequest is the body of POST /v1/tip.
type TipRequest struct {
	To        string `json:"to"`
	AmountSat int64  `json:"amount_sat"`
	Memo      string `json:"memo,omitempty"`
	Keysend   bool   `json:"keysend,omitempty"`
}

func (n *Node) paymentRoutes(mux *http.ServeMux) {
	need := requires(func() bool { return n.pay != nil }, "tips need an identity and an LND connection: set lnd.rpcserver, lnd.tlscertpath and lnd.macaroonpath (docs/payments.md)")
	mux.HandleFunc("POST /v1/tip", need(func(w http.ResponseWriter, r *http.Request) {
		var req TipRequest
		if err := decodeBody(r, &req); err != nil {
			apiError(w, http.StatusBadRequest, err)
			return
		}
		mode := payments.ModeAuto
		if req.Keysend {
			mode = payments.ModeKeysend
		}
		t, err := n.pay.Tip(r.Context(), payments.TipRequest{To: req.To, AmountSat: req.AmountSat, Memo: req.Memo, Mode: mode})
		if err != nil {
			apiError(w, http.StatusBadRequest, err)
			return
		}
		writeJSON(w, tipView(t))
	}))
	mux.HandleFunc("GET /v1/tip", need(func(w http.ResponseWriter, r *http.Request) {
		t, err := n.pay.Get(r.Context(), r.URL.Query().Get("id"))
		if err != nil {
			apiError(w, http.StatusNotFound, err)
			return
		}
		writeJSON(w, tipView(t))
	}))
	mux.HandleFunc("POST /v1/tip/cancel", need(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			ID string `json:"id"`
		}
		if err := decodeBody(r, &req); err != nil {
			apiError(w, http.StatusBadRequest, err)
			return
		}
		t, err := n.pay.Cancel(r.Context(), req.ID)
		if err != nil {
			apiError(w, http.StatusBadRequest, err)
			return
		}
		writeJSON(w, tipView(t))
	}))
	mux.HandleFunc("GET /v1/payments", need(func(w http.ResponseWriter, r *http.Request) {
		limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
		tips, err := n.pay.List(r.Context(), payments.ListOptions{Conversation: r.URL.Query().Get("conversation"), Limit: limit})
		if err != nil {
			apiError(w, http.StatusInternalServerError, err)
			return
		}
		out := make([]TipView, 0, len(tips))
		for _, t := range tips {
			out = append(out, tipView(t))
		}
		writeJSON(w, out)
	}))
}
