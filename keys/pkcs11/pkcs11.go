//go:build cgo && !nopkcs11

package pkcs11

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	"github.com/ThalesGroup/crypto11"
	p11 "github.com/miekg/pkcs11"
	"go.step.sm/crypto/kms/apiv1"
	steppkcs11 "go.step.sm/crypto/kms/pkcs11"

	"github.com/meshroot/meshroot/keys"
	"github.com/meshroot/meshroot/keys/internal/stepkms"
)

// KeyManager keeps keys in one PKCS#11 token. It is safe for concurrent
// use; Close releases the token.
type KeyManager struct {
	kms *steppkcs11.PKCS11
	tok token

	// mu guards closed. Signing holds it for reading, so Close waits for
	// signatures in flight instead of pulling the module from under them.
	mu     sync.RWMutex
	closed bool
}

var (
	_ keys.KeyManager = (*KeyManager)(nil)
	_ keys.Deleter    = (*KeyManager)(nil)
)

// New opens the token that opts.URI names and logs in with its PIN. It
// fails with an error that says what to check when the module cannot be
// loaded, the token is not there, or the PIN is wrong.
func New(ctx context.Context, opts Options) (*KeyManager, error) {
	tok, err := parseToken(opts.URI)
	if err != nil {
		return nil, err
	}
	if err := tok.checkModule(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("pkcs11 key manager: open %s: %w", tok, err)
	}
	logins.Lock()
	defer logins.Unlock()
	key, sum := tok.loginKey(), sha256.Sum256([]byte(tok.pin))
	l := logins.m[key]
	if l != nil && subtle.ConstantTimeCompare(l.pin[:], sum[:]) != 1 {
		return nil, fmt.Errorf("pkcs11 key manager: cannot open %s: %s (it is open in this process with another PIN, which the token accepted)", tok, codeHint(p11.CKR_PIN_INCORRECT, tok))
	}
	k, err := steppkcs11.New(ctx, apiv1.Options{Type: apiv1.PKCS11, URI: tok.kmsURI(), Pin: tok.pin})
	if err != nil {
		return nil, tok.openError(err)
	}
	if l == nil {
		l = &login{pin: sum}
		logins.m[key] = l
	}
	l.n++
	return &KeyManager{kms: k, tok: tok}, nil
}

// logins records, per token, the digest of the PIN the token accepted in
// this process. PKCS#11 login state belongs to the process: once a session
// is logged in, C_Login with any PIN answers CKR_USER_ALREADY_LOGGED_IN, so
// a second key manager with a wrong PIN would get in unchecked. It is
// checked against the accepted PIN instead.
var logins = struct {
	sync.Mutex
	m map[string]*login
}{m: map[string]*login{}}

type login struct {
	pin [sha256.Size]byte
	n   int // open key managers
}

// Close logs out and releases the token. Signers handed out earlier fail
// afterwards.
func (m *KeyManager) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	logins.Lock()
	if l := logins.m[m.tok.loginKey()]; l != nil {
		if l.n--; l.n <= 0 {
			delete(logins.m, m.tok.loginKey())
		}
	}
	logins.Unlock()
	if err := m.kms.Close(); err != nil {
		return fmt.Errorf("pkcs11 key manager: close %s: %w", m.tok, err)
	}
	return nil
}

// CreateKey generates a key pair of type kt inside the token, labelled
// name, with a fresh random id. The private key is sensitive and not
// extractable. It refuses when the token already holds a key labelled name.
func (m *KeyManager) CreateKey(ctx context.Context, name string, kt keys.KeyType) (keys.Key, error) {
	if err := checkName(name); err != nil {
		return keys.Key{}, err
	}
	alg, bits, err := stepkms.SignatureAlgorithm("pkcs11 key manager", kt)
	if err != nil {
		return keys.Key{}, err
	}
	if err := m.enter(ctx, fmt.Sprintf("create key %q", name)); err != nil {
		return keys.Key{}, err
	}
	defer m.mu.RUnlock()

	// step's kms looks for an existing pair by id AND label; a fresh id
	// would never match, so look by label alone first.
	_, err = m.kms.GetPublicKey(&apiv1.GetPublicKeyRequest{Name: m.tok.objectURI(nil, name, false)})
	switch {
	case err == nil:
		return keys.Key{}, keys.Exists(fmt.Errorf("pkcs11 key manager: %s already holds a key labelled %q: choose another name, or delete the old key first", m.tok, name))
	case !errors.Is(err, apiv1.NotFoundError{}):
		return keys.Key{}, m.tok.opError(fmt.Sprintf("create key %q", name), err)
	}
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return keys.Key{}, fmt.Errorf("pkcs11 key manager: create key %s: random id: %w", name, err)
	}
	resp, err := m.kms.CreateKey(&apiv1.CreateKeyRequest{
		Name:               m.tok.objectURI(id, name, false),
		SignatureAlgorithm: alg,
		Bits:               bits,
	})
	if err != nil {
		return keys.Key{}, m.tok.opError(fmt.Sprintf("create %s key %q", kt, name), err)
	}
	if got, err := keys.KeyTypeOf(resp.PublicKey); err != nil || got != kt {
		return keys.Key{}, fmt.Errorf("pkcs11 key manager: create key %s: the token made a %s key, not %s", name, got, kt)
	}
	return keys.Key{
		Ref:       m.tok.objectURI(id, name, true),
		Type:      kt,
		Public:    resp.PublicKey,
		CreatedAt: time.Now().UTC().Truncate(time.Second),
	}, nil
}

// Signer finds the key pair that ref names in the token and returns a
// signer backed by it: the private key stays in the token.
func (m *KeyManager) Signer(ctx context.Context, ref string) (crypto.Signer, error) {
	id, label, err := m.tok.parseRef(ref)
	if err != nil {
		return nil, err
	}
	key := keyName(id, label)
	if err := m.enter(ctx, "load "+key); err != nil {
		return nil, err
	}
	defer m.mu.RUnlock()
	s, err := m.kms.CreateSigner(&apiv1.CreateSignerRequest{SigningKey: m.tok.objectURI(id, string(label), false)})
	if err != nil {
		return nil, m.tok.opError("load "+key, err)
	}
	if _, err := keys.KeyTypeOf(s.Public()); err != nil {
		return nil, fmt.Errorf("pkcs11 key manager: %s: %w", key, err)
	}
	return &signer{m: m, key: key, inner: s, pub: s.Public()}, nil
}

// DeleteKey destroys the key pair that ref names. Certificates signed by
// it stay valid but nothing can sign for them any more: use with care. It
// succeeds when the key is already gone.
func (m *KeyManager) DeleteKey(ctx context.Context, ref string) error {
	id, label, err := m.tok.parseRef(ref)
	if err != nil {
		return err
	}
	key := keyName(id, label)
	if err := m.enter(ctx, "delete "+key); err != nil {
		return err
	}
	defer m.mu.RUnlock()
	if err := m.kms.DeleteKey(m.tok.objectURI(id, string(label), false)); err != nil {
		return m.tok.opError("delete "+key, err)
	}
	return nil
}

// ListKeys lists the key pairs in the token, ordered by label. The PKCS#11
// kms has no search, so this opens a second, short-lived session on the
// same module (crypto11 shares the loaded module) to enumerate them.
// Objects without a label, or whose public key is not a supported CA key,
// are listed with an empty Type.
func (m *KeyManager) ListKeys(ctx context.Context) ([]keys.Key, error) {
	if err := m.enter(ctx, "list keys"); err != nil {
		return nil, err
	}
	defer m.mu.RUnlock()
	cfg := m.tok.crypto11Config()
	c, err := crypto11.Configure(cfg)
	if err != nil {
		return nil, m.tok.openError(err)
	}
	defer c.Close()
	pairs, err := c.FindAllKeyPairs()
	if err != nil {
		return nil, m.tok.opError("list keys", err)
	}
	list := make([]keys.Key, 0, len(pairs))
	for _, p := range pairs {
		attrs, err := c.GetAttributes(p, []crypto11.AttributeType{crypto11.CkaId, crypto11.CkaLabel})
		if err != nil {
			return nil, m.tok.opError("list keys: read key attributes", err)
		}
		var id, label []byte
		if a := attrs[crypto11.CkaId]; a != nil {
			id = a.Value
		}
		if a := attrs[crypto11.CkaLabel]; a != nil {
			label = a.Value
		}
		k := keys.Key{Ref: m.tok.objectURI(id, string(label), true), Public: p.Public()}
		k.Type, _ = keys.KeyTypeOf(k.Public)
		list = append(list, k)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Ref < list[j].Ref })
	return list, nil
}

// enter takes the read lock unless the key manager is closed or ctx is
// done; on success the caller must RUnlock.
func (m *KeyManager) enter(ctx context.Context, what string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("pkcs11 key manager: %s: %w", what, err)
	}
	m.mu.RLock()
	if m.closed {
		m.mu.RUnlock()
		return fmt.Errorf("pkcs11 key manager: %s: the key manager for %s is closed", what, m.tok)
	}
	return nil
}

// signer is a crypto.Signer whose key lives in the token. It turns PKCS#11
// failures (and any panic in the binding) into errors that name the key.
type signer struct {
	m     *KeyManager
	key   string // "key \"root-1\" (id ...)", for errors
	inner crypto.Signer
	pub   crypto.PublicKey
}

// Public returns the key pair's public key, read when the signer was made.
func (s *signer) Public() crypto.PublicKey { return s.pub }

// Sign signs digest in the token. opts must name the digest's hash;
// *rsa.PSSOptions selects RSA-PSS.
func (s *signer) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) (sig []byte, err error) {
	if opts == nil {
		return nil, fmt.Errorf("pkcs11 key manager: sign with %s: no signer options: pass the digest's hash (crypto.SHA256 ...)", s.key)
	}
	if h := opts.HashFunc(); h != 0 && len(digest) != h.Size() {
		return nil, fmt.Errorf("pkcs11 key manager: sign with %s: digest is %d bytes, %s needs %d", s.key, len(digest), h, h.Size())
	}
	s.m.mu.RLock()
	defer s.m.mu.RUnlock()
	if s.m.closed {
		return nil, fmt.Errorf("pkcs11 key manager: sign with %s: the key manager for %s is closed", s.key, s.m.tok)
	}
	defer func() {
		if p := recover(); p != nil {
			sig, err = nil, fmt.Errorf("pkcs11 key manager: sign with %s: the PKCS#11 module failed (%v): check that %s is present and healthy", s.key, p, s.m.tok)
		}
	}()
	sig, err = s.inner.Sign(r, digest, opts)
	if err != nil {
		return nil, s.m.tok.opError("sign with "+s.key, err)
	}
	return sig, nil
}
