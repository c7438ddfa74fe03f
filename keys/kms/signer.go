package kms

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
)

// checkedSigner wraps a remote KMS signer: it names the backend in errors
// and verifies every signature against the public key before returning it,
// so a misbehaving KMS cannot yield a certificate that does not verify.
type checkedSigner struct {
	inner crypto.Signer
	pub   crypto.PublicKey
	what  string // "awskms key manager: sign with REF"
	fail  func(error) error
}

// Public returns the KMS key's public key.
func (s *checkedSigner) Public() crypto.PublicKey { return s.pub }

// Sign has the KMS sign digest and verifies the signature before
// returning it.
func (s *checkedSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if opts == nil {
		return nil, fmt.Errorf("%s: no signer options: pass the digest's hash (crypto.SHA256 ...)", s.what)
	}
	if h := opts.HashFunc(); h == 0 || len(digest) != h.Size() {
		return nil, fmt.Errorf("%s: digest of %d bytes does not match hash %v", s.what, len(digest), opts.HashFunc())
	}
	sig, err := s.inner.Sign(r, digest, opts)
	if err != nil {
		return nil, s.fail(err)
	}
	if err := verifySignature(s.pub, digest, sig, opts); err != nil {
		return nil, fmt.Errorf("%s: the KMS returned a signature that does not verify against the key's public key (%v): refusing it", s.what, err)
	}
	return sig, nil
}

// verifySignature checks sig over digest with pub, for ECDSA (ASN.1) and
// RSA (PKCS #1 v1.5, or PSS when opts is *rsa.PSSOptions).
func verifySignature(pub crypto.PublicKey, digest, sig []byte, opts crypto.SignerOpts) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(k, digest, sig) {
			return errors.New("ECDSA verification failed")
		}
		return nil
	case *rsa.PublicKey:
		if pss, ok := opts.(*rsa.PSSOptions); ok {
			return rsa.VerifyPSS(k, pss.HashFunc(), digest, sig, &rsa.PSSOptions{SaltLength: pss.SaltLength, Hash: pss.HashFunc()})
		}
		return rsa.VerifyPKCS1v15(k, opts.HashFunc(), digest, sig)
	}
	return fmt.Errorf("cannot verify signatures of %T keys", pub)
}
