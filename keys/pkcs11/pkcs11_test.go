//go:build cgo && !nopkcs11

package pkcs11

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshroot/meshroot/keys"
	"github.com/meshroot/meshroot/keys/keystest"
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

// TestConformance runs the key manager suite on a real SoftHSM2 token,
// opened through the key catalog.
func TestConformance(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	keystest.Run(t, keystest.Backend{
		Open: func(t *testing.T) keys.KeyManager {
			km, err := keys.Open(context.Background(), tok.URI(), keys.Config{})
			if err != nil {
				t.Fatal(err)
			}
			return km
		},
		KeyTypes:   []keys.KeyType{keys.ECP256, keys.ECP384, keys.RSA2048},
		RefPrefix:  "pkcs11:module-path=" + softhsmtest.Module + ";token=meshroot;id=",
		MissingRef: "pkcs11:token=meshroot;object=missing",
	})
}

// TestReferencesNameTheTokenNotThePIN checks what a stored reference
// carries: the module, the token, the key's id and label, the PIN file.
func TestReferencesNameTheTokenNotThePIN(t *testing.T) {
	tok := softhsmtest.NewToken(t)
	km := newKM(t, tok.URI())
	k, err := km.CreateKey(context.Background(), "root-1", keys.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"pkcs11:module-path=" + softhsmtest.Module, ";token=meshroot;", ";id=", ";object=root-1", "?pin-source=" + tok.PINFile} {
		if !strings.Contains(k.Ref, want) {
			t.Errorf("ref %q lacks %q", k.Ref, want)
		}
	}
	if strings.Contains(k.Ref, "pin-value") || strings.Contains(k.Ref, tok.PIN+";") {
		t.Errorf("ref %q carries the PIN", k.Ref)
	}
	if _, err := newKM(t, tok.URIWithPIN(tok.PIN)).CreateKey(context.Background(), "root-2", keys.ECP256); err != nil {
		t.Fatal(err)
	}
	list, err := km.ListKeys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range list {
		if strings.Contains(k.Ref, "pin-value") {
			t.Errorf("listed ref %q carries the PIN", k.Ref)
		}
	}
}

func digestFor(kt keys.KeyType) ([]byte, crypto.Hash) {
	if kt == keys.ECP384 {
		d := sha512.Sum384([]byte("meshroot"))
		return d[:], crypto.SHA384
	}
	d := sha256.Sum256([]byte("meshroot"))
	return d[:], crypto.SHA256
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
		"pkcs11:module-path=/other/module.so;token=meshroot;object=x": "names PKCS#11 module /other/module.so, but the configured module is " + softhsmtest.Module,
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
