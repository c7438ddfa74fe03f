// Hostile networks (issue 15 item 5): the agent notices a watch stream that
// a NAT silently dropped. The agent is the lean meshroot-agent binary. (The
// test through a real HTTP CONNECT proxy needs a server address Go would
// proxy, i.e. not loopback: it is test/e2e/proxy_test.go, in network
// namespaces of its own.)

package kube

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshroot/meshroot/test/kube/kubeenv"
)

var (
	agentOnce    sync.Once
	agentPath    string
	agentErr     error
	tinyproxyBin = "tinyproxy"
)

// agentBin builds cmd/meshroot-agent once per test process.
func agentBin(t testing.TB) string {
	t.Helper()
	agentOnce.Do(func() { agentPath, agentErr = buildBinary("meshroot-agent") })
	if agentErr != nil {
		t.Fatalf("building meshroot-agent: %v", agentErr)
	}
	return agentPath
}

// leanAgentOnce runs `meshroot-agent --once` with env and returns its exit
// code and output.
func leanAgentOnce(t *testing.T, s *server, cluster, ns, kubeconfig string, timeout time.Duration, env ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, agentBin(t), "--server", s.addr, "--server-ca", s.caPEM, "--cluster", cluster,
		"--kubeconfig", kubeconfig, "--namespace", ns, "--once", "--timeout", timeout.String())
	cmd.Env = childEnv(env...)
	out, err := cmd.CombinedOutput()
	if cmd.ProcessState == nil {
		t.Fatalf("running meshroot-agent: %v", err)
	}
	if ctx.Err() != nil {
		t.Fatalf("meshroot-agent --once --timeout %s still ran after %s:\n%s", timeout, timeout+30*time.Second, out)
	}
	return cmd.ProcessState.ExitCode(), string(out)
}

// relay forwards TCP connections from its listener to target. stall makes
// every connection open at that moment stop forwarding in both directions
// without closing (what a NAT that dropped its mapping looks like to both
// ends); connections accepted later are forwarded normally.
type relay struct {
	ln       net.Listener
	target   string
	accepted atomic.Int64
	mu       sync.Mutex
	stalls   []*atomic.Bool
	conns    []net.Conn
}

func startRelay(t *testing.T, target string) *relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{ln: ln, target: target}
	go r.serve()
	t.Cleanup(func() {
		ln.Close()
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, c := range r.conns {
			c.Close()
		}
	})
	return r
}

func (r *relay) addr() string { return r.ln.Addr().String() }

func (r *relay) serve() {
	for {
		in, err := r.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", r.target)
		if err != nil {
			in.Close()
			continue
		}
		r.accepted.Add(1)
		stalled := &atomic.Bool{}
		r.mu.Lock()
		r.stalls = append(r.stalls, stalled)
		r.conns = append(r.conns, in, out)
		r.mu.Unlock()
		go pump(in, out, stalled)
		go pump(out, in, stalled)
	}
}

// pump copies from src to dst until stalled, then reads and drops.
func pump(src, dst net.Conn, stalled *atomic.Bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !stalled.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err != io.EOF || !stalled.Load() {
				dst.Close()
			}
			return
		}
	}
}

// stall stops forwarding on every open connection.
func (r *relay) stall() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.stalls {
		s.Store(true)
	}
}

// TestAgentWatchSurvivesSilentNAT: the agent's connection goes through a
// relay that, at some point, stops forwarding without closing anything.
// The trust bundle then changes. The agent's keepalive pings (every 25 s
// of silence, 15 s to answer, slower than the server's 20 s minimum)
// find the connection dead, it reconnects through a fresh relay path and
// writes the new bundle, all within 60 s. (Without client keepalives the
// agent would wait on the dead stream indefinitely.)
func TestAgentWatchSurvivesSilentNAT(t *testing.T) {
	// ~40 s of waiting on keepalive timers: beside the other waiting
	// tests (after the package's sequential ones), not in a row with them.
	t.Parallel()
	c := kubeenv.Start(t, "nat")
	s := startServer(t, "")
	c.EnsureNamespace(t, meshNS)
	s.cli("cluster", "add", "nat")
	r := startRelay(t, s.addr)
	a := startBin(t, agentBin(t), "meshroot-agent nat", []string{"MESHROOT_JOIN_TOKEN=" + s.joinToken("nat")},
		"--server", r.addr(), "--server-ca", s.caPEM, "--cluster", "nat", "--kubeconfig", c.KubeconfigPath)
	var first *cacerts
	eventually(t, 30*time.Second, "first cacerts", func() error {
		a.alive(t)
		sec := getSecret(t, c, meshNS, cacertsName)
		if sec == nil {
			return fmt.Errorf("no Secret yet")
		}
		first = mustCheck(t, sec)
		return nil
	})
	s.waitWatchers(t, 1, 15*time.Second)
	time.Sleep(2 * time.Second) // let the first report finish on its own connection

	r.stall()
	stalledAt := time.Now()
	paths := r.accepted.Load()
	mark := len(a.output())
	s.cli("root", "prepare")
	waitRoots(t, c, s, a, first, 60*time.Second)
	took := time.Since(stalledAt)
	t.Logf("new bundle in cacerts %s after the relay went silent", took.Round(100*time.Millisecond))
	if r.accepted.Load() == paths {
		t.Errorf("the new bundle arrived without a new connection through the relay")
	}
	if !strings.Contains(a.output()[mark:], "trust bundle watch interrupted") {
		t.Errorf("the agent did not log the lost watch:\n%s", a.tail(20))
	}
}

// vmRSS is a process's resident set size in KiB (/proc/PID/status).
func vmRSS(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kb int
			if _, err := fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kb); err == nil {
				return kb
			}
		}
	}
	t.Fatalf("/proc/%d/status has no VmRSS", pid)
	return 0
}

// TestAgentIdleRSS measures, side by side, the idle memory of `meshroot
// agent` and the lean meshroot-agent, each keeping one cluster's cacerts
// against the same server (docs/performance.md records the figures). The
// lean agent must not use more.
func TestAgentIdleRSS(t *testing.T) {
	// Mostly a 10 s idle wait: beside the other waiting tests. What it
	// measures, each agent's own resident memory, does not depend on the
	// CPU the others take.
	t.Parallel()
	c := kubeenv.Start(t, "rss")
	s := startServer(t, "")
	for _, name := range []string{"full", "lean"} {
		c.EnsureNamespace(t, name)
		s.cli("cluster", "add", name)
	}
	full := startProc(t, "meshroot agent", []string{"MESHROOT_JOIN_TOKEN=" + s.joinToken("full")},
		s.agentArgs("full", c.KubeconfigPath, "--namespace", "full")...)
	lean := startBin(t, agentBin(t), "meshroot-agent", []string{"MESHROOT_JOIN_TOKEN=" + s.joinToken("lean")},
		s.agentArgs("lean", c.KubeconfigPath, "--namespace", "lean")[1:]...)
	eventually(t, 60*time.Second, "both agents wrote cacerts", func() error {
		full.alive(t)
		lean.alive(t)
		for _, ns := range []string{"full", "lean"} {
			if getSecret(t, c, ns, cacertsName) == nil {
				return fmt.Errorf("no cacerts in %s yet", ns)
			}
		}
		return nil
	})
	s.waitWatchers(t, 2, 15*time.Second)
	time.Sleep(10 * time.Second) // idle: watching, nothing to do
	fullKB, leanKB := vmRSS(t, full.cmd.Process.Pid), vmRSS(t, lean.cmd.Process.Pid)
	t.Logf("idle VmRSS: meshroot agent %.1f MiB, meshroot-agent %.1f MiB", float64(fullKB)/1024, float64(leanKB)/1024)
	if leanKB > fullKB {
		t.Errorf("the lean agent holds more memory (%d KiB) than meshroot agent (%d KiB)", leanKB, fullKB)
	}
	// Issue 15's goal is under 25 MB; docs/performance.md says where the
	// rest goes. The test holds the line that was measured, not the goal.
}
