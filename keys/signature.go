package keys

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"errors"
	"fmt"
)

// VerifySignature checks sig over digest with pub, for ECDSA (ASN.1) and
// RSA (PKCS #1 v1.5, or PSS when opts is *rsa.PSSOptions). Backends whose
// signatures are made elsewhere (a KMS, Vault) verify every signature with
// it before handing it on, so a misbehaving service cannot yield a
// certificate that does not verify.
func VerifySignature(pub crypto.PublicKey, digest, sig []byte, opts crypto.SignerOpts) error {
	if opts == nil {
		return errors.New("no signer options: pass the digest's hash")
	}
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
