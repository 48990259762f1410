package relay

import (
	"encoding/json"
	"net/http"

	"github.com/nbd-wtf/go-nostr/nip11"
)

// SupportedNIPs lists the NIPs this relay implements.
var SupportedNIPs = []any{1, 9, 11, 40, 42, 45, 59, 70}

// Info is the relay's NIP-11 document.
func (r *Relay) Info() nip11.RelayInformationDocument {
	l := r.cfg.Limits
	lim := &nip11.RelayLimitationDocument{
		MaxMessageLength: l.MaxMessageLength,
		MaxSubscriptions: l.MaxSubscriptions,
		MaxLimit:         l.MaxLimit,
		DefaultLimit:     l.DefaultLimit,
		MaxSubidLength:   l.MaxSubIDLength,
		MaxEventTags:     l.MaxEventTags,
		MaxContentLength: l.MaxContentLength,
		// created_at limits are offsets from now, in seconds (NIP-11).
		CreatedAtUpperLimit: int64(l.MaxFutureSkew.Seconds()),
		CreatedAtLowerLimit: int64(l.MaxPastAge.Seconds()),
		AuthRequired:        false,
		RestrictedWrites:    !r.cfg.Open,
	}
	return nip11.RelayInformationDocument{
		Name:          r.cfg.Name,
		Description:   r.cfg.Description,
		PubKey:        r.cfg.Owner,
		Contact:       r.cfg.Contact,
		SupportedNIPs: SupportedNIPs,
		Software:      r.cfg.Software,
		Version:       r.cfg.Version,
		Limitation:    lim,
	}
}

// infoDocument adds the limits NIP-11's struct has no field for.
type infoDocument struct {
	nip11.RelayInformationDocument
	Limitation limitation `json:"limitation"` // shadows the embedded one
	Anchorchat infoExtra  `json:"anchorchat"`
}

type limitation struct {
	*nip11.RelayLimitationDocument
	MaxFilters int `json:"max_filters"`
}

type infoExtra struct {
	PrivateKinds             []int   `json:"private_kinds"`
	GiftWrapBackdateSeconds  int64   `json:"gift_wrap_backdate_seconds"`
	EventsPerSecondPerIP     float64 `json:"events_per_second_per_ip"`
	EventBurstPerIP          int     `json:"event_burst_per_ip"`
	EventsPerSecondPerPubkey float64 `json:"events_per_second_per_pubkey"`
	EventBurstPerPubkey      int     `json:"event_burst_per_pubkey"`
	ReqsPerSecondPerIP       float64 `json:"reqs_per_second_per_ip"`
	ReqBurstPerIP            int     `json:"req_burst_per_ip"`
	MaxConnectionsPerIP      int     `json:"max_connections_per_ip"`
	MaxFilterValues          int     `json:"max_filter_values"`
	Open                     bool    `json:"open"`
}

func (r *Relay) serveInfo(w http.ResponseWriter, _ *http.Request) {
	l := r.cfg.Limits
	info := r.Info()
	doc := infoDocument{
		RelayInformationDocument: info,
		Limitation:               limitation{info.Limitation, l.MaxFilters},
		Anchorchat: infoExtra{
			PrivateKinds:             PrivateKinds,
			GiftWrapBackdateSeconds:  int64(GiftWrapBackdate.Seconds()),
			EventsPerSecondPerIP:     l.EventsPerSecondPerIP,
			EventBurstPerIP:          l.EventBurstPerIP,
			EventsPerSecondPerPubkey: l.EventsPerSecondPerPubkey,
			EventBurstPerPubkey:      l.EventBurstPerPubkey,
			ReqsPerSecondPerIP:       l.ReqsPerSecondPerIP,
			ReqBurstPerIP:            l.ReqBurstPerIP,
			MaxConnectionsPerIP:      l.MaxConnectionsPerIP,
			MaxFilterValues:          l.MaxFilterValues,
			Open:                     r.cfg.Open,
		},
	}
	w.Header().Set("Content-Type", "application/nostr+json")
	w.Header().Set("Access-Control-Allow-Origin", "*")
	w.Header().Set("Access-Control-Allow-Headers", "*")
	w.Header().Set("Access-Control-Allow-Methods", "GET, OPTIONS")
	_ = json.NewEncoder(w).Encode(doc)
}
