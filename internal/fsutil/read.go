package fsutil

import (
	"fmt"
	"io"
	"os"
)

// ReadBounded reads the file at path, refusing one of more than limit
// bytes. It reads at most limit+1 bytes, so a pipe or a device that never
// ends cannot make the caller hold more.
func ReadBounded(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes: at most %d are read", path, limit, limit)
	}
	return b, nil
}
