package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCLIRefusesUntrustedSocketFolder: the CLI does not dial a socket in a
// folder other users can write to or read, and says what to fix.
func TestCLIRefusesUntrustedSocketFolder(t *testing.T) {
	clearEnv(t)
	dir := filepath.Join(t.TempDir(), "run")
	if err := os.Mkdir(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "admin.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	r := cli(t, "cluster", "list", "--socket", sock)
	if r.code == exitOK || !strings.Contains(r.stderr, "has mode 0777") || !strings.Contains(r.stderr, "chmod 700") {
		t.Fatalf("exit %d, stderr %q; want a refusal naming the folder's mode", r.code, r.stderr)
	}
}
