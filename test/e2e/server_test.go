package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// server is a running `meshroot serve` process.
type server struct {
	cmd        *exec.Cmd
	socket     string
	issuerAddr string
	httpAddr   string
	mu         sync.Mutex
	log        bytes.Buffer
	exited     chan error
}

func (s *server) logs() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.log.String()
}

// startServe runs `meshroot serve` with args on free loopback ports and a
// socket in a short temporary folder, and waits for its start line.
func startServe(t *testing.T, dir string, args ...string) *server {
	t.Helper()
	return startServeIn(t, "", dir, args...)
}

// startServeIn is startServe inside the network namespace netns ("" is
// the test's own), through `ip netns exec`.
func startServeIn(t *testing.T, netns, dir string, args ...string) *server {
	t.Helper()
	sockDir, err := os.MkdirTemp("", "mr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	s := &server{socket: filepath.Join(sockDir, "admin.sock"), exited: make(chan error, 1)}
	full := append([]string{"serve", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--bundle-endpoint-listen", "127.0.0.1:0", "--socket", s.socket}, args...)
	s.cmd = exec.Command(meshrootBin, full...)
	if netns != "" {
		s.cmd = exec.Command(ipBin, append([]string{"netns", "exec", netns, meshrootBin}, full...)...)
	}
	s.cmd.Dir = dir
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MESHROOT_") {
			s.cmd.Env = append(s.cmd.Env, kv)
		}
	}
	pr, pw := io.Pipe()
	s.cmd.Stderr = pw
	s.cmd.Stdout = pw
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		var once sync.Once
		for sc.Scan() {
			line := sc.Text()
			s.mu.Lock()
			s.log.WriteString(line + "\n")
			s.mu.Unlock()
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "meshroot server starting" {
				s.mu.Lock()
				s.issuerAddr, _ = rec["issuer"].(string)
				s.httpAddr, _ = rec["http"].(string)
				s.mu.Unlock()
				once.Do(func() { close(started) })
			}
		}
	}()
	go func() { s.exited <- s.cmd.Wait(); pw.Close() }()
	t.Cleanup(func() {
		if s.cmd.ProcessState == nil {
			_ = s.cmd.Process.Kill()
			<-s.exited
		}
		if t.Failed() {
			t.Logf("server log:\n%s", s.logs())
		}
	})
	select {
	case <-started:
	case err := <-s.exited:
		t.Fatalf("meshroot serve exited: %v\n%s", err, s.logs())
	case <-time.After(20 * time.Second):
		t.Fatalf("meshroot serve did not start\n%s", s.logs())
	}
	return s
}

// waitReady polls /readyz until it answers 200.
func (s *server) waitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + s.httpAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("server not ready\n%s", s.logs())
}

// stop sends SIGTERM and waits for a clean exit.
func (s *server) stop(t *testing.T) {
	t.Helper()
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.exited:
		if err != nil {
			t.Errorf("meshroot serve exited with %v after SIGTERM\n%s", err, s.logs())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("meshroot serve did not stop within 15 s of SIGTERM\n%s", s.logs())
	}
}

// TestCLIAgainstServer runs the CLI verbs through the server's admin socket.
func TestCLIAgainstServer(t *testing.T) {
	requireOpenSSL(t)
	dir := t.TempDir()
	s := startServe(t, dir, "--data-dir", filepath.Join(dir, "data"), "--insecure-plaintext-key", "--san", "127.0.0.1")
	m := newMeshroot(t)
	m.socket = s.socket

	// Before a root exists the server is alive but not ready.
	resp, err := http.Get("http://" + s.httpAddr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/readyz without a root: %d, want 503", resp.StatusCode)
	}
	m.ok("root", "init", "--trust-domain", trustDomain)
	s.waitReady(t)
	m.ok("cluster", "add", "east")
	if tok := strings.TrimSpace(m.ok("token", "create", "--cluster", "east").stdout); !strings.HasPrefix(tok, "mrt.") {
		t.Errorf("token create printed %q", tok)
	}
	out := filepath.Join(t.TempDir(), "east")
	m.ok("intermediate", "issue", "--cluster", "east", "--out", out)
	opensslVerify(t, filepath.Join(out, "root-cert.pem"), filepath.Join(out, "cert-chain.pem"), filepath.Join(out, "ca-cert.pem"))

	var list []struct {
		Serial string `json:"serial"`
		Status string `json:"status"`
	}
	if err := json.Unmarshal([]byte(m.ok("intermediate", "list", "-o", "json").stdout), &list); err != nil || len(list) != 1 {
		t.Fatalf("intermediate list: %v %v", list, err)
	}
	m.ok("intermediate", "revoke", list[0].Serial, "--reason", "test")
	if err := json.Unmarshal([]byte(m.ok("intermediate", "list", "-o", "json").stdout), &list); err != nil || list[0].Status != "revoked" {
		t.Errorf("after revoke: %v %v", list, err)
	}

	// Refusals keep their exit codes across the wire.
	m.refused(3, []string{"BAD_NAME"}, "cluster", "add", "BAD_NAME")
	m.refused(3, []string{"not registered"}, "intermediate", "issue", "--cluster", "nope", "--out", t.TempDir())
	m.refused(3, []string{"already"}, "root", "init", "--trust-domain", trustDomain)
	m.refused(2, []string{"data dir"}, "root", "import", "--trust-domain", trustDomain, "--cert", filepath.Join(out, "root-cert.pem"), "--key", filepath.Join(out, "ca-key.pem"))
	m.ok("cluster", "remove", "east")
	m.refused(3, []string{"not registered"}, "token", "create", "--cluster", "east")

	// The audit log names the admin caller by uid, and its chain holds.
	var audit []struct {
		Actor, Action, Result string
	}
	if err := json.Unmarshal([]byte(m.ok("audit", "list", "-o", "json").stdout), &audit); err != nil {
		t.Fatal(err)
	}
	var byAdmin int
	for _, e := range audit {
		if strings.HasPrefix(e.Actor, "admin:uid=") {
			byAdmin++
		}
	}
	if byAdmin < 8 {
		t.Errorf("%d audit rows name an admin uid; want every admin call (>= 8)", byAdmin)
	}
	m.ok("audit", "verify")

	s.stop(t)
	if _, err := os.Stat(s.socket); !os.IsNotExist(err) {
		t.Errorf("admin socket left behind after stop: %v", err)
	}
	m.refused(1, []string{"no meshroot server at"}, "cluster", "list")
}

// TestServeDev checks the quick start: --dev creates a root, a cluster and
// a join token on first start and prints the agent command.
func TestServeDev(t *testing.T) {
	dir := t.TempDir()
	s := startServe(t, dir, "--dev")
	s.waitReady(t)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(s.logs(), "meshroot agent --once") && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	logs := s.logs()
	for _, want := range []string{"meshroot agent --once --server " + s.issuerAddr, "--cluster dev", "--join-token mrt.", "server-ca.pem"} {
		if !strings.Contains(logs, want) {
			t.Errorf("dev banner lacks %q:\n%s", want, logs)
		}
	}
	ca := readCerts(t, filepath.Join(dir, "meshroot-data", "server-ca.pem"))
	if len(ca) != 1 || !ca[0].IsCA {
		t.Errorf("server-ca.pem: %d certificates", len(ca))
	}
	m := newMeshroot(t)
	m.socket = s.socket
	if r := m.ok("cluster", "list", "-o", "json"); !strings.Contains(r.stdout, `"name": "dev"`) || !strings.Contains(r.stdout, `"trust_domain": "cluster.local"`) {
		t.Errorf("cluster list on the dev server: %s", r.stdout)
	}
	s.stop(t)

	// A second start reuses the root and the cluster.
	s2 := startServe(t, dir, "--dev")
	s2.waitReady(t)
	m.socket = s2.socket
	if r := m.ok("root", "list", "-o", "json"); strings.Count(r.stdout, `"id"`) != 1 {
		t.Errorf("restart created another root: %s", r.stdout)
	}
	s2.stop(t)
}
