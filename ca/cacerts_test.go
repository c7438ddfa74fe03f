package ca

import (
	"crypto"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/meshroot/meshroot/keys"
)

// testCACerts issues a valid cacerts under a fresh root.
func testCACerts(t *testing.T) (*CACerts, crypto.Signer) {
	t.Helper()
	a, root := testAuthority(t, Policy{})
	key := p256(t)
	cert, err := a.SignIntermediate(IntermediateRequest{Cluster: "east", TrustDomain: "example.org", CSR: testCSR(t, key, nil)})
	if err != nil {
		t.Fatal(err)
	}
	return &CACerts{Cert: cert, Key: key, Chain: []*x509.Certificate{cert, root}, Roots: []*x509.Certificate{root}}, key
}

func TestCACertsVerifyRefusals(t *testing.T) {
	now := time.Now()
	good, _ := testCACerts(t)
	if err := good.Verify(now); err != nil {
		t.Fatalf("valid cacerts refused: %v", err)
	}
	otherRoot, otherRootKey := testRoot(t, keys.ECP256)
	// SignIntermediate cannot make intermediates with the wrong profile, so
	// these are signed by hand.
	interKey := p256(t)
	noCertSign := signCA(t, otherRoot, otherRootKey, interKey.Public(), "nosign", 0, x509.KeyUsageDigitalSignature, time.Now().Add(time.Hour*48))
	pathLen1 := signCA(t, otherRoot, otherRootKey, interKey.Public(), "pl1", 1, x509.KeyUsageCertSign, time.Now().Add(time.Hour*48))
	notSelfSigned := signCA(t, otherRoot, otherRootKey, p256(t).Public(), "fake root", -1, x509.KeyUsageCertSign, time.Now().Add(time.Hour*48))

	cases := []struct {
		name   string
		mutate func(c *CACerts)
		want   string
	}{
		{"key mismatch", func(c *CACerts) { c.Key = p256(t) }, "does not match"},
		{"no key", func(c *CACerts) { c.Key = nil }, "key missing"},
		{"chain does not start with intermediate", func(c *CACerts) { c.Chain = c.Chain[1:] }, "does not start with the intermediate"},
		{"chain ends at root not in roots", func(c *CACerts) { c.Roots = []*x509.Certificate{otherRoot} }, "not in root-cert.pem"},
		{"foreign root in chain", func(c *CACerts) {
			c.Chain = []*x509.Certificate{c.Cert, otherRoot}
			c.Roots = []*x509.Certificate{otherRoot}
		}, "is not signed by entry"},
		{"root not self-signed", func(c *CACerts) { c.Roots = append(c.Roots, notSelfSigned) }, "not a self-signed CA"},
		{"no keyCertSign", func(c *CACerts) {
			c.Cert, c.Key = noCertSign, interKey
			c.Chain = []*x509.Certificate{noCertSign, otherRoot}
			c.Roots = []*x509.Certificate{otherRoot}
		}, "keyCertSign"},
		{"pathlen not zero", func(c *CACerts) {
			c.Cert, c.Key = pathLen1, interKey
			c.Chain = []*x509.Certificate{pathLen1, otherRoot}
			c.Roots = []*x509.Certificate{otherRoot}
		}, "path length is not 0"},
		{"empty roots", func(c *CACerts) { c.Roots = nil }, "roots missing"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cc, _ := testCACerts(t)
			c.mutate(cc)
			err := cc.Verify(now)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Verify = %v, want an error containing %q", err, c.want)
			}
			if cc.Key == nil {
				return // Files without a key is the CSR mode, checked below
			}
			if files, err := cc.Files(FormatIstio, now); err == nil || files != nil {
				t.Fatalf("Files returned output for broken cacerts")
			}
		})
	}
}

func TestCACertsVerifyExpired(t *testing.T) {
	cc, _ := testCACerts(t)
	if err := cc.Verify(cc.Cert.NotAfter.Add(time.Minute)); err == nil || !strings.Contains(err.Error(), "not valid now") {
		t.Fatalf("expired intermediate: Verify = %v, want 'not valid now'", err)
	}
}

func TestCACertsFiles(t *testing.T) {
	cc, _ := testCACerts(t)
	now := time.Now()
	istio, err := cc.Files(FormatIstio, now)
	if err != nil {
		t.Fatal(err)
	}
	for name, wantCerts := range map[string]int{CACertFile: 1, CertChainFile: 2, RootCertFile: 1} {
		certs, err := ParseCerts(istio[name])
		if err != nil || len(certs) != wantCerts {
			t.Errorf("%s: %d certs, err %v; want %d", name, len(certs), err, wantCerts)
		}
	}
	if !strings.HasPrefix(string(istio[CAKeyFile]), "-----BEGIN PRIVATE KEY-----") {
		t.Errorf("ca-key.pem is not PKCS#8 PEM")
	}
	if chain, _ := ParseCerts(istio[CertChainFile]); !chain[0].Equal(cc.Cert) || !chain[1].Equal(cc.Roots[0]) {
		t.Errorf("cert-chain.pem is not intermediate then root")
	}
	tls, err := cc.Files(FormatTLS, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(tls) != 3 || tls[TLSKeyFile] == nil {
		t.Fatalf("tls layout has files %v", keysOf(tls))
	}
	if c, _ := ParseCerts(tls[TLSCertFile]); len(c) != 1 || !c[0].Equal(cc.Cert) {
		t.Errorf("tls.crt should hold only the intermediate below the root")
	}
	// KeyPEM, an earlier Files' key file, is written as is (the same
	// bytes), and the checks still run: a key that does not match the
	// intermediate is refused before KeyPEM is looked at.
	again := *cc
	again.KeyPEM = istio[CAKeyFile]
	reused, err := again.Files(FormatIstio, now)
	if err != nil || &reused[CAKeyFile][0] != &istio[CAKeyFile][0] {
		t.Errorf("with KeyPEM: err %v, key file reused: %v", err, err == nil && &reused[CAKeyFile][0] == &istio[CAKeyFile][0])
	}
	other, _ := testCACerts(t)
	again.Key = other.Key
	if files, err := again.Files(FormatIstio, now); err == nil || files != nil {
		t.Errorf("another key with KeyPEM set: files %v, err %v; want refused", keysOf(files), err)
	}
	// Without a key, the key file is left out but the certificates are checked.
	cc.Key = nil
	noKey, err := cc.Files(FormatIstio, now)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := noKey[CAKeyFile]; ok || len(noKey) != 3 {
		t.Errorf("without a key: files %v", keysOf(noKey))
	}
}

func keysOf(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestParseCerts(t *testing.T) {
	cc, _ := testCACerts(t)
	good := EncodeCerts(cc.Chain)
	for name, in := range map[string]string{
		"empty":    "",
		"garbage":  "hello",
		"key":      "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
		"trailing": string(good) + "junk",
		"bad der":  "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
	} {
		if _, err := ParseCerts([]byte(in)); err == nil {
			t.Errorf("%s: ParseCerts accepted it", name)
		}
	}
	if got, err := ParseCerts(good); err != nil || len(got) != 2 {
		t.Errorf("ParseCerts(good) = %d certs, %v", len(got), err)
	}
}
