package ca_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/keys"
	"github.com/meshroot/meshroot/store"
)

// crlFleet is a service with a root and clusters east and west, each with
// an intermediate whose key the test holds.
type crlFleet struct {
	svc  *ca.Service
	st   store.Store
	root store.Root
	now  time.Time
	keys map[string]crypto.Signer
	cert map[string]*x509.Certificate
}

func newCRLFleet(t *testing.T) *crlFleet {
	t.Helper()
	svc, st := newService(t)
	f := &crlFleet{svc: svc, st: st, now: time.Now(), keys: map[string]crypto.Signer{}, cert: map[string]*x509.Certificate{}}
	svc.SetClock(func() time.Time { return f.now })
	ctx := ca.WithActor(context.Background(), actor)
	var err error
	if f.root, err = svc.InitRoot(ctx, ca.InitRootRequest{TrustDomain: "example.org"}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"east", "west"} {
		if _, err := svc.AddCluster(ctx, ca.AddClusterRequest{Name: name}); err != nil {
			t.Fatal(err)
		}
		if err := f.issue(name); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func (f *crlFleet) issue(cluster string) error {
	k, _ := keys.ECP256.Generate()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, k)
	if err != nil {
		return err
	}
	out, err := f.svc.IssueIntermediate(ca.WithActor(context.Background(), actor), ca.IssueRequest{Cluster: cluster, CSRData: der})
	if err != nil {
		return err
	}
	f.keys[cluster], f.cert[cluster] = k, out.Cert
	return nil
}

// clusterCRL signs a CRL as cluster's intermediate would, with key.
func clusterCRL(t *testing.T, cert *x509.Certificate, key crypto.Signer, number int64, next time.Duration) []byte {
	t.Helper()
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(number), ThisUpdate: time.Now().Add(-time.Minute), NextUpdate: time.Now().Add(next),
	}, cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func parseCRL(t *testing.T, der []byte) *x509.RevocationList {
	t.Helper()
	rl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	return rl
}

// TestQuarantineRevokesListsAndRefuses: a quarantine revokes the cluster's
// intermediates, the root's CRL lists them (cACompromise) with a higher
// number, issuance is refused with the reason, and release lifts it.
func TestQuarantineRevokesListsAndRefuses(t *testing.T) {
	f := newCRLFleet(t)
	ctx := ca.WithActor(context.Background(), actor)
	rootCert, _ := ca.ParseCerts(f.root.ChainPEM)
	c1, err := f.svc.RootCRL(ctx, f.root.ID)
	if err != nil {
		t.Fatal(err)
	}
	rl := parseCRL(t, c1.DER)
	if rl.CheckSignatureFrom(rootCert[0]) != nil || len(rl.RevokedCertificateEntries) != 0 || rl.Number.Int64() != 1 {
		t.Fatalf("first CRL: number %v, %d entries", rl.Number, len(rl.RevokedCertificateEntries))
	}
	if d := rl.NextUpdate.Sub(f.now); d < ca.CRLValidity-2*time.Minute || d > ca.CRLValidity {
		t.Errorf("nextUpdate %v after now, want about %v", d, ca.CRLValidity)
	}
	westSerial := ca.SerialHex(f.cert["west"].SerialNumber)
	dry, err := f.svc.QuarantineCluster(ctx, ca.QuarantineRequest{Cluster: "west", Reason: "node compromised", DryRun: true})
	if err != nil || len(dry.Revoked) != 1 || dry.Revoked[0] != westSerial {
		t.Fatalf("dry run = %+v, %v", dry, err)
	}
	if in, _ := f.st.GetIntermediate(ctx, westSerial); in.Status != store.IntermediateActive {
		t.Fatalf("dry run revoked %s", westSerial)
	}
	res, err := f.svc.QuarantineCluster(ctx, ca.QuarantineRequest{Cluster: "west", Reason: "node compromised"})
	if err != nil || len(res.Revoked) != 1 || res.Revoked[0] != westSerial {
		t.Fatalf("quarantine = %+v, %v", res, err)
	}
	c2, err := f.svc.RootCRL(ctx, f.root.ID)
	if err != nil {
		t.Fatal(err)
	}
	rl = parseCRL(t, c2.DER)
	if c2.Number != 2 || len(rl.RevokedCertificateEntries) != 1 ||
		rl.RevokedCertificateEntries[0].SerialNumber.Cmp(f.cert["west"].SerialNumber) != 0 ||
		rl.RevokedCertificateEntries[0].ReasonCode != ca.ReasonCACompromise {
		t.Fatalf("CRL after quarantine: number %d, entries %+v", c2.Number, rl.RevokedCertificateEntries)
	}
	// Issuance is refused with the reason, and audited.
	err = f.issue("west")
	if err == nil || !strings.Contains(err.Error(), "quarantined") || !strings.Contains(err.Error(), "node compromised") {
		t.Fatalf("issue for quarantined west: %v", err)
	}
	// intermediate revoke lands on the CRL with its reason code.
	if _, err := f.svc.RevokeIntermediate(ctx, ca.SerialHex(f.cert["east"].SerialNumber), "keyCompromise: laptop lost"); err != nil {
		t.Fatal(err)
	}
	c3, _ := f.svc.RootCRL(ctx, f.root.ID)
	rl = parseCRL(t, c3.DER)
	if c3.Number != 3 || len(rl.RevokedCertificateEntries) != 2 {
		t.Fatalf("CRL after revoke: number %d, %d entries", c3.Number, len(rl.RevokedCertificateEntries))
	}
	// Unchanged and fresh: the same CRL; near nextUpdate: re-signed.
	if again, _ := f.svc.RootCRL(ctx, f.root.ID); again.Number != 3 {
		t.Errorf("unchanged CRL re-signed: number %d", again.Number)
	}
	f.now = f.now.Add(ca.CRLValidity - ca.CRLRefreshBefore + time.Minute)
	if later, _ := f.svc.RootCRL(ctx, f.root.ID); later.Number != 4 || !later.NextUpdate.After(c3.NextUpdate) {
		t.Errorf("CRL not re-signed before nextUpdate: number %d", later.Number)
	}
	if _, err := f.svc.ReleaseCluster(ctx, "west"); err != nil {
		t.Fatal(err)
	}
	if err := f.issue("west"); err != nil {
		t.Fatalf("issue after release: %v", err)
	}
	if _, err := f.svc.ReleaseCluster(ctx, "west"); err == nil {
		t.Error("releasing a cluster that is not quarantined was accepted")
	}
	wantAudit(t, f.st, "cluster.quarantine", "ok", 1)
	wantAudit(t, f.st, "cluster.release", "ok", 1)
	wantAudit(t, f.st, "intermediate.issue", "denied", 1)
}

func wantAudit(t *testing.T, st store.Store, action, result string, n int) {
	t.Helper()
	entries, err := st.ListAudit(context.Background(), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for _, e := range entries {
		if e.Action == action && e.Result == result {
			got++
		}
	}
	if got != n {
		t.Errorf("%d %s %s audit rows, want %d", got, action, result, n)
	}
}

// TestSubmitClusterCRLRefusals: a cluster CRL signed by the wrong key, for
// another cluster, with a number not above the last, oversized, malformed
// or expired is refused and audited, and the last good one is kept.
func TestSubmitClusterCRLRefusals(t *testing.T) {
	f := newCRLFleet(t)
	ctx := ca.WithActor(context.Background(), actor)
	good := clusterCRL(t, f.cert["east"], f.keys["east"], 5, 48*time.Hour)
	if err := f.svc.SubmitClusterCRL(ctx, "east", good); err != nil {
		t.Fatal(err)
	}
	other, _ := keys.ECP256.Generate()
	forged := func() []byte {
		// Same issuer name, other key.
		der, _ := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(9), ThisUpdate: time.Now(), NextUpdate: time.Now().Add(time.Hour * 48)},
			&x509.Certificate{Subject: f.cert["east"].Subject, RawSubject: f.cert["east"].RawSubject, KeyUsage: x509.KeyUsageCRLSign, SubjectKeyId: []byte{1}}, other)
		return der
	}()
	cases := []struct {
		name, cluster string
		der           []byte
		want          string
	}{
		{"wrong key", "east", forged, "not signed by its current intermediate"},
		{"other cluster", "east", clusterCRL(t, f.cert["west"], f.keys["west"], 9, 48*time.Hour), "not signed by its current intermediate"},
		{"lower number", "east", clusterCRL(t, f.cert["east"], f.keys["east"], 4, 48*time.Hour), "not above"},
		{"same number", "east", clusterCRL(t, f.cert["east"], f.keys["east"], 5, 48*time.Hour), "not above"},
		{"oversized", "east", make([]byte, ca.MaxClusterCRLBytes+1), "bytes"},
		{"malformed", "east", []byte("not a CRL"), "malformed"},
		{"expiring", "east", clusterCRL(t, f.cert["east"], f.keys["east"], 10, time.Minute), "not current"},
		{"too long", "east", clusterCRL(t, f.cert["east"], f.keys["east"], 11, 90*24*time.Hour), "runs past"},
	}
	for _, tc := range cases {
		err := f.svc.SubmitClusterCRL(ctx, tc.cluster, tc.der)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want a refusal naming %q", tc.name, err, tc.want)
		}
	}
	// The kept CRL itself, sent again (an agent reports the CRL it wrote):
	// taken as a no-op, neither refused nor audited again.
	if err := f.svc.SubmitClusterCRL(ctx, "east", good); err != nil {
		t.Errorf("the kept CRL sent again: %v, want nil", err)
	}
	wantAudit(t, f.st, "crl.submit", "denied", len(cases))
	wantAudit(t, f.st, "crl.submit", "ok", 1)
	kept, err := f.st.GetCRL(ctx, ca.ClusterCRLIssuer("east", ca.SerialHex(f.cert["east"].SerialNumber)))
	if err != nil || kept.Number != 5 || string(kept.DER) != string(good) {
		t.Fatalf("kept CRL = %d, %v; want the good one (5)", kept.Number, err)
	}
	// A quarantined cluster's CRLs are not taken.
	if _, err := f.svc.QuarantineCluster(ctx, ca.QuarantineRequest{Cluster: "east", Reason: "x"}); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.SubmitClusterCRL(ctx, "east", clusterCRL(t, f.cert["east"], f.keys["east"], 12, 48*time.Hour)); err == nil {
		t.Error("CRL of a quarantined cluster accepted")
	}
}

// TestFleetCRLsNamesMissing: the fleet set names every CA without a
// current CRL, and is complete once each cluster sent one.
func TestFleetCRLsNamesMissing(t *testing.T) {
	f := newCRLFleet(t)
	ctx := ca.WithActor(context.Background(), actor)
	set, err := f.svc.FleetCRLs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(set.CRLs) != 1 || len(set.Intermediates) != 2 || len(set.Missing) != 2 {
		t.Fatalf("before agents sent CRLs: %d CRLs, %d intermediates, missing %v", len(set.CRLs), len(set.Intermediates), set.Missing)
	}
	for i, c := range []string{"east", "west"} {
		if err := f.svc.SubmitClusterCRL(ctx, c, clusterCRL(t, f.cert[c], f.keys[c], int64(i+1), 48*time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	set, _ = f.svc.FleetCRLs(ctx)
	if len(set.CRLs) != 3 || len(set.Missing) != 0 {
		t.Fatalf("after: %d CRLs, missing %v", len(set.CRLs), set.Missing)
	}
	// Once a cluster CRL expires, it is missing again.
	f.now = f.now.Add(49 * time.Hour)
	set, _ = f.svc.FleetCRLs(ctx)
	if len(set.Missing) != 2 || len(set.CRLs) != 1 {
		t.Fatalf("after expiry: %d CRLs, missing %v", len(set.CRLs), set.Missing)
	}
}

// TestCRLCurrent: a CRL is current with more than CRLMinRemaining left, or
// when it runs to its issuer's expiry (a short-lived intermediate); never
// at or past its nextUpdate.
func TestCRLCurrent(t *testing.T) {
	now := time.Now()
	long := &x509.Certificate{NotAfter: now.Add(30 * 24 * time.Hour)}
	short := &x509.Certificate{NotAfter: now.Add(2 * time.Minute)}
	cases := []struct {
		name   string
		next   time.Time
		issuer *x509.Certificate
		want   bool
	}{
		{"two hours left", now.Add(2 * time.Hour), long, true},
		{"half an hour left, issuer lives on", now.Add(30 * time.Minute), long, false},
		{"to the short issuer's expiry", short.NotAfter, short, true},
		{"past the short issuer's expiry", short.NotAfter.Add(time.Second), short, true},
		{"a minute before the short issuer's expiry", short.NotAfter.Add(-time.Minute), short, false},
		{"no issuer known", now.Add(30 * time.Minute), nil, false},
		{"at nextUpdate", now, short, false},
		{"past nextUpdate, issuer expired too", now.Add(-time.Minute), &x509.Certificate{NotAfter: now.Add(-2 * time.Minute)}, false},
	}
	for _, tc := range cases {
		if got := ca.CRLCurrent(&x509.RevocationList{NextUpdate: tc.next}, tc.issuer, now); got != tc.want {
			t.Errorf("%s: CRLCurrent = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestFleetCRLsFollowsRenewals: the parsed intermediates FleetCRLs keeps
// between calls follow the store: after east renews, the set holds east's
// new intermediate and not the superseded one, and a call after that
// still finds both clusters' current ones.
func TestFleetCRLsFollowsRenewals(t *testing.T) {
	f := newCRLFleet(t)
	ctx := ca.WithActor(context.Background(), actor)
	serials := func() map[string]bool {
		t.Helper()
		set, err := f.svc.FleetCRLs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for _, c := range set.Intermediates {
			out[ca.SerialHex(c.SerialNumber)] = true
		}
		return out
	}
	before := ca.SerialHex(f.cert["east"].SerialNumber)
	if got := serials(); !got[before] || len(got) != 2 {
		t.Fatalf("before renewal: %v", got)
	}
	if err := f.issue("east"); err != nil {
		t.Fatal(err)
	}
	after := ca.SerialHex(f.cert["east"].SerialNumber)
	for range 2 {
		got := serials()
		if got[before] || !got[after] || !got[ca.SerialHex(f.cert["west"].SerialNumber)] || len(got) != 2 {
			t.Fatalf("after renewal: %v, want %s (not %s) and west's", got, after, before)
		}
	}
}

// BenchmarkFleetCRLs times one FleetCRLs call (what the bundle hub does at
// every refresh) for a fleet of 1,000 clusters, each with an active
// intermediate.
func BenchmarkFleetCRLs(b *testing.B) {
	svc, _ := newService(b)
	ctx := ca.WithActor(context.Background(), actor)
	if _, err := svc.InitRoot(ctx, ca.InitRootRequest{TrustDomain: "example.org"}); err != nil {
		b.Fatal(err)
	}
	for i := range 1000 {
		name := fmt.Sprintf("c%04d", i)
		if _, err := svc.AddCluster(ctx, ca.AddClusterRequest{Name: name}); err != nil {
			b.Fatal(err)
		}
		k, _ := keys.ECP256.Generate()
		der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, k)
		if _, err := svc.IssueIntermediate(ctx, ca.IssueRequest{Cluster: name, CSRData: der}); err != nil {
			b.Fatal(err)
		}
	}
	if set, err := svc.FleetCRLs(ctx); err != nil || len(set.Intermediates) != 1000 {
		b.Fatalf("%d intermediates, %v", len(set.Intermediates), err)
	}
	b.ResetTimer()
	for b.Loop() {
		if _, err := svc.FleetCRLs(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
