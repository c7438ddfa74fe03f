package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshroot/meshroot/internal/testca"
)

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer = testca.SyncBuffer

// A server started without a root says once, plainly, that it waits for
// one and how to make it, instead of logging errors about the bundle
// endpoint's SVID; `root init` through the socket then gets it going.
func TestServeWaitsForRoot(t *testing.T) {
	clearEnv(t)
	dir, err := os.MkdirTemp("", "mr") // short: unix socket paths are bounded
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	socket := filepath.Join(dir, "admin.sock")
	var logs syncBuffer
	cmd := newRootCmd()
	cmd.SetArgs([]string{"serve", "--data-dir", filepath.Join(dir, "data"), "--socket", socket, "--insecure-plaintext-key",
		"--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--bundle-endpoint-listen", "127.0.0.1:0"})
	cmd.SetErr(&logs)
	cmd.SetOut(&logs)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	waitFor := func(what string) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); !strings.Contains(logs.String(), what); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("server log never said %q:\n%s", what, logs.String())
			}
		}
	}
	waitFor("no root yet")
	time.Sleep(3 * time.Second) // the SVID source used to retry (and log) at 1s, 2s, ...
	before := logs.String()
	if n := strings.Count(before, "no root yet"); n != 1 {
		t.Errorf("the wait for a root was logged %d times, want once:\n%s", n, before)
	}
	if !strings.Contains(before, `"level":"INFO","msg":"no root yet`) || !strings.Contains(before, "meshroot root init --trust-domain TD --socket "+socket) {
		t.Errorf("the wait for a root is not an INFO line naming the command to run:\n%s", before)
	}
	if strings.Contains(before, `"level":"ERROR"`) {
		t.Errorf("a server waiting for its first root logged an error:\n%s", before)
	}

	cliOK(t, "root", "init", "--trust-domain", testTD, "--socket", socket)
	waitFor("bundle endpoint SVID issued")
}
