package main

import (
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// forbidden are packages the edge bundle endpoint must not link: the CA's
// key backends, stores, Vault client, upstream CAs, the server and its
// gRPC, the Kubernetes client, the cloud and HSM SDKs, and anything that
// calls methods by name (html/template), which makes the linker keep
// every exported method.
var forbidden = regexp.MustCompile(`^github\.com/meshroot/meshroot/(keys/[^/]+|store/sqlite|store/postgres|internal/vaultclient|upstream|server|agent)(/|$)|` +
	`^google\.golang\.org/grpc(/|$)|^k8s\.io/|^html/template$|` +
	`hashicorp|aws|cloud\.google\.com|google\.golang\.org/api|/azure|Azure/|crypto11|pkcs11|sqlite|jackc/pgx|lib/pq`)

// TestLeanDependencies lists what meshroot-bundle links and fails on any
// forbidden package; the same pattern must match what meshroot links, so
// that the check can fail.
func TestLeanDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	pkgs := strings.Fields(string(out))
	if !slices.Contains(pkgs, "github.com/meshroot/meshroot/spiffe/relay") {
		t.Fatalf("go list -deps listed %d packages without the relay: %.300s", len(pkgs), out)
	}
	for _, p := range pkgs {
		if forbidden.MatchString(p) {
			t.Errorf("meshroot-bundle links %s", p)
		}
	}
	full, err := exec.Command("go", "list", "-deps", "../meshroot").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps ../meshroot: %v\n%s", err, full)
	}
	hits := 0
	for _, p := range strings.Fields(string(full)) {
		if forbidden.MatchString(p) {
			hits++
		}
	}
	if hits < 10 {
		t.Errorf("the pattern matches %d packages meshroot links: it checks next to nothing", hits)
	}
}
