package disk

import (
	"encoding/pem"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/meshroot/meshroot/keys"
)

// KeyFile returns the private key file that ref names: for "disk:NAME"
// the file in diskDir (the disk key manager's folder), for
// "softkms:path=FILE" that file. ok is false for references of other
// schemes (keys that do not live in files).
func KeyFile(ref, diskDir string) (path string, ok bool, err error) {
	switch keys.Scheme(ref) {
	case Scheme:
		p, err := diskSyntax.path(diskDir, ref)
		return p, true, err
	case SoftKMSScheme:
		p, err := softSyntax.path("", ref)
		return p, true, err
	}
	return "", false, nil
}

// ManagerDir returns the folder a file key manager URI writes new keys
// into: diskDir for "disk", DIR for "softkms:dir=DIR". ok is false for
// other schemes.
func ManagerDir(uri, diskDir string) (dir string, ok bool, err error) {
	switch keys.Scheme(uri) {
	case Scheme:
		return diskDir, true, nil
	case SoftKMSScheme:
		d, err := softDir(uri)
		return d, true, err
	}
	return "", false, nil
}

// Encrypted reports whether the key file at path is encrypted (PKCS#8
// encrypted, or a legacy encrypted PEM). groupRead is as for
// Options.GroupReadable.
func Encrypted(path string, groupRead bool) (bool, error) {
	data, err := readPrivate(path, groupRead)
	if err != nil {
		return false, err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return false, fmt.Errorf("%s holds no PEM block", path)
	}
	return block.Type == "ENCRYPTED PRIVATE KEY" || strings.Contains(block.Headers["Proc-Type"], "ENCRYPTED"), nil
}

// Within reports whether path is dir or lies under it, comparing absolute,
// symlink-resolved paths where they exist.
func Within(path, dir string) bool {
	p, d := resolve(path), resolve(dir)
	rel, err := filepath.Rel(d, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// resolve makes path absolute and resolves symlinks of its longest
// existing prefix.
func resolve(path string) string {
	abs, err := filepath.Abs(path)
	if err != nil {
		return filepath.Clean(path)
	}
	rest := ""
	for cur := abs; ; {
		if r, err := filepath.EvalSymlinks(cur); err == nil {
			return filepath.Join(r, rest)
		}
		parent := filepath.Dir(cur)
		if parent == cur {
			return abs
		}
		rest = filepath.Join(filepath.Base(cur), rest)
		cur = parent
	}
}
