package kms

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"strings"
	"testing"

	"go.step.sm/crypto/kms/apiv1"

	"github.com/meshroot/meshroot/keys"
	"github.com/meshroot/meshroot/keys/keystest"
)

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
			cb := km.b
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
		"softkms:dir=/tmp":                                                          "served by meshroot's own softkms key manager",
		"pkcs11:token=x":                                                            "served by meshroot's own pkcs11 key manager",
	}
	for uri, want := range cases {
		_, err := New(context.Background(), Options{URI: uri})
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
	keystest.CheckChain(t, s)

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

// TestCloudReferencesNeedTheConfiguration: which account and credentials a
// cloud key is used with comes from the configuration, not from a stored
// reference.
func TestCloudReferencesNeedTheConfiguration(t *testing.T) {
	noCloud(t)
	for _, ref := range []string{"awskms:key-id=x", "cloudkms:projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1", "azurekms:name=k;vault=v"} {
		b, ok := keys.Lookup(keys.Scheme(ref))
		if !ok {
			t.Fatalf("scheme of %s is not registered", ref)
		}
		if _, err := b.ManagerURI(ref, keys.Config{}); !errors.Is(err, keys.ErrNotConfigured) {
			t.Errorf("ManagerURI(%s): %v, want keys.ErrNotConfigured", ref, err)
		}
		km, err := keys.Open(context.Background(), keys.Scheme(ref)+":"+map[string]string{
			"awskms": "region=eu-west-1", "cloudkms": "key-ring=projects/p/locations/l/keyRings/r", "azurekms": "vault=v",
		}[keys.Scheme(ref)], keys.Config{})
		if err != nil {
			t.Errorf("Open a configured %s key manager: %v", keys.Scheme(ref), err)
			continue
		}
		if m, ok := km.(*KeyManager); !ok || m.Type() != keys.Scheme(ref) {
			t.Errorf("the catalog opened %T for %s", km, ref)
		}
	}
}
