package pluginhost

import (
	"context"
	"crypto"
	"crypto/rsa"
	"fmt"
	"io"
	"time"

	pluginv1 "github.com/meshroot/meshroot/api/meshroot/plugin/v1"
	"github.com/meshroot/meshroot/keys"
)

// signTimeout bounds one Sign: crypto.Signer takes no context.
const signTimeout = 60 * time.Second

// remoteSigner signs with a key that a key manager in the plugin holds.
// Its public key was fetched once; each Sign is one call to the plugin,
// and the signature is verified here before it is returned.
type remoteSigner struct {
	m   *remoteManager
	ref string
	pub crypto.PublicKey
}

// Public returns the key's public key.
func (s *remoteSigner) Public() crypto.PublicKey { return s.pub }

// Sign has the plugin sign digest (the rand reader is not used: the key
// manager makes its own randomness).
func (s *remoteSigner) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	what := s.m.what + ": sign with " + s.ref
	if opts == nil {
		return nil, fmt.Errorf("%s: no signer options: pass the digest's hash (crypto.SHA256 ...)", what)
	}
	h := opts.HashFunc()
	if h == 0 || len(digest) != h.Size() {
		return nil, fmt.Errorf("%s: digest of %d bytes does not match hash %v", what, len(digest), h)
	}
	req := &pluginv1.SignRequest{Manager: s.m.uri, Ref: s.ref, Digest: digest, Hash: uint32(h)}
	if pss, ok := opts.(*rsa.PSSOptions); ok {
		req.Pss, req.PssSaltLength = true, int32(pss.SaltLength)
	}
	ctx, cancel := context.WithTimeout(context.Background(), signTimeout)
	defer cancel()
	c, err := s.m.client(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := c.Sign(ctx, req)
	if err != nil {
		return nil, fail(s.m.what, err)
	}
	if err := keys.VerifySignature(s.pub, digest, resp.GetSignature(), opts); err != nil {
		return nil, fmt.Errorf("%s: meshroot-plugin returned a signature that does not verify against the key's public key (%v): refusing it", what, err)
	}
	return resp.GetSignature(), nil
}
