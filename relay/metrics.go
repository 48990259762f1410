package relay

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the relay's Prometheus collectors.
type Metrics struct {
	Connections   prometheus.Gauge
	Subscriptions prometheus.Gauge
	Messages      *prometheus.CounterVec   // by verb
	Accepted      *prometheus.CounterVec   // by kind class: regular, replaceable, ephemeral, addressable, deletion
	Rejected      *prometheus.CounterVec   // by NIP-01 reason prefix
	QuerySeconds  *prometheus.HistogramVec // by op: req (time to EOSE), count
	Delivered     prometheus.Counter       // live events sent to subscriptions
}

// NewMetrics creates the collectors and registers them with reg (if not nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "anchorchat", Subsystem: "relay", Name: "connections",
			Help: "Open websocket connections.",
		}),
		Subscriptions: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "anchorchat", Subsystem: "relay", Name: "subscriptions",
			Help: "Open subscriptions over all connections.",
		}),
		Messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "anchorchat", Subsystem: "relay", Name: "messages_total",
			Help: "Client messages received, by verb (invalid for unparseable ones).",
		}, []string{"verb"}),
		Accepted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "anchorchat", Subsystem: "relay", Name: "events_accepted_total",
			Help: "Events accepted (OK true), by kind class.",
		}, []string{"class"}),
		Rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "anchorchat", Subsystem: "relay", Name: "events_rejected_total",
			Help: "Events refused (OK false), by NIP-01 reason prefix.",
		}, []string{"reason"}),
		QuerySeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "anchorchat", Subsystem: "relay", Name: "query_seconds",
			Help:    "Time to answer a REQ (until EOSE) or a COUNT.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"op"}),
		Delivered: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "anchorchat", Subsystem: "relay", Name: "live_events_delivered_total",
			Help: "Events delivered to open subscriptions after EOSE.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.Connections, m.Subscriptions, m.Messages, m.Accepted, m.Rejected, m.QuerySeconds, m.Delivered)
	}
	return m
}

// reasonPrefix is the NIP-01 machine-readable prefix of a rejection message.
func reasonPrefix(msg string) string {
	if i := strings.IndexByte(msg, ':'); i > 0 && i < 20 {
		return msg[:i]
	}
	return "error"
}

func kindClass(kind int) string {
	switch {
	case kind == 5:
		return "deletion"
	case kind == 0 || kind == 3 || (kind >= 10000 && kind < 20000):
		return "replaceable"
	case kind >= 20000 && kind < 30000:
		return "ephemeral"
	case kind >= 30000 && kind < 40000:
		return "addressable"
	default:
		return "regular"
	}
}
