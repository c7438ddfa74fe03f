package sqlite

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

const (
	// dirMode is the mode of a database directory Open creates.
	dirMode = 0o700
	// fileMode is the mode of the database file and its -wal and -shm files.
	fileMode = 0o600
)

// DSN parameters. busy_timeout comes first so that the other pragmas wait
// for a lock rather than fail; journal_mode is persistent in the file and is
// set by the writer, which connects first.
const (
	writerParams = "_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)&_pragma=synchronous(FULL)&_txlock=immediate"
	readerParams = "_pragma=busy_timeout(5000)&_pragma=foreign_keys(1)&_pragma=synchronous(FULL)&_pragma=query_only(1)"
	// readerConns is the size of the reader pool.
	readerConns = 4
)

// prepareFiles returns the absolute form of path after creating its parent
// directory when missing and creating (or restricting) the database file so
// that it is mode 0600 before SQLite opens it.
func prepareFiles(path string) (string, error) {
	if path == "" {
		return "", errors.New("sqlite store: empty database path: configure the path of the database file")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("sqlite store %q: %w", path, err)
	}
	if strings.ContainsRune(abs, '?') {
		return "", fmt.Errorf("sqlite store %q: the path must not contain '?': choose another path", abs)
	}
	if err := os.MkdirAll(filepath.Dir(abs), dirMode); err != nil {
		return "", fmt.Errorf("sqlite store %q: create directory: %w", abs, err)
	}
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE, fileMode)
	if err != nil {
		return "", fmt.Errorf("sqlite store %q: create database file: %w", abs, err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("sqlite store %q: create database file: %w", abs, err)
	}
	if err := restrictFiles(abs); err != nil {
		return "", err
	}
	return abs, nil
}

// restrictFiles makes the database file, and its -wal and -shm files when
// they exist, mode 0600. (SQLite creates -wal and -shm with the mode of the
// database file, so they are normally 0600 already.)
func restrictFiles(path string) error {
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if err := os.Chmod(p, fileMode); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("sqlite store %q: restrict permissions to 0600: %w (the file must be owned by the user meshroot runs as)", path, err)
		}
	}
	return nil
}
