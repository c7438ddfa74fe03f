package e2e

import (
	"bytes"
	"context"
	"crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	agentOnce sync.Once
	agentPath string
	agentErr  error
)

// leanAgent builds cmd/meshroot-agent (the agent as shipped in its chart)
// next to the meshroot binary, once per test process.
func leanAgent(t *testing.T) string {
	t.Helper()
	agentOnce.Do(func() {
		agentPath = filepath.Join(filepath.Dir(meshrootBin), "meshroot-agent")
		agentErr = buildCommands(filepath.Dir(meshrootBin), "meshroot-agent")
	})
	if agentErr != nil {
		t.Fatal(agentErr)
	}
	return agentPath
}

// tinyproxy is Debian's tinyproxy running in a namespace, logging every
// request.
type tinyproxy struct {
	log string
}

// startTinyproxy runs tinyproxy in netns on addr:3128, allowing CONNECT
// from allow to port connectPort only, and waits until it accepts
// connections. It is stopped when the test ends.
func startTinyproxy(t *testing.T, lab *netLab, netns, addr, allow, connectPort string) *tinyproxy {
	t.Helper()
	bin, err := exec.LookPath("tinyproxy")
	if err != nil {
		t.Fatal("tinyproxy is not installed: make test-deps installs it (apt-get install tinyproxy)")
	}
	// tinyproxy drops root for nobody, who must reach its log file.
	dir, err := os.MkdirTemp("", "mrpx")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := &tinyproxy{log: filepath.Join(dir, "tinyproxy.log")}
	if err := os.WriteFile(p.log, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	_ = os.Chmod(p.log, 0o666) // whatever the umask
	conf := filepath.Join(dir, "tinyproxy.conf")
	writeFile(t, conf, []byte(strings.Join([]string{
		"User nobody", "Group nogroup", "Port 3128", "Listen " + addr, "Timeout 60",
		`LogFile "` + p.log + `"`, "LogLevel Info", "MaxClients 20",
		"Allow " + allow, "ConnectPort " + connectPort, "DisableViaHeader Yes", "",
	}, "\n")))
	cmd := lab.command(netns, bin, "-d", "-c", conf)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("tinyproxy log:\n%s%s", p.text(), out.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.text(), "Accepting connections") {
		select {
		case err := <-exited:
			t.Fatalf("tinyproxy exited: %v\n%s%s", err, p.text(), out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("tinyproxy did not start within 10 s\n%s", p.text())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return p
}

func (p *tinyproxy) text() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

// TestAgentThroughHTTPSProxy (issue 15 item 5): an agent whose only way
// to the server is an HTTP CONNECT proxy gets its intermediate and trust
// bundle through it when HTTPS_PROXY names the proxy, and cannot reach the
// server without it, nor when NO_PROXY names the server. The server, a
// real tinyproxy and the lean agent binary each run in a network namespace
// of their own (not loopback, which Go never proxies); the proxy's
// namespace forwards no packets and the agent's has no route to the
// server's. The agent writes to a folder (--out): no Kubernetes needed.
func TestAgentThroughHTTPSProxy(t *testing.T) {
	lab := newNetLab(t)
	agent := leanAgent(t)
	const port = "8443"
	server := labServerIP + ":" + port
	proxyURL := "http://" + labProxyIP + ":3128"
	px := startTinyproxy(t, lab, lab.px, labProxyIP, labAgentIP, port)

	dir := t.TempDir()
	s := startServeIn(t, lab.srv, dir, "--data-dir", filepath.Join(dir, "data"), "--insecure-plaintext-key",
		"--listen", server, "--http-listen", "127.0.0.1:0", "--bundle-endpoint-listen", "off", "--san", labServerIP)
	if s.issuerAddr != server {
		t.Fatalf("the server listens on %s, want %s", s.issuerAddr, server)
	}
	m := newMeshroot(t)
	m.socket = s.socket // a unix socket: the namespaces share the file system
	m.ok("root", "init", "--trust-domain", trustDomain)
	m.ok("cluster", "add", "edge")
	serverCA := writeFile(t, filepath.Join(dir, "server-ca.pem"), []byte(m.ok("bundle", "show", "-o", "pem").stdout))
	token := strings.TrimSpace(m.ok("token", "create", "--cluster", "edge").stdout)

	// runAgent runs `meshroot-agent --once` in the agent's namespace with
	// the proxy variables of env only, writing into a new folder.
	runAgent := func(timeout time.Duration, env ...string) (code int, output, out string) {
		t.Helper()
		out = filepath.Join(t.TempDir(), "cacerts")
		ctx, cancel := context.WithTimeout(context.Background(), timeout+30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, ipBin, "netns", "exec", lab.agent, agent, "--server", server, "--server-ca", serverCA,
			"--cluster", "edge", "--out", out, "--once", "--timeout", timeout.String())
		for _, kv := range os.Environ() {
			k, _, _ := strings.Cut(kv, "=")
			switch strings.ToUpper(k) {
			case "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "ALL_PROXY", "MESHROOT_JOIN_TOKEN":
				continue
			}
			if !strings.HasPrefix(k, "MESHROOT_") {
				cmd.Env = append(cmd.Env, kv)
			}
		}
		cmd.Env = append(append(cmd.Env, "MESHROOT_JOIN_TOKEN="+token), env...)
		b, err := cmd.CombinedOutput()
		if cmd.ProcessState == nil || ctx.Err() != nil {
			t.Fatalf("meshroot-agent --once --timeout %s: %v (still running after %s)\n%s", timeout, err, timeout+30*time.Second, b)
		}
		return cmd.ProcessState.ExitCode(), string(b), out
	}
	noFiles := func(what, out string) {
		t.Helper()
		if _, err := os.Stat(filepath.Join(out, "ca-cert.pem")); err == nil {
			t.Errorf("%s: the agent wrote cacerts", what)
		}
	}

	// Direct: no route to the server.
	code, output, out := runAgent(5 * time.Second)
	if code == 0 || !strings.Contains(output, "network is unreachable") {
		t.Errorf("agent without HTTPS_PROXY: exit %d, want a failure to reach %s (network is unreachable):\n%s", code, server, output)
	}
	noFiles("without HTTPS_PROXY", out)
	// NO_PROXY naming the server: the proxy is not used either.
	code, output, out = runAgent(5*time.Second, "HTTPS_PROXY="+proxyURL, "NO_PROXY="+labServerIP)
	if code == 0 || !strings.Contains(output, "network is unreachable") {
		t.Errorf("agent with NO_PROXY=%s: exit %d, want the direct dial refused:\n%s", labServerIP, code, output)
	}
	noFiles("with NO_PROXY", out)
	if strings.Contains(px.text(), "CONNECT "+labServerIP) || strings.Contains(px.text(), "Connect (file descriptor") {
		t.Fatalf("the proxy saw a CONNECT before the agent was told to use it:\n%s", px.text())
	}

	// Through the proxy.
	code, output, out = runAgent(60*time.Second, "HTTPS_PROXY="+proxyURL, "NO_PROXY=localhost,127.0.0.1")
	if code != 0 {
		t.Fatalf("agent with HTTPS_PROXY=%s: exit %d\n%s", proxyURL, code, output)
	}
	got := loadCACerts(t, out) // the intermediate, its key, chain and roots
	want := readCerts(t, serverCA)
	if len(got.roots) != len(want) || !got.roots[0].Equal(want[0]) {
		t.Errorf("root-cert.pem holds %d roots, not the server's trust bundle (%d)", len(got.roots), len(want))
	}
	inter := x509.NewCertPool()
	for _, c := range got.chain[1:] {
		inter.AddCert(c)
	}
	if _, err := got.cert.Verify(x509.VerifyOptions{Roots: got.rootPool(), Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("the intermediate the agent got through the proxy does not verify to the trust bundle: %v", err)
	}
	log := px.text()
	if !strings.Contains(log, "CONNECT "+server) || !strings.Contains(log, "Established connection to host \""+labServerIP+"\"") {
		t.Errorf("tinyproxy's log shows no CONNECT to %s:\n%s", server, log)
	}
	if !strings.Contains(log, labAgentIP) {
		t.Errorf("tinyproxy's log does not name the agent's address %s:\n%s", labAgentIP, log)
	}
	// The server saw the cluster report in (through the proxy: there is
	// no other way).
	if list := m.ok("cluster", "list").stdout; !strings.Contains(list, "edge") {
		t.Errorf("cluster list:\n%s", list)
	}
	t.Logf("%s: agent through tinyproxy OK", lab)
}
