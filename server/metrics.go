package server

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

var (
	// requests counts gRPC calls by service method and status code.
	requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "meshroot", Name: "grpc_requests_total",
		Help: "gRPC requests handled, by method and status code.",
	}, []string{"method", "code"})
	// issued counts intermediates issued, by cluster and authentication method.
	issued = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "meshroot", Name: "intermediates_issued_total",
		Help: "Cluster intermediates issued, by cluster and authentication method.",
	}, []string{"cluster", "method"})
	// refused counts refused issuance requests by reason class.
	refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "meshroot", Name: "requests_refused_total",
		Help: "Issuer requests refused, by gRPC status code.",
	}, []string{"code"})
	// rateLimited counts Issuer calls refused at once because their peer
	// used up its allowance of refusals.
	rateLimited = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "meshroot", Name: "requests_rate_limited_total",
		Help: "Issuer requests refused without authentication because their peer had too many refusals.",
	})
	// refusalsSummarised counts refusals written to the audit log only as
	// part of a per-peer summary row, not one by one.
	refusalsSummarised = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "meshroot", Name: "refusals_summarised_total",
		Help: "Refused Issuer requests audited only in a per-peer summary row, by action and gRPC status code.",
	}, []string{"action", "code"})
	bundleSequence = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "meshroot", Name: "trust_bundle_sequence",
		Help: "Sequence number of the trust bundle this server serves.",
	})
	watchers = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "meshroot", Name: "trust_bundle_watchers",
		Help: "Agents connected to WatchTrustBundle.",
	})
)

// Register adds the issuer's metrics to reg; registering them twice in one
// registry is not an error.
func Register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{requests, issued, refused, rateLimited, refusalsSummarised, bundleSequence, watchers, crlMissing} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return err
			}
		}
	}
	return nil
}
