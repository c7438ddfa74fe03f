// Package keystest is the conformance suite for key managers: every
// backend (disk and softkms, pkcs11 on SoftHSM2, vaulttransit on a real
// Vault) runs Run against its real store, so that what the CA relies on
// holds whatever the backend:
//
//   - CreateKey makes each key type the backend offers, and refuses the
//     others, bad names and taken names (keys.ErrKeyExists);
//   - Signer(ref) signs, with signatures that verify under Key.Public, also
//     from a key manager opened afresh on the same store, and a root and
//     an intermediate made with the ca package verify;
//   - ListKeys lists every key created, ordered by reference;
//   - a missing key is keys.ErrKeyNotFound;
//   - Importer and Deleter, where the backend has them, do what they say.
package keystest

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/keys"
)

// Backend describes the key manager under test.
type Backend struct {
	// Open returns a key manager over the backend's store. Each call opens
	// a new one on the same store: keys made through one must be usable
	// through the next. The suite closes what it opens.
	Open func(t *testing.T) keys.KeyManager
	// KeyTypes are the key types CreateKey offers; the suite makes one key
	// of each. The first is used for the other checks.
	KeyTypes []keys.KeyType
	// Refused are supported meshroot key types that this backend refuses
	// (Vault Transit has no RSA 2048 or 3072 keys).
	Refused []keys.KeyType
	// RefPrefix starts every reference the backend hands out.
	RefPrefix string
	// MissingRef is a well-formed reference to a key that does not exist.
	MissingRef string
}

// Run runs the conformance suite. The subtests share one store and run in
// order; the store must start empty.
func Run(t *testing.T, b Backend) {
	t.Helper()
	if len(b.KeyTypes) == 0 || b.Open == nil || b.RefPrefix == "" || b.MissingRef == "" {
		t.Fatal("keystest: Backend needs Open, KeyTypes, RefPrefix and MissingRef")
	}
	ctx := context.Background()
	top := t
	km := open(t, b)
	created := map[string]keys.Key{} // by Ref
	var first keys.Key

	t.Run("CreateSignVerify", func(t *testing.T) {
		for _, kt := range b.KeyTypes {
			k, err := km.CreateKey(ctx, "key-"+string(kt), kt)
			if err != nil {
				t.Fatalf("CreateKey %s: %v", kt, err)
			}
			if !strings.HasPrefix(k.Ref, b.RefPrefix) || k.Type != kt || k.Public == nil {
				t.Errorf("CreateKey %s = %+v, want a %s... reference, the type and the public key", kt, k, b.RefPrefix)
			}
			if got, err := keys.KeyTypeOf(k.Public); err != nil || got != kt {
				t.Errorf("CreateKey %s made a %s public key (%v)", kt, got, err)
			}
			created[k.Ref] = k
			if kt == b.KeyTypes[0] {
				first = k
			}
			signAndVerify(t, km, k)
		}
	})
	if len(created) != len(b.KeyTypes) {
		t.Fatal("keystest: the keys could not be created; the other checks need them")
	}

	t.Run("RootAndIntermediateVerify", func(t *testing.T) {
		s, err := km.Signer(ctx, first.Ref)
		if err != nil {
			t.Fatal(err)
		}
		CheckChain(t, s)
	})

	t.Run("ListKeys", func(t *testing.T) {
		list, err := km.ListKeys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		checkListed(t, list, created)
	})

	t.Run("RefusesTakenName", func(t *testing.T) {
		_, err := km.CreateKey(ctx, "key-"+string(b.KeyTypes[0]), b.KeyTypes[0])
		if !errors.Is(err, keys.ErrKeyExists) {
			t.Errorf("CreateKey of a taken name: %v, want an error wrapping keys.ErrKeyExists", err)
		}
		signAndVerify(t, km, first) // the old key is untouched
	})

	t.Run("RefusesBadNames", func(t *testing.T) {
		for _, name := range []string{"", "../escape", "a/b", "Root 1", "-lead", strings.Repeat("a", 64), "x\x00y"} {
			if _, err := km.CreateKey(ctx, name, b.KeyTypes[0]); err == nil || !strings.Contains(err.Error(), "invalid") {
				t.Errorf("CreateKey(%q): %v, want a refusal saying the name is invalid", name, err)
			}
		}
	})

	t.Run("RefusesUnsupportedKeyTypes", func(t *testing.T) {
		for _, kt := range append([]keys.KeyType{"ed25519", "rsa-1024", "ec-p521"}, b.Refused...) {
			if _, err := km.CreateKey(ctx, "type-"+strings.ReplaceAll(string(kt), "/", "-"), kt); err == nil {
				t.Errorf("CreateKey of key type %s succeeded", kt)
			}
		}
	})

	t.Run("MissingKey", func(t *testing.T) {
		if _, err := km.Signer(ctx, b.MissingRef); !errors.Is(err, keys.ErrKeyNotFound) {
			t.Errorf("Signer(%s): %v, want an error wrapping keys.ErrKeyNotFound", b.MissingRef, err)
		}
	})

	t.Run("ForeignReference", func(t *testing.T) {
		if _, err := km.Signer(ctx, "nosuchscheme:key"); err == nil {
			t.Error("Signer of another scheme's reference succeeded")
		}
	})

	t.Run("Import", func(t *testing.T) {
		imp, ok := km.(keys.Importer)
		if !ok {
			t.Skip("the backend cannot import keys")
		}
		s, err := b.KeyTypes[0].Generate()
		if err != nil {
			t.Fatal(err)
		}
		k, err := imp.ImportKey(ctx, "imported", s)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(k.Ref, b.RefPrefix) || k.Type != b.KeyTypes[0] || !equal(k.Public, s.Public()) {
			t.Errorf("ImportKey = %+v", k)
		}
		created[k.Ref] = k
		signAndVerify(t, km, k)
		if _, err := imp.ImportKey(ctx, "imported", s); !errors.Is(err, keys.ErrKeyExists) {
			t.Errorf("ImportKey of a taken name: %v, want keys.ErrKeyExists", err)
		}
	})

	t.Run("SignerAfterReopen", func(t *testing.T) {
		closeKM(t, km)
		km = open(top, b) // for the rest of the suite
		for _, k := range created {
			signAndVerify(t, km, k)
		}
		list, err := km.ListKeys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		checkListed(t, list, created)
	})

	t.Run("Delete", func(t *testing.T) {
		d, ok := km.(keys.Deleter)
		if !ok {
			t.Skip("the backend cannot delete keys")
		}
		k, err := km.CreateKey(ctx, "doomed", b.KeyTypes[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := d.DeleteKey(ctx, k.Ref); err != nil {
			t.Fatal(err)
		}
		if _, err := km.Signer(ctx, k.Ref); !errors.Is(err, keys.ErrKeyNotFound) {
			t.Errorf("Signer of a deleted key: %v, want keys.ErrKeyNotFound", err)
		}
		if err := d.DeleteKey(ctx, k.Ref); err != nil {
			t.Errorf("deleting a deleted key: %v, want success", err)
		}
		list, err := km.ListKeys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		checkListed(t, list, created)
	})
}

func open(t *testing.T, b Backend) keys.KeyManager {
	t.Helper()
	km := b.Open(t)
	t.Cleanup(func() { closeKM(t, km) })
	return km
}

func closeKM(t *testing.T, km keys.KeyManager) {
	if c, ok := km.(io.Closer); ok {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
}

// checkListed checks that list holds exactly the created keys, in order.
func checkListed(t *testing.T, list []keys.Key, created map[string]keys.Key) {
	t.Helper()
	if !sort.SliceIsSorted(list, func(i, j int) bool { return list[i].Ref < list[j].Ref }) {
		t.Errorf("ListKeys is not ordered by reference: %v", refs(list))
	}
	if len(list) != len(created) {
		t.Errorf("ListKeys = %v, want the %d keys created", refs(list), len(created))
	}
	for _, k := range list {
		c, ok := created[k.Ref]
		switch {
		case !ok:
			t.Errorf("ListKeys lists %s, which was not created", k.Ref)
		case k.Type != c.Type || !equal(k.Public, c.Public):
			t.Errorf("ListKeys: %s has type %s and another public key than CreateKey's (%s)", k.Ref, k.Type, c.Type)
		}
	}
}

func refs(list []keys.Key) []string {
	out := make([]string, len(list))
	for i, k := range list {
		out[i] = k.Ref
	}
	return out
}

func equal(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(b)
}

// signAndVerify loads k and checks that its signatures verify under
// k.Public (PKCS #1 v1.5 and PSS for RSA), and not over another digest.
func signAndVerify(t *testing.T, km keys.KeyManager, k keys.Key) {
	t.Helper()
	s, err := km.Signer(context.Background(), k.Ref)
	if err != nil {
		t.Fatalf("Signer(%s): %v", k.Ref, err)
	}
	if !equal(s.Public(), k.Public) {
		t.Fatalf("Signer(%s) has another public key than CreateKey returned", k.Ref)
	}
	h := crypto.SHA256
	if k.Type == keys.ECP384 {
		h = crypto.SHA384
	}
	opts := []crypto.SignerOpts{h}
	if _, ok := k.Public.(*rsa.PublicKey); ok {
		opts = append(opts, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: h})
	}
	for _, o := range opts {
		d := h.New()
		d.Write([]byte("meshroot " + k.Ref))
		digest := d.Sum(nil)
		sig, err := s.Sign(rand.Reader, digest, o)
		if err != nil {
			t.Fatalf("sign with %s (%T): %v", k.Ref, o, err)
		}
		if err := keys.VerifySignature(k.Public, digest, sig, o); err != nil {
			t.Errorf("signature by %s (%T) does not verify: %v", k.Ref, o, err)
		}
		digest[0] ^= 1
		if keys.VerifySignature(k.Public, digest, sig, o) == nil {
			t.Errorf("signature by %s verifies over another digest", k.Ref)
		}
	}
}

// CheckChain makes a root with s, signs a cluster intermediate under it,
// and verifies the chain with Go's verifier: what the CA does with a key.
func CheckChain(t *testing.T, s crypto.Signer) {
	t.Helper()
	root, err := ca.NewRoot(s, ca.RootOptions{TrustDomain: "example.org"})
	if err != nil {
		t.Fatal(err)
	}
	auth, err := ca.NewAuthority([]*x509.Certificate{root}, s, ca.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	key, err := keys.ECP256.Generate()
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "cluster-a"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	inter, err := auth.SignIntermediate(ca.IntermediateRequest{Cluster: "cluster-a", TrustDomain: "example.org", CSR: csr, TTL: 48 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	if _, err := inter.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("an intermediate under a root whose key is in the backend does not verify: %v", err)
	}
	if !inter.IsCA || inter.MaxPathLen != 0 || !inter.MaxPathLenZero {
		t.Errorf("intermediate: CA %v pathlen %d zero %v", inter.IsCA, inter.MaxPathLen, inter.MaxPathLenZero)
	}
}
