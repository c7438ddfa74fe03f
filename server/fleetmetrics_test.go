package server_test

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/server"
)

// testClock is a settable clock for the authority service.
type testClock struct {
	mu  sync.Mutex
	off time.Duration
}

func (c *testClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.off)
}

// at runs f with the clock moved by off.
func (c *testClock) at(off time.Duration, f func()) {
	c.mu.Lock()
	c.off = off
	c.mu.Unlock()
	defer func() { c.mu.Lock(); c.off = 0; c.mu.Unlock() }()
	f()
}

// scrape returns the server's /metrics parsed by family name.
func scrape(t *testing.T, ts *testServer) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + ts.srv.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %v %s", err, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// series lists a family's series as "label=value,..." -> value.
func series(fams map[string]*dto.MetricFamily, name string) map[string]float64 {
	out := map[string]float64{}
	f := fams[name]
	if f == nil {
		return out
	}
	for _, m := range f.GetMetric() {
		var ls []string
		for _, l := range m.GetLabel() {
			ls = append(ls, l.GetName()+"="+l.GetValue())
		}
		sort.Strings(ls)
		out[strings.Join(ls, ",")] = m.GetGauge().GetValue()
	}
	return out
}

func wantStamp(t *testing.T, fams map[string]*dto.MetricFamily, name, labels string, want time.Time) {
	t.Helper()
	got, ok := series(fams, name)[labels]
	if !ok {
		t.Errorf("%s{%s} missing; have %v", name, labels, series(fams, name))
		return
	}
	if math.Abs(got-float64(want.UnixMilli())/1000) > 0.002 {
		t.Errorf("%s{%s} = %.3f, want %s (%.3f)", name, labels, got, want.UTC().Format(time.RFC3339Nano), float64(want.UnixMilli())/1000)
	}
}

// joinCluster makes cluster get an intermediate of ttl with a join token and
// report it (with the clock moved by reportAt), as an agent does over the
// wire, and returns the intermediate.
func joinCluster(t *testing.T, ts *testServer, roots []*x509.Certificate, cluster string, ttl time.Duration, clock *testClock, reportAt time.Duration) *x509.Certificate {
	t.Helper()
	ctx := t.Context()
	req, key := csr(t)
	resp, err := ts.issuerClient(t, roots, nil).SignIntermediate(withJoinToken(ctx, ts.token(t, cluster)),
		&meshrootv1.SignIntermediateRequest{Cluster: cluster, Csr: req.Raw, TtlSeconds: int64(ttl / time.Second)})
	if err != nil {
		t.Fatalf("sign %s: %v", cluster, err)
	}
	cert := &tls.Certificate{Certificate: resp.GetCertChain(), PrivateKey: key.PrivateKey}
	clock.at(reportAt, func() {
		if _, err := ts.issuerClient(t, roots, cert).ReportStatus(ctx, &meshrootv1.ReportStatusRequest{
			Cluster: cluster, BundleSequence: resp.GetBundleSequence(), IntermediateSerial: resp.GetSerial(),
		}); err != nil {
			t.Fatalf("report %s: %v", cluster, err)
		}
	})
	c, err := x509.ParseCertificate(resp.GetCertChain()[0])
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestFleetMetrics: the server's /metrics says, per cluster, root and peer,
// what expires when and when it was last heard of, read from the store,
// one series per cluster however many intermediates it had.
func TestFleetMetrics(t *testing.T) {
	clock := &testClock{}
	ts := startServer(t, func(c *server.ServerConfig) { c.Service.SetClock(clock.now); c.FleetCacheTTL = -1 })
	roots := ts.bootstrap(t) // root, clusters east and west
	ctx := t.Context()
	if _, err := ts.admin.AddCluster(ctx, &meshrootv1.AddClusterRequest{Name: "lost"}); err != nil {
		t.Fatal(err)
	}
	activeRoots, err := ts.admin.ListRoots(ctx, &meshrootv1.ListRootsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	active := activeRoots.GetRoots()[0]

	east := joinCluster(t, ts, roots, "east", 100*time.Hour, clock, 0)
	lost := joinCluster(t, ts, roots, "lost", 48*time.Hour, clock, -2*time.Hour)
	contactLost, err := ts.st.GetCluster(ctx, "lost")
	if err != nil {
		t.Fatal(err)
	}
	var prepared *meshrootv1.Root
	clock.at(-50*time.Hour, func() {
		prepared, err = ts.admin.PrepareRoot(ctx, &meshrootv1.PrepareRootRequest{TtlSeconds: int64(20 * 365 * 24 * time.Hour / time.Second)})
	})
	if err != nil {
		t.Fatal(err)
	}
	clock.at(-4*time.Hour, func() {
		_, err = ts.admin.AddFederation(ctx, &meshrootv1.AddFederationRequest{TrustDomain: "other.org", Url: "https://127.0.0.1:1/bundle", Profile: "https_web"})
	})
	if err != nil {
		t.Fatal(err)
	}

	fams := scrape(t, ts)
	wantStamp(t, fams, "meshroot_cluster_intermediate_expiry_timestamp_seconds", "cluster=east", east.NotAfter)
	wantStamp(t, fams, "meshroot_cluster_intermediate_expiry_timestamp_seconds", "cluster=lost", lost.NotAfter)
	if _, ok := series(fams, "meshroot_cluster_intermediate_expiry_timestamp_seconds")["cluster=west"]; ok {
		t.Error("west never reported an intermediate, yet has an expiry series")
	}
	wantStamp(t, fams, "meshroot_cluster_last_contact_timestamp_seconds", "cluster=lost", contactLost.Status.LastContact)
	if got := series(fams, "meshroot_cluster_last_contact_timestamp_seconds")["cluster=lost"]; time.Since(time.Unix(int64(got), 0)) < 119*time.Minute {
		t.Errorf("lost's last contact %v is not two hours ago", time.Unix(int64(got), 0))
	}
	if _, ok := series(fams, "meshroot_cluster_last_contact_timestamp_seconds")["cluster=west"]; ok {
		t.Error("west never reported, yet has a last-contact series")
	}
	if _, ok := series(fams, "meshroot_cluster_registered_timestamp_seconds")["cluster=west"]; !ok {
		t.Error("west has no registration series")
	}
	wantInfo := fmt.Sprintf("cluster=east,root_id=%s,trust_domain=example.org", active.GetId())
	if v := series(fams, "meshroot_cluster_info")[wantInfo]; v != 1 {
		t.Errorf("meshroot_cluster_info{%s} = %v; have %v", wantInfo, v, series(fams, "meshroot_cluster_info"))
	}
	if v := series(fams, "meshroot_cluster_info")["cluster=west,root_id=,trust_domain=example.org"]; v != 1 {
		t.Errorf("west's info series: %v", series(fams, "meshroot_cluster_info"))
	}
	if v, ok := series(fams, "meshroot_cluster_bundle_sequence")["cluster=east"]; !ok || v != 1 {
		t.Errorf("east's bundle sequence %v (present %v), want 1", v, ok)
	}
	if q := series(fams, "meshroot_cluster_quarantined"); len(q) != 3 || q["cluster=east"] != 0 {
		t.Errorf("quarantined: %v, want 0 for each of 3 clusters", q)
	}

	rootLabels := func(r *meshrootv1.Root) string { return "root_id=" + r.GetId() + ",trust_domain=example.org" }
	stateLabels := func(r *meshrootv1.Root, state string) string {
		return "root_id=" + r.GetId() + ",state=" + state + ",trust_domain=example.org"
	}
	wantStamp(t, fams, "meshroot_root_expiry_timestamp_seconds", rootLabels(active), active.GetNotAfter().AsTime())
	wantStamp(t, fams, "meshroot_root_expiry_timestamp_seconds", rootLabels(prepared), prepared.GetNotAfter().AsTime())
	states := series(fams, "meshroot_root_state")
	if states[stateLabels(active, "active")] != 1 || states[stateLabels(prepared, "prepared")] != 1 || len(states) != 2 {
		t.Errorf("root states: %v", states)
	}
	if ph := series(fams, "meshroot_rotation_phase"); len(ph) != 1 || ph["phase=prepared"] != 1 {
		t.Errorf("rotation phase: %v, want prepared", ph)
	}
	since := series(fams, "meshroot_rotation_phase_started_timestamp_seconds")["phase=prepared"]
	if d := time.Since(time.Unix(int64(since), 0)); d < 49*time.Hour || d > 51*time.Hour {
		t.Errorf("phase prepared started %s ago, want 50h", d)
	}

	if _, ok := series(fams, "meshroot_federation_peer_last_success_timestamp_seconds")["trust_domain=other.org"]; ok {
		t.Error("a peer never fetched has a last-success series")
	}
	created := series(fams, "meshroot_federation_peer_created_timestamp_seconds")["trust_domain=other.org"]
	if d := time.Since(time.Unix(int64(created), 0)); d < 239*time.Minute || d > 241*time.Minute {
		t.Errorf("peer created %s ago, want 4h", d)
	}
	if v, ok := series(fams, "meshroot_federation_peer_bundle_sequence")["trust_domain=other.org"]; !ok || v != 0 {
		t.Errorf("peer sequence %v present %v, want 0", v, ok)
	}
	if v := series(fams, "meshroot_fleet_collect_success")[""]; v != 1 {
		t.Errorf("meshroot_fleet_collect_success = %v, want 1", v)
	}

	// A renewal replaces east's series; it does not add one. The server's
	// own certificate, reissued while the clock above stood 50 hours back,
	// has expired in real time: wait for the keeper to replace it.
	waitServing(t, ts, roots)
	east2 := joinCluster(t, ts, roots, "east", 200*time.Hour, clock, 0)
	fams = scrape(t, ts)
	wantStamp(t, fams, "meshroot_cluster_intermediate_expiry_timestamp_seconds", "cluster=east", east2.NotAfter)
	if n := len(series(fams, "meshroot_cluster_intermediate_expiry_timestamp_seconds")); n != 2 {
		t.Errorf("%d expiry series after a renewal, want 2 (east, lost)", n)
	}

	// Activation moves the phase, dated by the clock.
	if _, err := ts.admin.ActivateRoot(ctx, &meshrootv1.PhaseRequest{Force: true}); err != nil {
		t.Fatal(err)
	}
	fams = scrape(t, ts)
	if ph := series(fams, "meshroot_rotation_phase"); ph["phase=activated"] != 1 || len(ph) != 1 {
		t.Errorf("after activate: phase %v, want activated", ph)
	}
	if st := series(fams, "meshroot_root_state"); st[stateLabels(active, "retiring")] != 1 {
		t.Errorf("after activate: root states %v", st)
	}
	if p := series(fams, "meshroot_quarantine_pending_clusters"); len(p) != 0 {
		t.Errorf("pending quarantine series without a quarantine: %v", p)
	}

	// A quarantine: lost is 1, and both other clusters (no agent wrote a
	// ca-crl.pem) are pending.
	if _, err := ts.admin.QuarantineCluster(ctx, &meshrootv1.QuarantineClusterRequest{Cluster: "lost", Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	fams = scrape(t, ts)
	if q := series(fams, "meshroot_cluster_quarantined"); len(q) != 3 || q["cluster=lost"] != 1 || q["cluster=east"] != 0 {
		t.Errorf("quarantined after quarantining lost: %v", q)
	}
	if p := series(fams, "meshroot_quarantine_pending_clusters"); len(p) != 1 || p["cluster=lost"] != 2 {
		t.Errorf("pending clusters for lost: %v, want 2", p)
	}
}

// TestFleetMetricsCached: within the cache TTL a scrape does not read the
// store again.
func TestFleetMetricsCached(t *testing.T) {
	ts := startServer(t, func(c *server.ServerConfig) { c.FleetCacheTTL = time.Hour })
	ts.bootstrap(t)
	before := len(series(scrape(t, ts), "meshroot_cluster_info"))
	if _, err := ts.admin.AddCluster(t.Context(), &meshrootv1.AddClusterRequest{Name: "later"}); err != nil {
		t.Fatal(err)
	}
	if after := len(series(scrape(t, ts), "meshroot_cluster_info")); after != before || before != 2 {
		t.Errorf("cluster series %d then %d, want 2 both times (cached)", before, after)
	}
}

// waitServing waits until the Issuer API completes a TLS handshake.
func waitServing(t *testing.T, ts *testServer, roots []*x509.Certificate) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := ts.issuerClient(t, roots, nil).GetTrustBundle(t.Context(), &meshrootv1.GetTrustBundleRequest{})
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the Issuer API does not serve 10 s on: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
