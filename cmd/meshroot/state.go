package main

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/keys"
	"github.com/meshroot/meshroot/server/authn"
	"github.com/meshroot/meshroot/store"
	"github.com/meshroot/meshroot/store/sqlite"
)

// maxPassphraseFile bounds a passphrase file.
const maxPassphraseFile = 4 << 10

// dbFile is the state database's name in the data dir.
const dbFile = "meshroot.db"

// openService opens the data dir's store and, when withKeys, its key manager.
// Only commands that create state (create) may start a new data dir; the
// others refuse one without a database, so a mistyped --data-dir is not
// silently taken for an empty one. The caller calls the returned function.
func (g *globals) openService(ctx context.Context, withKeys, create bool) (*ca.Service, func(), error) {
	if g.dataDir == "" {
		return nil, nil, usageError{errors.New("no data dir: pass --data-dir or set MESHROOT_DATA_DIR")}
	}
	if _, err := os.Stat(filepath.Join(g.dataDir, dbFile)); errors.Is(err, fs.ErrNotExist) && !create {
		return nil, nil, usageError{fmt.Errorf("data dir %s holds no meshroot state: check --data-dir, or run `meshroot root init` first", g.dataDir)}
	}
	if err := os.MkdirAll(g.dataDir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("data dir %s: %w", g.dataDir, err)
	}
	st, err := sqlite.Open(ctx, filepath.Join(g.dataDir, dbFile))
	if err != nil {
		return nil, nil, err
	}
	var km keys.KeyManager = noKeys{}
	closeKeys := func() {}
	if withKeys {
		pass, err := g.passphrase()
		if err != nil {
			st.Close()
			return nil, nil, err
		}
		router, err := keyManager(ctx, g.keys, g.dataDir, pass, g.insecurePlaintext)
		if err != nil {
			st.Close()
			return nil, nil, err
		}
		km = router
		closeKeys = func() { _ = router.Close() }
	}
	svc, err := newAuthority(st, km, ca.Policy{}, g.keys)
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	return svc, func() { closeKeys(); st.Close() }, nil
}

// newAuthority is the authority over st and km, as the server and the
// CLI's local mode both run it: upstream CAs reachable, join tokens made
// in the format the server's authentication verifies.
func newAuthority(st store.Store, km keys.KeyManager, policy ca.Policy, kc keysConfig) (*ca.Service, error) {
	svc, err := ca.NewService(st, km, policy)
	if err != nil {
		return nil, err
	}
	svc.SetUpstreams(upstreamOpener(kc))
	svc.SetJoinTokenMinter(authn.NewJoinToken)
	return svc, nil
}

// passphrase reads --passphrase-file, else MESHROOT_PASSPHRASE. A file that
// others can read is refused.
func (g *globals) passphrase() ([]byte, error) {
	if g.passphraseFile != "" {
		info, err := os.Stat(g.passphraseFile)
		if err != nil {
			return nil, usageError{fmt.Errorf("passphrase file: %w", err)}
		}
		// Group read is allowed, as for the store file: a Secret mounted for
		// a non-root pod is root-owned with the pod's fsGroup, mode 0440.
		if info.Mode().Perm()&0o037 != 0 {
			return nil, usageError{fmt.Errorf("passphrase file %s has mode %04o: make it readable by its owner (and group) only (chmod 600 %s, or defaultMode: 0440 for a Secret)", g.passphraseFile, info.Mode().Perm(), g.passphraseFile)}
		}
		if info.Size() > maxPassphraseFile {
			return nil, usageError{fmt.Errorf("passphrase file %s is larger than %d bytes", g.passphraseFile, maxPassphraseFile)}
		}
		b, err := os.ReadFile(g.passphraseFile)
		if err != nil {
			return nil, usageError{fmt.Errorf("passphrase file: %w", err)}
		}
		return bytes.TrimRight(b, "\r\n"), nil
	}
	if v := os.Getenv("MESHROOT_PASSPHRASE"); v != "" {
		return []byte(v), nil
	}
	return nil, nil
}

// localActor names the local user for the audit log.
func localActor() ca.Actor {
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	return ca.Actor(fmt.Sprintf("cli:uid=%d(%s)", os.Getuid(), name))
}

// noKeys stands in for the key manager in commands that load no keys.
type noKeys struct{}

var errNoKeys = errors.New("internal error: this command does not load keys")

func (noKeys) CreateKey(context.Context, string, keys.KeyType) (keys.Key, error) {
	return keys.Key{}, errNoKeys
}
func (noKeys) Signer(context.Context, string) (crypto.Signer, error) { return nil, errNoKeys }
func (noKeys) ListKeys(context.Context) ([]keys.Key, error)          { return nil, errNoKeys }
