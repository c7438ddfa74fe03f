package pluginserve

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"sync"

	pluginv1 "github.com/meshroot/meshroot/api/meshroot/plugin/v1"
	"github.com/meshroot/meshroot/internal/pluginrpc"
	"github.com/meshroot/meshroot/keys"
	"github.com/meshroot/meshroot/keys/kms"
)

// KeySchemes are the key manager URI schemes the plugin serves.
var KeySchemes = []string{kms.AWSKMS, kms.CloudKMS, kms.AzureKMS}

// keyServer serves KeyManager over the key managers it opens, one per URI.
type keyServer struct {
	pluginv1.UnimplementedKeyManagerServer

	mu       sync.Mutex
	managers map[string]keys.KeyManager  // by key manager URI
	signers  map[[2]string]crypto.Signer // by key manager URI and reference
}

func newKeyServer() *keyServer {
	return &keyServer{managers: map[string]keys.KeyManager{}, signers: map[[2]string]crypto.Signer{}}
}

// manager opens, or returns the open, key manager for uri.
func (s *keyServer) manager(ctx context.Context, uri string) (keys.KeyManager, error) {
	if !slices.Contains(KeySchemes, keys.Scheme(uri)) {
		return nil, fmt.Errorf("meshroot-plugin: key manager scheme %q is not served by the plugin (it serves %v): %w", keys.Scheme(uri), KeySchemes, pluginrpc.ErrInvalid)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if km, ok := s.managers[uri]; ok {
		return km, nil
	}
	// The backend's own errors keep their kinds (as in meshroot before the
	// plugin: a bad URI is no usage error, a missing configuration is).
	km, err := keys.Open(ctx, uri, keys.Config{})
	if err != nil {
		return nil, err
	}
	s.managers[uri] = km
	return km, nil
}

// invalidError marks an error about the request (pluginrpc.ErrInvalid),
// keeping its message and kinds.
type invalidError struct{ error }

func (e invalidError) Unwrap() []error { return []error{e.error, pluginrpc.ErrInvalid} }

// OpenManager checks the URI and reports the key manager's capabilities.
func (s *keyServer) OpenManager(ctx context.Context, req *pluginv1.OpenManagerRequest) (*pluginv1.OpenManagerResponse, error) {
	km, err := s.manager(ctx, req.GetManager())
	if err != nil {
		return nil, pluginrpc.ToStatus(err)
	}
	_, deleter := km.(keys.Deleter)
	return &pluginv1.OpenManagerResponse{Deleter: deleter}, nil
}

// CreateKey creates a key in the named key manager.
func (s *keyServer) CreateKey(ctx context.Context, req *pluginv1.CreateKeyRequest) (*pluginv1.KeyInfo, error) {
	km, err := s.manager(ctx, req.GetManager())
	if err != nil {
		return nil, pluginrpc.ToStatus(err)
	}
	kt, err := keys.ParseKeyType(req.GetKeyType())
	if err != nil {
		return nil, pluginrpc.ToStatus(invalidError{err})
	}
	k, err := km.CreateKey(ctx, req.GetName(), kt)
	if err != nil {
		return nil, pluginrpc.ToStatus(err)
	}
	info, err := keyInfo(k)
	return info, pluginrpc.ToStatus(err)
}

// ListKeys lists the named key manager's keys.
func (s *keyServer) ListKeys(ctx context.Context, req *pluginv1.ListKeysRequest) (*pluginv1.ListKeysResponse, error) {
	km, err := s.manager(ctx, req.GetManager())
	if err != nil {
		return nil, pluginrpc.ToStatus(err)
	}
	list, err := km.ListKeys(ctx)
	if err != nil {
		return nil, pluginrpc.ToStatus(err)
	}
	resp := &pluginv1.ListKeysResponse{}
	for _, k := range list {
		info, err := keyInfo(k)
		if err != nil {
			return nil, pluginrpc.ToStatus(err)
		}
		resp.Keys = append(resp.Keys, info)
	}
	return resp, nil
}

func keyInfo(k keys.Key) (*pluginv1.KeyInfo, error) {
	info := &pluginv1.KeyInfo{Ref: k.Ref, KeyType: string(k.Type)}
	if k.Public != nil {
		der, err := x509.MarshalPKIXPublicKey(k.Public)
		if err != nil {
			return nil, fmt.Errorf("meshroot-plugin: key %s: public key: %w", k.Ref, err)
		}
		info.PublicKey = der
	}
	if !k.CreatedAt.IsZero() {
		info.CreatedAtUnixNano = k.CreatedAt.UnixNano()
	}
	return info, nil
}

// signer loads, or returns the loaded, signer of ref.
func (s *keyServer) signer(ctx context.Context, uri, ref string) (crypto.Signer, error) {
	km, err := s.manager(ctx, uri)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	sg, ok := s.signers[[2]string{uri, ref}]
	s.mu.Unlock()
	if ok {
		return sg, nil
	}
	sg, err = km.Signer(ctx, ref)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.signers[[2]string{uri, ref}] = sg
	s.mu.Unlock()
	return sg, nil
}

// PublicKey loads the key and returns its public key.
func (s *keyServer) PublicKey(ctx context.Context, req *pluginv1.KeyRequest) (*pluginv1.PublicKeyResponse, error) {
	sg, err := s.signer(ctx, req.GetManager(), req.GetRef())
	if err != nil {
		return nil, pluginrpc.ToStatus(err)
	}
	der, err := x509.MarshalPKIXPublicKey(sg.Public())
	if err != nil {
		return nil, pluginrpc.ToStatus(fmt.Errorf("meshroot-plugin: key %s: public key: %w", req.GetRef(), err))
	}
	return &pluginv1.PublicKeyResponse{PublicKey: der}, nil
}

// Sign signs the digest with the key.
func (s *keyServer) Sign(ctx context.Context, req *pluginv1.SignRequest) (*pluginv1.SignResponse, error) {
	sg, err := s.signer(ctx, req.GetManager(), req.GetRef())
	if err != nil {
		return nil, pluginrpc.ToStatus(err)
	}
	h := crypto.Hash(req.GetHash())
	if !h.Available() {
		return nil, pluginrpc.ToStatus(fmt.Errorf("meshroot-plugin: sign with %s: hash %d is not available: %w", req.GetRef(), req.GetHash(), pluginrpc.ErrInvalid))
	}
	var opts crypto.SignerOpts = h
	if req.GetPss() {
		opts = &rsa.PSSOptions{Hash: h, SaltLength: int(req.GetPssSaltLength())}
	}
	sig, err := sg.Sign(nil, req.GetDigest(), opts)
	if err != nil {
		return nil, pluginrpc.ToStatus(err)
	}
	return &pluginv1.SignResponse{Signature: sig}, nil
}

// DeleteKey destroys the key where the key manager can.
func (s *keyServer) DeleteKey(ctx context.Context, req *pluginv1.KeyRequest) (*pluginv1.DeleteKeyResponse, error) {
	km, err := s.manager(ctx, req.GetManager())
	if err != nil {
		return nil, pluginrpc.ToStatus(err)
	}
	d, ok := km.(keys.Deleter)
	if !ok {
		return nil, pluginrpc.ToStatus(fmt.Errorf("the %s key manager cannot delete keys: delete %s in the backend itself: %w", keys.Scheme(req.GetManager()), req.GetRef(), errors.ErrUnsupported))
	}
	if err := d.DeleteKey(ctx, req.GetRef()); err != nil {
		return nil, pluginrpc.ToStatus(err)
	}
	s.mu.Lock()
	delete(s.signers, [2]string{req.GetManager(), req.GetRef()})
	s.mu.Unlock()
	return &pluginv1.DeleteKeyResponse{}, nil
}

// close closes every key manager that can be closed.
func (s *keyServer) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for uri, km := range s.managers {
		if c, ok := km.(interface{ Close() error }); ok {
			_ = c.Close()
		}
		delete(s.managers, uri)
	}
}
