// Package vaultenv runs a real HashiCorp Vault server for meshroot's tests:
// in-memory dev servers (Start) and servers with integrated (raft) storage
// that can be sealed, stopped and restarted with their data
// (StartPersistent), plus helpers to enable Transit and PKI, write
// policies, and make tokens and AppRoles.
//
// The binary comes from test/tools/build.sh, which builds Vault once per
// machine into ~/.cache/meshroot-test/bin/vault-v1.21.1-minimal (run
// `test/tools/build.sh vault` before `go test`, or raise -timeout): Vault's
// own minimal build (its `minimal` tag: the core, raft and in-memory
// storage, PKI, Transit, KV, and the token, AppRole, cert, userpass and JWT
// auth methods), with the Kubernetes auth method as an external plugin in
// plugins/kubernetes beside it, which dev servers register at start.
// MESHROOT_VAULT_BIN overrides the binary (a full build has Kubernetes
// auth built in; a plugins folder beside it is used when present). Vault is
// BSL-licensed: it is a test peer only, never shipped.
//
// Servers listen on 127.0.0.1 only. A server also binds the port after its
// API port (the cluster port), so ports are taken two apart. Each server
// costs 250-300 MB of memory and stops in t.Cleanup.
package vaultenv

import (
	"bufio"
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/meshroot/meshroot/test/toolscript"
)

// Version is the Vault server version the tools script builds.
const Version = "v1.21.1"

// Dir is the folder under the tool cache's bin folder that holds the
// server (vault) and its plugins folder.
const Dir = "vault-" + Version + "-minimal"

// DevRootToken is the root token of dev servers.
const DevRootToken = "root"

// Vault is a running Vault server.
type Vault struct {
	// Addr is the API address, http://127.0.0.1:PORT.
	Addr string
	// RootToken is a root token.
	RootToken string
	// UnsealKey is the single unseal key (persistent servers; dev servers
	// once they have printed it).
	UnsealKey string

	t          testing.TB
	bin        string
	dir        string
	port       int
	persistent bool
	logPath    string

	mu   sync.Mutex
	cmd  *exec.Cmd
	wait chan error
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// Binary returns the Vault binary, building it with test/tools/build.sh
// when it is missing (the script returns at once when it exists).
func Binary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() { binPath, binErr = findBinary() })
	if binErr != nil {
		t.Fatalf("vaultenv: %v", binErr)
	}
	return binPath
}

func findBinary() (string, error) {
	if p := os.Getenv("MESHROOT_VAULT_BIN"); p != "" {
		return p, nil
	}
	script, err := toolscript.Path()
	if err != nil {
		return "", err
	}
	cache := os.Getenv("MESHROOT_TOOLS_CACHE")
	if cache == "" {
		base := os.Getenv("XDG_CACHE_HOME")
		if base == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return "", err
			}
			base = filepath.Join(home, ".cache")
		}
		cache = filepath.Join(base, "meshroot-test")
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", err
	}
	// Test binaries of several packages run at once: let one build.
	lock, err := os.OpenFile(filepath.Join(cache, "vault-build.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("lock %s: %v", lock.Name(), err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("bash", script, "vault")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s vault: %v\n%s", script, err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	bin := filepath.Join(lines[len(lines)-1], Dir, "vault")
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("%s vault did not produce %s: %v", script, bin, err)
	}
	return bin, nil
}

// Start runs an in-memory dev server (unsealed, root token "root") and
// stops it when the test ends.
func Start(t testing.TB) *Vault {
	t.Helper()
	v := &Vault{t: t, bin: Binary(t), dir: t.TempDir(), RootToken: DevRootToken}
	t.Cleanup(v.stop)
	v.start(t)
	v.waitHealthy(t, 30*time.Second)
	return v
}

// StartPersistent runs a server with integrated (raft) storage, one node,
// initialises it with a single unseal key and unseals it. Seal, Unseal,
// Stop and Restart work on it without losing data. It has the minimal
// build's auth methods only: the Kubernetes plugin is registered by dev
// servers (Start).
func StartPersistent(t testing.TB) *Vault {
	t.Helper()
	v := &Vault{t: t, bin: Binary(t), dir: t.TempDir(), persistent: true}
	t.Cleanup(v.stop)
	v.start(t)
	v.waitListening(t, 30*time.Second)
	c := v.client(t, "")
	resp, err := c.Sys().Init(&api.InitRequest{SecretShares: 1, SecretThreshold: 1})
	if err != nil {
		t.Fatalf("vaultenv: init: %v", err)
	}
	v.UnsealKey, v.RootToken = resp.Keys[0], resp.RootToken
	v.Unseal(t)
	return v
}

// start launches the server on a free pair of ports, retrying when the
// ports were taken in between.
func (v *Vault) start(t testing.TB) {
	t.Helper()
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		// A persistent server keeps its address once it holds data.
		if v.port == 0 || attempt > 0 && (!v.persistent || v.UnsealKey == "") {
			port, err := freePortPair()
			if err != nil {
				t.Fatalf("vaultenv: %v", err)
			}
			v.port = port
		}
		v.Addr = fmt.Sprintf("http://127.0.0.1:%d", v.port)
		if lastErr = v.launch(); lastErr == nil {
			if v.waitPort(10 * time.Second) {
				return
			}
			v.stop()
			lastErr = fmt.Errorf("vault did not listen on %s: %s", v.Addr, v.logTail(30))
		}
		if v.persistent && v.UnsealKey != "" && attempt > 0 {
			break
		}
	}
	t.Fatalf("vaultenv: start vault: %v", lastErr)
}

func (v *Vault) launch() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	var args []string
	if v.persistent {
		cfg := filepath.Join(v.dir, "vault.hcl")
		data := filepath.Join(v.dir, "data")
		if err := os.MkdirAll(data, 0o700); err != nil {
			return err
		}
		hcl := fmt.Sprintf(`storage "raft" {
  path    = %q
  node_id = "vaultenv"
}
listener "tcp" {
  address     = "127.0.0.1:%d"
  tls_disable = 1
}
api_addr      = "http://127.0.0.1:%d"
cluster_addr  = "https://127.0.0.1:%d"
disable_mlock = true
ui            = false
`, data, v.port, v.port, v.port+1)
		if err := os.WriteFile(cfg, []byte(hcl), 0o600); err != nil {
			return err
		}
		args = []string{"server", "-config=" + cfg}
	} else {
		args = []string{"server", "-dev", "-dev-root-token-id=" + DevRootToken, fmt.Sprintf("-dev-listen-address=127.0.0.1:%d", v.port), "-dev-no-store-token"}
		if plugins := v.pluginDir(); plugins != "" {
			// Registers every binary in it under its file name
			// (plugins/kubernetes: the Kubernetes auth method).
			args = append(args, "-dev-plugin-dir="+plugins)
		}
	}
	v.logPath = filepath.Join(v.dir, fmt.Sprintf("vault-%d.log", time.Now().UnixNano()))
	logf, err := os.Create(v.logPath)
	if err != nil {
		return err
	}
	cmd := exec.Command(v.bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = cleanEnv(v.dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	wait := make(chan error, 1)
	go func() { wait <- cmd.Wait(); logf.Close() }()
	v.cmd, v.wait = cmd, wait
	return nil
}

// pluginDir is the plugins folder beside the binary, or "" when there is
// none (a full build from MESHROOT_VAULT_BIN).
func (v *Vault) pluginDir() string {
	dir := filepath.Join(filepath.Dir(v.bin), "plugins")
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return ""
	}
	return dir
}

// cleanEnv is the server's environment: no VAULT_* settings from the test's
// environment, and a private HOME.
func cleanEnv(home string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "VAULT_") || strings.HasPrefix(kv, "HOME=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "HOME="+home, "VAULT_LOG_LEVEL=warn")
}

func (v *Vault) waitPort(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		v.mu.Lock()
		wait := v.wait
		v.mu.Unlock()
		select {
		case <-wait:
			return false
		default:
		}
		if c, err := net.DialTimeout("tcp", v.Addr[len("http://"):], 200*time.Millisecond); err == nil {
			c.Close()
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

func (v *Vault) waitListening(t testing.TB, d time.Duration) {
	t.Helper()
	if !v.waitPort(d) {
		t.Fatalf("vaultenv: vault at %s does not listen: %s", v.Addr, v.logTail(30))
	}
}

// waitHealthy polls /v1/sys/health until Vault is initialised, unsealed
// and active.
func (v *Vault) waitHealthy(t testing.TB, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	hc := &http.Client{Timeout: time.Second}
	var last string
	for time.Now().Before(deadline) {
		resp, err := hc.Get(v.Addr + "/v1/sys/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("vaultenv: vault at %s is not healthy after %s (%s): %s", v.Addr, d, last, v.logTail(30))
}

// stop ends the server: SIGTERM, then SIGKILL after 10 s.
func (v *Vault) stop() {
	v.mu.Lock()
	cmd, wait := v.cmd, v.wait
	v.cmd = nil
	v.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-wait:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-wait
	}
	if v.t.Failed() {
		v.t.Logf("vaultenv: vault at %s log tail:\n%s", v.Addr, v.logTail(40))
	}
}

// Stop stops the server (a persistent one keeps its data for Restart).
func (v *Vault) Stop(t testing.TB) {
	t.Helper()
	v.stop()
}

// Restart starts a stopped persistent server again on the same address and
// unseals it.
func (v *Vault) Restart(t testing.TB) {
	t.Helper()
	if !v.persistent {
		t.Fatal("vaultenv: Restart needs a server from StartPersistent: a dev server keeps nothing")
	}
	v.stop()
	v.start(t)
	v.Unseal(t)
}

// Seal seals the server.
func (v *Vault) Seal(t testing.TB) {
	t.Helper()
	if err := v.Client(t).Sys().Seal(); err != nil {
		t.Fatalf("vaultenv: seal: %v", err)
	}
}

// Unseal unseals the server with its key and waits until it is active.
func (v *Vault) Unseal(t testing.TB) {
	t.Helper()
	if v.UnsealKey == "" {
		v.UnsealKey = v.devUnsealKey(t)
	}
	st, err := v.client(t, "").Sys().Unseal(v.UnsealKey)
	if err != nil {
		t.Fatalf("vaultenv: unseal: %v", err)
	}
	if st.Sealed {
		t.Fatalf("vaultenv: still sealed after unseal (progress %d/%d)", st.Progress, st.T)
	}
	v.waitHealthy(t, 30*time.Second)
}

var unsealKeyLine = regexp.MustCompile(`(?m)^Unseal Key: (\S+)$`)

// devUnsealKey reads the unseal key a dev server prints at start.
func (v *Vault) devUnsealKey(t testing.TB) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(v.logPath)
		if m := unsealKeyLine.FindSubmatch(b); m != nil {
			return string(m[1])
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("vaultenv: the dev server printed no unseal key")
	return ""
}

// CPUTime is the CPU time (user and system) the server process has used,
// read from /proc, for benchmarks that report server CPU per operation.
func (v *Vault) CPUTime() time.Duration {
	v.mu.Lock()
	cmd := v.cmd
	v.mu.Unlock()
	if cmd == nil {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", cmd.Process.Pid))
	if err != nil {
		return 0
	}
	// Fields after the ")" that ends the command name: utime and stime
	// are the 12th and 13th, in clock ticks (100 per second on Linux).
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	var ut, st int64
	fmt.Sscan(f[11], &ut)
	fmt.Sscan(f[12], &st)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// SelfCPU is the CPU time this process has used, for benchmarks.
func SelfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Log returns the server's output so far.
func (v *Vault) Log() string {
	b, _ := os.ReadFile(v.logPath)
	return string(b)
}

func (v *Vault) logTail(n int) string {
	var lines []string
	f, err := os.Open(v.logPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// Client returns an API client with the root token.
func (v *Vault) Client(t testing.TB) *api.Client {
	t.Helper()
	return v.client(t, v.RootToken)
}

// ClientWithToken returns an API client with token.
func (v *Vault) ClientWithToken(t testing.TB, token string) *api.Client {
	t.Helper()
	return v.client(t, token)
}

func (v *Vault) client(t testing.TB, token string) *api.Client {
	t.Helper()
	cfg := api.DefaultConfig()
	cfg.Address = v.Addr
	cfg.MaxRetries = 0
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatalf("vaultenv: client: %v", err)
	}
	c.SetToken(token)
	c.ClearNamespace()
	return c
}

// EnableTransit mounts the Transit engine at mount.
func (v *Vault) EnableTransit(t testing.TB, mount string) {
	t.Helper()
	if err := v.Client(t).Sys().Mount(mount, &api.MountInput{Type: "transit"}); err != nil {
		t.Fatalf("vaultenv: enable transit at %s: %v", mount, err)
	}
}

// EnablePKI mounts the PKI engine at mount (max lease TTL ten years) and
// generates an internal EC P-256 root there; it returns the root.
func (v *Vault) EnablePKI(t testing.TB, mount string) *x509.Certificate {
	t.Helper()
	if err := v.Client(t).Sys().Mount(mount, &api.MountInput{Type: "pki", Config: api.MountConfigInput{MaxLeaseTTL: "87600h"}}); err != nil {
		t.Fatalf("vaultenv: enable pki at %s: %v", mount, err)
	}
	return v.GenerateRoot(t, mount, "root-1", "meshroot test root")
}

// GenerateRoot generates another internal EC P-256 root in a PKI mount,
// as issuer issuerName, and returns it.
func (v *Vault) GenerateRoot(t testing.TB, mount, issuerName, commonName string) *x509.Certificate {
	t.Helper()
	s, err := v.Client(t).Logical().Write(mount+"/root/generate/internal", map[string]any{
		"common_name": commonName,
		"key_type":    "ec",
		"key_bits":    256,
		"ttl":         "87600h",
		"issuer_name": issuerName,
	})
	if err != nil {
		t.Fatalf("vaultenv: generate root in %s: %v", mount, err)
	}
	pemData, _ := s.Data["certificate"].(string)
	block, _ := pem.Decode([]byte(pemData))
	if block == nil {
		t.Fatalf("vaultenv: %s/root/generate/internal returned no certificate", mount)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatalf("vaultenv: parse root: %v", err)
	}
	return cert
}

// PutPolicy writes an ACL policy.
func (v *Vault) PutPolicy(t testing.TB, name, rules string) {
	t.Helper()
	if err := v.Client(t).Sys().PutPolicy(name, rules); err != nil {
		t.Fatalf("vaultenv: put policy %s: %v", name, err)
	}
}

// TokenOptions shape a token made by TokenWith.
type TokenOptions struct {
	Policies []string
	// TTL defaults to one hour.
	TTL time.Duration
	// ExplicitMaxTTL caps renewals; zero for none.
	ExplicitMaxTTL time.Duration
	// NotRenewable makes a token that cannot be renewed.
	NotRenewable bool
}

// Token makes a renewable one-hour token with the given policies (and the
// default policy).
func (v *Vault) Token(t testing.TB, policies ...string) string {
	t.Helper()
	return v.TokenWith(t, TokenOptions{Policies: policies})
}

// TokenWith makes a token as opts says.
func (v *Vault) TokenWith(t testing.TB, opts TokenOptions) string {
	t.Helper()
	if opts.TTL == 0 {
		opts.TTL = time.Hour
	}
	renewable := !opts.NotRenewable
	req := &api.TokenCreateRequest{Policies: opts.Policies, TTL: opts.TTL.String(), Renewable: &renewable}
	if opts.ExplicitMaxTTL > 0 {
		req.ExplicitMaxTTL = opts.ExplicitMaxTTL.String()
	}
	s, err := v.Client(t).Auth().Token().Create(req)
	if err != nil {
		t.Fatalf("vaultenv: create token: %v", err)
	}
	return s.Auth.ClientToken
}

// AppRoleOptions shape an AppRole made by AppRoleWith.
type AppRoleOptions struct {
	Policies []string
	// TokenTTL and TokenMaxTTL bound the role's tokens (default 1h, 24h).
	TokenTTL, TokenMaxTTL time.Duration
}

// AppRole enables AppRole auth (at "approle") if needed, creates role with
// the policies, and returns its role_id and a fresh secret_id.
func (v *Vault) AppRole(t testing.TB, role string, policies ...string) (roleID, secretID string) {
	t.Helper()
	return v.AppRoleWith(t, role, AppRoleOptions{Policies: policies})
}

// AppRoleWith is AppRole with token TTLs.
func (v *Vault) AppRoleWith(t testing.TB, role string, opts AppRoleOptions) (roleID, secretID string) {
	t.Helper()
	c := v.Client(t)
	if err := c.Sys().EnableAuthWithOptions("approle", &api.EnableAuthOptions{Type: "approle"}); err != nil && !strings.Contains(err.Error(), "path is already in use") {
		t.Fatalf("vaultenv: enable approle: %v", err)
	}
	if opts.TokenTTL == 0 {
		opts.TokenTTL = time.Hour
	}
	if opts.TokenMaxTTL == 0 {
		opts.TokenMaxTTL = 24 * time.Hour
	}
	if _, err := c.Logical().Write("auth/approle/role/"+role, map[string]any{
		"token_policies": opts.Policies,
		"token_ttl":      opts.TokenTTL.String(),
		"token_max_ttl":  opts.TokenMaxTTL.String(),
	}); err != nil {
		t.Fatalf("vaultenv: create approle %s: %v", role, err)
	}
	s, err := c.Logical().Read("auth/approle/role/" + role + "/role-id")
	if err != nil {
		t.Fatalf("vaultenv: read role-id: %v", err)
	}
	roleID, _ = s.Data["role_id"].(string)
	s, err = c.Logical().Write("auth/approle/role/"+role+"/secret-id", nil)
	if err != nil {
		t.Fatalf("vaultenv: create secret-id: %v", err)
	}
	secretID, _ = s.Data["secret_id"].(string)
	if roleID == "" || secretID == "" {
		t.Fatal("vaultenv: approle returned no role_id or secret_id")
	}
	return roleID, secretID
}

// WriteFile writes a secret (token, secret_id) into a 0600 file in a
// temporary folder and returns its path.
func WriteFile(t testing.TB, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// freePortPair finds a port P on 127.0.0.1 with P+1 also free.
func freePortPair() (int, error) {
	for i := 0; i < 50; i++ {
		l1, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		p := l1.Addr().(*net.TCPAddr).Port
		l2, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p+1))
		l1.Close()
		if err != nil {
			continue
		}
		l2.Close()
		return p, nil
	}
	return 0, errors.New("no pair of free ports on 127.0.0.1")
}
