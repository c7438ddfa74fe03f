package kms

import (
	"crypto"
	"fmt"
	"io"

	"github.com/meshroot/meshroot/keys"
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
	if err := keys.VerifySignature(s.pub, digest, sig, opts); err != nil {
		return nil, fmt.Errorf("%s: the KMS returned a signature that does not verify against the key's public key (%v): refusing it", s.what, err)
	}
	return sig, nil
}
