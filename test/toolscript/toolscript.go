// Package toolscript finds test/tools/build.sh, the script that builds the
// real components the tests run (Vault, step-ca, ...) into the tool cache.
package toolscript

import (
	"fmt"
	"os"
	"path/filepath"
)

// Rel is the script's path from the repository's top.
const Rel = "test/tools/build.sh"

// Path returns the script's path: $MESHROOT_BUILD_SH when set, else the
// first test/tools/build.sh above the working directory (a package's
// tests run in its folder). It does not use the test binary's source
// paths, which `go test -trimpath` (as `make test` runs it, so that
// checkouts in other folders share the build cache) leaves relative.
func Path() (string, error) {
	if env := os.Getenv("MESHROOT_BUILD_SH"); env != "" {
		return env, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		p := filepath.Join(d, Rel)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("%s not found above %s: run the tests from the repository, or set MESHROOT_BUILD_SH", Rel, wd)
		}
	}
}
