package depcheck_test

import (
	"fmt"
	"regexp"
	"testing"

	"github.com/meshroot/meshroot/internal/depcheck"
)

func ExampleMatching() {
	pkgs := []string{"fmt", "github.com/meshroot/meshroot/keys/disk", "k8s.io/client-go/rest"}
	fmt.Println(depcheck.Matching(pkgs, regexp.MustCompile(`^k8s\.io/`)))
	// Output: [k8s.io/client-go/rest]
}

// TestDeps lists this package's own dependencies: depcheck links the
// package testing, and not net/http.
func TestDeps(t *testing.T) {
	pkgs := depcheck.Deps(t, "github.com/meshroot/meshroot/internal/depcheck", "testing")
	if hits := depcheck.Matching(pkgs, regexp.MustCompile(`^net/http$`)); len(hits) != 0 {
		t.Errorf("depcheck links %v", hits)
	}
}
