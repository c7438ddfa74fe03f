package agent

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/ca"
)

// testRootAuthority is a self-signed root and its authority under the
// default policy.
func testRootAuthority(t *testing.T) (*ca.Authority, *x509.Certificate, crypto.Signer) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{Organization: []string{"example.org"}, CommonName: "root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * 365 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		SubjectKeyId: []byte{1, 2, 3, 4},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := x509.ParseCertificate(der)
	a, err := ca.NewAuthority([]*x509.Certificate{root}, key, ca.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	return a, root, key
}

// clusterKey is what one cluster's cacerts holds: its intermediate and key.
func clusterKey(t *testing.T, a *ca.Authority, req ca.IntermediateRequest) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: req.Cluster}}, key)
	if err != nil {
		t.Fatal(err)
	}
	req.CSR, _ = x509.ParseCertificateRequest(der)
	req.TrustDomain = "example.org"
	inter, err := a.SignIntermediate(req)
	if err != nil {
		t.Fatal(err)
	}
	return inter, key
}

// mintServerCert signs, with a CA key, what a meshroot server presents:
// serverAuth for localhost and 127.0.0.1.
func mintServerCert(t *testing.T, issuer *x509.Certificate, issuerKey crypto.Signer, chain ...*x509.Certificate) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, key.Public(), issuerKey)
	if err != nil {
		t.Fatal(err)
	}
	out := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	for _, c := range chain {
		out.Certificate = append(out.Certificate, c.Raw)
	}
	return out
}

// serveTLS runs a gRPC server with no services behind cert: a call that
// gets through the TLS handshake ends Unimplemented.
func serveTLS(t *testing.T, cert tls.Certificate) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})))
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return ln.Addr().String()
}

// call dials addr as the agent does, trusting root, and makes one call.
func call(t *testing.T, addr string, root *x509.Certificate) error {
	t.Helper()
	c, err := dial([]string{addr}, func() *x509.CertPool { p := x509.NewCertPool(); p.AddCert(root); return p }, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = c.issuer.GetTrustBundle(ctx, &meshrootv1.GetTrustBundleRequest{Cluster: "west"})
	return err
}

// TestAgentRefusesServerCertFromClusterKey is issue 9's attack: whoever
// holds one cluster's cacerts key mints a certificate for the server's
// name and answers in the server's place. The agent must refuse the TLS
// handshake. (On the old code the handshake succeeded and the call reached
// the impostor.)
func TestAgentRefusesServerCertFromClusterKey(t *testing.T) {
	a, root, _ := testRootAuthority(t)
	inter, key := clusterKey(t, a, ca.IntermediateRequest{Cluster: "east"})
	addr := serveTLS(t, mintServerCert(t, inter, key, inter))
	err := call(t, addr, root)
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "handshake") {
		t.Fatalf("call to a server with a cluster-minted certificate: %v, want the TLS handshake refused", err)
	}
}

// TestAgentPinsServerCA: even a cluster whose intermediate may certify the
// server's names (registered with them) cannot pose as the server; a leaf
// from meshroot's server CA is accepted, and a leaf the root signs
// directly is not.
func TestAgentPinsServerCA(t *testing.T) {
	a, root, rootKey := testRootAuthority(t)
	_, lo, _ := net.ParseCIDR("127.0.0.0/8")
	inter, key := clusterKey(t, a, ca.IntermediateRequest{Cluster: "east", PermitDNS: []string{"localhost"}, PermitIPs: []*net.IPNet{lo}})
	err := call(t, serveTLS(t, mintServerCert(t, inter, key, inter)), root)
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "not a meshroot server CA") || !strings.Contains(err.Error(), "refusing server") {
		t.Fatalf("call to a server with a cluster-minted certificate: %v, want the handshake refused as not from the server CA", err)
	}

	sKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	sca, err := a.SignServerCA(sKey.Public(), "example.org", ca.ParseServerNames([]string{"localhost", "127.0.0.1"}), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := call(t, serveTLS(t, mintServerCert(t, sca, sKey, sca)), root); status.Code(err) != codes.Unimplemented {
		t.Fatalf("call to a server with a server-CA certificate: %v, want it through TLS (Unimplemented)", err)
	}

	if err := call(t, serveTLS(t, mintServerCert(t, root, rootKey)), root); !strings.Contains(errString(err), "not a meshroot server CA") {
		t.Fatalf("call to a server with a leaf signed by the root directly: %v, want it refused", err)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
