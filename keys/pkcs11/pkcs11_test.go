//go:build cgo && !nopkcs11

package pkcs11

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/keys"
	"github.com/meshroot/meshroot/keys/pkcs11/softhsmtest"
)

func newKM(t testing.TB, uri string) *KeyManager {
	t.Helper()
	km, err := New(context.Background(), Options{URI: uri})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { km.Close() })
	return km
}

func digestFor(kt keys.KeyType) ([]byte, crypto.Hash) {
	if kt == keys.ECP384 {
		d := sha512.Sum384([]byte("meshroot"))
		return d[:], crypto.SHA384
	}
	d := sha256.Sum256([]byte("meshroot"))
	return d[:], crypto.SHA256
}

func verify(t *testing.T, pub crypto.PublicKey, digest []byte, h crypto.Hash, sig []byte, pss bool) {
	t.Helper()
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(k, digest, sig) {
			t.Fatal("ECDSA signature from the token does not verify")
		}
	case *rsa.PublicKey:
		var err error
		if pss {
			err = rsa.VerifyPSS(k, h, digest, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		} else {
			err = rsa.VerifyPKCS1v15(k, h, digest, sig)
		}
		if err != nil {
			t.Fatalf("RSA signature from the token does not verify: %v", err)
		}
	default:
		t.Fatalf("unexpected public key %T", pub)
	}
}

func TestCreateSignVerify(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	km := newKM(t, tok.URI())
	ctx := context.Background()
	for _, kt := range []keys.KeyType{keys.ECP256, keys.ECP384, keys.RSA2048} {
		t.Run(string(kt), func(t *testing.T) {
			name := "root-" + string(kt)
			k, err := km.CreateKey(ctx, name, kt)
			if err != nil {
				t.Fatal(err)
			}
			if k.Type != kt {
				t.Errorf("key type %s, want %s", k.Type, kt)
			}
			for _, want := range []string{"pkcs11:module-path=" + softhsmtest.Module, ";token=meshroot;", ";id=", ";object=" + name, "?pin-source=" + tok.PINFile} {
				if !strings.Contains(k.Ref, want) {
					t.Errorf("ref %q lacks %q", k.Ref, want)
				}
			}
			if strings.Contains(k.Ref, "pin-value") || strings.Contains(k.Ref, tok.PIN+";") {
				t.Errorf("ref %q carries the PIN", k.Ref)
			}
			s, err := km.Signer(ctx, k.Ref)
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := keys.KeyTypeOf(s.Public()); got != kt {
				t.Fatalf("signer key type %s, want %s", got, kt)
			}
			if !s.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(k.Public) {
				t.Fatal("signer's public key differs from CreateKey's")
			}
			digest, h := digestFor(kt)
			sig, err := s.Sign(rand.Reader, digest, h)
			if err != nil {
				t.Fatal(err)
			}
			verify(t, s.Public(), digest, h, sig, false)
			if _, ok := s.Public().(*rsa.PublicKey); ok {
				sig, err := s.Sign(rand.Reader, digest, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: h})
				if err != nil {
					t.Fatal(err)
				}
				verify(t, s.Public(), digest, h, sig, true)
			}
		})
	}
	keys, err := km.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 3 {
		t.Fatalf("ListKeys: %d keys, want 3: %+v", len(keys), keys)
	}
	for _, k := range keys {
		if k.Type == "" || k.Public == nil || !strings.Contains(k.Ref, "object=root-") {
			t.Errorf("ListKeys entry %+v", k)
		}
		if _, err := km.Signer(ctx, k.Ref); err != nil {
			t.Errorf("a listed ref does not load: %v", err)
		}
	}
}

func TestCreateKeyRefusesTakenNameAndBadInput(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	km := newKM(t, tok.URI())
	ctx := context.Background()
	if _, err := km.CreateKey(ctx, "root-1", keys.ECP256); err != nil {
		t.Fatal(err)
	}
	_, err := km.CreateKey(ctx, "root-1", keys.ECP384)
	if err == nil || !strings.Contains(err.Error(), `already holds a key labelled "root-1"`) {
		t.Fatalf("second CreateKey of root-1: %v", err)
	}
	if _, err := km.CreateKey(ctx, "Root 1", keys.ECP256); err == nil || !strings.Contains(err.Error(), "invalid") {
		t.Errorf("bad name: %v", err)
	}
	if _, err := km.CreateKey(ctx, "ed", "ed25519"); err == nil || !strings.Contains(err.Error(), "not supported") {
		t.Errorf("ed25519: %v", err)
	}
}

func TestRootAndIntermediateChainVerify(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	km := newKM(t, tok.URI())
	ctx := context.Background()
	k, err := km.CreateKey(ctx, "root", keys.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	s, err := km.Signer(ctx, k.Ref)
	if err != nil {
		t.Fatal(err)
	}
	root, err := ca.NewRoot(s, ca.RootOptions{TrustDomain: "example.org"})
	if err != nil {
		t.Fatal(err)
	}
	auth, err := ca.NewAuthority([]*x509.Certificate{root}, s, ca.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	csr := newCSR(t, "cluster-a")
	inter, err := auth.SignIntermediate(ca.IntermediateRequest{Cluster: "cluster-a", TrustDomain: "example.org", CSR: csr, TTL: 48 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)
	if _, err := inter.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("intermediate signed in SoftHSM2 does not verify: %v", err)
	}
	if !inter.IsCA || inter.MaxPathLen != 0 || !inter.MaxPathLenZero || inter.Subject.CommonName != "cluster-a" {
		t.Errorf("intermediate profile: CA %v pathlen %d zero %v CN %q", inter.IsCA, inter.MaxPathLen, inter.MaxPathLenZero, inter.Subject.CommonName)
	}
}

func newCSR(t testing.TB, cn string) *x509.CertificateRequest {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

func TestWrongPIN(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	_, err := New(context.Background(), Options{URI: tok.URIWithPIN("0000")})
	if err == nil || !strings.Contains(err.Error(), "pkcs11 key manager") || !strings.Contains(err.Error(), "wrong PIN") || !strings.Contains(err.Error(), "pin-value") {
		t.Fatalf("wrong pin-value: %v", err)
	}
	t.Log(err)
	if strings.Contains(err.Error(), "0000") {
		t.Errorf("the error shows the PIN: %v", err)
	}
	bad := filepath.Join(tok.Dir, "bad-pin")
	if err := os.WriteFile(bad, []byte("9999\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	uri := strings.Replace(tok.URI(), tok.PINFile, bad, 1)
	_, err = New(context.Background(), Options{URI: uri})
	if err == nil || !strings.Contains(err.Error(), "wrong PIN") || !strings.Contains(err.Error(), bad) {
		t.Fatalf("wrong PIN file: %v", err)
	}
	// The right PIN still works: SoftHSM2 does not lock the token.
	newKM(t, tok.URI())
	// While the token is logged in, the token itself no longer checks PINs
	// (CKR_USER_ALREADY_LOGGED_IN): the key manager still must.
	_, err = New(context.Background(), Options{URI: tok.URIWithPIN("0000")})
	if err == nil || !strings.Contains(err.Error(), "wrong PIN") {
		t.Fatalf("wrong PIN while the token is logged in: %v", err)
	}
	t.Log(err)
	newKM(t, tok.URIWithPIN(tok.PIN))
}

func TestOpenErrors(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	cases := []struct {
		name, uri string
		want      []string
	}{
		{"missing token", strings.Replace(tok.URI(), "token=meshroot", "token=nope", 1), []string{`no token "nope"`, "softhsm2-util --show-slots"}},
		{"module not found", strings.Replace(tok.URI(), softhsmtest.Module, "/nonexistent/libsofthsm2.so", 1), []string{"module /nonexistent/libsofthsm2.so not found", "apt-get install softhsm2"}},
		{"module not a library", strings.Replace(tok.URI(), softhsmtest.Module, tok.Conf, 1), []string{"cannot load PKCS#11 module " + tok.Conf}},
		{"missing pin file", strings.Replace(tok.URI(), tok.PINFile, tok.PINFile+".gone", 1), []string{"PIN file", "does not exist"}},
		{"no token selector", "pkcs11:module-path=" + softhsmtest.Module + "?pin-value=1234", []string{"names no token"}},
		{"two selectors", "pkcs11:module-path=" + softhsmtest.Module + ";token=a;serial=b?pin-value=1234", []string{"more than one way"}},
		{"key in config", tok.URI() + "&object=x", []string{"names a key object"}},
		{"not pkcs11", "softkms:path=/tmp/x", []string{"not a pkcs11: URI"}},
		{"empty", "", []string{"no URI given"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			km, err := New(context.Background(), Options{URI: c.uri})
			if err == nil {
				km.Close()
				t.Fatal("New succeeded")
			}
			t.Log(err)
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if !strings.HasPrefix(err.Error(), "pkcs11 key manager: ") {
				t.Errorf("error %q does not name the backend", err)
			}
		})
	}
}

func TestKeyDeleted(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	km := newKM(t, tok.URI())
	ctx := context.Background()
	k, err := km.CreateKey(ctx, "doomed", keys.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	old, err := km.Signer(ctx, k.Ref)
	if err != nil {
		t.Fatal(err)
	}
	// Delete it through a second key manager, as another process would.
	other := newKM(t, tok.URI())
	if err := other.DeleteKey(ctx, k.Ref); err != nil {
		t.Fatal(err)
	}
	_, err = km.Signer(ctx, k.Ref)
	if err == nil || !strings.Contains(err.Error(), "no such key") || !strings.Contains(err.Error(), "deleted") {
		t.Fatalf("Signer for a deleted key: %v", err)
	}
	digest, h := digestFor(keys.ECP256)
	if _, err := old.Sign(rand.Reader, digest, h); err == nil {
		t.Fatal("a signer for a deleted key still signs")
	} else if !strings.Contains(err.Error(), "pkcs11 key manager: sign with") {
		t.Errorf("sign with a deleted key: %v", err)
	} else {
		t.Logf("sign with a deleted key: %v", err)
	}
	keys, err := km.ListKeys(ctx)
	if err != nil || len(keys) != 0 {
		t.Errorf("ListKeys after delete: %v %v", keys, err)
	}
	if err := km.DeleteKey(ctx, k.Ref); err != nil {
		t.Errorf("deleting a deleted key: %v", err)
	}
}

func TestTokenRemovedWhileSigning(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	km := newKM(t, tok.URI())
	ctx := context.Background()
	k, err := km.CreateKey(ctx, "root", keys.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	s, err := km.Signer(ctx, k.Ref)
	if err != nil {
		t.Fatal(err)
	}
	digest, h := digestFor(keys.ECP256)
	if _, err := s.Sign(rand.Reader, digest, h); err != nil {
		t.Fatal(err)
	}
	tok.Delete(t)
	_, err = s.Sign(rand.Reader, digest, h)
	if err == nil {
		t.Fatal("signing with the token removed succeeded")
	}
	t.Logf("sign with the token removed: %v", err)
	if !strings.Contains(err.Error(), "pkcs11 key manager: sign with") {
		t.Errorf("error does not name the backend and the operation: %v", err)
	}
	if _, err := km.Signer(ctx, k.Ref); err == nil {
		t.Error("Signer succeeded with the token removed")
	} else {
		t.Logf("Signer with the token removed: %v", err)
	}
}

func TestSignerAfterClose(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	km := newKM(t, tok.URI())
	ctx := context.Background()
	k, err := km.CreateKey(ctx, "root", keys.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	s, err := km.Signer(ctx, k.Ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := km.Close(); err != nil {
		t.Fatal(err)
	}
	digest, h := digestFor(keys.ECP256)
	if _, err := s.Sign(rand.Reader, digest, h); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("sign after Close: %v", err)
	}
	if _, err := km.Signer(ctx, k.Ref); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("Signer after Close: %v", err)
	}
	if _, err := s.Sign(rand.Reader, digest[:5], h); err == nil || !strings.Contains(err.Error(), "digest is 5 bytes") {
		t.Errorf("short digest: %v", err)
	}
}

func TestRefsOfOtherTokensAreRefused(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	km := newKM(t, tok.URI())
	ctx := context.Background()
	cases := map[string]string{
		"pkcs11:module-path=/other/module.so;token=meshroot;object=x": "is in module /other/module.so",
		"pkcs11:token=other;object=x":                                 `token with token "other"`,
		"pkcs11:token=meshroot":                                       "names no key object",
		"disk:root-1":                                                 "not a pkcs11: URI",
	}
	for ref, want := range cases {
		if _, err := km.Signer(ctx, ref); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Signer(%q): %v, want %q", ref, err, want)
		}
	}
	// A hand-written reference by label alone works.
	if _, err := km.CreateKey(ctx, "by-label", keys.ECP256); err != nil {
		t.Fatal(err)
	}
	if _, err := km.Signer(ctx, "pkcs11:token=meshroot;object=by-label"); err != nil {
		t.Errorf("label-only ref: %v", err)
	}
}

func TestRedact(t *testing.T) {
	got := redact("pkcs11:token=a?pin-value=1234")
	if strings.Contains(got, "1234") {
		t.Errorf("redact left the PIN: %s", got)
	}
}

// BenchmarkSignP256 measures ECDSA P-256 signatures per second by a root key
// in SoftHSM2, through the key manager's signer.
func BenchmarkSignP256(b *testing.B) {
	tok := softhsmtest.NewToken(b)
	km := newKM(b, tok.URI())
	ctx := context.Background()
	k, err := km.CreateKey(ctx, "bench", keys.ECP256)
	if err != nil {
		b.Fatal(err)
	}
	s, err := km.Signer(ctx, k.Ref)
	if err != nil {
		b.Fatal(err)
	}
	digest, h := digestFor(keys.ECP256)
	b.SetParallelism(4)
	b.ResetTimer()
	cpu := selfCPU()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Sign(rand.Reader, digest, h); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "signs/s")
	b.ReportMetric(float64((selfCPU()-cpu).Microseconds())/float64(b.N), "cpu-us/op")
}

// selfCPU is the CPU time of this process (SoftHSM2 runs inside it).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
