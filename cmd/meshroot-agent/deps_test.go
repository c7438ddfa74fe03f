package main

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/meshroot/meshroot/internal/depcheck"
)

// forbidden are packages the lean agent must not link: the CA's key
// backends, its stores, the Vault client and the cloud and HSM SDKs.
var forbidden = regexp.MustCompile(`^github\.com/meshroot/meshroot/(keys/[^/]+|store/sqlite|store/postgres|internal/vaultclient|upstream|server)(/|$)|` +
	`hashicorp|aws|cloud\.google\.com|google\.golang\.org/api|/azure|Azure/|crypto11|pkcs11|sqlite|jackc/pgx|lib/pq`)

// TestLeanDependencies lists what the meshroot-agent binary links and
// fails on any CA key backend, store, Vault client or cloud SDK.
func TestLeanDependencies(t *testing.T) {
	pkgs := depcheck.Deps(t, ".", "github.com/meshroot/meshroot/agent")
	for _, p := range depcheck.Matching(pkgs, forbidden) {
		t.Errorf("meshroot-agent links %s", p)
	}
	// The check itself can fail: meshroot's own binary links them.
	full := depcheck.Deps(t, "../meshroot", "github.com/meshroot/meshroot/server")
	if len(depcheck.Matching(full, forbidden)) == 0 {
		t.Errorf("the pattern matches nothing meshroot links: it checks nothing")
	}
}

// clientset is client-go's full clientset and its scheme, whose package
// init registers every built-in API group, and the API groups' packages
// themselves, whose code for every kind is linked with any one kind: many
// MB of code and heap that neither binary needs (internal/kubeclient is
// the small client; only authentication/v1, for TokenReview and
// TokenRequest, is allowed).
var clientset = regexp.MustCompile(`^k8s\.io/client-go/(kubernetes|applyconfigurations)(/|$)|^k8s\.io/api/(core|apps|admission|batch|networking|policy|rbac|storage|resource)/`)

// TestNoClientset fails if meshroot-agent or meshroot links client-go's
// clientset, its scheme, or the core/v1, apps/v1 or other API groups'
// packages.
func TestNoClientset(t *testing.T) {
	for _, pkg := range []string{".", "../meshroot"} {
		for _, p := range depcheck.Matching(depcheck.Deps(t, pkg, ""), clientset) {
			t.Errorf("%s links %s: use internal/kubeclient", pkg, p)
		}
	}
	// The check itself can fail: the clientset links what it names.
	out := depcheck.Deps(t, "k8s.io/client-go/kubernetes", "")
	if hits := depcheck.Matching(out, clientset); len(hits) < 100 {
		t.Errorf("the pattern matches %d of the clientset's packages: it checks nothing", len(hits))
	}
}

// methodsByName are packages that call methods by name through
// reflection (html/template) or link one that does (gRPC's
// golang.org/x/net/trace). With any of them linked, the linker keeps
// every exported method of every type the binary holds: meshroot-agent
// grew by 23 % (17.0 -> 20.9 MB) and its idle RSS by ~3 MiB.
var methodsByName = regexp.MustCompile(`^(golang\.org/x/net/trace|html/template)$`)

// TestNoMethodsByName fails if meshroot-agent, built with the tags the
// Makefile and the Dockerfile build it with, links a package that calls
// methods by name, and if those builds drop grpcnotrace.
func TestNoMethodsByName(t *testing.T) {
	for _, f := range []string{"../../Makefile", "../../deploy/Dockerfile"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), "grpcnotrace") {
			t.Errorf("%s does not build with -tags grpcnotrace: gRPC then links golang.org/x/net/trace", f)
		}
	}
	for _, tc := range []struct {
		tags string
		want bool // the pattern matches a package linked
	}{{"grpcnotrace", false}, {"", true}} { // the second shows the check can fail
		hits := depcheck.Matching(depcheck.Deps(t, ".", "", "-tags="+tc.tags), methodsByName)
		if got := len(hits) > 0; got != tc.want {
			t.Errorf("with -tags=%q meshroot-agent links %v; want a package that calls methods by name: %v", tc.tags, hits, tc.want)
		}
	}
}
