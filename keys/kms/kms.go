package kms

import (
	"context"
	"crypto"
	"errors"
	"fmt"

	"go.step.sm/crypto/kms/apiv1"
	"go.step.sm/crypto/kms/uri"

	"github.com/meshroot/meshroot/keys"
)

// The KMS types (and URI schemes) this key manager serves.
const (
	AWSKMS   = string(apiv1.AmazonKMS)
	CloudKMS = string(apiv1.CloudKMS)
	AzureKMS = string(apiv1.AzureKMS)
)

// Options configure a KMS KeyManager.
type Options struct {
	// URI selects the KMS and configures it; see the package documentation.
	URI string
}

// KeyManager creates and uses keys in one cloud KMS. It is safe for
// concurrent use; Close releases the KMS client.
type KeyManager struct {
	typ string
	b   *cloudBackend
}

var _ keys.KeyManager = (*KeyManager)(nil)

// New parses opts.URI and returns a key manager for that KMS. It only
// checks the URI: the client is created, and credentials looked up, on
// first use.
func New(_ context.Context, opts Options) (*KeyManager, error) {
	if opts.URI == "" {
		return nil, errors.New("kms key manager: no KMS URI given: want awskms:region=..., cloudkms:key-ring=... or azurekms:vault=...")
	}
	u, err := uri.Parse(opts.URI)
	if err != nil {
		return nil, fmt.Errorf("kms key manager: URI %q cannot be parsed: %v", opts.URI, err)
	}
	typ, err := apiv1.TypeOf(opts.URI)
	if err != nil {
		return nil, fmt.Errorf("kms key manager: URI scheme %q is not a KMS: use awskms:, cloudkms: or azurekms:", u.Scheme)
	}
	switch typ {
	case apiv1.AmazonKMS, apiv1.CloudKMS, apiv1.AzureKMS:
	case apiv1.SoftKMS, apiv1.PKCS11:
		return nil, fmt.Errorf("kms key manager: %s: URIs are served by meshroot's own %s key manager, not through the kms package: open them through the key catalog", typ, typ)
	default:
		return nil, fmt.Errorf("kms key manager: KMS type %s is not supported by meshroot: use awskms:, cloudkms: or azurekms:", typ)
	}
	b, err := newCloud(typ, opts.URI, u)
	if err != nil {
		return nil, err
	}
	return &KeyManager{typ: string(typ), b: b}, nil
}

// Type names the KMS: awskms, cloudkms or azurekms.
func (m *KeyManager) Type() string { return m.typ }

// CreateKey creates a key of type kt named name in the KMS and returns its
// reference. It refuses a name that is taken where the KMS can tell (AWS
// KMS keys have no unique names: each call makes a new key).
func (m *KeyManager) CreateKey(ctx context.Context, name string, kt keys.KeyType) (keys.Key, error) {
	return m.b.createKey(ctx, name, kt)
}

// Signer returns a signer for the key that ref names. Its private key stays
// in the KMS.
func (m *KeyManager) Signer(ctx context.Context, ref string) (crypto.Signer, error) {
	if !uri.HasScheme(m.typ, ref) {
		return nil, fmt.Errorf("%s key manager: key reference %q is not a %s: reference: configure a key manager for its KMS", m.typ, ref, m.typ)
	}
	return m.b.signer(ctx, ref)
}

// ListKeys returns an error that wraps errors.ErrUnsupported: the cloud
// KMSes cannot search through step's kms API.
func (m *KeyManager) ListKeys(ctx context.Context) ([]keys.Key, error) {
	return m.b.listKeys(ctx)
}

// Close releases the KMS client.
func (m *KeyManager) Close() error { return m.b.close() }

func checkName(typ, name string) error {
	if err := keys.CheckKeyName(name); err != nil {
		return fmt.Errorf("%s key manager: %w", typ, err)
	}
	return nil
}

func init() { keys.Register(backend{}) }

// backend registers the cloud KMS schemes with the key catalog.
type backend struct{}

func (backend) Schemes() []string { return []string{AWSKMS, CloudKMS, AzureKMS} }

func (backend) Open(ctx context.Context, rawURI string, _ keys.Config) (keys.KeyManager, error) {
	return New(ctx, Options{URI: rawURI})
}

// ManagerURI refuses: which cloud account, region and credentials a key
// is used with comes from the configuration, never from a stored
// reference.
func (backend) ManagerURI(ref string, _ keys.Config) (string, error) {
	s := keys.Scheme(ref)
	return "", keys.NotConfigured(fmt.Errorf("%s key manager: key %s is in %s, which the configuration does not name: configure the key manager (--key %s:..., or keys.create in the config) to use it", s, ref, s, s))
}
