package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshroot/meshroot/keys"
	"github.com/meshroot/meshroot/store/postgres/pgtest"
)

// startReplica runs `meshroot serve` in this process over the PostgreSQL
// database in dsnFile with its own data dir and admin socket, and waits
// for its start line.
func startReplica(t *testing.T, dir, name, dsnFile string, extra ...string) string {
	t.Helper()
	socket := filepath.Join(dir, name+".sock")
	args := append([]string{"serve", "--data-dir=" + filepath.Join(dir, name), "--store-file", dsnFile, "--socket", socket,
		"--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--bundle-endpoint-listen", "off"}, extra...)
	var logs syncBuffer
	cmd := newRootCmd()
	cmd.SetArgs(args)
	cmd.SetErr(&logs)
	cmd.SetOut(&logs)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(logs.String(), "meshroot server starting"); time.Sleep(50 * time.Millisecond) {
		select {
		case err := <-done:
			done <- err
			t.Fatalf("replica %s exited: %v\n%s", name, err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica %s never started:\n%s", name, logs.String())
		}
	}
	return socket
}

// TestHAReplicaWithAnotherKeyRefused: two replicas share one PostgreSQL
// database and one key folder (a Secret, in Kubernetes); the root made
// through the first is served by both. A third replica whose key folder
// holds another key under the same name (its own local key) is refused at
// start, naming the mismatch; so is one that keeps disk keys in its data
// dir.
func TestHAReplicaWithAnotherKeyRefused(t *testing.T) {
	clearEnv(t)
	dir, err := os.MkdirTemp("", "mr") // short: unix socket paths are bounded
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	dsnFile := filepath.Join(dir, "dsn")
	if err := os.WriteFile(dsnFile, []byte(pgtest.NewDatabase(t)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pass := []byte("correct horse battery")
	passFile := filepath.Join(dir, "pass")
	if err := os.WriteFile(passFile, append(pass, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	shared, other := filepath.Join(dir, "shared"), filepath.Join(dir, "other")
	conf := func(keyDir string) string {
		f := filepath.Join(dir, filepath.Base(keyDir)+".yaml")
		if err := os.WriteFile(f, []byte("keys:\n  dir: "+keyDir+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	pf := "--passphrase-file=" + passFile

	a := startReplica(t, dir, "a", dsnFile, pf, "--config", conf(shared))
	cliOK(t, "root", "init", "--trust-domain", testTD, "--socket", a)
	files, err := filepath.Glob(filepath.Join(shared, "*.key.pem"))
	if err != nil || len(files) != 1 {
		t.Fatalf("shared key folder: %v %v, want one key", files, err)
	}
	// As a Secret mounted with the pod's fsGroup shows them: group-readable.
	for _, f := range append(files, passFile) {
		if err := os.Chmod(f, 0o440); err != nil {
			t.Fatal(err)
		}
	}
	startReplica(t, dir, "b", dsnFile, pf, "--config", conf(shared))
	name := strings.TrimSuffix(filepath.Base(files[0]), ".key.pem")
	km, err := keyManager(t.Context(), keysConfig{Dir: other}, dir, pass, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := km.CreateKey(t.Context(), name, keys.ECP256); err != nil {
		t.Fatal(err)
	}
	km.Close()
	r := cli(t, "serve", "--data-dir="+filepath.Join(dir, "c"), "--store-file", dsnFile, "--socket", filepath.Join(dir, "c.sock"), pf,
		"--config", conf(other), "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--bundle-endpoint-listen", "off")
	if r.code != exitUsage || !strings.Contains(r.stderr, "not the root's key") || !strings.Contains(r.stderr, "disk:"+name) {
		t.Fatalf("replica with another key for the root: exit %d, %s; want a usage error naming the mismatch", r.code, r.stderr)
	}
	r = cli(t, "serve", "--data-dir="+filepath.Join(dir, "d"), "--store-file", dsnFile, "--socket", filepath.Join(dir, "d.sock"), pf,
		"--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--bundle-endpoint-listen", "off")
	if r.code != exitUsage || !strings.Contains(r.stderr, "inside this replica's data dir") {
		t.Fatalf("replica with disk keys in its data dir: exit %d, %s; want a usage error", r.code, r.stderr)
	}
}
