package relay

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshroot/meshroot/federation/bundle"
	"github.com/meshroot/meshroot/internal/fsutil"
)

// readCache returns the bundle in the cache file, nil when there is no such
// file.
func readCache(path string, td spiffeid.TrustDomain) (*spiffebundle.Bundle, error) {
	data, err := fsutil.ReadBounded(path, bundle.MaxSize)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("bundle relay: cache file: %w (delete it to start from the upstream's bundle)", err)
	}
	b, err := bundle.Parse(td, data, bundle.Options{})
	if err != nil {
		return nil, fmt.Errorf("bundle relay: cache file %s does not hold a SPIFFE bundle of %s: %w (delete it to start from the upstream's bundle)", path, td, err)
	}
	return b, nil
}

// writeCache replaces the cache file with doc, atomically (a crash leaves
// either bundle whole). The bundle is public: the file is 0644.
func writeCache(path string, doc []byte) error {
	if err := fsutil.WriteFile(path, doc, 0o644); err != nil {
		return fmt.Errorf("cache file: %w", err)
	}
	return nil
}
