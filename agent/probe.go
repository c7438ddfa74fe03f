package agent

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
	"time"

	authv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/meshroot/meshroot/ca"
)

// The probe (--istiod-probe ADDR): a CSR to istiod's CA service, as a
// workload's istio-agent sends it, authenticated with an audience-scoped
// token (TokenRequest, audience istio-ca) for the agent's own service
// account. The chain istiod returns names the intermediate it signs with.

const (
	createCertificateMethod = "/istio.v1.auth.IstioCertificateService/CreateCertificate"
	probeAudience           = "istio-ca"
	probeTimeout            = 10 * time.Second
	maxProbeResponse        = 1 << 20
)

// IstiodProbe configures the probe CSR. Addr empty: no probe.
type IstiodProbe struct {
	// Addr is istiod's secure gRPC address, host:port (15012 in a mesh).
	Addr string
	// ServerName is the name istiod's serving certificate carries
	// (default istiod.<namespace>.svc).
	ServerName string
	// ServiceAccount is the agent's own service account (in the Secret's
	// namespace) a token is requested for (default meshroot-agent).
	ServiceAccount string
}

// probeIstiod asks istiod for a short certificate and returns the serial
// of the intermediate that signed it.
func (a *Agent) probeIstiod(ctx context.Context, cur *Current) (string, error) {
	p := a.cfg.Probe
	ns := a.cfg.Secret.Namespace
	sa, name := p.ServiceAccount, p.ServerName
	if sa == "" {
		sa = "meshroot-agent"
	}
	if name == "" {
		name = "istiod." + ns + ".svc"
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	exp := int64(600)
	tr, err := a.cfg.Kube.ServiceAccounts(ns).CreateToken(ctx, sa, &authv1.TokenRequest{
		Spec: authv1.TokenRequestSpec{Audiences: []string{probeAudience}, ExpirationSeconds: &exp},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("probe: token for service account %s/%s: %v", ns, sa, err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return "", err
	}
	pool := x509.NewCertPool()
	for _, r := range cur.CACerts.Roots {
		pool.AddCert(r)
	}
	conn, err := grpc.NewClient(p.Addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: name,
	})))
	if err != nil {
		return "", fmt.Errorf("probe: connect %s: %v", p.Addr, err)
	}
	defer conn.Close()
	req := protowire.AppendTag(nil, 1, protowire.BytesType)
	req = protowire.AppendString(req, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})))
	req = protowire.AppendTag(req, 3, protowire.VarintType)
	req = protowire.AppendVarint(req, 600)
	var resp []byte
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tr.Status.Token)
	if err := conn.Invoke(ctx, createCertificateMethod, &req, &resp, grpc.ForceCodec(rawCodec{}), grpc.MaxCallRecvMsgSize(maxProbeResponse)); err != nil {
		return "", fmt.Errorf("probe: CreateCertificate at %s: %v", p.Addr, err)
	}
	chain, err := parseCertChain(resp)
	if err != nil {
		return "", fmt.Errorf("probe: istiod's answer: %v", err)
	}
	if len(chain) < 2 {
		return "", errors.New("probe: istiod returned no intermediate")
	}
	return ca.SerialHex(chain[1].SerialNumber), nil
}

// parseCertChain reads IstioCertificateResponse: field 1, repeated string
// cert_chain, each one or more PEM certificates (leaf first).
func parseCertChain(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		b = b[n:]
		if num != 1 || typ != protowire.BytesType {
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return nil, protowire.ParseError(n)
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		b = b[n:]
		certs, err := ca.ParseCerts(v)
		if err != nil {
			return nil, err
		}
		out = append(out, certs...)
	}
	return out, nil
}

// rawCodec passes pre-encoded protobuf messages (*[]byte) through.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("raw codec: %T", v)
	}
	return *b, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("raw codec: %T", v)
	}
	*b = append((*b)[:0], data...)
	return nil
}

func (rawCodec) Name() string { return "proto" }
