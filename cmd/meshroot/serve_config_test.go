package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestServeConfigMaxConnections: maxConnections reaches the server's
// limits, and a negative value is refused with a message naming the key.
func TestServeConfigMaxConnections(t *testing.T) {
	write := func(body string) string {
		p := filepath.Join(t.TempDir(), "meshroot.yaml")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	c, err := loadServeConfig(write("maxConnections: 20000\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.MaxConnections != 20000 {
		t.Fatalf("maxConnections = %d, want 20000", c.MaxConnections)
	}
	if c, err = loadServeConfig(write("dataDir: /tmp/x\n")); err != nil || c.MaxConnections != 0 {
		t.Fatalf("left out: %d, %v; want 0 (the server's default)", c.MaxConnections, err)
	}
	_, err = loadServeConfig(write("maxConnections: -5\n"))
	if err == nil || !strings.Contains(err.Error(), "maxConnections is -5") {
		t.Fatalf("negative maxConnections: %v, want a refusal naming the key", err)
	}
}
