package relay

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshroot/meshroot/federation/bundle"
)

// readCache returns the bundle in the cache file, nil when there is no such
// file.
func readCache(path string, td spiffeid.TrustDomain) (*spiffebundle.Bundle, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("bundle relay: cache file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, bundle.MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("bundle relay: cache file: %w", err)
	}
	b, err := bundle.Parse(td, data, bundle.Options{})
	if err != nil {
		return nil, fmt.Errorf("bundle relay: cache file %s does not hold a SPIFFE bundle of %s: %w (delete it to start from the upstream's bundle)", path, td, err)
	}
	return b, nil
}

// writeCache replaces the cache file with doc: a new file in the same
// folder, synced, then renamed over the old one, so that a crash leaves
// either bundle whole. The bundle is public: the file is 0644.
func writeCache(path string, doc []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("cache file: %w", err)
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("cache file: %w", err)
	}
	if _, err := tmp.Write(doc); err != nil {
		return fmt.Errorf("cache file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("cache file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("cache file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("cache file: %w", err)
	}
	done = true
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
