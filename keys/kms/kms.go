package kms

import (
	"context"
	"crypto"
	"errors"
	"fmt"

	"go.step.sm/crypto/kms/apiv1"
	"go.step.sm/crypto/kms/uri"

	"github.com/meshroot/meshroot/keys"
	"github.com/meshroot/meshroot/keys/pkcs11"
)

// The KMS types this key manager routes URIs to.
const (
	SoftKMS  = string(apiv1.SoftKMS)
	AWSKMS   = string(apiv1.AmazonKMS)
	CloudKMS = string(apiv1.CloudKMS)
	AzureKMS = string(apiv1.AzureKMS)
	PKCS11   = string(apiv1.PKCS11)
)

// Options configure a KMS KeyManager.
type Options struct {
	// URI selects the KMS and configures it; see the package documentation.
	URI string
	// Passphrase encrypts the key files of softkms. Unused by the others.
	Passphrase []byte
	// InsecurePlaintext lets softkms write unencrypted key files. For
	// development only.
	InsecurePlaintext bool
}

// KeyManager creates and uses keys in one KMS. It is safe for concurrent
// use; Close releases the KMS client.
type KeyManager struct {
	typ string
	b   backend
}

var _ keys.KeyManager = (*KeyManager)(nil)

// backend is one kind of KMS behind the KeyManager.
type backend interface {
	createKey(ctx context.Context, name string, kt keys.KeyType) (keys.Key, error)
	signer(ctx context.Context, ref string) (crypto.Signer, error)
	listKeys(ctx context.Context) ([]keys.Key, error)
	close() error
}

// New parses opts.URI and returns a key manager for that KMS. For the cloud
// KMSes it only checks the URI: the client is created, and credentials
// looked up, on first use. A pkcs11: URI opens the token at once.
func New(ctx context.Context, opts Options) (*KeyManager, error) {
	if opts.URI == "" {
		return nil, errors.New("kms key manager: no KMS URI given: want softkms:dir=..., awskms:region=..., cloudkms:key-ring=..., azurekms:vault=... or pkcs11:...")
	}
	u, err := uri.Parse(opts.URI)
	if err != nil {
		return nil, fmt.Errorf("kms key manager: URI %q cannot be parsed: %v", opts.URI, err)
	}
	typ, err := apiv1.TypeOf(opts.URI)
	if err != nil {
		return nil, fmt.Errorf("kms key manager: URI scheme %q is not a KMS: use softkms:, awskms:, cloudkms:, azurekms: or pkcs11:", u.Scheme)
	}
	var b backend
	switch typ {
	case apiv1.PKCS11:
		km, err := pkcs11.New(ctx, pkcs11.Options{URI: opts.URI})
		if err != nil {
			return nil, err
		}
		b = pkcs11Backend{km}
	case apiv1.SoftKMS:
		b, err = newSoft(u, opts)
	case apiv1.AmazonKMS, apiv1.CloudKMS, apiv1.AzureKMS:
		b, err = newCloud(typ, opts.URI, u)
	default:
		return nil, fmt.Errorf("kms key manager: KMS type %s is not supported by meshroot: use softkms:, awskms:, cloudkms:, azurekms: or pkcs11:", typ)
	}
	if err != nil {
		return nil, err
	}
	return &KeyManager{typ: string(typ), b: b}, nil
}

// Type names the KMS: softkms, awskms, cloudkms, azurekms or pkcs11.
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

// ListKeys lists the keys of softkms and pkcs11 key managers. The cloud
// KMSes cannot search through step's kms API: there it returns an error
// that wraps errors.ErrUnsupported.
func (m *KeyManager) ListKeys(ctx context.Context) ([]keys.Key, error) {
	return m.b.listKeys(ctx)
}

// Close releases the KMS client or token.
func (m *KeyManager) Close() error { return m.b.close() }

func checkName(typ, name string) error {
	if err := keys.CheckKeyName(name); err != nil {
		return fmt.Errorf("%s key manager: %w", typ, err)
	}
	return nil
}

// signatureAlgorithm maps a key type to the step kms algorithm and RSA size.
func signatureAlgorithm(typ string, kt keys.KeyType) (apiv1.SignatureAlgorithm, int, error) {
	switch kt {
	case keys.ECP256:
		return apiv1.ECDSAWithSHA256, 0, nil
	case keys.ECP384:
		return apiv1.ECDSAWithSHA384, 0, nil
	case keys.RSA2048:
		return apiv1.SHA256WithRSA, 2048, nil
	case keys.RSA3072:
		return apiv1.SHA256WithRSA, 3072, nil
	case keys.RSA4096:
		return apiv1.SHA256WithRSA, 4096, nil
	}
	return 0, 0, fmt.Errorf("%s key manager: key type %q is not supported: use one of %v", typ, kt, keys.KeyTypes)
}

// pkcs11Backend delegates to the pkcs11 key manager.
type pkcs11Backend struct{ km *pkcs11.KeyManager }

func (p pkcs11Backend) createKey(ctx context.Context, name string, kt keys.KeyType) (keys.Key, error) {
	return p.km.CreateKey(ctx, name, kt)
}

func (p pkcs11Backend) signer(ctx context.Context, ref string) (crypto.Signer, error) {
	return p.km.Signer(ctx, ref)
}

func (p pkcs11Backend) listKeys(ctx context.Context) ([]keys.Key, error) {
	return p.km.ListKeys(ctx)
}

func (p pkcs11Backend) close() error { return p.km.Close() }
