package main

import (
	"regexp"
	"testing"

	"github.com/meshroot/meshroot/internal/depcheck"
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
	pkgs := depcheck.Deps(t, ".", "github.com/meshroot/meshroot/spiffe/relay")
	for _, p := range depcheck.Matching(pkgs, forbidden) {
		t.Errorf("meshroot-bundle links %s", p)
	}
	full := depcheck.Deps(t, "../meshroot", "github.com/meshroot/meshroot/server")
	if hits := depcheck.Matching(full, forbidden); len(hits) < 10 {
		t.Errorf("the pattern matches %d packages meshroot links: it checks next to nothing", len(hits))
	}
}
