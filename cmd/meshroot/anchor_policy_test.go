package main

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// copyDB copies every file of the SQLite database in dir (the database and
// any WAL or shared-memory file) from dir to dst.
func copyDB(t *testing.T, dir, dst string) {
	t.Helper()
	matches, err := filepath.Glob(filepath.Join(dir, dbFile+"*"))
	if err != nil || len(matches) == 0 {
		t.Fatalf("no database in %s: %v", dir, err)
	}
	for _, m := range matches {
		b, err := os.ReadFile(m)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, filepath.Base(m)), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestAuditAnchorDetectsRollback: a database file restored from an older
// copy has a consistent hash chain, so `audit verify` alone passes; with an
// anchor taken after the copy it exits 4 naming the rollback.
func TestAuditAnchorDetectsRollback(t *testing.T) {
	clearEnv(t)
	data := filepath.Join(t.TempDir(), "data")
	dd := "--data-dir=" + data
	files := t.TempDir()
	older, newer := filepath.Join(files, "older.pem"), filepath.Join(files, "newer.pem")
	cliOK(t, "root", "init", "--trust-domain", testTD, "--insecure-plaintext-key", dd)
	cliOK(t, "audit", "anchor", "--out", older, "--insecure-plaintext-key", dd)
	aside := t.TempDir()
	copyDB(t, data, aside)

	cliOK(t, "cluster", "add", "east", dd)
	cliOK(t, "cluster", "add", "west", dd)
	printed := cliOK(t, "audit", "anchor", "--insecure-plaintext-key", dd).stdout
	if !strings.HasPrefix(printed, "-----BEGIN MESHROOT AUDIT ANCHOR-----") || !strings.Contains(printed, "-----BEGIN CERTIFICATE-----") {
		t.Fatalf("audit anchor printed:\n%s", printed)
	}
	if err := os.WriteFile(newer, []byte(printed), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{older, newer} {
		if r := cliOK(t, "audit", "verify", "--anchor", a, dd); !strings.Contains(r.stdout, "anchor verified") {
			t.Errorf("verify --anchor %s: %s", filepath.Base(a), r.stdout)
		}
	}

	// Roll the database back to the copy made after the first anchor.
	matches, _ := filepath.Glob(filepath.Join(data, dbFile+"*"))
	for _, m := range matches {
		if err := os.Remove(m); err != nil {
			t.Fatal(err)
		}
	}
	copyDB(t, aside, data)
	cliOK(t, "audit", "verify", dd) // the older chain is consistent
	cliOK(t, "audit", "verify", "--anchor", older, dd)
	r := cli(t, "audit", "verify", "--anchor", newer, dd)
	if r.code != exitTamper || !strings.Contains(r.stderr, "audit log rolled back") {
		t.Fatalf("verify --anchor newer after the rollback: exit %d, want %d naming the rollback\n%s", r.code, exitTamper, r.stderr)
	}

	// An anchor that is not one is a usage error.
	bad := filepath.Join(files, "bad.pem")
	if err := os.WriteFile(bad, []byte("not an anchor"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := cli(t, "audit", "verify", "--anchor", bad, dd); r.code != exitUsage {
		t.Errorf("verify --anchor with a non-anchor: exit %d, want %d\n%s", r.code, exitUsage, r.stderr)
	}
}

// TestPolicyInStore: the policy set in the store binds `intermediate issue
// --data-dir`, which used to issue under an empty (default) policy whatever
// the server was configured with.
func TestPolicyInStore(t *testing.T) {
	clearEnv(t)
	dd := dataDir(t)
	cliOK(t, "root", "init", "--trust-domain", testTD, "--insecure-plaintext-key", dd)
	cliOK(t, "cluster", "add", "east", dd)
	var shown map[string]any
	if err := json.Unmarshal([]byte(cliOK(t, "policy", "show", "-o", "json", dd).stdout), &shown); err != nil {
		t.Fatal(err)
	}
	if shown["stored"] != false || shown["max_ttl"] != "8760h0m0s" || shown["superseded_renewal_grace"] != "10m0s" {
		t.Errorf("policy show before any is set: %v", shown)
	}
	if r := cli(t, "policy", "set", dd); r.code != exitUsage {
		t.Errorf("policy set without a setting: exit %d, want %d", r.code, exitUsage)
	}
	if r := cli(t, "policy", "set", "--min-ttl", "100h", "--max-ttl", "48h", dd); r.code != exitRefused || !strings.Contains(r.stderr, "exceeds maximum TTL") {
		t.Errorf("contradictory policy: exit %d\n%s", r.code, r.stderr)
	}
	cliOK(t, "policy", "set", "--max-ttl", "48h", "--default-ttl", "48h", dd)
	if err := json.Unmarshal([]byte(cliOK(t, "policy", "show", "-o", "json", dd).stdout), &shown); err != nil {
		t.Fatal(err)
	}
	if shown["stored"] != true || shown["max_ttl"] != "48h0m0s" || shown["min_ttl"] != "24h0m0s" {
		t.Errorf("policy show after set: %v", shown)
	}
	r := cli(t, "intermediate", "issue", "--cluster", "east", "--out", t.TempDir(), "--ttl", "72h", "--insecure-plaintext-key", dd)
	if r.code != exitRefused || !strings.Contains(r.stderr, "exceeds the policy maximum 48h0m0s") {
		t.Errorf("intermediate issue --data-dir --ttl 72h under a stored maximum of 48h: exit %d\n%s", r.code, r.stderr)
	}
	// Without --ttl the policy's default applies.
	out := t.TempDir()
	cliOK(t, "intermediate", "issue", "--cluster", "east", "--out", out, "--insecure-plaintext-key", dd)
	pemData, err := os.ReadFile(filepath.Join(out, "ca-cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(pemData)
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if life := cert.NotAfter.Sub(cert.NotBefore); life > 48*time.Hour+10*time.Minute {
		t.Errorf("intermediate issued without --ttl lives %s, want the stored default 48h", life)
	}
}
