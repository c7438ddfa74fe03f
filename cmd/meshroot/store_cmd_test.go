package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshroot/meshroot/store/postgres/pgtest"
)

// A SQLite data dir copied into PostgreSQL with `store migrate`, then
// served from PostgreSQL with --store-file: the server sees the copied
// state and the audit chain verifies through it.
func TestStoreMigrateThenServe(t *testing.T) {
	clearEnv(t)
	dir, err := os.MkdirTemp("", "mr") // short: unix socket paths are bounded
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	data := filepath.Join(dir, "data")
	dd := "--data-dir=" + data
	passFile := filepath.Join(dir, "pass")
	if err := os.WriteFile(passFile, []byte("correct horse battery\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pf := "--passphrase-file=" + passFile
	cliOK(t, "root", "init", "--trust-domain", testTD, pf, dd)
	cliOK(t, "cluster", "add", "east", dd)

	dsnFile := filepath.Join(dir, "dsn")
	if err := os.WriteFile(dsnFile, []byte(pgtest.NewDatabase(t)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := cli(t, "store", "migrate", "--from", data, "--to-file", dsnFile); r.code != exitUsage || !strings.Contains(r.stderr, "others may read") {
		t.Fatalf("store migrate with a world-readable DSN file: exit %d, %s; want a usage error", r.code, r.stderr)
	}
	if err := os.Chmod(dsnFile, 0o640); err != nil {
		t.Fatal(err)
	}
	r := cliOK(t, "store", "migrate", "--from", data, "--to-file", dsnFile)
	if !strings.Contains(r.stdout, "row counts match, audit chain verified") || !strings.Contains(r.stdout, "clusters") {
		t.Fatalf("store migrate output:\n%s", r.stdout)
	}
	if r := cli(t, "store", "migrate", "--from", data, "--to-file", dsnFile); r.code == exitOK || !strings.Contains(r.stderr, "not empty") {
		t.Fatalf("second store migrate into the same database: exit %d, %s; want a refusal", r.code, r.stderr)
	}

	socket := filepath.Join(dir, "admin.sock")
	serveArgs := []string{"serve", dd, "--store-file", dsnFile, "--socket", socket, pf,
		"--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--bundle-endpoint-listen", "off"}
	// On PostgreSQL (HA mode) the root key left in the data dir is refused:
	// only this replica would hold it.
	if r := cli(t, serveArgs...); r.code != exitUsage || !strings.Contains(r.stderr, "inside this replica's data dir") {
		t.Fatalf("serve on PostgreSQL with the root key in the data dir: exit %d, %s; want a usage error", r.code, r.stderr)
	}
	// Moved to a folder every replica mounts (a Secret), it is accepted.
	shared := filepath.Join(dir, "shared-keys")
	if err := os.Rename(filepath.Join(data, "keys"), shared); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "serve.yaml")
	if err := os.WriteFile(conf, []byte("keys:\n  dir: "+shared+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	cmd := newRootCmd()
	cmd.SetArgs(append(serveArgs, "--config", conf))
	cmd.SetErr(&logs)
	cmd.SetOut(&logs)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(logs.String(), "meshroot server starting"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("server never started:\n%s", logs.String())
		}
	}
	if !strings.Contains(logs.String(), `"store":"postgres://postgres@127.0.0.1:5432/`+pgtest.Prefix) {
		t.Errorf("server log does not name the PostgreSQL store:\n%s", logs.String())
	}
	if r := cliOK(t, "cluster", "list", "--socket", socket); !strings.Contains(r.stdout, "east") {
		t.Errorf("cluster list through the server on PostgreSQL:\n%s", r.stdout)
	}
	if r := cliOK(t, "audit", "list", "--socket", socket); !strings.Contains(r.stdout, "store.migrate") {
		t.Errorf("audit list lacks the store.migrate entry:\n%s", r.stdout)
	}
	if r := cliOK(t, "audit", "verify", "--socket", socket); !strings.Contains(r.stdout, "audit log intact") {
		t.Errorf("audit verify:\n%s", r.stdout)
	}
}

func TestStoreDSNChecks(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "dsn")
	if err := os.WriteFile(f, []byte("  \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := storeDSN("", f); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("empty DSN file: %v", err)
	}
	if _, err := storeDSN("postgres://x", f); err == nil || !strings.Contains(err.Error(), "both") {
		t.Errorf("DSN and DSN file: %v", err)
	}
	if _, err := openStore(t.Context(), "mysql://user:s3cret@x/db", dir); err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("openStore(mysql://...) = %v, want a refusal that does not echo the DSN", err)
	}
}
