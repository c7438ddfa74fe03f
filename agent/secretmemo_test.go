package agent

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"maps"
	"math/big"
	"testing"
	"time"

	"github.com/meshroot/meshroot/ca"
)

// TestParsedSecretMemo: the same cacerts files (a new copy, as every read
// of the Secret is) come back as the CACerts parsed before; a change of
// any file, the other layout, or a file that no longer parses is parsed
// afresh, and a failure is not remembered; a nil memo parses every time.
// Files that changed take the certificates and key that did not change
// from the last parse.
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
	// What did not change is taken from the last parse; the new root is
	// parsed.
	if got.Cert != first.Cert || got.Key != first.Key || got.Roots[0] != first.Roots[0] {
		t.Error("a new root-cert.pem: the unchanged certificate, key and first root were parsed again")
	}
	if !got.Roots[1].Equal(other.Roots[0]) {
		t.Error("a new root-cert.pem: its second root is not the root added")
	}
	// Another intermediate with its own key: both parsed afresh.
	swapped := read(grown)
	otherFiles, err := other.Files(ca.FormatIstio, now)
	if err != nil {
		t.Fatal(err)
	}
	swapped[ca.CACertFile], swapped[ca.CAKeyFile] = otherFiles[ca.CACertFile], otherFiles[ca.CAKeyFile]
	sw, _, err := memo.parse(swapped)
	if err != nil || !sw.Cert.Equal(other.Cert) || !sw.Cert.PublicKey.(*ecdsa.PublicKey).Equal(sw.Key.Public()) {
		t.Fatalf("another intermediate and key: %v", err)
	}
	if sw.Key == got.Key {
		t.Error("a new key file kept the last parse's key")
	}
	got, _, err = memo.parse(read(grown))
	if err != nil || !got.Cert.Equal(cc.Cert) || !got.Cert.PublicKey.(*ecdsa.PublicKey).Equal(got.Key.Public()) {
		t.Fatalf("back to the first intermediate: %v", err)
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

// BenchmarkParsedSecretRootChange: the cacerts Secret of a bundle change,
// root-cert.pem gaining a root and losing it in turn (bench-fleet's
// prepare and rollback), parsed through the memo ("memo") and whole
// ("whole", parseSecret).
func BenchmarkParsedSecretRootChange(b *testing.B) {
	now := time.Now()
	cc := testCACerts(&testing.T{}, now)
	files, err := cc.Files(ca.FormatIstio, now)
	if err != nil {
		b.Fatal(err)
	}
	other := testCACerts(&testing.T{}, now)
	grown := maps.Clone(files)
	grown[ca.RootCertFile] = append(bytes.Clone(files[ca.RootCertFile]), ca.EncodeCerts(other.Roots)...)
	variants := []map[string][]byte{files, grown}
	b.Run("memo", func(b *testing.B) {
		var memo parsedSecret
		for i := 0; b.Loop(); i++ {
			if _, _, err := memo.parse(variants[i%2]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("whole", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			if _, _, err := parseSecret(variants[i%2]); err != nil {
				b.Fatal(err)
			}
		}
	})
}
