package disk

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"go.step.sm/crypto/kms/uri"

	"github.com/meshroot/meshroot/keys"
)

// The URI schemes this package owns.
const (
	// Scheme is the data dir's key folder: URI "disk", references "disk:NAME".
	Scheme = "disk"
	// SoftKMSScheme is a folder of its own: URI "softkms:dir=DIR",
	// references "softkms:path=DIR/NAME.key.pem".
	SoftKMSScheme = "softkms"
)

// RefPrefix starts every reference of the "disk" scheme.
const RefPrefix = Scheme + ":"

// syntax is one scheme's reference syntax over a key folder.
type syntax struct {
	label string // names the key manager in errors
	// ref formats the reference of key name in dir.
	ref func(dir, name string) string
	// path parses ref and returns the key file it names.
	path func(dir, ref string) (string, error)
}

var diskSyntax = syntax{
	label: "disk key manager",
	ref:   func(_, name string) string { return RefPrefix + name },
	path: func(dir, ref string) (string, error) {
		name, ok := strings.CutPrefix(ref, RefPrefix)
		if !ok || !keys.ValidKeyName(name) {
			return "", fmt.Errorf("disk key manager: key reference %q is not a disk key: want disk:NAME", ref)
		}
		return filepath.Join(dir, name+".key.pem"), nil
	},
}

var softSyntax = syntax{
	label: "softkms key manager",
	ref:   func(dir, name string) string { return SoftKMSScheme + ":path=" + filepath.Join(dir, name+".key.pem") },
	path: func(_, ref string) (string, error) {
		u, err := uri.ParseWithScheme(SoftKMSScheme, ref)
		if err != nil {
			return "", fmt.Errorf("softkms key manager: key reference %q is not a softkms: reference: want softkms:path=/path/to/key.pem", ref)
		}
		p := u.Get("path")
		if p == "" || !filepath.IsAbs(p) {
			return "", fmt.Errorf("softkms key manager: key reference %q names no absolute file path: want softkms:path=/path/to/key.pem", ref)
		}
		return filepath.Clean(p), nil
	},
}

// NewSoftKMS returns the key manager that softkms:dir=DIR names; opts.Dir
// is ignored.
func NewSoftKMS(rawURI string, opts Options) (*KeyManager, error) {
	dir, err := softDir(rawURI)
	if err != nil {
		return nil, err
	}
	opts.Dir = dir
	return newManager(opts, softSyntax)
}

// softDir parses softkms:dir=DIR.
func softDir(rawURI string) (string, error) {
	u, err := uri.ParseWithScheme(SoftKMSScheme, rawURI)
	if err != nil {
		return "", fmt.Errorf("softkms key manager: URI %q cannot be parsed: want softkms:dir=/path/to/folder", rawURI)
	}
	for k := range uri.Values(u) {
		if k != "dir" {
			return "", fmt.Errorf("softkms key manager: URI %q has unknown attribute %q: want softkms:dir=/path/to/folder", rawURI, k)
		}
	}
	dir := u.Get("dir")
	if dir == "" {
		return "", fmt.Errorf("softkms key manager: URI %q names no folder: want softkms:dir=/path/to/folder", rawURI)
	}
	return dir, nil
}

func init() { keys.Register(backend{}) }

// backend registers both schemes with the key catalog.
type backend struct{}

func (backend) Schemes() []string { return []string{Scheme, SoftKMSScheme} }

// Open opens "disk" over cfg.Dir, or softkms:dir=DIR.
func (backend) Open(_ context.Context, rawURI string, cfg keys.Config) (keys.KeyManager, error) {
	opts := Options{Dir: cfg.Dir, Passphrase: cfg.Passphrase, InsecurePlaintext: cfg.InsecurePlaintext, GroupReadable: cfg.GroupReadable}
	switch keys.Scheme(rawURI) {
	case SoftKMSScheme:
		return NewSoftKMS(rawURI, opts)
	case Scheme:
		if rawURI != Scheme {
			return nil, fmt.Errorf("disk key manager: URI %q: the disk key manager is just \"disk\" (its folder is the data dir's keys/): use softkms:dir=/path for another folder", rawURI)
		}
		km, err := New(opts)
		if err != nil {
			// A missing or short passphrase is a usage error, as it has
			// always been for the default key manager.
			return nil, keys.NotConfigured(err)
		}
		return km, nil
	}
	return nil, fmt.Errorf("disk key manager: URI %q is neither disk nor softkms:dir=...", rawURI)
}

// ManagerURI: a disk reference lives in the configured folder, a softkms
// reference in the folder of its file. Either way only a PEM file is read.
func (backend) ManagerURI(ref string, _ keys.Config) (string, error) {
	if keys.Scheme(ref) == Scheme {
		return Scheme, nil
	}
	p, err := softSyntax.path("", ref)
	if err != nil {
		return "", err
	}
	return SoftKMSScheme + ":dir=" + filepath.Dir(p), nil
}
