package kms

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.step.sm/crypto/kms/apiv1"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/keys"
)

const pass = "correct horse battery"

func newSoftKM(t testing.TB, dir string) *KeyManager {
	t.Helper()
	km, err := New(context.Background(), Options{URI: "softkms:dir=" + dir, Passphrase: []byte(pass)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { km.Close() })
	return km
}

func newCSR(t testing.TB) *x509.CertificateRequest {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

// rootAndIntermediate makes a root with s, an authority over it, signs a
// cluster intermediate and verifies the chain.
func rootAndIntermediate(t *testing.T, s crypto.Signer) {
	t.Helper()
	root, err := ca.NewRoot(s, ca.RootOptions{TrustDomain: "example.org"})
	if err != nil {
		t.Fatal(err)
	}
	auth, err := ca.NewAuthority([]*x509.Certificate{root}, s, ca.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	inter, err := auth.SignIntermediate(ca.IntermediateRequest{Cluster: "cluster-a", TrustDomain: "example.org", CSR: newCSR(t), TTL: 48 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	if _, err := inter.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("chain does not verify: %v", err)
	}
	if inter.MaxPathLen != 0 || !inter.MaxPathLenZero {
		t.Errorf("intermediate path length %d (zero %v)", inter.MaxPathLen, inter.MaxPathLenZero)
	}
}

func TestSoftKMSCreateSignChain(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "softkms")
	km := newSoftKM(t, dir)
	if km.Type() != SoftKMS {
		t.Fatalf("Type %s", km.Type())
	}
	ctx := context.Background()
	for _, kt := range []keys.KeyType{keys.ECP256, keys.ECP384, keys.RSA2048} {
		t.Run(string(kt), func(t *testing.T) {
			k, err := km.CreateKey(ctx, "root-"+string(kt), kt)
			if err != nil {
				t.Fatal(err)
			}
			want := "softkms:path=" + filepath.Join(dir, "root-"+string(kt)+".key.pem")
			if k.Ref != want || k.Type != kt {
				t.Errorf("CreateKey = %+v, want ref %s", k, want)
			}
			info, err := os.Stat(filepath.Join(dir, "root-"+string(kt)+".key.pem"))
			if err != nil || info.Mode().Perm() != 0o600 {
				t.Fatalf("key file: %v %v", info, err)
			}
			s, err := km.Signer(ctx, k.Ref)
			if err != nil {
				t.Fatal(err)
			}
			rootAndIntermediate(t, s)
		})
	}
	list, err := km.ListKeys(ctx)
	if err != nil || len(list) != 3 {
		t.Fatalf("ListKeys: %v %v", list, err)
	}
	for _, k := range list {
		if k.Type == "" || k.Public == nil {
			t.Errorf("listed %+v", k)
		}
	}
	if _, err := km.CreateKey(ctx, "root-ec-p256", keys.ECP256); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("duplicate name: %v", err)
	}
}

func TestSoftKMSErrors(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "softkms")
	km := newSoftKM(t, dir)
	k, err := km.CreateKey(ctx, "root", keys.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	wrong, err := New(ctx, Options{URI: "softkms:dir=" + dir, Passphrase: []byte("wrong passphrase")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wrong.Signer(ctx, k.Ref); err == nil || !strings.Contains(err.Error(), "wrong passphrase") {
		t.Errorf("wrong passphrase: %v", err)
	}
	path := filepath.Join(dir, "root.key.pem")
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := km.Signer(ctx, k.Ref); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("readable key file: %v", err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if _, err := km.Signer(ctx, k.Ref); err == nil || !strings.Contains(err.Error(), "softkms key manager: no key file") {
		t.Errorf("deleted key: %v", err)
	}
	if _, err := km.Signer(ctx, "awskms:key-id=abc"); err == nil || !strings.Contains(err.Error(), "not a softkms: reference") {
		t.Errorf("foreign ref: %v", err)
	}
	if _, err := New(ctx, Options{URI: "softkms:dir=" + dir}); err == nil || !strings.Contains(err.Error(), "no passphrase") {
		t.Errorf("no passphrase: %v", err)
	}
	plain, err := New(ctx, Options{URI: "softkms:dir=" + dir, InsecurePlaintext: true})
	if err != nil {
		t.Fatal(err)
	}
	pk, err := plain.CreateKey(ctx, "plain", keys.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plain.Signer(ctx, pk.Ref); err != nil {
		t.Errorf("plaintext key: %v", err)
	}
}

// noCloud makes any attempt to build a cloud client fail the test.
func noCloud(t *testing.T) {
	t.Helper()
	old := openKMS
	openKMS = func(context.Context, apiv1.Options) (apiv1.KeyManager, error) {
		t.Error("a cloud KMS client was constructed")
		return nil, errors.New("no cloud in tests")
	}
	t.Cleanup(func() { openKMS = old })
}

func TestCloudURIsAreRoutedWithoutDialing(t *testing.T) {
	noCloud(t)
	cases := []struct {
		uri, typ   string
		stepType   apiv1.Type
		stepURI    string
		keyName    string
		level      apiv1.ProtectionLevel
		refExample string
	}{
		{"awskms:region=eu-west-1;profile=ops", AWSKMS, apiv1.AmazonKMS, "awskms:region=eu-west-1;profile=ops", "root-1", 0, "awskms:key-id=1234abcd-12ab-34cd-56ef-1234567890ab"},
		{"awskms:", AWSKMS, apiv1.AmazonKMS, "awskms:", "root-1", 0, "awskms:key-id=x"},
		{"cloudkms:key-ring=projects/p1/locations/global/keyRings/meshroot", CloudKMS, apiv1.CloudKMS, "", "cloudkms:projects/p1/locations/global/keyRings/meshroot/cryptoKeys/root-1", apiv1.Software, "cloudkms:projects/p1/locations/global/keyRings/meshroot/cryptoKeys/root-1/cryptoKeyVersions/1"},
		{"cloudkms:key-ring=projects/p1/locations/europe-west1/keyRings/r;credentials-file=/etc/gcp.json;protection-level=hsm", CloudKMS, apiv1.CloudKMS, "cloudkms:credentials-file=%2Fetc%2Fgcp.json", "cloudkms:projects/p1/locations/europe-west1/keyRings/r/cryptoKeys/root-1", apiv1.HSM, "cloudkms:projects/p1/locations/europe-west1/keyRings/r/cryptoKeys/root-1/cryptoKeyVersions/1"},
		{"azurekms:vault=meshroot-kv;hsm=true", AzureKMS, apiv1.AzureKMS, "azurekms:vault=meshroot-kv;hsm=true", "azurekms:name=root-1;vault=meshroot-kv", 0, "azurekms:name=root-1;vault=meshroot-kv?version=abc"},
	}
	for _, c := range cases {
		t.Run(c.uri, func(t *testing.T) {
			km, err := New(context.Background(), Options{URI: c.uri})
			if err != nil {
				t.Fatal(err)
			}
			if km.Type() != c.typ {
				t.Errorf("Type %s, want %s", km.Type(), c.typ)
			}
			cb, ok := km.b.(*cloudBackend)
			if !ok {
				t.Fatalf("backend %T", km.b)
			}
			if cb.kms != nil {
				t.Error("New constructed a client")
			}
			if cb.stepOpts.Type != c.stepType || cb.stepOpts.URI != c.stepURI {
				t.Errorf("step options %+v, want type %s uri %q", cb.stepOpts, c.stepType, c.stepURI)
			}
			if got := cb.keyName("root-1"); got != c.keyName {
				t.Errorf("key name %q, want %q", got, c.keyName)
			}
			if cb.level != c.level {
				t.Errorf("protection level %v, want %v", cb.level, c.level)
			}
			if _, ok := apiv1.LoadKeyManagerNewFunc(c.stepType); !ok {
				t.Errorf("no %s constructor is registered with step's kms", c.stepType)
			}
			// A reference of another KMS is refused before any client exists.
			if _, err := km.Signer(context.Background(), "softkms:path=/x"); err == nil || !strings.Contains(err.Error(), "not a "+c.typ+": reference") {
				t.Errorf("foreign ref: %v", err)
			}
			if _, err := km.ListKeys(context.Background()); !errors.Is(err, errors.ErrUnsupported) || !strings.Contains(err.Error(), c.typ+" key manager") {
				t.Errorf("ListKeys: %v", err)
			}
			if !strings.HasPrefix(c.refExample, c.typ+":") {
				t.Errorf("bad example ref %s", c.refExample)
			}
		})
	}
}

func TestBadURIs(t *testing.T) {
	noCloud(t)
	cases := map[string]string{
		"":                                 "no KMS URI given",
		"vault:transit":                    `scheme "vault" is not a KMS`,
		"yubikey:slot-id=9c":               "not supported by meshroot",
		"awskms:region=eu-west-1;regoin=x": "unknown attributes regoin",
		"cloudkms:projects/p/locations/l":  "needs key-ring=projects/PROJECT",
		"cloudkms:key-ring=projects/p/locations/l/keyRings/r;protection-level=gold": "protection-level",
		"azurekms:environment=AzurePublicCloud":                                     "needs vault=NAME",
		"softkms:":                                                                  "names no folder",
		"softkms:dir=/tmp;path=/x":                                                  "unknown attribute",
	}
	for uri, want := range cases {
		_, err := New(context.Background(), Options{URI: uri, Passphrase: []byte(pass)})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("New(%q): %v, want %q", uri, err, want)
		}
	}
}

// fakeKMS stands in for a cloud KMS that cannot be reached, or that
// answers with given keys and signers.
type fakeKMS struct {
	err    error
	pubErr error
	signer crypto.Signer
}

func (f *fakeKMS) GetPublicKey(*apiv1.GetPublicKeyRequest) (crypto.PublicKey, error) {
	if f.pubErr != nil {
		return nil, f.pubErr
	}
	if f.err != nil {
		return nil, f.err
	}
	return f.signer.Public(), nil
}

func (f *fakeKMS) CreateKey(req *apiv1.CreateKeyRequest) (*apiv1.CreateKeyResponse, error) {
	if f.err != nil {
		return nil, f.err
	}
	return &apiv1.CreateKeyResponse{Name: req.Name + "/cryptoKeyVersions/1", PublicKey: f.signer.Public()}, nil
}

func (f *fakeKMS) CreateSigner(*apiv1.CreateSignerRequest) (crypto.Signer, error) {
	if f.err != nil {
		return nil, f.err
	}
	return f.signer, nil
}

func (f *fakeKMS) Close() error { return nil }

func withFake(t *testing.T, f *fakeKMS, got *apiv1.Options) {
	t.Helper()
	old := openKMS
	openKMS = func(_ context.Context, o apiv1.Options) (apiv1.KeyManager, error) {
		if got != nil {
			*got = o
		}
		return f, nil
	}
	t.Cleanup(func() { openKMS = old })
}

func TestUnreachableCloudErrorsNameTheBackend(t *testing.T) {
	unreachable := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: network is unreachable")}
	cases := []struct{ uri, typ, service, where string }{
		{"awskms:region=eu-west-1", "awskms", "AWS KMS", "region eu-west-1"},
		{"cloudkms:key-ring=projects/p/locations/global/keyRings/r", "cloudkms", "Google Cloud KMS", "key ring projects/p/locations/global/keyRings/r"},
		{"azurekms:vault=kv1", "azurekms", "Azure Key Vault", "vault kv1"},
	}
	for _, c := range cases {
		t.Run(c.typ, func(t *testing.T) {
			var opened apiv1.Options
			withFake(t, &fakeKMS{err: unreachable}, &opened)
			km, err := New(context.Background(), Options{URI: c.uri})
			if err != nil {
				t.Fatal(err)
			}
			_, err = km.CreateKey(context.Background(), "root-1", keys.ECP256)
			check := func(op string, err error) {
				t.Helper()
				if err == nil {
					t.Fatalf("%s succeeded against an unreachable KMS", op)
				}
				for _, want := range []string{c.typ + " key manager", c.service, c.where, "network is unreachable", "check network access"} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("%s error %q lacks %q", op, err, want)
					}
				}
			}
			check("CreateKey", err)
			if string(opened.Type) != c.typ {
				t.Errorf("opened a %s client for %s", opened.Type, c.uri)
			}
			_, err = km.Signer(context.Background(), c.typ+":key-id=x")
			check("Signer", err)
		})
	}
	// A client that cannot even be set up (no credentials) is named too.
	old := openKMS
	openKMS = func(context.Context, apiv1.Options) (apiv1.KeyManager, error) {
		return nil, errors.New("no credentials found")
	}
	defer func() { openKMS = old }()
	km, err := New(context.Background(), Options{URI: "awskms:region=eu-west-1"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = km.Signer(context.Background(), "awskms:key-id=x")
	if err == nil || !strings.Contains(err.Error(), "awskms key manager") || !strings.Contains(err.Error(), "cannot set up the AWS KMS client: no credentials found") {
		t.Errorf("client setup: %v", err)
	}
}

// badSigner returns a signature made by another key.
type badSigner struct{ crypto.Signer }

func (b badSigner) Sign(r io.Reader, d []byte, o crypto.SignerOpts) ([]byte, error) {
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	return other.Sign(r, d, o)
}

func TestCloudSignaturesAreVerifiedAndNamesChecked(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	f := &fakeKMS{signer: key, pubErr: apiv1.NotFoundError{}}
	withFake(t, f, nil)
	km, err := New(ctx, Options{URI: "cloudkms:key-ring=projects/p/locations/global/keyRings/r"})
	if err != nil {
		t.Fatal(err)
	}
	k, err := km.CreateKey(ctx, "root-1", keys.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	if k.Ref != "cloudkms:projects/p/locations/global/keyRings/r/cryptoKeys/root-1/cryptoKeyVersions/1" {
		t.Errorf("ref %s", k.Ref)
	}
	s, err := km.Signer(ctx, k.Ref)
	if err != nil {
		t.Fatal(err)
	}
	rootAndIntermediate(t, s)

	f.signer = badSigner{key}
	s, err = km.Signer(ctx, k.Ref)
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256([]byte("x"))
	if _, err := s.Sign(rand.Reader, d[:], crypto.SHA256); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Errorf("bad signature from the KMS: %v", err)
	}

	// An existing key is refused rather than given a new version.
	f.pubErr = nil
	f.signer = key
	if _, err := km.CreateKey(ctx, "root-1", keys.ECP256); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("existing key: %v", err)
	}
	if _, err := km.CreateKey(ctx, "root.1", keys.ECP256); err == nil || !strings.Contains(err.Error(), "invalid for Cloud KMS") {
		t.Errorf("dotted name: %v", err)
	}
}

// BenchmarkSoftKMSSignP256 is the in-process baseline for the HSM and Vault
// benchmarks.
func BenchmarkSoftKMSSignP256(b *testing.B) {
	km := newSoftKM(b, b.TempDir())
	ctx := context.Background()
	k, err := km.CreateKey(ctx, "bench", keys.ECP256)
	if err != nil {
		b.Fatal(err)
	}
	s, err := km.Signer(ctx, k.Ref)
	if err != nil {
		b.Fatal(err)
	}
	d := sha256.Sum256([]byte("x"))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Sign(rand.Reader, d[:], crypto.SHA256); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "signs/s")
}
