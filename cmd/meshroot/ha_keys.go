package main

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/keys"
	"github.com/meshroot/meshroot/keys/disk"
	"github.com/meshroot/meshroot/store"
)

// HA mode is a server whose store is PostgreSQL: several replicas may run
// over the one database, and each must be able to sign with every root's
// key. A key file that lives in one replica's data dir is held by that
// replica alone, so in HA mode the server refuses to start with one
// (docs/ha.md, "Keys").

// rootLister lists the roots, for the HA key checks.
type rootLister interface {
	ListRoots(ctx context.Context) ([]store.Root, error)
}

// serveKeyManager opens the server's key manager. In HA mode it first
// refuses a key configuration only this replica could use, and then checks
// every root's key; key files from a Secret every replica mounts are
// readable by the pod's group, which HA mode accepts (they must be
// encrypted).
func serveKeyManager(ctx context.Context, cfg *serveConfig, st rootLister, pass []byte, plaintext, haMode bool, log *slog.Logger) (*keys.Router, error) {
	cfg.Keys.groupReadable = haMode
	ha := haKeySetup{DataDir: cfg.DataDir, DiskDir: diskKeyDir(cfg.Keys, cfg.DataDir), Create: cfg.Keys.Create, Passphrase: len(pass) > 0}
	if haMode {
		if err := checkHAKeyConfig(ha); err != nil {
			return nil, err
		}
	}
	km, err := keyManager(ctx, cfg.Keys, cfg.DataDir, pass, plaintext)
	if err != nil {
		return nil, err
	}
	if !haMode {
		return km, nil
	}
	roots, err := st.ListRoots(ctx)
	if err == nil {
		err = checkHARootKeys(ctx, ha, roots, km, log)
	} else {
		err = fmt.Errorf("HA key check: list roots: %w", err)
	}
	if err != nil {
		_ = km.Close()
		return nil, err
	}
	return km, nil
}

// haKeySetup is what the HA key checks look at.
type haKeySetup struct {
	// DataDir is this replica's data dir (never shared).
	DataDir string
	// DiskDir is the disk key manager's folder (keys.dir, default
	// DATA_DIR/keys).
	DiskDir string
	// Create is keys.create, where new root keys go ("" is disk).
	Create string
	// Passphrase says whether a passphrase for key files is configured.
	Passphrase bool
}

// haKeyFix says what to do about a file key only one replica holds.
const haKeyFix = "put the encrypted key files in one Secret mounted on every replica, point keys.dir (disk keys) or softkms:dir= at that mount, and give the passphrase with passphraseFile or MESHROOT_PASSPHRASE; or keep root keys in an HSM (pkcs11:), Vault (vault-transit://) or a cloud KMS, which every replica reaches (docs/ha.md, Keys)"

// errHAKeys starts every refusal of the HA key checks.
var errHAKeys = errors.New("HA mode (the store is PostgreSQL, shared by every replica)")

// checkHAKeyConfig refuses a key configuration that would make new root
// keys that only this replica holds: keys.create naming a folder inside
// the data dir, or unencrypted key files.
func checkHAKeyConfig(s haKeySetup) error {
	create := s.Create
	if create == "" {
		create = keys.DefaultCreate
	}
	dir, file, err := disk.ManagerDir(create, s.DiskDir)
	if err != nil || !file {
		return err // not a file key manager: shared by nature
	}
	if disk.Within(dir, s.DataDir) {
		return usageError{fmt.Errorf("%w: new root keys (keys.create %s) would go to %s, inside this replica's data dir %s, where no other replica can read them: %s", errHAKeys, create, dir, s.DataDir, haKeyFix)}
	}
	if !s.Passphrase {
		return usageError{fmt.Errorf("%w: new root keys (keys.create %s) would be written unencrypted to a folder every replica mounts: give the passphrase with passphraseFile or MESHROOT_PASSPHRASE (insecurePlaintextKey is refused in HA mode)", errHAKeys, create)}
	}
	return nil
}

// checkHARootKeys checks the key of every root still in the trust bundle:
// a key file must lie outside the data dir, exist here and be encrypted;
// and the key this replica loads must be the root's own (the public key in
// the root's certificate, which the database holds for every replica), so
// that two replicas with different local key files for one root are told
// apart. Keys outside files (HSM, Vault, KMS) that cannot be reached now
// are only logged: the server starts degraded, as without HA.
func checkHARootKeys(ctx context.Context, s haKeySetup, roots []store.Root, km keys.KeyManager, log *slog.Logger) error {
	for _, r := range roots {
		if r.KeyRef == "" || (r.State != store.RootPrepared && r.State != store.RootActive && r.State != store.RootRetiring) {
			continue
		}
		if _, ok := keys.Lookup(keys.Scheme(r.KeyRef)); !ok {
			continue // an upstream CA signs: no key here
		}
		path, file, err := disk.KeyFile(r.KeyRef, s.DiskDir)
		if err != nil {
			return usageError{fmt.Errorf("%w: root %s: %v", errHAKeys, r.ID, err)}
		}
		if file {
			if err := checkHAKeyFile(s, r, path); err != nil {
				return err
			}
		}
		lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		signer, err := km.Signer(lctx, r.KeyRef)
		cancel()
		if err != nil {
			if file {
				return usageError{fmt.Errorf("%w: root %s: cannot load its key %s: %v", errHAKeys, r.ID, r.KeyRef, err)}
			}
			log.Warn("HA mode: cannot check that this replica's key for a root is the root's own; the backend is unreachable now", "root", r.ID, "key", r.KeyRef, "error", err)
			continue
		}
		if err := sameKey(r, signer.Public()); err != nil {
			return usageError{fmt.Errorf("%w: %v", errHAKeys, err)}
		}
	}
	return nil
}

// checkHAKeyFile refuses a root key file that only this replica can hold:
// inside the data dir, missing here, or unencrypted.
func checkHAKeyFile(s haKeySetup, r store.Root, path string) error {
	if disk.Within(path, s.DataDir) {
		return usageError{fmt.Errorf("%w: the key of root %s (%s) is %s, inside this replica's data dir %s, so only this replica holds it: %s", errHAKeys, r.ID, r.KeyRef, path, s.DataDir, haKeyFix)}
	}
	enc, err := disk.Encrypted(path, true)
	if err != nil {
		return usageError{fmt.Errorf("%w: the key of root %s (%s): %v: every replica must see the same key file: %s", errHAKeys, r.ID, r.KeyRef, err, haKeyFix)}
	}
	if !enc {
		return usageError{fmt.Errorf("%w: the key of root %s is %s, unencrypted: a key file shared by replicas must be encrypted (re-encrypt it with a passphrase, e.g. openssl pkcs8 -topk8 -v2 aes-256-cbc, and give the passphrase with passphraseFile)", errHAKeys, r.ID, path)}
	}
	return nil
}

// sameKey refuses pub unless it is the public key of root r's signing
// certificate.
func sameKey(r store.Root, pub crypto.PublicKey) error {
	chain, err := ca.ParseCerts(r.ChainPEM)
	if err != nil || len(chain) == 0 {
		return fmt.Errorf("root %s: its stored certificate cannot be read: %v", r.ID, err)
	}
	want := chain[0]
	eq, ok := want.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if ok && eq.Equal(pub) {
		return nil
	}
	return fmt.Errorf("root %s: the key this replica loads for it (%s, public key %s) is not the root's key (public key %s in its certificate, recorded in the database): the replicas hold different key files for this root; mount the same Secret on every replica (docs/ha.md, Keys)", r.ID, r.KeyRef, spkiFingerprint(pub), spkiFingerprint(want.PublicKey))
}

// spkiFingerprint is the SHA-256 of a public key's SubjectPublicKeyInfo,
// hex, shortened to 16 bytes for messages.
func spkiFingerprint(pub crypto.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "unknown"
	}
	sum := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(sum[:16])
}
