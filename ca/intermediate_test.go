package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshroot/meshroot/keys"
)

func TestSignIntermediateProfile(t *testing.T) {
	a, root := testAuthority(t, Policy{})
	now := time.Now()
	a.SetClock(func() time.Time { return now })
	key := p256(t)
	cert, err := a.SignIntermediate(IntermediateRequest{Cluster: "east", TrustDomain: "example.org", CSR: testCSR(t, key, nil), TTL: 48 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if !cert.IsCA || !cert.BasicConstraintsValid || cert.MaxPathLen != 0 || !cert.MaxPathLenZero {
		t.Errorf("want CA:true pathlen 0, got IsCA=%v MaxPathLen=%d zero=%v", cert.IsCA, cert.MaxPathLen, cert.MaxPathLenZero)
	}
	if want := x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature; cert.KeyUsage != want {
		t.Errorf("KeyUsage = %v, want %v", cert.KeyUsage, want)
	}
	if len(cert.SubjectKeyId) == 0 || !bytes.Equal(cert.AuthorityKeyId, root.SubjectKeyId) {
		t.Errorf("SKI/AKI wrong: ski=%x aki=%x root ski=%x", cert.SubjectKeyId, cert.AuthorityKeyId, root.SubjectKeyId)
	}
	if cert.SerialNumber.Sign() <= 0 || cert.SerialNumber.BitLen() > 128 {
		t.Errorf("serial %x is not a positive number of at most 128 bits", cert.SerialNumber)
	}
	if cert.Subject.CommonName != "east" {
		t.Errorf("subject CN = %q, want the cluster name", cert.Subject.CommonName)
	}
	if got := now.Sub(cert.NotBefore); got < DefaultBackdate-time.Second || got > DefaultBackdate+time.Second {
		t.Errorf("NotBefore backdated by %s, want %s", got, DefaultBackdate)
	}
	if got := cert.NotAfter.Sub(now); got < 48*time.Hour-time.Second || got > 48*time.Hour {
		t.Errorf("NotAfter is %s after now, want 48h", got)
	}
	if !keyEqual(cert.PublicKey, key.Public()) {
		t.Error("certificate key is not the CSR's key")
	}
	if err := cert.CheckSignatureFrom(root); err != nil {
		t.Errorf("not signed by the root: %v", err)
	}
	if !cert.PermittedDNSDomainsCritical || !slices.Equal(cert.PermittedURIDomains, []string{"example.org"}) ||
		!slices.Equal(cert.PermittedDNSDomains, []string{"istio-system.svc"}) || len(cert.ExcludedIPRanges) != 2 {
		t.Errorf("default name constraints: URIs %v, DNS %v, excluded IPs %v, critical %v; want example.org, istio-system.svc, all IPs, critical",
			cert.PermittedURIDomains, cert.PermittedDNSDomains, cert.ExcludedIPRanges, cert.PermittedDNSDomainsCritical)
	}
	// Two intermediates never share a serial.
	other, err := a.SignIntermediate(IntermediateRequest{Cluster: "east", TrustDomain: "example.org", CSR: testCSR(t, key, nil)})
	if err != nil {
		t.Fatal(err)
	}
	if other.SerialNumber.Cmp(cert.SerialNumber) == 0 {
		t.Error("two intermediates got the same serial")
	}
	if got := other.NotAfter.Sub(now); got < DefaultIntermediateTTL-time.Second || got > DefaultIntermediateTTL {
		t.Errorf("default TTL gives NotAfter %s after now, want %s", got, DefaultIntermediateTTL)
	}
}

func keyEqual(a, b any) bool {
	ae, ok := a.(interface{ Equal(x crypto.PublicKey) bool })
	return ok && ae.Equal(b)
}

func TestSignIntermediateCappedByIssuer(t *testing.T) {
	rootKey := p256(t)
	root := signCA(t, nil, rootKey, rootKey.Public(), "short root", -1, x509.KeyUsageCertSign, time.Now().Add(30*24*time.Hour))
	a, err := NewAuthority([]*x509.Certificate{root}, rootKey, Policy{})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := a.SignIntermediate(IntermediateRequest{Cluster: "east", TrustDomain: "example.org", CSR: testCSR(t, p256(t), nil), TTL: 300 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if !cert.NotAfter.Equal(root.NotAfter) {
		t.Errorf("NotAfter = %s, want the issuer's %s", cert.NotAfter, root.NotAfter)
	}
}

func TestSignIntermediateRefusals(t *testing.T) {
	a, _ := testAuthority(t, Policy{AllowedKeyTypes: []keys.KeyType{keys.ECP256, keys.RSA2048}})
	good := testCSR(t, p256(t), nil)

	badSig := testCSR(t, p256(t), nil)
	badSig.Signature = append([]byte(nil), badSig.Signature...)
	badSig.Signature[len(badSig.Signature)-3] ^= 0xff

	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)

	withExt := func(id asn1.ObjectIdentifier, v any) *x509.CertificateRequest {
		b, err := asn1.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return testCSR(t, p256(t), &x509.CertificateRequest{ExtraExtensions: []pkix.Extension{{Id: id, Value: b}}})
	}
	type bc struct {
		IsCA       bool `asn1:"optional"`
		MaxPathLen int  `asn1:"optional,default:-1"`
	}

	cases := []struct {
		name string
		req  IntermediateRequest
		want string
	}{
		{"bad signature", IntermediateRequest{CSR: badSig}, "signature"},
		{"key type not allowed", IntermediateRequest{CSR: testCSR(t, p384, nil)}, "not allowed"},
		{"unsupported curve", IntermediateRequest{CSR: testCSR(t, p224, nil)}, "not supported"},
		{"ed25519", IntermediateRequest{CSR: testCSR(t, edKey, nil)}, "not supported"},
		{"ttl beyond policy", IntermediateRequest{CSR: good, TTL: DefaultIntermediateTTL + time.Hour}, "exceeds the policy maximum"},
		{"ttl below minimum", IntermediateRequest{CSR: good, TTL: time.Hour}, "below the policy minimum"},
		{"negative ttl", IntermediateRequest{CSR: good, TTL: -time.Hour}, "negative"},
		{"san requested", IntermediateRequest{CSR: testCSR(t, p256(t), &x509.CertificateRequest{DNSNames: []string{"evil.example"}})}, "subjectAltName"},
		{"uri san requested", IntermediateRequest{CSR: testCSR(t, p256(t), &x509.CertificateRequest{URIs: []*url.URL{{Scheme: "spiffe", Host: "other.org"}}})}, "subjectAltName"},
		{"eku requested", IntermediateRequest{CSR: withExt(asn1.ObjectIdentifier{2, 5, 29, 37}, []asn1.ObjectIdentifier{{1, 3, 6, 1, 5, 5, 7, 3, 1}})}, "extKeyUsage"},
		{"pathlen 1 requested", IntermediateRequest{CSR: withExt(oidBasicConstraints, bc{IsCA: true, MaxPathLen: 1})}, "path length 1"},
		{"CA false requested", IntermediateRequest{CSR: withExt(oidBasicConstraints, bc{IsCA: false})}, "CA:false"},
		{"extra key usage requested", IntermediateRequest{CSR: withExt(oidKeyUsage, asn1.BitString{Bytes: []byte{0xff, 0x80}, BitLength: 9})}, "key usages"},
		{"unknown extension", IntermediateRequest{CSR: withExt(asn1.ObjectIdentifier{1, 2, 3, 4}, 5)}, "does not grant"},
		{"bad cluster name", IntermediateRequest{Cluster: "East_1", CSR: good}, "cluster name"},
		{"bad trust domain", IntermediateRequest{TrustDomain: "spiffe://x/y", CSR: good}, "trust domain"},
		{"no csr", IntermediateRequest{}, "no CSR"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.req.Cluster == "" {
				c.req.Cluster = "east"
			}
			if c.req.TrustDomain == "" {
				c.req.TrustDomain = "example.org"
			}
			cert, err := a.SignIntermediate(c.req)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("SignIntermediate = %v, %v; want an error containing %q", cert, err, c.want)
			}
		})
	}
}

func TestSignIntermediateAcceptsProfileExtensions(t *testing.T) {
	a, _ := testAuthority(t, Policy{})
	bcDER, _ := asn1.Marshal(struct {
		IsCA       bool `asn1:"optional"`
		MaxPathLen int  `asn1:"optional,default:-1"`
	}{true, 0})
	kuDER, _ := asn1.Marshal(asn1.BitString{Bytes: []byte{0x06}, BitLength: 7}) // keyCertSign|cRLSign
	csr := testCSR(t, p256(t), &x509.CertificateRequest{ExtraExtensions: []pkix.Extension{
		{Id: oidBasicConstraints, Critical: true, Value: bcDER},
		{Id: oidKeyUsage, Critical: true, Value: kuDER},
	}})
	if _, err := a.SignIntermediate(IntermediateRequest{Cluster: "east", TrustDomain: "example.org", CSR: csr}); err != nil {
		t.Fatalf("a CSR asking only for what the profile grants was refused: %v", err)
	}
}

func TestSignIntermediateIssuerExpiringSoon(t *testing.T) {
	rootKey := p256(t)
	root := signCA(t, nil, rootKey, rootKey.Public(), "dying root", -1, x509.KeyUsageCertSign, time.Now().Add(2*time.Hour))
	a, err := NewAuthority([]*x509.Certificate{root}, rootKey, Policy{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.SignIntermediate(IntermediateRequest{Cluster: "east", TrustDomain: "example.org", CSR: testCSR(t, p256(t), nil)})
	if err == nil || !strings.Contains(err.Error(), "less than the minimum intermediate lifetime") {
		t.Fatalf("want a refusal for an issuer that expires in 2h, got %v", err)
	}
}

// TestTrustDomainConstraint checks with Go's verifier that a constrained
// intermediate admits leaves of its own trust domain only.
func TestTrustDomainConstraint(t *testing.T) {
	a, root := testAuthority(t, Policy{TrustDomainConstraint: true})
	interKey := p256(t)
	inter, err := a.SignIntermediate(IntermediateRequest{Cluster: "east", TrustDomain: "example.org", CSR: testCSR(t, interKey, nil)})
	if err != nil {
		t.Fatal(err)
	}
	if !inter.PermittedDNSDomainsCritical || len(inter.PermittedURIDomains) != 1 {
		t.Fatalf("want a critical URI name constraint, got %v critical=%v", inter.PermittedURIDomains, inter.PermittedDNSDomainsCritical)
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)
	inters := x509.NewCertPool()
	inters.AddCert(inter)
	for _, c := range []struct {
		uri string
		ok  bool
	}{
		{"spiffe://example.org/ns/default/sa/app", true},
		{"spiffe://other.org/ns/default/sa/app", false},
		{"spiffe://evil.example.org/ns/default/sa/app", false},
	} {
		u, _ := url.Parse(c.uri)
		leafKey := p256(t)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(7), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
			URIs: []*url.URL{u}, KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, inter, leafKey.Public(), interKey)
		if err != nil {
			t.Fatal(err)
		}
		leaf, _ := x509.ParseCertificate(der)
		_, err = leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		if (err == nil) != c.ok {
			t.Errorf("leaf %s: verify error %v, want ok=%v", c.uri, err, c.ok)
		}
	}
}
