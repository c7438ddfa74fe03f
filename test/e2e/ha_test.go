package e2e

import (
	"crypto/x509"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/internal/testca"
	"github.com/meshroot/meshroot/store/postgres/pgtest"
)

// lockedBuffer is a bytes.Buffer safe for concurrent use.
type lockedBuffer = testca.SyncBuffer

// startAgent runs `meshroot agent` with args and env in the background.
func startAgent(t *testing.T, env []string, args ...string) {
	t.Helper()
	cmd := exec.Command(meshrootBin, append([]string{"agent"}, args...)...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MESHROOT_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	logs := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("agent log:\n%s", logs.String())
		}
	})
}

// watchers reads meshroot_trust_bundle_watchers from the server's metrics.
func (s *server) watchers(t *testing.T) int {
	t.Helper()
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + s.httpAddr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, "meshroot_trust_bundle_watchers "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatal(err)
			}
			return int(f)
		}
	}
	t.Fatalf("no meshroot_trust_bundle_watchers in %s/metrics", s.httpAddr)
	return 0
}

// eventually polls cond every 100 ms for up to d.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
	}
}

// folderCerts reads a PEM file of the agent's folder, or nil while it is
// not there yet.
func folderCerts(dir, name string) []*x509.Certificate {
	data, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return nil
	}
	certs, err := ca.ParseCerts(data)
	if err != nil {
		return nil
	}
	return certs
}

// TestAgentFailsOverBetweenReplicas: two server processes over one
// PostgreSQL database (created for the test and dropped after), the root
// key in one encrypted key folder both read (as a Secret mounted on every
// replica would be), and an agent in folder mode given both addresses.
// The replica the agent watches is killed (SIGKILL); a bundle change (a
// prepared root) is then made through the other replica. The agent must
// resume its watch there and apply the change, keep renewing there, and a
// new cluster's agent given both addresses (one dead) must be issued.
//
// The change is made on the replica the agent fails over to: its own
// watchers hear of it directly, whatever carries changes between replicas
// (the store poll every 2 s, or PostgreSQL LISTEN/NOTIFY). The reverse
// case, an agent that heard of a change before its replica's peer did, is
// server.TestWatchCatchesUpWithAgent.
func TestAgentFailsOverBetweenReplicas(t *testing.T) {
	dir := t.TempDir()
	dsnFile := writeFile(t, filepath.Join(dir, "dsn"), []byte(pgtest.NewDatabase(t)+"\n"))
	if err := os.Chmod(dsnFile, 0o600); err != nil {
		t.Fatal(err)
	}
	passFile := writeFile(t, filepath.Join(dir, "pass"), []byte("correct horse battery\n"))
	if err := os.Chmod(passFile, 0o600); err != nil {
		t.Fatal(err)
	}
	conf := writeFile(t, filepath.Join(dir, "serve.yaml"), []byte("keys:\n  dir: "+filepath.Join(dir, "shared-keys")+"\n"))
	replica := func(name string) *server {
		return startServe(t, dir, "--data-dir", filepath.Join(dir, name), "--store-file", dsnFile, "--passphrase-file", passFile,
			"--config", conf, "--san", "127.0.0.1")
	}
	a, b := replica("a"), replica("b")
	m := newMeshroot(t)
	m.socket = a.socket
	m.ok("root", "init", "--trust-domain", trustDomain)
	a.waitReady(t)
	b.waitReady(t)
	m.ok("cluster", "add", "east")
	m.ok("cluster", "add", "west")
	serverCA := writeFile(t, filepath.Join(dir, "server-ca.pem"), []byte(m.ok("bundle", "show", "-o", "pem").stdout))
	token := strings.TrimSpace(m.ok("token", "create", "--cluster", "east").stdout)

	out := filepath.Join(dir, "east")
	// A 24 h intermediate renewed after 0.01 % of it: every ~9 s.
	startAgent(t, []string{"MESHROOT_JOIN_TOKEN=" + token}, "--server", a.issuerAddr+","+b.issuerAddr, "--server-ca", serverCA,
		"--cluster", "east", "--out", out, "--ttl", "24h", "--renew-fraction", "0.0001")
	eventually(t, 30*time.Second, "agent wrote cacerts", func() bool { return len(folderCerts(out, "ca-cert.pem")) == 1 })
	if roots := folderCerts(out, "root-cert.pem"); len(roots) != 1 {
		t.Fatalf("root-cert.pem holds %d roots before the change, want 1", len(roots))
	}

	var watched, survivor *server
	eventually(t, 15*time.Second, "the agent watches one replica", func() bool {
		wa, wb := a.watchers(t), b.watchers(t)
		switch {
		case wa == 1 && wb == 0:
			watched, survivor = a, b
		case wa == 0 && wb == 1:
			watched, survivor = b, a
		default:
			return false
		}
		return true
	})
	if err := watched.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-watched.exited
	killedAt := time.Now()
	serial := folderCerts(out, "ca-cert.pem")[0].SerialNumber

	m.socket = survivor.socket
	m.ok("root", "prepare")
	eventually(t, 30*time.Second, "the agent applied the prepared root after failing over", func() bool {
		return len(folderCerts(out, "root-cert.pem")) == 2
	})
	t.Logf("failover: the prepared root reached the agent's folder %s after the kill", time.Since(killedAt).Round(time.Millisecond))
	if w := survivor.watchers(t); w != 1 {
		t.Errorf("surviving replica has %d watchers, want the agent's 1", w)
	}
	eventually(t, 30*time.Second, "the agent renewed through the surviving replica", func() bool {
		c := folderCerts(out, "ca-cert.pem")
		return len(c) == 1 && c[0].SerialNumber.Cmp(serial) != 0
	})
	t.Logf("failover: renewed through the surviving replica %s after the kill", time.Since(killedAt).Round(time.Millisecond))

	// A new cluster's agent given both addresses, one of them dead, is
	// issued by the surviving one.
	westToken := strings.TrimSpace(m.ok("token", "create", "--cluster", "west").stdout)
	west := filepath.Join(dir, "west")
	cmd := exec.Command(meshrootBin, "agent", "--once", "--timeout", "60s", "--server", watched.issuerAddr, "--server", survivor.issuerAddr,
		"--server-ca", serverCA, "--cluster", "west", "--out", west)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MESHROOT_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "MESHROOT_JOIN_TOKEN="+westToken)
	if outb, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("agent --once with one replica down: %v\n%s", err, outb)
	}
	if c := folderCerts(west, "ca-cert.pem"); len(c) != 1 {
		t.Fatalf("west: ca-cert.pem holds %d certificates", len(c))
	}
}
