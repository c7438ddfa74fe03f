package authn

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/store"
)

// maxPeerChain bounds the client certificate chain that is verified.
const maxPeerChain = 8

// authenticateMTLS authenticates renewal by a cluster's intermediate,
// presented as TLS client certificate (chain[0]), for the cluster
// registered as c. known, when not nil, is the record of chain[0]'s
// serial as read with c (it is read otherwise).
//
// This checks the certificate only. Possession of its private key was
// proved by the TLS handshake, in which the client signed the handshake
// transcript with that key (CertificateVerify); the transport must pass
// only a chain that the handshake authenticated, never one taken from
// request data.
func (a *Authenticator) authenticateMTLS(ctx context.Context, c store.Registration, chain []*x509.Certificate, known *store.Intermediate) (Identity, error) {
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
	// The intermediate's validity period, its chain to a root that is in the
	// trust bundle now, and the chain's constraints are checked here; an
	// expired intermediate, or one under a root that left the bundle, fails.
	// A chain that verified before is remembered until the first
	// certificate of its path expires, with the roots its paths ended at:
	// renewals and status reports do not pay for the signature checks
	// again while one of those roots is in the bundle, also when the
	// bundle gained or lost other roots (a rotation's prepare made every
	// cluster's next report verify its chain again: a fifth of the
	// server's CPU per change in bench-fleet). Revocation is checked below
	// on every call.
	key := verifiedKey(chain)
	if !a.verifiedBefore(key, roots) {
		rootPool := x509.NewCertPool()
		for _, r := range roots {
			rootPool.AddCert(r)
		}
		inter := x509.NewCertPool()
		for _, cert := range chain[1:] {
			inter.AddCert(cert)
		}
		paths, err := leaf.Verify(x509.VerifyOptions{
			Roots:         rootPool,
			Intermediates: inter,
			CurrentTime:   a.now(),
			KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
		})
		if err != nil {
			return Identity{}, unauthenticated("client certificate %s does not verify against the trust bundle: %v", serial, err)
		}
		a.rememberVerified(key, paths)
	}
	rec, err := a.intermediate(ctx, serial, known)
	if err != nil {
		return Identity{}, err
	}
	// The serial is random, but the recorded certificate itself must be the
	// one presented: a certificate under the same roots that merely shares
	// the serial is not ours.
	// Comparing the DER bytes needs no parse of the recorded certificate.
	recorded, _ := pem.Decode(rec.CertPEM)
	if recorded == nil || recorded.Type != "CERTIFICATE" {
		return Identity{}, fmt.Errorf("intermediate %s: recorded certificate is not a PEM CERTIFICATE block", serial)
	}
	if !bytes.Equal(recorded.Bytes, leaf.Raw) {
		return Identity{}, unauthenticated("certificate was not issued by meshroot (serial %s names another certificate)", serial)
	}
	if rec.Cluster != c.Name {
		return Identity{}, permissionDenied("intermediate %s is for cluster %s, not %s", serial, rec.Cluster, c.Name)
	}
	// The name alone is not the cluster: an intermediate issued before the
	// current registration was made belongs to a removed registration of
	// the same name (removal revokes them; this also covers intermediates
	// left active by versions that did not).
	if rec.CreatedAt.Before(c.CreatedAt) {
		return Identity{}, permissionDenied("intermediate %s was issued at %s to an earlier registration of cluster %s, which was removed; the cluster was registered again at %s: join with a join token or service-account token",
			serial, rec.CreatedAt.UTC().Format(time.RFC3339), c.Name, c.CreatedAt.UTC().Format(time.RFC3339))
	}
	switch rec.Status {
	case store.IntermediateRevoked:
		return Identity{}, unauthenticated("intermediate %s is revoked", serial)
	case store.IntermediateActive:
	case store.IntermediateSuperseded:
		// A superseded intermediate still renews for a short grace period:
		// the agent may have crashed after meshroot issued its successor
		// but before it wrote the new cacerts Secret, so the cluster still
		// runs with the old one and this is its only credential. After
		// that, a replaced (perhaps leaked) key renews no more.
		if err := a.checkSupersededGrace(ctx, serial, rec); err != nil {
			return Identity{}, err
		}
	default:
		return Identity{}, unauthenticated("intermediate %s has unknown status %q", serial, rec.Status)
	}
	return Identity{Cluster: c.Name, Method: MethodMTLS, Subject: serial, Intermediate: &rec}, nil
}

// intermediate returns the record of the intermediate with serial: known
// when it is that record, else read.
func (a *Authenticator) intermediate(ctx context.Context, serial string, known *store.Intermediate) (store.Intermediate, error) {
	if known != nil && known.Serial == serial {
		return *known, nil
	}
	rec, err := a.st.GetIntermediate(ctx, serial)
	if errors.Is(err, store.ErrNotFound) {
		return store.Intermediate{}, unauthenticated("certificate was not issued by meshroot (serial %s)", serial)
	}
	if err != nil {
		return store.Intermediate{}, fmt.Errorf("look up intermediate %s: %w", serial, err)
	}
	return rec, nil
}

// checkSupersededGrace refuses a superseded intermediate whose renewal grace
// period (the stored policy's SupersededRenewalGrace) is over.
func (a *Authenticator) checkSupersededGrace(ctx context.Context, serial string, rec store.Intermediate) error {
	if rec.SupersededAt.IsZero() {
		return unauthenticated("intermediate %s was superseded (at a time not recorded) and can no longer renew: join again with a join token or service-account token", serial)
	}
	pol, _, err := ca.LoadPolicy(ctx, a.st)
	if err != nil {
		return fmt.Errorf("authenticate by client certificate: %w", err)
	}
	grace := pol.SupersededRenewalGrace
	if since := a.now().Sub(rec.SupersededAt); since > grace {
		return unauthenticated("intermediate %s was superseded at %s, more than the renewal grace period %s ago, and can no longer renew: the cluster's current intermediate renews; or join again with a join token or service-account token",
			serial, rec.SupersededAt.UTC().Format(time.RFC3339), grace)
	}
	return nil
}

// maxVerified bounds the cache of verified chains.
const maxVerified = 4096

// verifiedKey identifies a presented chain.
func verifiedKey(chain []*x509.Certificate) [32]byte {
	h := sha256.New()
	for _, c := range chain {
		h.Write(c.Raw)
		h.Write([]byte{0})
	}
	var k [32]byte
	copy(k[:], h.Sum(nil))
	return k
}

// verifiedChain is what a successful verification of a chain leaves: when
// every certificate of its paths is valid, and the roots they end at.
type verifiedChain struct {
	validity
	roots [][sha256.Size]byte // SHA-256 of each path's root
}

// verifiedBefore reports whether the chain verified before, every
// certificate of the path is still within its validity period, and the
// root of one of its paths is among roots. A path's validity does not
// depend on the other roots of the pool it was built from: it verifies
// the same against any set holding its root.
func (a *Authenticator) verifiedBefore(key [32]byte, roots []*x509.Certificate) bool {
	a.mu.Lock()
	w, ok := a.verified[key]
	a.mu.Unlock()
	now := a.now()
	if !ok || now.Before(w.notBefore) || !now.Before(w.notAfter) {
		return false
	}
	for _, r := range roots {
		id := sha256.Sum256(r.Raw)
		for _, v := range w.roots {
			if v == id {
				return true
			}
		}
	}
	return false
}

// rememberVerified records the paths a chain verified by (each ending at
// a root of the pool).
func (a *Authenticator) rememberVerified(key [32]byte, paths [][]*x509.Certificate) {
	var w verifiedChain
	first := true
	for _, p := range paths {
		if len(p) == 0 {
			continue
		}
		w.roots = append(w.roots, sha256.Sum256(p[len(p)-1].Raw))
		for _, c := range p {
			if first || c.NotBefore.After(w.notBefore) {
				w.notBefore = c.NotBefore
			}
			if first || c.NotAfter.Before(w.notAfter) {
				w.notAfter = c.NotAfter
			}
			first = false
		}
	}
	if len(w.roots) == 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.verifications++
	if a.verified == nil || len(a.verified) >= maxVerified {
		a.verified = map[[32]byte]verifiedChain{}
	}
	a.verified[key] = w
}

// validity is the period in which a verified chain stays valid.
type validity struct{ notBefore, notAfter time.Time }
