package authn

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/plugins/store"
)

// maxPeerChain bounds the client certificate chain that is verified.
const maxPeerChain = 8

// authenticateMTLS authenticates renewal by a cluster's intermediate,
// presented as TLS client certificate (chain[0]), for cluster c.
//
// This checks the certificate only. Possession of its private key was
// proved by the TLS handshake, in which the client signed the handshake
// transcript with that key (CertificateVerify); the transport must pass
// only a chain that the handshake authenticated, never one taken from
// request data.
func (a *Authenticator) authenticateMTLS(ctx context.Context, c store.Cluster, chain []*x509.Certificate) (Identity, error) {
	if len(chain) > maxPeerChain {
		return Identity{}, unauthenticated("client certificate chain has %d certificates: at most %d are accepted", len(chain), maxPeerChain)
	}
	for i, cert := range chain {
		if cert == nil {
			return Identity{}, unauthenticated("client certificate chain: certificate %d is missing", i+1)
		}
	}
	if a.roots == nil {
		return Identity{}, errors.New("authenticate by client certificate: no trust bundle configured (Options.Roots)")
	}
	leaf := chain[0]
	serial := ca.SerialHex(leaf.SerialNumber)
	if !leaf.BasicConstraintsValid || !leaf.IsCA {
		return Identity{}, unauthenticated("client certificate %s is not a cluster intermediate: it is not a CA certificate", serial)
	}
	roots, err := a.roots(ctx)
	if err != nil {
		return Identity{}, fmt.Errorf("authenticate by client certificate: trust bundle: %w", err)
	}
	rootPool := x509.NewCertPool()
	for _, r := range roots {
		rootPool.AddCert(r)
	}
	inter := x509.NewCertPool()
	for _, cert := range chain[1:] {
		inter.AddCert(cert)
	}
	// The intermediate's validity period, its chain to a root that is in the
	// trust bundle now, and the chain's constraints are checked here; an
	// expired intermediate, or one under a root that left the bundle, fails.
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:         rootPool,
		Intermediates: inter,
		CurrentTime:   a.now(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return Identity{}, unauthenticated("client certificate %s does not verify against the trust bundle: %v", serial, err)
	}
	rec, err := a.st.GetIntermediate(ctx, serial)
	if errors.Is(err, store.ErrNotFound) {
		return Identity{}, unauthenticated("certificate was not issued by meshroot (serial %s)", serial)
	}
	if err != nil {
		return Identity{}, fmt.Errorf("look up intermediate %s: %w", serial, err)
	}
	// The serial is random, but the recorded certificate itself must be the
	// one presented: a certificate under the same roots that merely shares
	// the serial is not ours.
	recorded, err := ca.ParseCerts(rec.CertPEM)
	if err != nil {
		return Identity{}, fmt.Errorf("intermediate %s: recorded certificate: %w", serial, err)
	}
	if !bytes.Equal(recorded[0].Raw, leaf.Raw) {
		return Identity{}, unauthenticated("certificate was not issued by meshroot (serial %s names another certificate)", serial)
	}
	if rec.Cluster != c.Name {
		return Identity{}, permissionDenied("intermediate %s is for cluster %s, not %s", serial, rec.Cluster, c.Name)
	}
	switch rec.Status {
	case store.IntermediateRevoked:
		return Identity{}, unauthenticated("intermediate %s is revoked", serial)
	case store.IntermediateActive, store.IntermediateSuperseded:
		// A superseded intermediate still renews: the agent may have crashed
		// after meshroot issued its successor but before it wrote the new
		// cacerts Secret, so the cluster still runs with the old one and
		// this is its only credential. Revocation is what takes an
		// intermediate's renewal right away.
	default:
		return Identity{}, unauthenticated("intermediate %s has unknown status %q", serial, rec.Status)
	}
	return Identity{Cluster: c.Name, Method: MethodMTLS, Subject: serial}, nil
}
