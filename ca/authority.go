package ca

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"go.step.sm/crypto/keyutil"
)

// Authority signs cluster intermediates. Its signing certificate is either a
// self-signed root or a CA under one (an imported intermediate of an offline
// or external root); chains of any depth work.
type Authority struct {
	chain  []*x509.Certificate // signing cert first, self-signed root last
	signer crypto.Signer
	policy Policy
	now    func() time.Time
	// leafOnly marks an authority that may sign TLS leaves but no CA: a
	// pathlen-0 CA for meshroot's own certificates under an upstream.
	leafOnly bool
}

// NewAuthority checks that chain (the signing certificate first, then every
// CA above it, ending with a self-signed root) is a valid CA chain today and
// that signer holds the signing certificate's key.
func NewAuthority(chain []*x509.Certificate, signer crypto.Signer, policy Policy) (*Authority, error) {
	if err := policy.Validate(); err != nil {
		return nil, err
	}
	a := &Authority{chain: chain, signer: signer, policy: policy.withDefaults(), now: time.Now}
	if err := a.check(); err != nil {
		return nil, err
	}
	return a, nil
}

// SetClock replaces the authority's clock (for tests and offline tools).
func (a *Authority) SetClock(now func() time.Time) { a.now = now }

func (a *Authority) check() error {
	if len(a.chain) == 0 {
		return errors.New("signing authority: no certificate given")
	}
	if a.signer == nil {
		return errors.New("signing authority: no key given")
	}
	cert := a.chain[0]
	if !cert.IsCA || !cert.BasicConstraintsValid {
		return fmt.Errorf("signing authority %q is not a CA certificate", cert.Subject)
	}
	if cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return fmt.Errorf("signing authority %q lacks the keyCertSign key usage", cert.Subject)
	}
	if cert.MaxPathLen == 0 && cert.MaxPathLenZero {
		return fmt.Errorf("signing authority %q has path length 0: it cannot issue cluster intermediates (which are CAs); use its parent", cert.Subject)
	}
	if err := keyutil.VerifyPair(cert.PublicKey, a.signer); err != nil {
		return fmt.Errorf("signing authority %q: the key does not match the certificate", cert.Subject)
	}
	for i := 0; i+1 < len(a.chain); i++ {
		if err := a.chain[i].CheckSignatureFrom(a.chain[i+1]); err != nil {
			return fmt.Errorf("signing authority chain: %q is not signed by the next certificate %q: give the chain in order, signing certificate first, root last", a.chain[i].Subject, a.chain[i+1].Subject)
		}
	}
	if !isSelfSigned(a.Root()) {
		return fmt.Errorf("signing authority chain ends at %q, which is not a self-signed root: append the root certificate", a.Root().Subject)
	}
	if _, err := verifyChain(a.chain, []*x509.Certificate{a.Root()}, a.now()); err != nil {
		return fmt.Errorf("signing authority chain does not verify: %w", err)
	}
	return nil
}

// Root returns the self-signed root above the signing certificate.
func (a *Authority) Root() *x509.Certificate { return a.chain[len(a.chain)-1] }

// Certificate returns the signing certificate.
func (a *Authority) Certificate() *x509.Certificate { return a.chain[0] }

// Chain returns the signing certificate, then every CA above it, root last.
func (a *Authority) Chain() []*x509.Certificate { return append([]*x509.Certificate(nil), a.chain...) }

// Policy returns the effective intermediate policy, defaults filled in.
func (a *Authority) Policy() Policy { return a.policy }

// verifyChain verifies chain[0] against roots with chain[1:] as
// intermediates at time now, for any extended key usage.
func verifyChain(chain, roots []*x509.Certificate, now time.Time) ([][]*x509.Certificate, error) {
	rootPool := x509.NewCertPool()
	for _, r := range roots {
		rootPool.AddCert(r)
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	return chain[0].Verify(x509.VerifyOptions{
		Roots:         rootPool,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
}

// CrossSign certifies the key of another root (next, self-signed) with this
// authority: same subject, key and SubjectKeyId as next, issued by this
// authority's certificate. A chain through the cross certificate reaches
// this authority's root, so peers that trust only the old root accept
// intermediates signed by the new one.
func (a *Authority) CrossSign(next *x509.Certificate) (*x509.Certificate, error) {
	if !isSelfSigned(next) || !next.IsCA {
		return nil, errors.New("cross-sign: the new root is not a self-signed CA")
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	notBefore := a.now().Add(-a.policy.Backdate)
	if notBefore.Before(a.Certificate().NotBefore) {
		notBefore = a.Certificate().NotBefore
	}
	notAfter := next.NotAfter
	if a.Certificate().NotAfter.Before(notAfter) {
		notAfter = a.Certificate().NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               next.Subject,
		NotBefore:             notBefore.UTC(),
		NotAfter:              notAfter.UTC(),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		SubjectKeyId:          next.SubjectKeyId,
		AuthorityKeyId:        a.Certificate().SubjectKeyId,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.Certificate(), next.PublicKey, a.signer)
	if err != nil {
		return nil, fmt.Errorf("cross-sign: %w", err)
	}
	return x509.ParseCertificate(der)
}
