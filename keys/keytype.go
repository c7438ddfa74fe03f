package keys

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"fmt"
	"strings"

	"go.step.sm/crypto/keyutil"
)

// KeyType names a key algorithm and size.
type KeyType string

// The key types meshroot supports for CAs. Ed25519 is deliberately absent:
// Istio and Envoy do not accept it for CA certificates.
const (
	ECP256  KeyType = "ec-p256"
	ECP384  KeyType = "ec-p384"
	RSA2048 KeyType = "rsa-2048"
	RSA3072 KeyType = "rsa-3072"
	RSA4096 KeyType = "rsa-4096"
)

// DefaultKeyType is used when no key type is given.
const DefaultKeyType = ECP256

// KeyTypes lists every supported key type, strongest EC first.
var KeyTypes = []KeyType{ECP256, ECP384, RSA2048, RSA3072, RSA4096}

// ParseKeyType parses a key type name such as "ec-p256"; the empty string
// yields DefaultKeyType.
func ParseKeyType(s string) (KeyType, error) {
	if s == "" {
		return DefaultKeyType, nil
	}
	kt := KeyType(strings.ToLower(s))
	for _, k := range KeyTypes {
		if k == kt {
			return kt, nil
		}
	}
	names := make([]string, len(KeyTypes))
	for i, k := range KeyTypes {
		names[i] = string(k)
	}
	return "", fmt.Errorf("unknown key type %q: use one of %s", s, strings.Join(names, ", "))
}

// Generate creates a new in-memory private key of type kt.
func (kt KeyType) Generate() (crypto.Signer, error) {
	switch kt {
	case ECP256:
		return keyutil.GenerateSigner("EC", "P-256", 0)
	case ECP384:
		return keyutil.GenerateSigner("EC", "P-384", 0)
	case RSA2048:
		return keyutil.GenerateSigner("RSA", "", 2048)
	case RSA3072:
		return keyutil.GenerateSigner("RSA", "", 3072)
	case RSA4096:
		return keyutil.GenerateSigner("RSA", "", 4096)
	}
	return nil, fmt.Errorf("unknown key type %q", kt)
}

// KeyTypeOf returns the key type of a public key, or an error naming the
// key when meshroot does not support it for a CA.
func KeyTypeOf(pub crypto.PublicKey) (KeyType, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return ECP256, nil
		case elliptic.P384():
			return ECP384, nil
		}
		return "", fmt.Errorf("ECDSA curve %s is not supported: use P-256 or P-384", k.Curve.Params().Name)
	case *rsa.PublicKey:
		switch k.N.BitLen() {
		case 2048:
			return RSA2048, nil
		case 3072:
			return RSA3072, nil
		case 4096:
			return RSA4096, nil
		}
		return "", fmt.Errorf("RSA key size %d is not supported: use 2048, 3072 or 4096 bits", k.N.BitLen())
	case nil:
		return "", fmt.Errorf("no public key")
	}
	return "", fmt.Errorf("key algorithm %T is not supported for a CA: use ECDSA P-256/P-384 or RSA 2048-4096", pub)
}
