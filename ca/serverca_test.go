package ca

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"math/big"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"
)

// leafUnder signs a serverAuth leaf for dns names, ips and uris with
// issuerKey, as anyone holding that CA key could.
func leafUnder(t *testing.T, issuer *x509.Certificate, issuerKey crypto.Signer, dns []string, ips []net.IP, uris ...string) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		DNSNames: dns, IPAddresses: ips, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, u := range uris {
		pu, _ := url.Parse(u)
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, p256(t).Public(), issuerKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func verifyUnder(root *x509.Certificate, inters []*x509.Certificate, leaf *x509.Certificate, dns string) error {
	roots := x509.NewCertPool()
	roots.AddCert(root)
	pool := x509.NewCertPool()
	for _, c := range inters {
		pool.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{DNSName: dns, Roots: roots, Intermediates: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	return err
}

// TestClusterIntermediateNameConstraints: by default a cluster intermediate
// certifies istiod's serving names and its trust domain's SPIFFE IDs, and
// no other DNS name, no IP address and no other trust domain; names
// registered for the cluster are added.
func TestClusterIntermediateNameConstraints(t *testing.T) {
	a, root := testAuthority(t, Policy{})
	key := p256(t)
	inter, err := a.SignIntermediate(IntermediateRequest{Cluster: "east", TrustDomain: "example.org", CSR: testCSR(t, key, nil)})
	if err != nil {
		t.Fatal(err)
	}
	_, ten, _ := net.ParseCIDR("10.1.0.0/16")
	wide, err := a.SignIntermediate(IntermediateRequest{Cluster: "west", TrustDomain: "example.org", CSR: testCSR(t, key, nil),
		PermitDNS: []string{"istiod.mesh.example"}, PermitIPs: []*net.IPNet{ten}})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name       string
		inter      *x509.Certificate
		dns        []string
		ips        []net.IP
		uri        string
		ok         bool
		verifyName string
	}{
		{"istiod serving names", inter, []string{"istiod.istio-system.svc", "istiod-remote.istio-system.svc", "istio-pilot.istio-system.svc"}, nil, "", true, "istiod.istio-system.svc"},
		{"istiod revision", inter, []string{"istiod-canary.istio-system.svc"}, nil, "", true, "istiod-canary.istio-system.svc"},
		{"workload SPIFFE ID", inter, nil, nil, "spiffe://example.org/ns/a/sa/b", true, ""},
		{"meshroot server name", inter, []string{"meshroot.example.com"}, nil, "", false, "meshroot.example.com"},
		{"public name", inter, []string{"www.example.org"}, nil, "", false, "www.example.org"},
		{"cluster.local name", inter, []string{"istiod.istio-system.svc.cluster.local"}, nil, "", false, "istiod.istio-system.svc.cluster.local"},
		{"IP address", inter, []string{"istiod.istio-system.svc"}, []net.IP{net.ParseIP("10.1.2.3")}, "", false, "istiod.istio-system.svc"},
		{"other trust domain", inter, nil, nil, "spiffe://other.org/ns/a/sa/b", false, ""},
		{"registered DNS", wide, []string{"istiod.mesh.example"}, nil, "", true, "istiod.mesh.example"},
		{"registered IP range", wide, []string{"istiod.istio-system.svc"}, []net.IP{net.ParseIP("10.1.2.3")}, "", true, "10.1.2.3"},
		{"IP outside the registered range", wide, nil, []net.IP{net.ParseIP("10.2.0.1")}, "", false, "10.2.0.1"},
	} {
		var uris []string
		if c.uri != "" {
			uris = append(uris, c.uri)
		}
		leaf := leafUnder(t, c.inter, key, c.dns, c.ips, uris...)
		err := verifyUnder(root, []*x509.Certificate{c.inter}, leaf, c.verifyName)
		if (err == nil) != c.ok {
			t.Errorf("%s: verify error %v, want ok=%v", c.name, err, c.ok)
		}
	}
	if _, err := NewAuthority(a.Chain(), a.signer, Policy{PermittedDNSDomains: []string{"*.bad"}}); err == nil {
		t.Error("a wildcard permitted DNS domain was accepted")
	}
	if _, err := ParsePermittedIPs([]string{"10.0.0.0/33"}); err == nil {
		t.Error("a bad CIDR was accepted")
	}
}

// TestServerCA checks the server CA's profile and that VerifyServerChain
// accepts a leaf it signs and refuses one for the same name signed by a
// cluster intermediate (even one permitted that DNS name) or by the root
// directly.
func TestServerCA(t *testing.T) {
	a, root := testAuthority(t, Policy{})
	caKey := p256(t)
	names := ParseServerNames([]string{"meshroot.example.com", "127.0.0.1"})
	sca, err := a.SignServerCA(caKey.Public(), "example.org", names, ServerCATTL)
	if err != nil {
		t.Fatal(err)
	}
	if !IsServerCA(sca) || len(sca.ExtKeyUsage) != 1 || sca.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth {
		t.Fatalf("server CA profile: IsServerCA=%v EKU=%v", IsServerCA(sca), sca.ExtKeyUsage)
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)
	now := time.Now()

	good := leafUnder(t, sca, caKey, []string{"meshroot.example.com"}, []net.IP{net.ParseIP("127.0.0.1")})
	if err := VerifyServerChain([]*x509.Certificate{good, sca}, roots, "meshroot.example.com", now); err != nil {
		t.Fatalf("a leaf from the server CA is refused: %v", err)
	}
	if err := VerifyServerChain([]*x509.Certificate{good, sca}, roots, "127.0.0.1", now); err != nil {
		t.Fatalf("a leaf from the server CA is refused for its IP: %v", err)
	}
	// The server CA's own name constraints: no other name.
	other := leafUnder(t, sca, caKey, []string{"evil.example.net"}, nil)
	if err := VerifyServerChain([]*x509.Certificate{other, sca}, roots, "evil.example.net", now); err == nil {
		t.Fatal("the server CA certified a name outside its constraints")
	}

	// A cluster registered with the server's domain (the worst case for
	// name constraints): its key mints a leaf for the server's name.
	ck := p256(t)
	cluster, err := a.SignIntermediate(IntermediateRequest{Cluster: "east", TrustDomain: "example.org", CSR: testCSR(t, ck, nil), PermitDNS: []string{"example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	forged := leafUnder(t, cluster, ck, []string{"meshroot.example.com"}, nil)
	if err := verifyUnder(root, []*x509.Certificate{cluster}, forged, "meshroot.example.com"); err != nil {
		t.Fatalf("setup: the forged leaf should pass plain verification here: %v", err)
	}
	err = VerifyServerChain([]*x509.Certificate{forged, cluster}, roots, "meshroot.example.com", now)
	if !errors.Is(err, ErrNotServerCA) || !strings.Contains(err.Error(), "east") {
		t.Fatalf("a server-name leaf from a cluster intermediate: %v, want ErrNotServerCA naming the cluster", err)
	}
	// A cluster intermediate cannot make itself a server CA: it has path
	// length 0, so a CA it signs (even with the marker) fails.
	fakeCAKey := p256(t)
	fakeTmpl := serverCATemplate("example.org", names)
	fakeTmpl.SerialNumber, fakeTmpl.NotBefore, fakeTmpl.NotAfter = big.NewInt(9), now.Add(-time.Minute), now.Add(time.Hour)
	der, err := x509.CreateCertificate(rand.Reader, fakeTmpl, cluster, fakeCAKey.Public(), ck)
	if err != nil {
		t.Fatal(err)
	}
	fakeCA, _ := x509.ParseCertificate(der)
	viaFake := leafUnder(t, fakeCA, fakeCAKey, []string{"meshroot.example.com"}, nil)
	if err := VerifyServerChain([]*x509.Certificate{viaFake, fakeCA, cluster}, roots, "meshroot.example.com", now); err == nil {
		t.Fatal("a server CA signed by a cluster intermediate was accepted")
	}
	// A leaf the root signs directly (an upstream's other users) is refused.
	direct := leafUnder(t, root, a.signer, []string{"meshroot.example.com"}, nil)
	if err := VerifyServerChain([]*x509.Certificate{direct}, roots, "meshroot.example.com", now); !errors.Is(err, ErrNotServerCA) {
		t.Fatalf("a leaf signed by the root directly: %v, want ErrNotServerCA", err)
	}
}

// TestServerCACSRCarriesTheProfile: the CSR an upstream signs requests the
// marker subject, the extended key usage and the name constraints.
func TestServerCACSRCarriesTheProfile(t *testing.T) {
	csr, err := NewServerCACSR(p256(t), "example.org", ParseServerNames([]string{"meshroot.example.com"}))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{oidExtKeyUsage.String(): false, oidNameConstraints.String(): false}
	for _, e := range csr.Extensions {
		if _, ok := want[e.Id.String()]; ok {
			want[e.Id.String()] = true
		}
	}
	for oid, found := range want {
		if !found {
			t.Errorf("CSR lacks extension %s", oid)
		}
	}
	if csr.Subject.CommonName != ServerCACommonName {
		t.Errorf("CSR subject %q", csr.Subject)
	}
}
