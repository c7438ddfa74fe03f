package main

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// The checked-in reference docs are what the generator makes from the
// code now: a flag, verb or configuration key added without regenerating
// them fails here.
func TestReferenceDocsAreCurrent(t *testing.T) {
	docs, err := referenceDocs()
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range docs {
		path := filepath.Join("..", "..", "docs", name)
		got, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("%s: %v; run `%s` from the repository root", path, err, regenerate)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("docs/%s is stale (it differs from what the command tree and configuration make now): run `%s` from the repository root and commit the result", name, regenerate)
		}
	}
}

// Every configuration key is documented, and every documented key exists.
func TestConfigKeysDocumented(t *testing.T) {
	keys := yamlKeys(reflect.TypeOf(serveConfig{}), "")
	seen := map[string]bool{}
	for _, k := range keys {
		seen[k] = true
		if d, ok := configKeys[k]; !ok || strings.TrimSpace(d.doc) == "" {
			t.Errorf("config key %s has no description in configKeys (cmd/meshroot/docs_cmd.go)", k)
		}
	}
	for k := range configKeys {
		if !seen[k] {
			t.Errorf("configKeys documents %s, which serveConfig does not have", k)
		}
	}
	for _, k := range []string{"bundleEndpoint.profile", "federation.maxRefresh", "keys.vault.address", "policy.maxTTL"} {
		if !seen[k] {
			t.Errorf("key %s missing from the walk of serveConfig: %v", k, keys)
		}
	}
}
