package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// StatusReportInterval is the longest an agent in Run waits between two
// reconciles, and so between two status reports to the server: the
// server's meshroot_cluster_last_contact_timestamp_seconds then tells a
// live cluster from a lost one (the MeshrootClusterNotSeen alert fires
// after an hour). A reconcile with nothing to do reads the Secret and
// writes nothing.
const StatusReportInterval = 10 * time.Minute

// Error kinds counted by meshroot_agent_errors_total.
const (
	// ErrKindSecretRead: the cacerts Secret could not be read.
	ErrKindSecretRead = "secret_read"
	// ErrKindIssue: asking the server for an intermediate failed.
	ErrKindIssue = "issue"
	// ErrKindSecretWrite: writing the cacerts Secret (or rolling istiod) failed.
	ErrKindSecretWrite = "secret_write"
	// ErrKindReport: the status report to the server failed.
	ErrKindReport = "report"
	// ErrKindWatch: the trust bundle watch broke off.
	ErrKindWatch = "watch"
	// ErrKindFederated: writing the federated bundles into the mesh failed.
	ErrKindFederated = "federated"
	// ErrKindCRLTooLarge: ca-crl.pem would push the cacerts Secret over
	// Kubernetes' 1 MiB limit, so it was left out.
	ErrKindCRLTooLarge = "crl_too_large"
)

// ErrorKinds lists every kind of meshroot_agent_errors_total.
var ErrorKinds = []string{ErrKindSecretRead, ErrKindIssue, ErrKindSecretWrite, ErrKindReport, ErrKindWatch, ErrKindFederated, ErrKindCRLTooLarge}

// Metrics are an agent's Prometheus metrics. Every series carries the
// cluster's name as label "cluster". Timestamps the agent does not know
// yet (no Secret read, nothing written) are absent rather than 0, so that
// an alert on them never fires on a default. A nil *Metrics records
// nothing.
type Metrics struct {
	notAfter, nextRenewal, lastWrite, lastReport, applied *prometheus.GaugeVec
	watch                                                 prometheus.Gauge
	crl, crlPublished                                     *prometheus.GaugeVec // see crl.go
	errors                                                *prometheus.CounterVec
	istiod                                                istiodMetrics
}

// NewMetrics creates the agent's metrics for cluster and registers them
// with reg.
func NewMetrics(reg prometheus.Registerer, cluster string) (*Metrics, error) {
	labels := prometheus.Labels{"cluster": cluster}
	gauge := func(name, help string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "meshroot", Subsystem: "agent", Name: name, Help: help, ConstLabels: labels}, nil)
	}
	m := &Metrics{
		notAfter: gauge("intermediate_expiry_timestamp_seconds",
			"NotAfter of the intermediate in the cacerts Secret, in seconds since the epoch."),
		nextRenewal: gauge("next_renewal_timestamp_seconds",
			"When the agent renews (or was due to renew) the intermediate in the cacerts Secret, in seconds since the epoch."),
		lastWrite: gauge("last_secret_write_timestamp_seconds",
			"When this agent process last wrote the cacerts Secret successfully, in seconds since the epoch."),
		lastReport: gauge("last_report_timestamp_seconds",
			"When this agent process last reported its status to the server successfully, in seconds since the epoch."),
		applied: gauge("bundle_sequence",
			"Trust bundle sequence applied in the cacerts Secret."),
		crl: gauge("crl_missing_cas",
			"CAs of the fleet without a current CRL as this agent sees them. Before the agent's first ca-crl.pem it leaves the file out while above 0; afterwards the file stays (istiod never retracts one) and proxies refuse chains through those CAs."),
		crlPublished: gauge("crl_published",
			"1 when the cacerts Secret holds a ca-crl.pem the agent wrote (istiod may publish it and never retracts it), else 0."),
		watch: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "meshroot", Subsystem: "agent", Name: "watch_connected",
			Help: "1 while the trust bundle watch to the server is receiving, else 0.", ConstLabels: labels}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "meshroot", Subsystem: "agent", Name: "errors_total",
			Help: "Agent failures by kind: secret_read, issue, secret_write, report, watch, federated.", ConstLabels: labels}, []string{"kind"}),
	}
	m.istiod = newIstiodMetrics(labels)
	for _, k := range ErrorKinds {
		m.errors.WithLabelValues(k) // every kind starts at 0, so increase() sees the first error
	}
	for _, c := range []prometheus.Collector{m.notAfter, m.nextRenewal, m.lastWrite, m.lastReport, m.applied, m.watch, m.errors, m.crl, m.crlPublished, m.istiod.state, m.istiod.staleSince} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("agent metrics: %w", err)
		}
	}
	return m, nil
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixMilli()) / 1000 }

// failed counts one failure of kind.
func (m *Metrics) failed(kind string) {
	if m != nil {
		m.errors.WithLabelValues(kind).Inc()
	}
}

// wrote records a successful write of the cacerts Secret at t.
func (m *Metrics) wrote(t time.Time) {
	if m != nil {
		m.lastWrite.WithLabelValues().Set(unixSeconds(t))
	}
}

// reported records a successful status report at t.
func (m *Metrics) reported(t time.Time) {
	if m != nil {
		m.lastReport.WithLabelValues().Set(unixSeconds(t))
	}
}

// watching records that the trust bundle watch receives.
func (m *Metrics) watching() {
	if m != nil {
		m.watch.Set(1)
	}
}

// watchLost records that the trust bundle watch broke off.
func (m *Metrics) watchLost() {
	if m != nil {
		m.watch.Set(0)
		m.errors.WithLabelValues(ErrKindWatch).Inc()
	}
}

// observe records what the cacerts Secret holds: the intermediate's
// NotAfter, when it is due for renewal, the bundle sequence applied.
func (a *Agent) observe(cur *Current) {
	m := a.cfg.Metrics
	if m == nil || cur == nil || cur.Secret == nil || cur.CACerts == nil || !cur.ManagedByMeshroot() {
		return
	}
	m.notAfter.WithLabelValues().Set(unixSeconds(cur.CACerts.Cert.NotAfter))
	m.nextRenewal.WithLabelValues().Set(unixSeconds(a.renewAt(cur.CACerts.Cert, cur.Secret.Annotations)))
	m.applied.WithLabelValues().Set(float64(appliedSequence(cur)))
}

// MetricsServer serves /metrics over plain HTTP.
type MetricsServer struct {
	ln  net.Listener
	srv *http.Server
}

// ListenMetrics binds addr (so that a port in use fails here) for a
// /metrics endpoint serving g; Serve serves it.
func ListenMetrics(addr string, g prometheus.Gatherer) (*MetricsServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-addr %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	return &MetricsServer{ln: ln, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}}, nil
}

// Addr is the address the endpoint listens on.
func (s *MetricsServer) Addr() string { return s.ln.Addr().String() }

// Serve serves until ctx ends.
func (s *MetricsServer) Serve(ctx context.Context) error {
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.srv.Shutdown(shut)
	}()
	if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
