package main

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/keys"
	"github.com/meshroot/meshroot/store"
)

func wantHARefusal(t *testing.T, err error, msgs ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted; want a refusal mentioning %q", msgs)
	}
	for _, m := range append([]string{"HA mode"}, msgs...) {
		if !strings.Contains(err.Error(), m) {
			t.Errorf("refusal %q does not mention %q", err, m)
		}
	}
}

func TestHAKeyConfig(t *testing.T) {
	data := t.TempDir()
	shared := t.TempDir()
	inData := filepath.Join(data, "keys")
	for _, tc := range []struct {
		name string
		s    haKeySetup
		want []string // nil: accepted
	}{
		{"default disk keys in the data dir", haKeySetup{DataDir: data, DiskDir: inData, Passphrase: true}, []string{"inside this replica's data dir", "keys.dir"}},
		{"disk in the data dir through a symlink", haKeySetup{DataDir: data, DiskDir: symlinkTo(t, data), Create: "disk", Passphrase: true}, []string{"inside this replica's data dir"}},
		{"softkms folder in the data dir", haKeySetup{DataDir: data, DiskDir: shared, Create: "softkms:dir=" + filepath.Join(data, "soft"), Passphrase: true}, []string{"inside this replica's data dir"}},
		{"shared disk folder without a passphrase", haKeySetup{DataDir: data, DiskDir: shared, Passphrase: false}, []string{"unencrypted", "passphraseFile"}},
		{"shared softkms folder without a passphrase", haKeySetup{DataDir: data, DiskDir: inData, Create: "softkms:dir=" + shared}, []string{"unencrypted"}},
		{"shared disk folder, encrypted", haKeySetup{DataDir: data, DiskDir: shared, Passphrase: true}, nil},
		{"shared softkms folder, encrypted", haKeySetup{DataDir: data, DiskDir: inData, Create: "softkms:dir=" + shared, Passphrase: true}, nil},
		{"an HSM: shared by nature", haKeySetup{DataDir: data, DiskDir: inData, Create: "pkcs11:module-path=/usr/lib/softhsm/libsofthsm2.so;token=meshroot"}, nil},
		{"Vault: shared by nature", haKeySetup{DataDir: data, DiskDir: inData, Create: "vault-transit://transit"}, nil},
		{"a sibling folder with the data dir's name as prefix", haKeySetup{DataDir: data, DiskDir: data + "-keys", Passphrase: true}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkHAKeyConfig(tc.s)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			wantHARefusal(t, err, tc.want...)
		})
	}
}

func symlinkTo(t *testing.T, data string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(data, "k"), 0o700); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(filepath.Join(data, "k"), link); err != nil {
		t.Fatal(err)
	}
	return link
}

// haRoot makes key NAME in the disk folder dir (encrypted unless pass is
// empty) and a root whose certificate is for it.
func haRoot(t *testing.T, dir, data string, pass []byte, name string) store.Root {
	t.Helper()
	km, err := keyManager(t.Context(), keysConfig{Dir: dir}, data, pass, len(pass) == 0)
	if err != nil {
		t.Fatal(err)
	}
	defer km.Close()
	k, err := km.CreateKey(t.Context(), name, keys.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := km.Signer(t.Context(), k.Ref)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, signer.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return store.Root{ID: name, State: store.RootActive, KeyRef: k.Ref, ChainPEM: ca.EncodeCerts([]*x509.Certificate{c})}
}

func TestHARootKeys(t *testing.T) {
	pass := []byte("correct horse battery")
	log := slog.New(slog.DiscardHandler)
	check := func(s haKeySetup, roots ...store.Root) error {
		km, err := keyManager(t.Context(), keysConfig{Dir: s.DiskDir}, s.DataDir, pass, false)
		if err != nil {
			t.Fatal(err)
		}
		defer km.Close()
		return checkHARootKeys(t.Context(), s, roots, km, log)
	}
	data, shared := t.TempDir(), t.TempDir()
	s := haKeySetup{DataDir: data, DiskDir: shared, Passphrase: true}

	good := haRoot(t, shared, data, pass, "root-1")
	if err := check(s, good); err != nil {
		t.Fatalf("the root's own encrypted key in the shared folder: %v", err)
	}

	t.Run("another replica's key for the same root", func(t *testing.T) {
		// Replica B made its own root-1 in its own folder: same reference,
		// another key.
		other := t.TempDir()
		haRoot(t, other, data, pass, "root-1")
		wantHARefusal(t, check(haKeySetup{DataDir: data, DiskDir: other, Passphrase: true}, good), "not the root's key", "public key sha256:", "same Secret")
	})
	t.Run("key file missing on this replica", func(t *testing.T) {
		wantHARefusal(t, check(haKeySetup{DataDir: data, DiskDir: t.TempDir(), Passphrase: true}, good), "root-1", "every replica must see the same key file")
	})
	t.Run("key in the data dir", func(t *testing.T) {
		local := haRoot(t, filepath.Join(data, "keys"), data, pass, "root-2")
		wantHARefusal(t, check(haKeySetup{DataDir: data, DiskDir: filepath.Join(data, "keys"), Passphrase: true}, local), "inside this replica's data dir", "only this replica holds it")
	})
	t.Run("softkms key in the data dir", func(t *testing.T) {
		soft := good
		soft.KeyRef = "softkms:path=" + filepath.Join(data, "soft", "root-1.key.pem")
		wantHARefusal(t, check(s, soft), "inside this replica's data dir")
	})
	t.Run("unencrypted shared key", func(t *testing.T) {
		plainDir := t.TempDir()
		plain := haRoot(t, plainDir, data, nil, "root-3")
		wantHARefusal(t, check(haKeySetup{DataDir: data, DiskDir: plainDir, Passphrase: true}, plain), "unencrypted")
	})
	t.Run("retired roots and upstream roots are not checked", func(t *testing.T) {
		retired := good
		retired.State, retired.KeyRef = store.RootRetired, "disk:gone"
		upstream := good
		upstream.KeyRef = "vault-pki://pki"
		if err := check(s, retired, upstream); err != nil {
			t.Fatal(err)
		}
	})
}
