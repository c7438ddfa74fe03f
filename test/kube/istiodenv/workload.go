package istiodenv

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	securityv1alpha1 "istio.io/api/security/v1alpha1"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TokenAudience is the audience istiod's CA requires of service-account
// tokens (its TOKEN_AUDIENCES default).
const TokenAudience = "istio-ca"

const (
	workloadTokenTTL = time.Hour
	callTimeout      = 10 * time.Second
)

// Workload is one service account of a cluster that gets its certificates
// from istiod as istio-agent does: a TokenRequest token (audience
// istio-ca), a fresh key and CSR for its SPIFFE ID, CreateCertificate on
// istiod's secure gRPC port, and the roots istiod publishes in the
// istio-ca-root-cert ConfigMap of its namespace (which is also what it
// trusts istiod's serving certificate with). Its methods are safe for
// concurrent use and do not call t.Fatal, so they may run in goroutines.
type Workload struct {
	// Istiod is the istiod the workload gets certificates from.
	Istiod *Istiod
	// Namespace and ServiceAccount name the workload.
	Namespace, ServiceAccount string

	mu       sync.Mutex
	token    string
	tokenExp time.Time
}

// Workload returns a workload for namespace/serviceAccount of d's cluster,
// creating the namespace and ServiceAccount if missing.
func (d *Istiod) Workload(t testing.TB, namespace, serviceAccount string) *Workload {
	t.Helper()
	d.Cluster.EnsureServiceAccount(t, namespace, serviceAccount)
	return &Workload{Istiod: d, Namespace: namespace, ServiceAccount: serviceAccount}
}

// SPIFFEID is the identity istiod puts in the workload's certificates:
// spiffe://<trust domain>/ns/<namespace>/sa/<service account>.
func (w *Workload) SPIFFEID() string {
	return fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", w.Istiod.TrustDomain, w.Namespace, w.ServiceAccount)
}

// Token returns a service-account token with audience istio-ca from the
// TokenRequest API, reused until 10 minutes before it expires.
func (w *Workload) Token(ctx context.Context) (string, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.token != "" && time.Until(w.tokenExp) > 10*time.Minute {
		return w.token, nil
	}
	secs := int64(workloadTokenTTL / time.Second)
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences: []string{TokenAudience}, ExpirationSeconds: &secs}}
	resp, err := w.Istiod.Cluster.Client.CoreV1().ServiceAccounts(w.Namespace).CreateToken(ctx, w.ServiceAccount, req, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("TokenRequest for %s/%s in %q: %w", w.Namespace, w.ServiceAccount, w.Istiod.Cluster.Name, err)
	}
	w.token, w.tokenExp = resp.Status.Token, resp.Status.ExpirationTimestamp.Time
	return w.token, nil
}

// Roots returns the certificates of root-cert.pem in the
// istio-ca-root-cert ConfigMap of the workload's namespace.
func (w *Workload) Roots(ctx context.Context) ([]*x509.Certificate, error) {
	cm, err := w.Istiod.Cluster.Client.CoreV1().ConfigMaps(w.Namespace).Get(ctx, RootCertConfigMap, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("reading ConfigMap %s/%s in %q: %w", w.Namespace, RootCertConfigMap, w.Istiod.Cluster.Name, err)
	}
	roots, err := ParseCertificates([]byte(cm.Data["root-cert.pem"]))
	if err != nil || len(roots) == 0 {
		return nil, fmt.Errorf("ConfigMap %s/%s in %q: root-cert.pem holds no certificate (%v)", w.Namespace, RootCertConfigMap, w.Istiod.Cluster.Name, err)
	}
	return roots, nil
}

// WaitRoots waits (at most timeout) until istiod has published
// istio-ca-root-cert in the workload's namespace and returns its roots.
func (w *Workload) WaitRoots(t testing.TB, timeout time.Duration) []*x509.Certificate {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		roots, err := w.Roots(ctx)
		cancel()
		if err == nil {
			return roots
		}
		if time.Now().After(deadline) {
			t.Fatalf("istiodenv: %v (waited %s)", err, timeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Cert is what istiod issued a workload, with the key it was issued for.
type Cert struct {
	// TLS presents the leaf and the chain istiod returned with it (not the
	// separate root bundle).
	TLS tls.Certificate
	// Chain is the leaf, then the chain istiod returned (cert-chain.pem:
	// the cluster intermediate first).
	Chain []*x509.Certificate
	// Roots is istiod's root bundle, the last element of the response.
	Roots []*x509.Certificate
}

// Leaf is the workload's certificate.
func (c *Cert) Leaf() *x509.Certificate { return c.Chain[0] }

// Intermediate is the certificate that signed the leaf (the plugged-in
// ca-cert.pem istiod signed with).
func (c *Cert) Intermediate() *x509.Certificate { return c.Chain[1] }

// Certificate gets a new certificate for the workload from istiod, as
// istio-agent does: a new ECDSA P-256 key, a CSR naming SPIFFEID as its
// URI SAN, and CreateCertificate with the workload's token, trusting
// istiod with the roots of istio-ca-root-cert. A zero ttl asks for
// istiod's default.
func (w *Workload) Certificate(ctx context.Context, ttl time.Duration) (*Cert, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	csrPEM, err := NewCSR(key, w.SPIFFEID())
	if err != nil {
		return nil, err
	}
	token, err := w.Token(ctx)
	if err != nil {
		return nil, err
	}
	roots, err := w.Roots(ctx)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	resp, err := w.Istiod.CreateCertificate(ctx, pool, token, csrPEM, ttl)
	if err != nil {
		return nil, err
	}
	chain, rootBundle, err := ParseResponse(resp)
	if err != nil {
		return nil, err
	}
	if pub, ok := chain[0].PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(&key.PublicKey) {
		return nil, errors.New("istiod returned a certificate for another key")
	}
	c := &Cert{Chain: chain, Roots: rootBundle}
	c.TLS.PrivateKey = key
	c.TLS.Leaf = chain[0]
	for _, x := range chain {
		c.TLS.Certificate = append(c.TLS.Certificate, x.Raw)
	}
	return c, nil
}

// NewCSR returns a PEM certificate request for key naming id as its one
// URI SAN, as istio-agent's CSR does.
func NewCSR(key *ecdsa.PrivateKey, id string) ([]byte, error) {
	u, err := url.Parse(id)
	if err != nil {
		return nil, fmt.Errorf("SPIFFE ID %q: %w", id, err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// CreateCertificate calls istio.v1.auth.IstioCertificateService/
// CreateCertificate on d's secure gRPC port over TLS (server name
// istiod.istio-system.svc, verified with roots) with metadata
// "authorization: Bearer <token>", and returns the response's cert_chain:
// the leaf, the chain, and the root bundle last. A zero ttl asks for
// istiod's default.
func (d *Istiod) CreateCertificate(ctx context.Context, roots *x509.CertPool, token string, csrPEM []byte, ttl time.Duration) ([]string, error) {
	return CreateCertificate(ctx, d.SecureGRPCAddr, roots, token, csrPEM, ttl)
}

// CreateCertificate is Istiod.CreateCertificate for istiod at addr.
func CreateCertificate(ctx context.Context, addr string, roots *x509.CertPool, token string, csrPEM []byte, ttl time.Duration) ([]string, error) {
	creds := credentials.NewTLS(&tls.Config{ServerName: ServerName, RootCAs: roots, MinVersion: tls.VersionTLS12})
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, fmt.Errorf("connecting to istiod at %s: %w", addr, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	req := &securityv1alpha1.IstioCertificateRequest{Csr: string(csrPEM), ValidityDuration: int64(ttl / time.Second)}
	resp, err := securityv1alpha1.NewIstioCertificateServiceClient(conn).CreateCertificate(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("CreateCertificate at istiod %s: %w", addr, err)
	}
	return resp.GetCertChain(), nil
}

// ParseResponse splits a CreateCertificate cert_chain: every element but
// the last holds the leaf and its chain (leaf first), the last is the root
// bundle.
func ParseResponse(certChain []string) (chain, roots []*x509.Certificate, err error) {
	if len(certChain) < 2 {
		return nil, nil, fmt.Errorf("istiod returned %d elements, want the leaf, its chain and the roots", len(certChain))
	}
	for _, el := range certChain[:len(certChain)-1] {
		cs, err := ParseCertificates([]byte(el))
		if err != nil {
			return nil, nil, err
		}
		chain = append(chain, cs...)
	}
	if roots, err = ParseCertificates([]byte(certChain[len(certChain)-1])); err != nil {
		return nil, nil, err
	}
	if len(chain) < 2 || len(roots) == 0 {
		return nil, nil, fmt.Errorf("istiod returned a chain of %d and %d roots, want a leaf with its intermediate and at least one root", len(chain), len(roots))
	}
	return chain, roots, nil
}

// ParseCertificates parses every CERTIFICATE block of PEM data.
func ParseCertificates(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return out, nil
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
}
