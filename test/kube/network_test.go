// Hostile networks (issue 15 item 5): the agent reaches the server through
// an HTTP CONNECT proxy (tinyproxy), and notices a watch stream that a NAT
// silently dropped. The agent is the lean meshroot-agent binary.

package kube

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
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

// nonLoopbackIPv4 is an IPv4 address of this machine outside 127/8: Go
// never sends requests for localhost or loopback addresses through a
// proxy, whatever HTTPS_PROXY and NO_PROXY say, so a proxy test needs a
// server on another address.
func nonLoopbackIPv4(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
			return n.IP.String()
		}
	}
	t.Fatalf("this machine has no IPv4 address outside 127.0.0.0/8 for the server to listen on (the proxy test needs one)")
	return ""
}

// tinyproxy is a running tinyproxy (HTTP CONNECT proxy) on 127.0.0.1.
type tinyproxy struct {
	addr, log string
	cmd       *exec.Cmd
	done      chan struct{}
}

// startTinyproxy runs tinyproxy in the foreground, allowing CONNECT from
// 127.0.0.1 to connectPort only.
func startTinyproxy(t *testing.T, connectPort string) *tinyproxy {
	t.Helper()
	bin, err := exec.LookPath(tinyproxyBin)
	if err != nil {
		t.Fatalf("tinyproxy is missing (make test-deps installs it): %v", err)
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o777); err != nil { // tinyproxy may drop root for nobody
		t.Fatal(err)
	}
	p := &tinyproxy{addr: "127.0.0.1:" + freePorts(t, 1)[0], log: filepath.Join(dir, "tinyproxy.log"), done: make(chan struct{})}
	_, port, _ := net.SplitHostPort(p.addr)
	conf := fmt.Sprintf("Port %s\nListen 127.0.0.1\nTimeout 600\nMaxClients 50\nAllow 127.0.0.1\nConnectPort %s\nLogFile %q\nLogLevel Info\n", port, connectPort, p.log)
	confPath := writeFile(t, dir, "tinyproxy.conf", []byte(conf))
	p.cmd = exec.Command(bin, "-d", "-c", confPath)
	out, err := os.Create(filepath.Join(dir, "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stdout, p.cmd.Stderr = out, out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting tinyproxy: %v", err)
	}
	go func() { _ = p.cmd.Wait(); out.Close(); close(p.done) }()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			b, _ := os.ReadFile(p.log)
			o, _ := os.ReadFile(out.Name())
			t.Logf("tinyproxy log:\n%s\n%s", b, o)
		}
	})
	eventually(t, 10*time.Second, "tinyproxy listens", func() error {
		c, err := net.DialTimeout("tcp", p.addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
	return p
}

func (p *tinyproxy) stop() {
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// connects counts the CONNECT requests to target in the proxy's log.
func (p *tinyproxy) connects(target string) int {
	b, _ := os.ReadFile(p.log)
	return strings.Count(string(b), "CONNECT "+target)
}

// TestAgentThroughHTTPSProxy: with HTTPS_PROXY set, the agent reaches the
// server only through the HTTP CONNECT proxy. One machine cannot refuse the
// agent's direct path while letting the proxy's through (they share the
// network), so the test shows the path instead: the proxy logs the
// agent's CONNECT to the server; with the proxy stopped the agent fails
// although the server is up and reachable directly; with NO_PROXY naming
// the server it connects directly again.
func TestAgentThroughHTTPSProxy(t *testing.T) {
	host := nonLoopbackIPv4(t)
	c := kubeenv.Start(t, "proxied")
	s := startServerOn(t, host, "")
	_, serverPort, _ := net.SplitHostPort(s.addr)
	proxy := startTinyproxy(t, serverPort)
	proxyEnv := "HTTPS_PROXY=http://" + proxy.addr

	for _, ns := range []string{"via-proxy", "proxy-down", "no-proxy"} {
		c.EnsureNamespace(t, ns)
	}
	for _, cl := range []string{"via-proxy", "proxy-down", "no-proxy"} {
		s.cli("cluster", "add", cl)
	}

	code, out := leanAgentOnce(t, s, "via-proxy", "via-proxy", c.KubeconfigPath, 30*time.Second, proxyEnv, "MESHROOT_JOIN_TOKEN="+s.joinToken("via-proxy"))
	if code != 0 || !strings.Contains(out, "is current") {
		t.Fatalf("agent through the proxy: exit %d\n%s", code, out)
	}
	if n := proxy.connects(s.addr); n == 0 {
		t.Fatalf("the agent succeeded but the proxy logged no CONNECT %s: it went around the proxy", s.addr)
	}
	if getSecret(t, c, "via-proxy", cacertsName) == nil {
		t.Fatalf("no cacerts in namespace via-proxy")
	}

	// The proxy goes away: an agent that must reach the server fails,
	// although the server is up.
	proxy.stop()
	code, out = leanAgentOnce(t, s, "proxy-down", "proxy-down", c.KubeconfigPath, 8*time.Second, proxyEnv, "MESHROOT_JOIN_TOKEN="+s.joinToken("proxy-down"))
	if code == 0 {
		t.Fatalf("with HTTPS_PROXY pointing at a stopped proxy the agent still reached the server (a direct path):\n%s", out)
	}
	if !strings.Contains(out, "proxy") && !strings.Contains(out, proxy.addr) {
		t.Errorf("the failure does not name the proxy:\n%s", out)
	}

	// NO_PROXY naming the server: a direct connection, which works.
	code, out = leanAgentOnce(t, s, "no-proxy", "no-proxy", c.KubeconfigPath, 30*time.Second, proxyEnv, "NO_PROXY="+host, "MESHROOT_JOIN_TOKEN="+s.joinToken("no-proxy"))
	if code != 0 {
		t.Fatalf("agent with NO_PROXY=%s and the proxy stopped: exit %d\n%s", host, code, out)
	}
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
