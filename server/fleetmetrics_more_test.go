package server_test

import (
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"testing"
	"time"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/internal/testca"
	"github.com/meshroot/meshroot/server"
)

// TestFleetMetricsQuarantineIstiodCRL: the fleet series say which clusters
// are quarantined, whether each agent confirmed istiod serves its Secret
// (absent when it never said), and when each CRL the fleet relies on
// reaches its nextUpdate: the roots' (signed by the server) and each
// cluster's (sent by its agent).
func TestFleetMetricsQuarantineIstiodCRL(t *testing.T) {
	ts := startServer(t, func(c *server.ServerConfig) { c.FleetCacheTTL = -1 })
	roots := ts.bootstrap(t) // east, west
	ctx := t.Context()
	if _, err := ts.admin.AddCluster(ctx, &meshrootv1.AddClusterRequest{Name: "lab"}); err != nil {
		t.Fatal(err)
	}
	// join issues cluster's intermediate and reports it with istiod's
	// state and, when crlNext is set, a CRL signed with its key.
	join := func(cluster, istiod string, crlNext time.Time) {
		t.Helper()
		req, key := csr(t)
		resp, err := ts.issuerClient(t, roots, nil).SignIntermediate(withJoinToken(ctx, ts.token(t, cluster)),
			&meshrootv1.SignIntermediateRequest{Cluster: cluster, Csr: req.Raw, TtlSeconds: int64(48 * time.Hour / time.Second)})
		if err != nil {
			t.Fatalf("sign %s: %v", cluster, err)
		}
		rep := &meshrootv1.ReportStatusRequest{Cluster: cluster, BundleSequence: resp.GetBundleSequence(), IntermediateSerial: resp.GetSerial(),
			IstiodState: istiod, IstiodBundleSequence: resp.GetBundleSequence()}
		if !crlNext.IsZero() {
			inter, err := x509.ParseCertificate(resp.GetCertChain()[0])
			if err != nil {
				t.Fatal(err)
			}
			rep.Crl, err = x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(1),
				ThisUpdate: time.Now().Add(-time.Minute), NextUpdate: crlNext}, inter, key.PrivateKey.(crypto.Signer))
			if err != nil {
				t.Fatal(err)
			}
		}
		cert := &tls.Certificate{Certificate: resp.GetCertChain(), PrivateKey: key.PrivateKey}
		if _, err := ts.issuerClient(t, roots, cert).ReportStatus(ctx, rep); err != nil {
			t.Fatalf("report %s: %v", cluster, err)
		}
	}
	eastCRLNext := time.Now().Add(36 * time.Hour).Truncate(time.Second)
	join("east", "loaded", eastCRLNext)
	join("west", "stale", time.Time{})
	if _, err := ts.admin.QuarantineCluster(ctx, &meshrootv1.QuarantineClusterRequest{Cluster: "west", Reason: "test: stolen key"}); err != nil {
		t.Fatal(err)
	}
	rs, err := ts.admin.ListRoots(ctx, &meshrootv1.ListRootsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	active := rs.GetRoots()[0]
	// The quarantine revoked west's intermediate: wait for the root's CRL
	// to list it (the server re-signs it), so that it holds still.
	testca.WaitFor(t, 10*time.Second, "the root's CRL lists west's revoked intermediate", func() bool {
		c, err := ts.st.GetCRL(ctx, ca.RootCRLIssuer(active.GetId()))
		if err != nil {
			return false
		}
		rl, err := x509.ParseRevocationList(c.DER)
		return err == nil && len(rl.RevokedCertificateEntries) == 1
	})

	fams := scrape(t, ts)
	if q := series(fams, "meshroot_cluster_quarantined"); len(q) != 3 || q["cluster=west"] != 1 || q["cluster=east"] != 0 || q["cluster=lab"] != 0 {
		t.Errorf("quarantined: %v, want west 1, east and lab 0", q)
	}
	if ist := series(fams, "meshroot_cluster_istiod_confirmed"); len(ist) != 2 || ist["cluster=east"] != 1 || ist["cluster=west"] != 0 {
		t.Errorf("istiod confirmed: %v, want east 1, west 0, lab absent (never reported)", ist)
	}
	wantStamp(t, fams, "meshroot_cluster_crl_next_update_timestamp_seconds", "cluster=east", eastCRLNext)
	if c := series(fams, "meshroot_cluster_crl_next_update_timestamp_seconds"); len(c) != 1 {
		t.Errorf("cluster CRL series: %v, want east only (west sent none, lab never reported)", c)
	}
	crl, err := ts.st.GetCRL(ctx, ca.RootCRLIssuer(active.GetId()))
	if err != nil {
		t.Fatalf("the active root has no stored CRL: %v", err)
	}
	if time.Until(crl.NextUpdate) < 6*24*time.Hour {
		t.Errorf("the root's CRL reaches nextUpdate at %s, want about a week ahead", crl.NextUpdate)
	}
	wantStamp(t, fams, "meshroot_crl_next_update_timestamp_seconds", "root_id="+active.GetId()+",trust_domain=example.org", crl.NextUpdate)
}
