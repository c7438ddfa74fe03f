package main

import (
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/meshroot/meshroot/internal/depcheck"
)

// pluginOnly are the packages that only meshroot-plugin may link: step-ca's
// CAS client (which pulls in step-ca's server packages), the cloud SDKs and
// step's cloud KMS drivers. meshroot links them again only by mistake, and
// they are ~23 MB of binary and ~14 MB of idle RSS (docs/performance.md).
var pluginOnly = regexp.MustCompile(`^(github\.com/smallstep/certificates|github\.com/aws/aws-sdk-go-v2|cloud\.google\.com/go/kms|github\.com/Azure/azure-sdk-for-go|go\.step\.sm/crypto/kms/(awskms|cloudkms|azurekms)|github\.com/meshroot/meshroot/(upstream/stepca|keys/kms))(/|$)`)

// TestMeshrootLinksNoPluginBackends fails if meshroot links step-ca, a
// cloud SDK or a cloud KMS driver: they belong in meshroot-plugin.
func TestMeshrootLinksNoPluginBackends(t *testing.T) {
	pkgs := depcheck.Deps(t, "../meshroot", "github.com/meshroot/meshroot/server")
	if !slices.Contains(pkgs, "github.com/meshroot/meshroot/internal/pluginhost") {
		t.Errorf("meshroot does not link internal/pluginhost: how does it reach the plugin?")
	}
	for _, p := range pkgs {
		if pluginOnly.MatchString(p) {
			t.Errorf("meshroot links %s: it belongs in meshroot-plugin", p)
		}
		// The package testing (go-plugin linked it, with its other
		// unused parts: 1.2 MiB of binary, which is idle RSS).
		if p == "testing" {
			t.Errorf("meshroot links the package testing: which import brings it? (go list -deps -f '{{.ImportPath}} {{.Imports}}' ./cmd/meshroot)")
		}
	}
}

// TestPluginLinksTheBackends: meshroot-plugin links the step-ca upstream
// and every cloud KMS driver (and so the pattern above matches what it
// must: the check checks something).
func TestPluginLinksTheBackends(t *testing.T) {
	pkgs := depcheck.Deps(t, ".", "")
	for _, want := range []string{
		"github.com/meshroot/meshroot/upstream/stepca",
		"github.com/smallstep/certificates/cas/stepcas",
		"github.com/meshroot/meshroot/keys/kms",
		"go.step.sm/crypto/kms/awskms",
		"go.step.sm/crypto/kms/cloudkms",
		"go.step.sm/crypto/kms/azurekms",
	} {
		if !slices.Contains(pkgs, want) {
			t.Errorf("meshroot-plugin does not link %s", want)
		}
	}
	hits := depcheck.Matching(pkgs, pluginOnly)
	for _, prefix := range []string{"github.com/smallstep/certificates", "github.com/aws/aws-sdk-go-v2", "cloud.google.com/go/kms", "github.com/Azure/azure-sdk-for-go"} {
		if !slices.ContainsFunc(hits, func(p string) bool { return strings.HasPrefix(p, prefix) }) {
			t.Errorf("the pattern matches nothing of %s in meshroot-plugin: it checks nothing", prefix)
		}
	}
}
