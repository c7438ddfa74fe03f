// Package depcheck lists the packages a binary links, for the tests that
// keep a binary free of what it must not link (cmd/*/deps_test.go).
package depcheck

import (
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// Deps returns what `go list -deps` lists for pkg, with flags added to go
// list's (such as "-tags=grpcnotrace"; GOFLAGS applies as well). It fails t
// when go list fails, or lists fewer than 50 packages or not want: a
// listing that small checks nothing.
func Deps(t testing.TB, pkg, want string, flags ...string) []string {
	t.Helper()
	args := append(append([]string{"list", "-deps"}, flags...), pkg)
	out, err := exec.Command("go", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	pkgs := strings.Fields(string(out))
	if len(pkgs) < 50 || (want != "" && !slices.Contains(pkgs, want)) {
		t.Fatalf("go %s listed %d packages, without %q: %.300s", strings.Join(args, " "), len(pkgs), want, out)
	}
	return pkgs
}

// Matching returns the packages of pkgs that re matches.
func Matching(pkgs []string, re *regexp.Regexp) []string {
	var hits []string
	for _, p := range pkgs {
		if re.MatchString(p) {
			hits = append(hits, p)
		}
	}
	return hits
}
