package agent_test

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/meshroot/meshroot/agent"
	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/keys"
)

func newCA(t *testing.T, cn string, parent *x509.Certificate, parentKey crypto.Signer) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	k, _ := keys.ECP256.Generate()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(30 * 24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	if parent == nil {
		parent, parentKey = tmpl, k
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, k.Public(), parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, k
}

func crl(t *testing.T, issuer *x509.Certificate, key crypto.Signer, n int64, next time.Duration) []byte {
	t.Helper()
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(n), ThisUpdate: time.Now().Add(-time.Minute), NextUpdate: time.Now().Add(next)}, issuer, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// TestPlanCRLFileNeverIncomplete: ca-crl.pem is planned only when every
// CA has a current CRL it signed; a missing, expired, expiring or forged
// one leaves it out and names the CA.
func TestPlanCRLFileNeverIncomplete(t *testing.T) {
	root, rk := newCA(t, "root", nil, nil)
	east, ek := newCA(t, "east", root, rk)
	west, wk := newCA(t, "west", root, rk)
	_, otherKey := newCA(t, "x", nil, nil)
	cas := []*x509.Certificate{root, east, west}
	now := time.Now()
	good := [][]byte{crl(t, root, rk, 1, 48*time.Hour), crl(t, root, rk, 2, 48*time.Hour), crl(t, east, ek, 5, 48*time.Hour), crl(t, west, wk, 7, 48*time.Hour)}
	p := agent.PlanCRLFile(cas, good, now)
	if p.PEM == nil || len(p.Missing) != 0 || strings.Count(string(p.PEM), "BEGIN X509 CRL") != 3 {
		t.Fatalf("complete set: missing %v, %d CRLs", p.Missing, strings.Count(string(p.PEM), "BEGIN X509 CRL"))
	}
	if !strings.Contains(string(p.PEM), string(pemOf(good[1]))) || strings.Contains(string(p.PEM), string(pemOf(good[0]))) {
		t.Error("the root's CRL with the higher number was not the one kept")
	}
	forgedWest, _ := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(9), ThisUpdate: now, NextUpdate: now.Add(48 * time.Hour)},
		&x509.Certificate{RawSubject: west.RawSubject, Subject: west.Subject, KeyUsage: x509.KeyUsageCRLSign, SubjectKeyId: []byte{1}}, otherKey)
	for name, crls := range map[string][][]byte{
		"west missing":   good[:3],
		"west expired":   {good[1], good[2], crl(t, west, wk, 8, -time.Minute)},
		"west expiring":  {good[1], good[2], crl(t, west, wk, 8, ca.CRLMinRemaining/2)},
		"west forged":    {good[1], good[2], forgedWest},
		"root missing":   good[2:],
		"malformed only": {[]byte("junk")},
	} {
		p := agent.PlanCRLFile(cas, crls, now)
		if p.PEM != nil || len(p.Missing) == 0 {
			t.Errorf("%s: planned %d bytes of CRLs, missing %v; want nothing written", name, len(p.PEM), p.Missing)
		}
	}
}

// TestPlanCRLFileShortLivedIntermediate: an intermediate with less than
// ca.CRLMinRemaining of life can sign no CRL that runs further; the CRL it
// signs (OwnCRL, nextUpdate at its expiry) counts as current, so ca-crl.pem
// is still written. One that stops before the intermediate's expiry does
// not count.
func TestPlanCRLFileShortLivedIntermediate(t *testing.T) {
	root, rk := newCA(t, "root", nil, nil)
	now := time.Now()
	k, _ := keys.ECP256.Generate()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(now.UnixNano()), Subject: pkix.Name{CommonName: "short"},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(2 * time.Minute), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, root, k.Public(), rk)
	if err != nil {
		t.Fatal(err)
	}
	short, _ := x509.ParseCertificate(der)
	cc := &ca.CACerts{Cert: short, Key: k, Chain: []*x509.Certificate{short, root}, Roots: []*x509.Certificate{root}}
	own, err := agent.OwnCRL(cc, nil, now)
	if err != nil || own == nil {
		t.Fatalf("OwnCRL: %v", err)
	}
	cas := []*x509.Certificate{root, short}
	rootCRL := crl(t, root, rk, 1, 48*time.Hour)
	if p := agent.PlanCRLFile(cas, [][]byte{rootCRL, own}, now); p.PEM == nil || len(p.Missing) != 0 {
		t.Errorf("a CRL to the intermediate's expiry: missing %v, want ca-crl.pem planned", p.Missing)
	}
	if again, _ := agent.OwnCRL(cc, [][]byte{rootCRL, own}, now); again != nil {
		t.Error("OwnCRL re-signed although its CRL runs to the intermediate's expiry")
	}
	early := crl(t, short, k, 2, time.Minute) // stops a minute before the intermediate
	if p := agent.PlanCRLFile(cas, [][]byte{rootCRL, early}, now); p.PEM != nil || len(p.Missing) != 1 {
		t.Errorf("a CRL ending before the intermediate, under ca.CRLMinRemaining: planned %d bytes, missing %v; want the intermediate missing", len(p.PEM), p.Missing)
	}
}

func pemOf(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
}

// TestOwnCRL: the agent signs its intermediate's CRL when the fleet's set
// lacks a current one, and not when it has one.
func TestOwnCRL(t *testing.T) {
	root, rk := newCA(t, "root", nil, nil)
	east, ek := newCA(t, "east", root, rk)
	cc := &ca.CACerts{Cert: east, Key: ek, Chain: []*x509.Certificate{east, root}, Roots: []*x509.Certificate{root}}
	now := time.Now()
	der, err := agent.OwnCRL(cc, nil, now)
	if err != nil || der == nil {
		t.Fatalf("OwnCRL with no set: %v", err)
	}
	rl, err := x509.ParseRevocationList(der)
	if err != nil || rl.CheckSignatureFrom(east) != nil || len(rl.RevokedCertificateEntries) != 0 || rl.Number.Int64() != now.UnixNano() {
		t.Fatalf("own CRL: %v", err)
	}
	if again, _ := agent.OwnCRL(cc, [][]byte{der}, now); again != nil {
		t.Error("re-signed although the set holds a current CRL")
	}
	if later, _ := agent.OwnCRL(cc, [][]byte{der}, now.Add(ca.CRLValidity-ca.CRLRefreshBefore+time.Hour)); later == nil {
		t.Error("not re-signed when less than CRLRefreshBefore is left")
	}
}

// TestAppliedRootCRLs: the report names each root by ID with the highest
// number of its CRLs in ca-crl.pem; CRLs of intermediates, forged ones and
// junk are not counted; no file is an empty (not nil) map.
func TestAppliedRootCRLs(t *testing.T) {
	root, rk := newCA(t, "root", nil, nil)
	other, ok := newCA(t, "other", nil, nil)
	east, ek := newCA(t, "east", root, rk)
	_, forger := newCA(t, "root", nil, nil) // same subject, another key
	var file []byte
	for _, der := range [][]byte{crl(t, root, rk, 3, time.Hour), crl(t, root, rk, 9, time.Hour), crl(t, root, forger, 99, time.Hour),
		crl(t, east, ek, 50, time.Hour), crl(t, other, ok, 4, time.Hour)} {
		file = append(file, pemOf(der)...)
	}
	file = append(file, "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"...)
	got := agent.AppliedRootCRLs(file, []*x509.Certificate{root, other})
	if len(got) != 2 || got[ca.RootID(root)] != 9 || got[ca.RootID(other)] != 4 {
		t.Errorf("AppliedRootCRLs = %v, want %s: 9, %s: 4", got, ca.RootID(root), ca.RootID(other))
	}
	if got := agent.AppliedRootCRLs(nil, []*x509.Certificate{root}); got == nil || len(got) != 0 {
		t.Errorf("without a file: %#v, want an empty map", got)
	}
}

// TestCheckCRLFits: a ca-crl.pem that would take the Secret over 1 MiB is
// refused, naming the sizes; the ca-crl.pem it replaces does not count.
func TestCheckCRLFits(t *testing.T) {
	data := map[string][]byte{"ca-cert.pem": make([]byte, 600<<10), agent.CRLFile: make([]byte, 400<<10)}
	if err := agent.CheckCRLFits(data, make([]byte, 400<<10)); err != nil {
		t.Errorf("a same-sized replacement refused: %v", err)
	}
	err := agent.CheckCRLFits(data, make([]byte, 500<<10))
	if err == nil || !strings.Contains(err.Error(), "1048576") || !strings.Contains(err.Error(), "1126400") {
		t.Errorf("an oversized ca-crl.pem: %v", err)
	}
}
