package pluginhost

import (
	"context"
	"crypto"
	"crypto/x509"
	"fmt"
	"time"

	pluginv1 "github.com/meshroot/meshroot/api/meshroot/plugin/v1"
	"github.com/meshroot/meshroot/keys"
)

// KMSSchemes are the key manager schemes that run in the plugin.
var KMSSchemes = []string{"awskms", "cloudkms", "azurekms"}

// KeyBackend is a key catalog backend for schemes whose key managers run
// in the plugin that h starts.
func KeyBackend(h *Host, schemes ...string) keys.Backend {
	return keyBackend{h: h, schemes: schemes}
}

type keyBackend struct {
	h       *Host
	schemes []string
}

// Schemes lists the schemes the plugin serves for this backend.
func (b keyBackend) Schemes() []string { return b.schemes }

// Open has the plugin check uri and returns a key manager whose calls go
// to the plugin. It starts the plugin if it does not run.
func (b keyBackend) Open(ctx context.Context, uri string, _ keys.Config) (keys.KeyManager, error) {
	m := &remoteManager{h: b.h, uri: uri, what: keys.Scheme(uri) + " key manager"}
	c, err := m.client(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := c.OpenManager(ctx, &pluginv1.OpenManagerRequest{Manager: uri})
	if err != nil {
		return nil, fail(m.what, err)
	}
	if resp.GetDeleter() {
		return &remoteDeleter{m}, nil
	}
	return m, nil
}

// ManagerURI refuses, as the cloud KMS backend does: which cloud account,
// region and credentials a key is used with comes from the configuration,
// never from a stored reference.
func (b keyBackend) ManagerURI(ref string, _ keys.Config) (string, error) {
	s := keys.Scheme(ref)
	return "", keys.NotConfigured(fmt.Errorf("%s key manager: key %s is in %s, which the configuration does not name: configure the key manager (--key %s:..., or keys.create in the config) to use it", s, ref, s, s))
}

// remoteManager is a key manager in the plugin.
type remoteManager struct {
	h    *Host
	uri  string
	what string
}

var _ keys.KeyManager = (*remoteManager)(nil)

func (m *remoteManager) client(ctx context.Context) (pluginv1.KeyManagerClient, error) {
	conn, err := m.h.connect(ctx, m.what)
	if err != nil {
		return nil, err
	}
	return pluginv1.NewKeyManagerClient(conn), nil
}

// CreateKey creates a key in the plugin's key manager.
func (m *remoteManager) CreateKey(ctx context.Context, name string, kt keys.KeyType) (keys.Key, error) {
	c, err := m.client(ctx)
	if err != nil {
		return keys.Key{}, err
	}
	info, err := c.CreateKey(ctx, &pluginv1.CreateKeyRequest{Manager: m.uri, Name: name, KeyType: string(kt)})
	if err != nil {
		return keys.Key{}, fail(m.what, err)
	}
	return m.key(info)
}

// Signer returns a signer whose public key is fetched now and whose Sign
// asks the plugin.
func (m *remoteManager) Signer(ctx context.Context, ref string) (crypto.Signer, error) {
	c, err := m.client(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := c.PublicKey(ctx, &pluginv1.KeyRequest{Manager: m.uri, Ref: ref})
	if err != nil {
		return nil, fail(m.what, err)
	}
	pub, err := x509.ParsePKIXPublicKey(resp.GetPublicKey())
	if err != nil {
		return nil, fmt.Errorf("%s: key %s: meshroot-plugin sent a public key that cannot be parsed: %v", m.what, ref, err)
	}
	if _, err := keys.KeyTypeOf(pub); err != nil {
		return nil, fmt.Errorf("%s: key %s: %w", m.what, ref, err)
	}
	return &remoteSigner{m: m, ref: ref, pub: pub}, nil
}

// ListKeys lists the plugin's key manager's keys.
func (m *remoteManager) ListKeys(ctx context.Context) ([]keys.Key, error) {
	c, err := m.client(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := c.ListKeys(ctx, &pluginv1.ListKeysRequest{Manager: m.uri})
	if err != nil {
		return nil, fail(m.what, err)
	}
	out := make([]keys.Key, 0, len(resp.GetKeys()))
	for _, info := range resp.GetKeys() {
		k, err := m.key(info)
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, nil
}

func (m *remoteManager) key(info *pluginv1.KeyInfo) (keys.Key, error) {
	k := keys.Key{Ref: info.GetRef(), Type: keys.KeyType(info.GetKeyType())}
	if der := info.GetPublicKey(); len(der) > 0 {
		pub, err := x509.ParsePKIXPublicKey(der)
		if err != nil {
			return keys.Key{}, fmt.Errorf("%s: key %s: meshroot-plugin sent a public key that cannot be parsed: %v", m.what, k.Ref, err)
		}
		k.Public = pub
	}
	if ns := info.GetCreatedAtUnixNano(); ns != 0 {
		k.CreatedAt = time.Unix(0, ns).UTC()
	}
	return k, nil
}

// remoteDeleter is a key manager in the plugin that can delete keys.
type remoteDeleter struct{ *remoteManager }

var _ keys.Deleter = remoteDeleter{}

// DeleteKey destroys the key in the plugin's key manager.
func (m remoteDeleter) DeleteKey(ctx context.Context, ref string) error {
	c, err := m.client(ctx)
	if err != nil {
		return err
	}
	if _, err := c.DeleteKey(ctx, &pluginv1.KeyRequest{Manager: m.uri, Ref: ref}); err != nil {
		return fail(m.what, err)
	}
	return nil
}
