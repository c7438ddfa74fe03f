package pluginhost

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	pluginv1 "github.com/meshroot/meshroot/api/meshroot/plugin/v1"
	"github.com/meshroot/meshroot/internal/pluginrpc"
	"github.com/meshroot/meshroot/keys"
)

func keysConfig() keys.Config { return keys.Config{} }

// TestUnreachableKMSErrorsNameTheBackend: a cloud KMS error made in the
// plugin reaches the host with the backend's whole message (what failed,
// where, why, what to check).
func TestUnreachableKMSErrorsNameTheBackend(t *testing.T) {
	offlineAWS(t)
	h := newHost(t)
	ctx := context.Background()
	km, err := KeyBackend(h, KMSSchemes...).Open(ctx, "awskms:region=eu-west-1", keysConfig())
	if err != nil {
		t.Fatal(err)
	}
	_, err = km.CreateKey(ctx, "root-1", keys.ECP256)
	if err == nil {
		t.Fatal("CreateKey succeeded against an unreachable KMS")
	}
	for _, want := range []string{"awskms key manager", "create ec-p256 key root-1 in AWS KMS (region eu-west-1)", "127.0.0.1", "connection refused", "check network access to AWS KMS"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	_, err = km.Signer(ctx, "awskms:key-id=1234abcd-12ab-34cd-56ef-1234567890ab")
	if err == nil || !strings.Contains(err.Error(), "awskms key manager: load key awskms:key-id=1234abcd") || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("Signer: %v", err)
	}
}

// TestErrorKindsCrossTheSocket: the kind of a backend's error survives the
// plugin's socket, with its message.
func TestErrorKindsCrossTheSocket(t *testing.T) {
	h := newHost(t)
	ctx := context.Background()
	b := KeyBackend(h, KMSSchemes...)
	_, err := b.Open(ctx, "awskms:region=eu-west-1;regoin=x", keysConfig())
	if err == nil || !strings.Contains(err.Error(), "awskms key manager: URI has unknown attributes regoin") {
		t.Errorf("bad URI: %v", err)
	}
	_, err = b.Open(ctx, "cloudkms:key-ring=projects/p/locations/l", keysConfig())
	if !strings.Contains(err.Error(), "needs key-ring=projects/PROJECT") {
		t.Errorf("bad key ring: %v", err)
	}
	km, err := b.Open(ctx, "cloudkms:key-ring=projects/p/locations/global/keyRings/r", keysConfig())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := km.(keys.Deleter); ok {
		t.Error("a cloud KMS key manager offers DeleteKey, which the backend does not have")
	}
	if _, err := km.ListKeys(ctx); !errors.Is(err, errors.ErrUnsupported) || !strings.Contains(err.Error(), "cloudkms key manager: listing keys is not supported for Google Cloud KMS") {
		t.Errorf("ListKeys: %v", err)
	}
	if _, err := km.CreateKey(ctx, "root.1", keys.ECP256); err == nil || !strings.Contains(err.Error(), "invalid for Cloud KMS") {
		t.Errorf("dotted name: %v", err)
	}
	if _, err := b.ManagerURI("azurekms:name=k;vault=v", keysConfig()); !errors.Is(err, keys.ErrNotConfigured) {
		t.Errorf("ManagerURI: %v, want keys.ErrNotConfigured", err)
	}
	// A request the plugin cannot serve is invalid, and says so.
	if _, err := b.Open(ctx, "vault-transit://transit", keysConfig()); !errors.Is(err, pluginrpc.ErrInvalid) || !strings.Contains(err.Error(), `key manager scheme "vault-transit" is not served by the plugin`) {
		t.Errorf("a scheme the plugin does not serve: %v", err)
	}
	up := Upstream(h, UpstreamConfig{Ref: "step-ca://127.0.0.1:1?provisioner=p&fingerprint=ab", PasswordFile: "/nonexistent/password"})
	if _, err := up.Chain(ctx); !errors.Is(err, pluginrpc.ErrInvalid) || !strings.Contains(err.Error(), "step-ca provisioner password: open /nonexistent/password: no such file or directory") {
		t.Errorf("missing password file: %v", err)
	}
}

// TestDeadlinesPassThrough: a call's context deadline bounds the call in
// the plugin: a step-ca that accepts connections and never answers fails
// the call at the caller's deadline, not step-ca's 30 s timeout.
func TestDeadlinesPassThrough(t *testing.T) {
	l, err := newSilentListener()
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	key := filepath.Join(t.TempDir(), "prov.key")
	if err := os.WriteFile(key, []byte("not read before the connection"), 0o600); err != nil {
		t.Fatal(err)
	}
	h := newHost(t)
	// Start the plugin first, so that its start does not count.
	if _, err := KeyBackend(h, KMSSchemes...).Open(context.Background(), "awskms:region=eu-west-1", keysConfig()); err != nil {
		t.Fatal(err)
	}
	up := Upstream(h, UpstreamConfig{Ref: "step-ca://" + l.Addr().String() + "?provisioner=p&fingerprint=" + strings.Repeat("ab", 32), KeyFile: key})
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = up.Chain(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Chain against a silent step-ca: %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Chain returned after %s", d)
	}
}

// TestRestartAfterThePluginDies: a plugin that was killed is started
// again on the next call, which succeeds.
func TestRestartAfterThePluginDies(t *testing.T) {
	h := newHost(t)
	ctx := context.Background()
	b := KeyBackend(h, KMSSchemes...)
	km, err := b.Open(ctx, "azurekms:vault=kv1", keysConfig())
	if err != nil {
		t.Fatal(err)
	}
	pid := h.PID()
	if pid == 0 {
		t.Fatal("no plugin runs after Open")
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pid, 5*time.Second)
	// The key manager opened before the kill works with the new plugin.
	if _, err := km.ListKeys(ctx); !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("ListKeys after the kill: %v, want the backend's answer", err)
	}
	if p := h.PID(); p == 0 || p == pid {
		t.Errorf("plugin pid %d after the restart, was %d", p, pid)
	}
}

// TestSocketFolderAndClose: the plugin's socket is in a folder only the
// owner can enter, removed with the plugin on Close.
func TestSocketFolderAndClose(t *testing.T) {
	h := newHost(t)
	if _, err := KeyBackend(h, KMSSchemes...).Open(context.Background(), "awskms:region=eu-west-1", keysConfig()); err != nil {
		t.Fatal(err)
	}
	dir, pid := h.SocketDir(), h.PID()
	info, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o700 {
		t.Errorf("socket folder %s has mode %04o, want 0700", dir, info.Mode().Perm())
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var sockets int
	for _, e := range entries {
		if e.Type()&os.ModeSocket != 0 {
			sockets++
		}
	}
	if sockets == 0 {
		t.Errorf("no socket in %s: %v", dir, entries)
	}
	// A process that reaches the socket but was not handed the start's
	// token is refused: without one, with a wrong one; the host's own
	// calls carry it.
	for name, opts := range map[string][]grpc.DialOption{
		"no token":      nil,
		"another token": {grpc.WithPerRPCCredentials(pluginrpc.TokenCredentials(strings.Repeat("ab", 32)))},
	} {
		conn, err := grpc.NewClient("unix://"+filepath.Join(dir, "plugin.sock"), append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
		if err != nil {
			t.Fatal(err)
		}
		_, err = healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{})
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s: the plugin answered %v, want Unauthenticated", name, err)
		}
		_, err = pluginv1.NewKeyManagerClient(conn).ListKeys(context.Background(), &pluginv1.ListKeysRequest{})
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s: ListKeys answered %v, want Unauthenticated", name, err)
		}
		conn.Close()
	}
	if _, err := KeyBackend(h, KMSSchemes...).Open(context.Background(), "awskms:region=eu-west-1", keysConfig()); err != nil {
		t.Errorf("the host's own call after the refused ones: %v", err)
	}
	if h.PID() != pid {
		t.Errorf("the plugin was restarted (pid %d, was %d)", h.PID(), pid)
	}
	h.Close()
	waitGone(t, pid, 5*time.Second)
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("socket folder after Close: %v", err)
	}
	if _, err := KeyBackend(h, KMSSchemes...).Open(context.Background(), "awskms:region=eu-west-1", keysConfig()); err == nil || !strings.Contains(err.Error(), "shutting down") {
		t.Errorf("Open after Close: %v", err)
	}
}

// TestMissingPlugin: without the binary, the error names the backend,
// every place looked, and what to do.
func TestMissingPlugin(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "meshroot-plugin")
	h := New(missing, nil)
	defer h.Close()
	_, err := KeyBackend(h, KMSSchemes...).Open(context.Background(), "cloudkms:key-ring=projects/p/locations/global/keyRings/r", keysConfig())
	for _, want := range []string{"cloudkms key manager runs in meshroot-plugin", missing, "no such file", "make build puts it in bin/"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("configured path: error %v lacks %q", err, want)
		}
	}
	// Not configured: next to the executable (the test binary), then $PATH.
	t.Setenv("PATH", t.TempDir())
	h = New("", nil)
	defer h.Close()
	_, err = Upstream(h, UpstreamConfig{Ref: "step-ca://127.0.0.1:1?provisioner=p&fingerprint=ab", KeyFile: "k"}).Chain(context.Background())
	self, _ := os.Executable()
	for _, want := range []string{"step-ca upstream runs in meshroot-plugin, which was not found", filepath.Join(filepath.Dir(self), BinaryName), "$PATH (" + os.Getenv("PATH") + ")", "install meshroot-plugin next to meshroot (make build puts it in bin/)"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("default places: error %v lacks %q", err, want)
		}
	}
	// A file that is not executable is refused before it is run.
	notExec := filepath.Join(t.TempDir(), "meshroot-plugin")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h = New(notExec, nil)
	defer h.Close()
	_, err = KeyBackend(h, KMSSchemes...).Open(context.Background(), "awskms:", keysConfig())
	if err == nil || !strings.Contains(err.Error(), "not executable") {
		t.Errorf("non-executable plugin: %v", err)
	}
}

// TestNotAPlugin: a binary that does not say it serves (pluginrpc.Ready)
// fails the start with a clear error and leaves nothing behind.
func TestNotAPlugin(t *testing.T) {
	h := New("/bin/true", nil)
	defer h.Close()
	_, err := KeyBackend(h, KMSSchemes...).Open(context.Background(), "awskms:", keysConfig())
	if err == nil || !strings.Contains(err.Error(), "awskms key manager: meshroot-plugin (/bin/true) did not start") {
		t.Errorf("not a plugin: %v", err)
	}
	if h.SocketDir() != "" || h.PID() != 0 {
		t.Errorf("a failed start left socket folder %q, pid %d", h.SocketDir(), h.PID())
	}

	// One that says something else, and would go on running.
	other := filepath.Join(t.TempDir(), "other")
	if err := os.WriteFile(other, []byte("#!/bin/sh\necho 'some other program'\nexec sleep 60\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	h = New(other, nil)
	defer h.Close()
	_, err = KeyBackend(h, KMSSchemes...).Open(context.Background(), "awskms:", keysConfig())
	if err == nil || !strings.Contains(err.Error(), `it said "some other program"`) {
		t.Errorf("another program: %v", err)
	}
	if h.SocketDir() != "" || h.PID() != 0 {
		t.Errorf("a failed start left socket folder %q, pid %d", h.SocketDir(), h.PID())
	}
}

// TestPluginDiesWithItsParent: when the meshroot process that started the
// plugin is killed (no Close, no deferred cleanup), the plugin exits too.
func TestPluginDiesWithItsParent(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+pluginBin)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	line := readLine(t, bufio.NewReader(out), 30*time.Second)
	pid, err := strconv.Atoi(line)
	if err != nil || pid <= 0 {
		t.Fatalf("helper said %q", line)
	}
	if gone(pid) {
		t.Fatalf("plugin %d is not running", pid)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	waitGone(t, pid, 5*time.Second)
}
