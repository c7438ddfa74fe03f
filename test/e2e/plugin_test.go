package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestUpstreamNeedsThePlugin: meshroot itself has no step-ca client or
// cloud KMS SDK; a copy of it without meshroot-plugin beside it or in
// $PATH refuses a step-ca upstream and a cloud KMS key, naming the backend,
// where it looked and what to do, in one line.
func TestUpstreamNeedsThePlugin(t *testing.T) {
	alone := filepath.Join(t.TempDir(), "meshroot")
	b, err := os.ReadFile(meshrootBin)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, alone, b)
	if err := os.Chmod(alone, 0o755); err != nil {
		t.Fatal(err)
	}
	emptyPath := t.TempDir()
	key := writeFile(t, filepath.Join(t.TempDir(), "prov.key"), []byte("unused"))
	for _, c := range []struct {
		name string
		args []string
		what string
	}{
		{"step-ca", []string{"--step-ca-key-file", key, "root", "init", "--trust-domain", trustDomain, "--upstream", "step-ca://127.0.0.1:1?provisioner=p&fingerprint=" + strings.Repeat("ab", 32)}, "step-ca upstream"},
		{"awskms", []string{"--key", "awskms:region=eu-west-1", "root", "init", "--trust-domain", trustDomain}, "awskms key manager"},
	} {
		t.Run(c.name, func(t *testing.T) {
			data := filepath.Join(t.TempDir(), "data")
			cmd := exec.Command(alone, append(c.args, "--data-dir", data, "--insecure-plaintext-key")...)
			cmd.Env = []string{"PATH=" + emptyPath, "HOME=" + t.TempDir()}
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			if err == nil {
				t.Fatalf("meshroot without its plugin succeeded: %s", stderr.String())
			}
			for _, want := range []string{c.what + " runs in meshroot-plugin, which was not found", filepath.Join(filepath.Dir(alone), "meshroot-plugin"), "$PATH (" + emptyPath + ")", "make build puts it in bin/"} {
				if !strings.Contains(stderr.String(), want) {
					t.Errorf("stderr %q lacks %q", stderr.String(), want)
				}
			}
			if strings.Count(strings.TrimSpace(stderr.String()), "\n") > 0 {
				t.Errorf("more than one line on stderr: %q", stderr.String())
			}
		})
	}
}
