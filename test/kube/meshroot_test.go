// Helpers for the agent tests (agent_test.go): the meshroot binary built
// from this checkout, a server process, the CLI against its admin socket,
// agent processes, and checks of the cacerts Secret with Go's crypto/x509.

package kube

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshroot/meshroot/test/kube/kubeenv"
)

// What meshroot writes, as its documentation names it. The product's own
// constants are not imported: this module tests the binary from outside.
const (
	meshNS         = "istio-system"
	cacertsName    = "cacerts"
	agentSA        = "meshroot-agent"
	trustDomain    = "example.org"
	labelManagedBy = "app.kubernetes.io/managed-by"
	annSerial      = "meshroot.io/serial"
	annNotAfter    = "meshroot.io/not-after"
	annRootID      = "meshroot.io/root-id"
	annBundleSeq   = "meshroot.io/bundle-sequence"
	annRestartedAt = "meshroot.io/restartedAt"
)

var cacertsKeys = []string{"ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"}

// --- the binary ---

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// meshrootBin builds cmd/meshroot from the module two folders up (once per
// test process) and returns its path. It is built into a per-checkout
// folder of the user's cache and renamed into place, so that nothing is
// left in /tmp and a concurrent run never sees a half-written binary.
// (charts_test.go owns TestMain, so the build happens on first use.)
func meshrootBin(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() { binPath, binErr = buildMeshroot() })
	if binErr != nil {
		t.Fatalf("building meshroot: %v", binErr)
	}
	return binPath
}

func buildMeshroot() (string, error) { return buildBinary("meshroot") }

// buildBinary builds cmd/NAME of this checkout into the checkout's folder
// of the test cache.
func buildBinary(name string) (string, error) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		return "", err
	}
	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil || !bytes.Contains(gomod, []byte("module github.com/meshroot/meshroot\n")) {
		return "", fmt.Errorf("%s is not meshroot's module root (go.mod: %v)", root, err)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	sum := sha256.Sum256([]byte(root))
	dir := filepath.Join(cache, "meshroot-test", "e2e-"+hex.EncodeToString(sum[:6]))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	// linked once per content for every harness (test/tools/meshroot-bins.sh)
	cmd := exec.Command(filepath.Join(root, "test", "tools", "meshroot-bins.sh"), dir, name)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("test/tools/meshroot-bins.sh %s in %s: %v\n%s", name, root, err, out)
	}
	return filepath.Join(dir, name), nil
}

// childEnv is this process's environment without MESHROOT_* variables
// (which the CLI reads as flags: a stray MESHROOT_DATA_DIR would make the
// CLI bypass the server) and KUBECONFIG, plus extra.
func childEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "MESHROOT_") || strings.HasPrefix(kv, "KUBECONFIG=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// --- processes ---

// result is a finished command.
type result struct {
	args           []string
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("meshroot %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(redact(r.args), " "), r.code, r.stdout, r.stderr)
}

// redact hides join tokens in messages.
func redact(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if strings.HasPrefix(a, "mrt.") {
			a = "mrt.[redacted]"
		}
		out[i] = a
	}
	return out
}

// run runs meshroot to completion (at most timeout).
func run(t testing.TB, timeout time.Duration, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, meshrootBin(t), args...)
	cmd.Env = childEnv(env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{args: args, stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case ctx.Err() != nil:
		t.Fatalf("meshroot %s did not finish within %s\nstderr: %s", strings.Join(redact(args), " "), timeout, r.stderr)
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("meshroot %s: %v", strings.Join(redact(args), " "), err)
	}
	return r
}

// proc is a long-running meshroot process (server or agent daemon) whose
// output goes to a log file, shown when the test fails.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	waitErr error
}

func startProc(t *testing.T, name string, env []string, args ...string) *proc {
	t.Helper()
	return startBin(t, meshrootBin(t), name, env, args...)
}

// startBin is startProc for another binary, bin.
func startBin(t *testing.T, bin, name string, env []string, args ...string) *proc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), "log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = childEnv(env...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("starting %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("%s (pid %d) output, last lines:\n%s", name, cmd.Process.Pid, p.tail(80))
		}
	})
	return p
}

// stop sends SIGTERM, waits up to 10 s, then kills. It returns the exit
// code (-1 when killed by a signal).
func (p *proc) stop(t testing.TB) int {
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Errorf("%s did not stop within 10 s of SIGTERM: killing it", p.name)
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	return p.cmd.ProcessState.ExitCode()
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// alive fails the test if the process has exited.
func (p *proc) alive(t testing.TB) {
	t.Helper()
	if p.exited() {
		t.Fatalf("%s exited (%v); output:\n%s", p.name, p.waitErr, p.tail(60))
	}
}

func (p *proc) output() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

func (p *proc) tail(n int) string {
	lines := strings.Split(strings.TrimRight(p.output(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// --- the server ---

// server is a `meshroot serve` process with its data dir, ports and admin
// socket, which stay the same across restarts.
type server struct {
	t                             *testing.T
	dataDir, config               string
	socket, addr, httpAddr, caPEM string
	proc                          *proc
	starts                        int
}

// startServer starts a server with configYAML (if not empty) as its config
// file, creates the root of trust domain example.org, waits until it is
// ready, and writes the trust bundle agents use to verify it.
func startServer(t *testing.T, configYAML string) *server {
	t.Helper()
	return startServerInit(t, configYAML)
}

// startServerInit is startServer with extra `root init` arguments.
func startServerInit(t *testing.T, configYAML string, initArgs ...string) *server {
	t.Helper()
	return startServerOn(t, "127.0.0.1", configYAML, initArgs...)
}

// startServerOn is startServerInit with the gRPC port on host (an address
// of this machine), which the server's certificate names.
func startServerOn(t *testing.T, host, configYAML string, initArgs ...string) *server {
	t.Helper()
	// A unix socket path must be short (< 108 bytes): t.TempDir's may not be.
	sockDir, err := os.MkdirTemp("", "mr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	dir := t.TempDir()
	s := newServer(t, host, freePorts(t, 2), sockDir, dir)
	if configYAML != "" {
		s.config = writeFile(t, dir, "config.yaml", []byte(configYAML))
	}
	s.start()
	s.cli(append([]string{"root", "init", "--trust-domain", trustDomain}, initArgs...)...)
	s.waitReady()
	if err := os.WriteFile(s.caPEM, []byte(s.cli("bundle", "show", "-o", "pem")), 0o644); err != nil {
		t.Fatal(err)
	}
	return s
}

// newServer is a server (not started) with its gRPC port ports[0] on host
// and its HTTP port ports[1], its admin socket in sockDir and its data in
// dir.
func newServer(t *testing.T, host string, ports []string, sockDir, dir string) *server {
	return &server{
		t: t, dataDir: filepath.Join(dir, "data"), socket: filepath.Join(sockDir, "admin.sock"),
		addr: net.JoinHostPort(host, ports[0]), httpAddr: "127.0.0.1:" + ports[1], caPEM: filepath.Join(dir, "server-ca.pem"),
	}
}

// start starts the server process and waits until it answers /healthz and
// its admin socket exists (it is ready only once it has a root).
//
// freePorts' ports are free when picked, not when the server binds them:
// meanwhile another process may take one, as the source port of an
// outgoing connection (the tests' apiservers, istiods and agents make
// many). On the server's first start, when it exits because its address
// is in use, start picks new ports and starts it again; a restart keeps
// its address, which the agents know.
func (s *server) start() {
	s.t.Helper()
	for attempt := 1; ; attempt++ {
		err := s.launch()
		if err == nil {
			return
		}
		if s.starts == 1 && attempt < 3 && s.proc.exited() && strings.Contains(s.proc.output(), "address already in use") {
			s.t.Logf("server: %v; starting it on other ports", err)
			ports := freePorts(s.t, 2)
			s.addr, s.httpAddr = net.JoinHostPort(s.host(), ports[0]), "127.0.0.1:"+ports[1]
			s.starts = 0
			continue
		}
		s.t.Fatalf("%s: %v; output:\n%s", s.proc.name, err, s.proc.tail(60))
	}
}

// launch starts the server process once and waits up to 20 s until it
// answers /healthz and its admin socket exists, or it exits.
func (s *server) launch() error {
	s.t.Helper()
	args := []string{"serve", "--data-dir", s.dataDir, "--listen", s.addr, "--http-listen", s.httpAddr,
		"--socket", s.socket, "--san", s.host(), "--insecure-plaintext-key", "--bundle-endpoint-listen", "127.0.0.1:0"}
	if s.config != "" {
		args = append(args, "--config", s.config)
	}
	s.starts++
	name := "server"
	if s.starts > 1 {
		name = fmt.Sprintf("server (start %d)", s.starts)
	}
	s.proc = startProc(s.t, name, nil, args...)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if s.proc.exited() {
			return fmt.Errorf("exited (%v) before it answered /healthz", s.proc.waitErr)
		}
		_, err := os.Stat(s.socket)
		if err == nil {
			err = httpOK("http://" + s.httpAddr + "/healthz")
		}
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no answer on /healthz within 20s: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (s *server) waitReady() {
	s.t.Helper()
	eventually(s.t, 20*time.Second, "server /readyz", func() error {
		s.proc.alive(s.t)
		return httpOK("http://" + s.httpAddr + "/readyz")
	})
}

// host is the host part of the server's gRPC address.
func (s *server) host() string {
	h, _, _ := net.SplitHostPort(s.addr)
	return h
}

// stop stops the server with SIGTERM and returns its exit code.
func (s *server) stop() int { return s.proc.stop(s.t) }

func httpOK(u string) error {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return nil
}

// watchers is the server's count of agents connected to WatchTrustBundle
// (metric meshroot_trust_bundle_watchers).
func (s *server) watchers() (int, error) {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + s.httpAddr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, err
	}
	const name = "meshroot_trust_bundle_watchers "
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return int(f), err
		}
	}
	return 0, fmt.Errorf("/metrics has no %s", strings.TrimSpace(name))
}

// waitWatchers waits until n agents watch the trust bundle.
func (s *server) waitWatchers(t testing.TB, n int, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, fmt.Sprintf("%d agents watching the trust bundle", n), func() error {
		got, err := s.watchers()
		if err == nil && got != n {
			err = fmt.Errorf("%d watchers", got)
		}
		return err
	})
}

// cli runs a CLI command against the server and returns its stdout; the
// command must succeed.
func (s *server) cli(args ...string) string {
	s.t.Helper()
	r := s.cliResult(args...)
	if r.code != 0 {
		s.t.Fatalf("%s", r)
	}
	return r.stdout
}

func (s *server) cliResult(args ...string) result {
	s.t.Helper()
	return run(s.t, 30*time.Second, nil, append(args, "--socket", s.socket)...)
}

// joinToken creates a join token for cluster.
func (s *server) joinToken(cluster string) string {
	s.t.Helper()
	tok := strings.TrimSpace(s.cli("token", "create", "--cluster", cluster))
	if !strings.HasPrefix(tok, "mrt.") {
		s.t.Fatalf("token create printed %q, want a join token", tok)
	}
	return tok
}

// agentArgs are the arguments every agent gets.
func (s *server) agentArgs(cluster, kubeconfig string, extra ...string) []string {
	return append([]string{"agent", "--server", s.addr, "--server-ca", s.caPEM, "--cluster", cluster, "--kubeconfig", kubeconfig}, extra...)
}

// agentOnce runs `agent --once` (env adds variables such as
// MESHROOT_JOIN_TOKEN) and returns how it ended.
func (s *server) agentOnce(t *testing.T, cluster, kubeconfig string, env []string, extra ...string) result {
	t.Helper()
	args := s.agentArgs(cluster, kubeconfig, append([]string{"--once", "--timeout", "20s"}, extra...)...)
	return run(t, time.Minute, env, args...)
}

// mustAgentOnce is agentOnce that must succeed.
func (s *server) mustAgentOnce(t *testing.T, cluster, kubeconfig string, env []string, extra ...string) {
	t.Helper()
	if r := s.agentOnce(t, cluster, kubeconfig, env, extra...); r.code != 0 || !strings.Contains(r.stdout, "is current") {
		t.Fatalf("agent --once failed: %s", r)
	}
}

// startAgent starts an agent daemon.
func (s *server) startAgent(t *testing.T, cluster, kubeconfig string, env []string, extra ...string) *proc {
	t.Helper()
	return startProc(t, "agent "+cluster, env, s.agentArgs(cluster, kubeconfig, extra...)...)
}

// auditRow is a row of `audit list -o json`.
type auditRow struct {
	Seq     int64  `json:"seq"`
	Actor   string `json:"actor"`
	Action  string `json:"action"`
	Target  string `json:"target"`
	Result  string `json:"result"`
	Details string `json:"details"`
}

// audit returns the audit rows after sequence number after.
func (s *server) audit(after int64) []auditRow {
	s.t.Helper()
	var rows []auditRow
	out := s.cli("audit", "list", "-o", "json", "--after", strconv.FormatInt(after, 10))
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		s.t.Fatalf("audit list -o json: %v\n%s", err, out)
	}
	return rows
}

func (s *server) lastAuditSeq() int64 {
	rows := s.audit(0)
	if len(rows) == 0 {
		return 0
	}
	return rows[len(rows)-1].Seq
}

// issued returns the rows of successful issuance for cluster after seq.
func (s *server) issued(cluster string, after int64) []auditRow {
	var out []auditRow
	for _, r := range s.audit(after) {
		if r.Action == "intermediate.issue" && r.Target == cluster && r.Result == "ok" {
			out = append(out, r)
		}
	}
	return out
}

// wantDenied checks that the audit log has, after seq, a denied issuance
// for cluster whose reason contains want.
func (s *server) wantDenied(t *testing.T, after int64, cluster, want string) {
	t.Helper()
	var seen []string
	for _, r := range s.audit(after) {
		if r.Action != "intermediate.issue" || r.Target != cluster {
			continue
		}
		if r.Result == "ok" {
			t.Errorf("audit row %d: an intermediate was issued to %s (actor %s), want a refusal", r.Seq, cluster, r.Actor)
		}
		var d struct {
			Reason string `json:"reason"`
		}
		_ = json.Unmarshal([]byte(r.Details), &d)
		if r.Result == "denied" && strings.Contains(d.Reason, want) {
			return
		}
		seen = append(seen, fmt.Sprintf("%s %s %q", r.Result, r.Actor, d.Reason))
	}
	t.Errorf("no denied intermediate.issue row for %s with a reason containing %q after audit row %d; rows for it: %q", cluster, want, after, seen)
}

// intermediateRow is a row of `intermediate list -o json`.
type intermediateRow struct {
	Serial  string `json:"serial"`
	Cluster string `json:"cluster"`
	RootID  string `json:"root_id"`
	Status  string `json:"status"`
}

func (s *server) intermediates(cluster string) map[string]intermediateRow {
	s.t.Helper()
	var rows []intermediateRow
	out := s.cli("intermediate", "list", "-o", "json", "--cluster", cluster)
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		s.t.Fatalf("intermediate list -o json: %v\n%s", err, out)
	}
	m := map[string]intermediateRow{}
	for _, r := range rows {
		m[r.Serial] = r
	}
	return m
}

// bundle returns the server's trust bundle.
func (s *server) bundle() []*x509.Certificate {
	s.t.Helper()
	certs, err := parseCerts([]byte(s.cli("bundle", "show", "-o", "pem")))
	if err != nil {
		s.t.Fatal(err)
	}
	return certs
}

// --- Kubernetes ---

// getSecret returns the Secret, or nil when there is none.
func getSecret(t testing.TB, c *kubeenv.Cluster, ns, name string) *corev1.Secret {
	t.Helper()
	s, err := c.Client.CoreV1().Secrets(ns).Get(context.Background(), name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		t.Fatalf("get Secret %s/%s in %s: %v", ns, name, c.Name, err)
	}
	return s
}

// mustCACerts reads istio-system/cacerts and checks it.
func mustCACerts(t testing.TB, c *kubeenv.Cluster) *cacerts {
	t.Helper()
	return mustCheck(t, getSecret(t, c, meshNS, cacertsName))
}

func mustCheck(t testing.TB, s *corev1.Secret) *cacerts {
	t.Helper()
	if s == nil {
		t.Fatalf("no cacerts Secret")
	}
	cc, err := checkCACerts(s, time.Now())
	if err != nil {
		t.Fatalf("Secret %s/%s (resourceVersion %s): %v", s.Namespace, s.Name, s.ResourceVersion, err)
	}
	return cc
}

// cacerts is a parsed, checked cacerts Secret.
type cacerts struct {
	secret *corev1.Secret
	cert   *x509.Certificate
	key    crypto.Signer
	chain  []*x509.Certificate // the intermediate first, the root last
	roots  []*x509.Certificate
	serial string
	seq    uint64 // bundle-sequence annotation
}

func (c *cacerts) rootPool() *x509.CertPool {
	p := x509.NewCertPool()
	for _, r := range c.roots {
		p.AddCert(r)
	}
	return p
}

// top is the root the intermediate chains to (the last of cert-chain.pem).
func (c *cacerts) top() *x509.Certificate { return c.chain[len(c.chain)-1] }

// checkCACerts checks a cacerts Secret as istiod would and more: every
// file is there; the intermediate is a CA with keyCertSign and path length
// 0 whose chain verifies to root-cert.pem; cert-chain.pem starts with it
// and ends with a root of root-cert.pem; the key matches; the label and
// annotations describe the certificate.
func checkCACerts(s *corev1.Secret, now time.Time) (*cacerts, error) {
	for _, k := range cacertsKeys {
		if len(s.Data[k]) == 0 {
			return nil, fmt.Errorf("%s is missing or empty (keys: %v)", k, keysOf(s.Data))
		}
	}
	if got := s.Labels[labelManagedBy]; got != "meshroot" {
		return nil, fmt.Errorf("label %s = %q, want meshroot", labelManagedBy, got)
	}
	certs, err := parseCerts(s.Data["ca-cert.pem"])
	if err != nil || len(certs) != 1 {
		return nil, fmt.Errorf("ca-cert.pem: want one certificate, have %d (%v)", len(certs), err)
	}
	cc := &cacerts{secret: s, cert: certs[0]}
	if cc.chain, err = parseCerts(s.Data["cert-chain.pem"]); err != nil {
		return nil, fmt.Errorf("cert-chain.pem: %w", err)
	}
	if cc.roots, err = parseCerts(s.Data["root-cert.pem"]); err != nil {
		return nil, fmt.Errorf("root-cert.pem: %w", err)
	}
	if cc.key, err = parseKey(s.Data["ca-key.pem"]); err != nil {
		return nil, fmt.Errorf("ca-key.pem: %w", err)
	}
	cert := cc.cert
	if !cert.IsCA || !cert.BasicConstraintsValid {
		return nil, errors.New("the intermediate is not a CA")
	}
	if cert.MaxPathLen != 0 || !cert.MaxPathLenZero {
		return nil, fmt.Errorf("the intermediate's path length is %d (zero flag %v), want 0", cert.MaxPathLen, cert.MaxPathLenZero)
	}
	if cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, errors.New("the intermediate lacks keyCertSign")
	}
	if !publicKeyEqual(cert.PublicKey, cc.key.Public()) {
		return nil, errors.New("ca-key.pem does not match ca-cert.pem")
	}
	if !bytes.Equal(cc.chain[0].Raw, cert.Raw) {
		return nil, errors.New("cert-chain.pem does not start with ca-cert.pem")
	}
	if !containsCert(cc.roots, cc.top()) {
		return nil, errors.New("cert-chain.pem does not end with a root of root-cert.pem")
	}
	inter := x509.NewCertPool()
	for _, c := range cc.chain[1:] {
		inter.AddCert(c)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: cc.rootPool(), Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("the intermediate does not verify to root-cert.pem: %w", err)
	}
	cc.serial = fmt.Sprintf("%x", cert.SerialNumber)
	if got := s.Annotations[annSerial]; got != cc.serial {
		return nil, fmt.Errorf("annotation %s = %q, but the certificate's serial is %s", annSerial, got, cc.serial)
	}
	if got, want := s.Annotations[annNotAfter], cert.NotAfter.UTC().Format(time.RFC3339); got != want {
		return nil, fmt.Errorf("annotation %s = %q, want %s", annNotAfter, got, want)
	}
	sum := sha256.Sum256(cc.top().Raw)
	if got, want := s.Annotations[annRootID], hex.EncodeToString(sum[:16]); got != want {
		return nil, fmt.Errorf("annotation %s = %q, but the intermediate's root is %s", annRootID, got, want)
	}
	if cc.seq, err = strconv.ParseUint(s.Annotations[annBundleSeq], 10, 64); err != nil || cc.seq == 0 {
		return nil, fmt.Errorf("annotation %s = %q, want a sequence number", annBundleSeq, s.Annotations[annBundleSeq])
	}
	return cc, nil
}

func pemCerts(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

func keysOf(m map[string][]byte) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

func parseCerts(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %q, want CERTIFICATE", b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(bytes.TrimSpace(data)) > 0 {
		return nil, errors.New("trailing data after the PEM certificates")
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM certificate")
	}
	return out, nil
}

func parseKey(data []byte) (crypto.Signer, error) {
	b, rest := pem.Decode(data)
	if b == nil || len(bytes.TrimSpace(rest)) > 0 {
		return nil, errors.New("want exactly one PEM block")
	}
	var k any
	var err error
	switch b.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(b.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q is not a private key", b.Type)
	}
	if err != nil {
		return nil, err
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%T is not a signing key", k)
	}
	return s, nil
}

func publicKeyEqual(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(b)
}

func containsCert(list []*x509.Certificate, c *x509.Certificate) bool {
	for _, l := range list {
		if bytes.Equal(l.Raw, c.Raw) {
			return true
		}
	}
	return false
}

// sameCerts reports whether a and b hold the same certificates, in any order.
func sameCerts(a, b []*x509.Certificate) bool {
	if len(a) != len(b) {
		return false
	}
	for _, c := range a {
		if !containsCert(b, c) {
			return false
		}
	}
	return true
}

// signWorkload issues a workload certificate for a SPIFFE ID with the
// cluster's intermediate, as istiod does, and returns it.
func signWorkload(t testing.TB, c *cacerts, id string) *x509.Certificate {
	t.Helper()
	u, err := url.Parse(id)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{},
		URIs:         []*url.URL{u},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, key.Public(), c.key)
	if err != nil {
		t.Fatalf("signing a workload certificate with %s's intermediate: %v", c.cert.Subject.CommonName, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

// --- small things ---

// eventually calls f until it returns nil, and fails the test with f's
// last error after timeout.
func eventually(t testing.TB, timeout time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// freePorts returns n distinct free ports on 127.0.0.1.
func freePorts(t testing.TB, n int) []string {
	t.Helper()
	var ports []string
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close() // held until all are picked, so they differ
		_, p, _ := net.SplitHostPort(l.Addr().String())
		ports = append(ports, p)
	}
	return ports
}

func writeFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
