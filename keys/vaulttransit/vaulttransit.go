// Package vaulttransit is the key manager whose keys live in HashiCorp
// Vault's Transit secrets engine: they are created there, never exported,
// and every signature is made by Vault (transit/sign with prehashed=true).
//
// References look like
//
//	vault-transit://transit/root-1
//	vault-transit://transit/root-1?version=2
//
// where "transit" is the engine's mount path (it may contain slashes) and
// root-1 the key name. Signer pins the key version it loads (the latest,
// unless the reference names one), so rotating the Transit key does not
// change the key under an existing certificate; name the version to keep
// using an older one after a rotation.
//
// Every signature returned by Vault is verified against the key's public
// key before it is handed on: a misbehaving Vault cannot yield a
// certificate that does not verify.
package vaulttransit

import (
	"context"
	"crypto"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.step.sm/crypto/pemutil"

	"github.com/meshroot/meshroot/internal/vaultclient"
	"github.com/meshroot/meshroot/internal/vaultconf"
	"github.com/meshroot/meshroot/keys"
)

// Scheme starts every reference: vault-transit://MOUNT/KEY.
const Scheme = "vault-transit"

// DefaultMount is where the Transit engine is mounted by default.
const DefaultMount = "transit"

const component = "vault-transit key manager"

// Options configure a Transit KeyManager.
type Options struct {
	// Vault says where Vault is and how to log in.
	Vault vaultclient.Config
	// Mount is the Transit mount where CreateKey makes keys and ListKeys
	// looks (default "transit").
	Mount string
}

// KeyManager creates Transit keys and signs with them through Vault.
type KeyManager struct {
	c     *vaultclient.Client
	mount string
}

var _ keys.KeyManager = (*KeyManager)(nil)

// New connects to Vault and logs in.
func New(ctx context.Context, opts Options) (*KeyManager, error) {
	mount, err := vaultconf.SecretsMount(component, opts.Mount, DefaultMount)
	if err != nil {
		return nil, err
	}
	c, err := vaultclient.New(ctx, component, opts.Vault)
	if err != nil {
		return nil, err
	}
	return &KeyManager{c: c, mount: mount}, nil
}

// Close stops token renewal.
func (m *KeyManager) Close() error {
	m.c.Close()
	return nil
}

var keyPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// Ref returns the reference of key name in mount.
func Ref(mount, name string) string { return Scheme + "://" + mount + "/" + name }

// ParseRef splits a reference into mount, key name and version (0 for the
// latest).
func ParseRef(ref string) (mount, name string, version int, err error) {
	rest, ok := strings.CutPrefix(ref, Scheme+"://")
	if !ok {
		return "", "", 0, fmt.Errorf("%s: key reference %q is not a Transit key: want %s://MOUNT/KEY", component, ref, Scheme)
	}
	if path, query, found := strings.Cut(rest, "?"); found {
		rest = path
		v, ok := strings.CutPrefix(query, "version=")
		n, err := strconv.Atoi(v)
		if !ok || err != nil || n < 1 {
			return "", "", 0, fmt.Errorf("%s: key reference %q: the query must be version=N with N >= 1", component, ref)
		}
		version = n
	}
	i := strings.LastIndexByte(rest, '/')
	if i <= 0 || !vaultconf.ValidMount(rest[:i]) || !keyPattern.MatchString(rest[i+1:]) {
		return "", "", 0, fmt.Errorf("%s: key reference %q is malformed: want %s://MOUNT/KEY", component, ref, Scheme)
	}
	return rest[:i], rest[i+1:], version, nil
}

// transitType maps meshroot key types to the Transit types it creates.
var transitType = map[keys.KeyType]string{
	keys.ECP256:  "ecdsa-p256",
	keys.ECP384:  "ecdsa-p384",
	keys.RSA4096: "rsa-4096",
}

// CreateKey creates a non-exportable Transit key name of type kt in the
// configured mount: ec-p256, ec-p384 or rsa-4096. It refuses a name that
// exists.
func (m *KeyManager) CreateKey(ctx context.Context, name string, kt keys.KeyType) (keys.Key, error) {
	if err := keys.CheckKeyName(name); err != nil {
		return keys.Key{}, fmt.Errorf("%s: %w", component, err)
	}
	typ, ok := transitType[kt]
	if !ok {
		return keys.Key{}, fmt.Errorf("%s: key type %q is not offered for Transit keys: use ec-p256, ec-p384 or rsa-4096", component, kt)
	}
	path := m.mount + "/keys/" + name
	what := fmt.Sprintf("create %s key %s", kt, name)
	existing, err := m.c.Read(ctx, what, path)
	if err != nil {
		return keys.Key{}, err
	}
	if existing != nil {
		return keys.Key{}, keys.Exists(fmt.Errorf("%s: key %s already exists in %s: choose another name", component, name, m.mount))
	}
	if _, err := m.c.Write(ctx, what, path, map[string]any{
		"type":                   typ,
		"exportable":             false,
		"allow_plaintext_backup": false,
	}); err != nil {
		return keys.Key{}, err
	}
	info, err := m.keyInfo(ctx, m.mount, name, 0)
	if err != nil {
		return keys.Key{}, err
	}
	if info.kt != kt {
		return keys.Key{}, fmt.Errorf("%s: %s: Vault made a %s key", component, what, info.typ)
	}
	return keys.Key{Ref: Ref(m.mount, name), Type: kt, Public: info.pub, CreatedAt: info.created}, nil
}

// Signer loads the public key of the key ref names and returns a signer
// that asks Vault for each signature, with that key version.
func (m *KeyManager) Signer(ctx context.Context, ref string) (crypto.Signer, error) {
	mount, name, version, err := ParseRef(ref)
	if err != nil {
		return nil, err
	}
	info, err := m.keyInfo(ctx, mount, name, version)
	if err != nil {
		return nil, err
	}
	if info.ktErr != nil {
		return nil, fmt.Errorf("%s: key %s: %w", component, ref, info.ktErr)
	}
	return &signer{c: m.c, mount: mount, name: name, version: info.version, pub: info.pub, rsa: strings.HasPrefix(info.typ, "rsa-")}, nil
}

// ListKeys lists the asymmetric signing keys in the configured mount,
// ordered by reference.
func (m *KeyManager) ListKeys(ctx context.Context) ([]keys.Key, error) {
	s, err := m.c.List(ctx, "list keys", m.mount+"/keys")
	if err != nil {
		return nil, err
	}
	if s == nil {
		return nil, nil
	}
	raw, _ := s.Data["keys"].([]any)
	var list []keys.Key
	for _, r := range raw {
		name, _ := r.(string)
		if name == "" {
			continue
		}
		info, err := m.keyInfo(ctx, m.mount, name, 0)
		if errors.Is(err, errNotSigning) {
			continue
		}
		if err != nil {
			return nil, err
		}
		list = append(list, keys.Key{Ref: Ref(m.mount, name), Type: info.kt, Public: info.pub, CreatedAt: info.created})
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Ref < list[j].Ref })
	return list, nil
}

var errNotSigning = errors.New("not an asymmetric signing key")

type keyInfo struct {
	typ     string // Transit type
	kt      keys.KeyType
	version int
	pub     crypto.PublicKey
	created time.Time
	ktErr   error // the key type is not one meshroot takes for a CA
}

// keyInfo reads MOUNT/keys/NAME and the public key of version (0: latest).
func (m *KeyManager) keyInfo(ctx context.Context, mount, name string, version int) (keyInfo, error) {
	path := mount + "/keys/" + name
	what := "load key " + name
	s, err := m.c.Read(ctx, what, path)
	if err != nil {
		return keyInfo{}, err
	}
	if s == nil {
		return keyInfo{}, keys.NotFound(fmt.Errorf("%s: %s: Vault %s: no such key: it was deleted, or the mount or name is wrong", component, what, path))
	}
	info := keyInfo{}
	info.typ, _ = s.Data["type"].(string)
	switch info.typ {
	case "ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "rsa-2048", "rsa-3072", "rsa-4096":
	default:
		return keyInfo{}, fmt.Errorf("%s: %s: Transit key %s is of type %q, which cannot sign certificates: %w", component, what, path, info.typ, errNotSigning)
	}
	latest, err := intField(s.Data["latest_version"])
	if err != nil {
		return keyInfo{}, fmt.Errorf("%s: %s: Vault %s: latest_version: %v", component, what, path, err)
	}
	info.version = latest
	if version != 0 {
		info.version = version
	}
	versions, _ := s.Data["keys"].(map[string]any)
	v, ok := versions[strconv.Itoa(info.version)].(map[string]any)
	if !ok {
		return keyInfo{}, fmt.Errorf("%s: %s: Vault %s has no version %d (latest is %d; older ones may be trimmed by min_available_version)", component, what, path, info.version, latest)
	}
	pubPEM, _ := v["public_key"].(string)
	if pubPEM == "" {
		return keyInfo{}, fmt.Errorf("%s: %s: Vault %s version %d has no public_key", component, what, path, info.version)
	}
	pub, err := pemutil.ParseKey([]byte(pubPEM))
	if err != nil {
		return keyInfo{}, fmt.Errorf("%s: %s: Vault %s version %d: public key: %v", component, what, path, info.version, err)
	}
	info.pub = pub
	info.kt, info.ktErr = keys.KeyTypeOf(pub)
	if ct, ok := v["creation_time"].(string); ok {
		if t, err := time.Parse(time.RFC3339Nano, ct); err == nil {
			info.created = t.UTC()
		}
	}
	return info, nil
}

func intField(v any) (int, error) {
	switch n := v.(type) {
	case json.Number:
		i, err := n.Int64()
		return int(i), err
	case float64:
		return int(n), nil
	case int:
		return n, nil
	}
	return 0, fmt.Errorf("unexpected %T", v)
}

// signer signs through transit/sign with a pinned key version.
type signer struct {
	c       *vaultclient.Client
	mount   string
	name    string
	version int
	pub     crypto.PublicKey
	rsa     bool
}

// Public returns the public key of the pinned key version.
func (s *signer) Public() crypto.PublicKey { return s.pub }

// hashAlgorithm names a digest for Transit.
func hashAlgorithm(h crypto.Hash) (string, bool) {
	switch h {
	case crypto.SHA256:
		return "sha2-256", true
	case crypto.SHA384:
		return "sha2-384", true
	case crypto.SHA512:
		return "sha2-512", true
	}
	return "", false
}

// Sign asks Vault to sign digest (prehashed) and verifies the signature
// before returning it. RSA keys sign PKCS #1 v1.5, or PSS when opts is
// *rsa.PSSOptions.
func (s *signer) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	what := fmt.Sprintf("sign with key %s (version %d)", s.name, s.version)
	if opts == nil {
		return nil, fmt.Errorf("%s: %s: no signer options: pass the digest's hash", component, what)
	}
	h := opts.HashFunc()
	alg, ok := hashAlgorithm(h)
	if !ok {
		return nil, fmt.Errorf("%s: %s: hash %v is not supported: Transit signs SHA-256, SHA-384 and SHA-512 digests", component, what, h)
	}
	if len(digest) != h.Size() {
		return nil, fmt.Errorf("%s: %s: digest is %d bytes, %v needs %d", component, what, len(digest), h, h.Size())
	}
	data := map[string]any{
		"input":                base64.StdEncoding.EncodeToString(digest),
		"prehashed":            true,
		"hash_algorithm":       alg,
		"marshaling_algorithm": "asn1",
		"key_version":          s.version,
	}
	if s.rsa {
		data["signature_algorithm"] = "pkcs1v15"
		if pss, ok := opts.(*rsa.PSSOptions); ok {
			data["signature_algorithm"] = "pss"
			switch pss.SaltLength {
			case rsa.PSSSaltLengthEqualsHash:
				data["salt_length"] = "hash"
			case rsa.PSSSaltLengthAuto:
				data["salt_length"] = "auto"
			default:
				data["salt_length"] = strconv.Itoa(pss.SaltLength)
			}
		}
	} else if _, ok := opts.(*rsa.PSSOptions); ok {
		return nil, fmt.Errorf("%s: %s: PSS options given for an ECDSA key", component, what)
	}
	path := s.mount + "/sign/" + s.name
	resp, err := s.c.Write(context.Background(), what, path, data)
	if err != nil {
		return nil, err
	}
	if resp == nil {
		return nil, fmt.Errorf("%s: %s: Vault %s returned nothing", component, what, path)
	}
	sig, err := parseSignature(resp.Data["signature"])
	if err != nil {
		return nil, fmt.Errorf("%s: %s: Vault %s: %v", component, what, path, err)
	}
	if err := keys.VerifySignature(s.pub, digest, sig, opts); err != nil {
		return nil, fmt.Errorf("%s: %s: Vault %s returned a signature that does not verify against key version %d's public key (%v): refusing it", component, what, path, s.version, err)
	}
	return sig, nil
}

// parseSignature decodes "vault:vN:BASE64".
func parseSignature(v any) ([]byte, error) {
	str, _ := v.(string)
	parts := strings.SplitN(str, ":", 3)
	if len(parts) != 3 || parts[0] != "vault" || !strings.HasPrefix(parts[1], "v") {
		return nil, errors.New("the signature is not in the vault:vN:BASE64 form")
	}
	sig, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil {
		return nil, fmt.Errorf("the signature is not base64: %v", err)
	}
	return sig, nil
}
