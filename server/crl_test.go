package server_test

import (
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/api/wire"
	"github.com/meshroot/meshroot/ca"
)

func httpGet(t *testing.T, url string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// TestCRLsServedDistributedAndQuarantine: the root's CRL is served over
// HTTP (DER and PEM) and sent to watchers with the bundle, together with
// the CRL an agent sends with its status; after a quarantine the CRL lists
// the cluster's intermediate and a fresh join token gets nothing.
func TestCRLsServedDistributedAndQuarantine(t *testing.T) {
	ts := startServer(t)
	roots := ts.bootstrap(t)
	ctx := t.Context()
	c := ts.issuerClient(t, roots, nil)
	req, key := csr(t)
	resp, err := c.SignIntermediate(withJoinToken(ctx, ts.token(t, "east")), &meshrootv1.SignIntermediateRequest{Cluster: "east", Csr: req.Raw})
	if err != nil {
		t.Fatal(err)
	}
	issued, err := wire.IssuedFromProto(resp, "example.org")
	if err != nil {
		t.Fatal(err)
	}
	renew := &tls.Certificate{PrivateKey: key.PrivateKey, Leaf: issued.Cert}
	for _, cc := range issued.Chain {
		renew.Certificate = append(renew.Certificate, cc.Raw)
	}
	crl, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: time.Now(), NextUpdate: time.Now().Add(48 * time.Hour)},
		issued.Cert, key.PrivateKey.(crypto.Signer))
	if err != nil {
		t.Fatal(err)
	}
	mc := ts.issuerClient(t, roots, renew)
	if _, err := mc.ReportStatus(ctx, &meshrootv1.ReportStatusRequest{Cluster: "east", BundleSequence: 1, IntermediateSerial: resp.GetSerial(), Crl: crl}); err != nil {
		t.Fatalf("ReportStatus with a good CRL: %v", err)
	}
	// The kept CRL sent again (an agent reports the CRL it wrote) is a
	// no-op; another CRL with the same number is refused.
	if _, err := mc.ReportStatus(ctx, &meshrootv1.ReportStatusRequest{Cluster: "east", BundleSequence: 1, IntermediateSerial: resp.GetSerial(), Crl: crl}); err != nil {
		t.Fatalf("ReportStatus with the kept CRL again: %v", err)
	}
	same, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: time.Now(), NextUpdate: time.Now().Add(47 * time.Hour)},
		issued.Cert, key.PrivateKey.(crypto.Signer))
	if err != nil {
		t.Fatal(err)
	}
	_, err = mc.ReportStatus(ctx, &meshrootv1.ReportStatusRequest{Cluster: "east", BundleSequence: 1, IntermediateSerial: resp.GetSerial(), Crl: same})
	wantCode(t, err, codes.InvalidArgument, "not above")

	// Watchers get the root's CRL and east's, nothing missing.
	deadline := time.Now().Add(10 * time.Second)
	var set ca.CRLSet
	for time.Now().Before(deadline) {
		b, err := c.GetTrustBundle(ctx, &meshrootv1.GetTrustBundleRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if set, err = wire.CRLSetFromProto(b.GetCrls()); err != nil {
			t.Fatal(err)
		}
		if len(set.CRLs) == 2 && len(set.Missing) == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(set.CRLs) != 2 || len(set.Intermediates) != 1 || len(set.Missing) != 0 {
		t.Fatalf("bundle CRL set: %d CRLs, %d intermediates, missing %v", len(set.CRLs), len(set.Intermediates), set.Missing)
	}

	q, err := ts.admin.QuarantineCluster(ctx, &meshrootv1.QuarantineClusterRequest{Cluster: "east", Reason: "keys leaked"})
	if err != nil || len(q.GetRevoked()) != 1 || q.GetRevoked()[0] != resp.GetSerial() {
		t.Fatalf("quarantine = %v, %v", q, err)
	}
	req2, _ := csr(t)
	_, err = c.SignIntermediate(withJoinToken(ctx, ts.token(t, "east")), &meshrootv1.SignIntermediateRequest{Cluster: "east", Csr: req2.Raw})
	wantCode(t, err, codes.InvalidArgument, "quarantined")

	rootID := ca.RootID(roots[0])
	code, der := httpGet(t, "http://"+ts.srv.HTTPAddr()+"/crl/"+rootID+".crl")
	if code != http.StatusOK {
		t.Fatalf("GET CRL: %d %s", code, der)
	}
	rl, err := x509.ParseRevocationList(der)
	if err != nil || rl.CheckSignatureFrom(roots[0]) != nil {
		t.Fatalf("served CRL: %v", err)
	}
	if len(rl.RevokedCertificateEntries) != 1 || rl.RevokedCertificateEntries[0].SerialNumber.Cmp(issued.Cert.SerialNumber) != 0 ||
		rl.RevokedCertificateEntries[0].ReasonCode != ca.ReasonCACompromise {
		t.Fatalf("served CRL entries: %+v", rl.RevokedCertificateEntries)
	}
	code, p := httpGet(t, "http://"+ts.srv.HTTPAddr()+"/crl/"+rootID+".pem")
	if blk, _ := pem.Decode(p); code != http.StatusOK || blk == nil || blk.Type != "X509 CRL" || string(blk.Bytes) != string(der) {
		t.Fatalf("GET PEM CRL: %d %q", code, p)
	}
	if code, _ := httpGet(t, "http://"+ts.srv.HTTPAddr()+"/crl/0000.crl"); code != http.StatusNotFound {
		t.Errorf("unknown root: %d, want 404", code)
	}
}
