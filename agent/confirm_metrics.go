package agent

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshroot/meshroot/store"
)

// istiodMetrics are the closed loop's series.
type istiodMetrics struct {
	state      *prometheus.GaugeVec
	staleSince prometheus.Gauge
}

func newIstiodMetrics(labels prometheus.Labels) istiodMetrics {
	m := istiodMetrics{
		state: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "meshroot", Subsystem: "agent", Name: "istiod_state",
			Help:        "1 for what the agent last confirmed istiod serves compared with the cacerts Secret (state: loaded, pending, stale, unconfirmed), 0 for the others.",
			ConstLabels: labels}, []string{"state"}),
		staleSince: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "meshroot", Subsystem: "agent", Name: "istiod_stale_since_timestamp_seconds",
			Help:        "Since when istiod has been stale (serving other roots than the cacerts Secret after the bound), in seconds since the epoch; 0 when it is not.",
			ConstLabels: labels}),
	}
	for _, s := range IstiodStates {
		m.state.WithLabelValues(s)
	}
	return m
}

func (m istiodMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.state, m.staleSince}
}

// istiodState records the confirmation state st.
func (m *Metrics) istiodState(st store.IstiodStatus) {
	if m == nil || st.State == "" {
		return
	}
	for _, s := range IstiodStates {
		v := 0.0
		if s == st.State {
			v = 1
		}
		m.istiod.state.WithLabelValues(s).Set(v)
	}
	if st.StaleSince.IsZero() {
		m.istiod.staleSince.Set(0)
	} else {
		m.istiod.staleSince.Set(unixSeconds(st.StaleSince))
	}
}
