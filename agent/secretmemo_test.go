package agent

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"

	"github.com/meshroot/meshroot/ca"
)

// TestParsedSecretMemo: the same cacerts files (a new copy, as every read
// of the Secret is) come back as the CACerts parsed before; a change of
// any file, the other layout, or a file that no longer parses is parsed
// afresh, and a failure is not remembered; a nil memo parses every time.
func TestParsedSecretMemo(t *testing.T) {
	now := time.Now()
	cc := testCACerts(t, now)
	files, err := cc.Files(ca.FormatIstio, now)
	if err != nil {
		t.Fatal(err)
	}
	read := func(m map[string][]byte) map[string][]byte { // a new copy of every file
		out := map[string][]byte{}
		for k, v := range m {
			out[k] = append([]byte(nil), v...)
		}
		return out
	}
	var memo parsedSecret
	first, format, err := memo.parse(read(files))
	if err != nil || format != ca.FormatIstio || !first.Cert.Equal(cc.Cert) || len(first.Roots) != 1 {
		t.Fatalf("first parse: %v, format %v", err, format)
	}
	if again, _, err := memo.parse(read(files)); err != nil || again != first {
		t.Errorf("the same files were parsed again (%v)", err)
	}
	// A second root in root-cert.pem: parsed afresh.
	other := testCACerts(t, now)
	grown := read(files)
	grown[ca.RootCertFile] = append(grown[ca.RootCertFile], ca.EncodeCerts(other.Roots)...)
	got, _, err := memo.parse(grown)
	if err != nil || got == first || len(got.Roots) != 2 {
		t.Fatalf("changed root-cert.pem: %v, the earlier parse %v, %d roots", err, got == first, len(got.Roots))
	}
	// A key that does not parse: an error, and the last good parse stays.
	broken := read(grown)
	broken[ca.CAKeyFile] = []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
	if bad, _, err := memo.parse(broken); err == nil || bad != nil {
		t.Fatalf("a broken key parsed: %v", err)
	}
	if again, _, err := memo.parse(read(grown)); err != nil || again != got {
		t.Errorf("after a failure, the last good files were parsed again (%v)", err)
	}
	// The tls.crt layout, with the same certificates: another format.
	tls, err := cc.Files(ca.FormatTLS, now)
	if err != nil {
		t.Fatal(err)
	}
	if got, format, err := memo.parse(read(tls)); err != nil || format != ca.FormatTLS || got == first || !got.Cert.Equal(cc.Cert) {
		t.Errorf("tls.crt layout: %v, format %v", err, format)
	}
	var none *parsedSecret
	a, _, _ := none.parse(read(files))
	b, _, _ := none.parse(read(files))
	if a == nil || b == nil || a == b || !a.Cert.Equal(b.Cert) {
		t.Error("nil memo: want two parses of the same certificate")
	}
}

// testCACerts is a root and a pathlen-0 intermediate for a cluster, with
// the intermediate's key.
func testCACerts(t *testing.T, now time.Time) *ca.CACerts {
	t.Helper()
	rootKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	root, err := ca.NewRoot(rootKey, ca.RootOptions{TrustDomain: "example.org", Now: now})
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(now.UnixNano()), Subject: pkix.Name{CommonName: "east"}, NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, root, key.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	cc := &ca.CACerts{Cert: cert, Key: key, Chain: []*x509.Certificate{cert, root}, Roots: []*x509.Certificate{root}}
	if err := cc.Verify(now); err != nil {
		t.Fatal(err)
	}
	return cc
}
