package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// ipBin is iproute2's ip (make test-deps installs iproute2).
const ipBin = "/usr/sbin/ip"

// netLab is three network namespaces the test creates and removes itself,
// so that traffic between them is not loopback (Go and gRPC would never
// send loopback traffic through a proxy) and never leaves the machine:
//
//	srv 10.231.0.1/30 ── 10.231.0.2/30 px 10.231.0.5/30 ── 10.231.0.6/30 agent
//
// px has IP forwarding off and agent has no route beyond its own link, so
// from agent the server at 10.231.0.1 is reachable only through a proxy
// running in px. Nothing is configured in the test's own namespace.
type netLab struct {
	srv, px, agent string
}

// The lab's addresses.
const (
	labServerIP      = "10.231.0.1"
	labProxyIP       = "10.231.0.5"
	labAgentIP       = "10.231.0.6"
	labProxyServerIP = "10.231.0.2"
)

// newNetLab creates the namespaces with names unique to this run and
// removes them (with every interface in them) when the test ends, failed
// or not. It skips when the test is not root or the kernel refuses
// network namespaces, saying so.
func newNetLab(t *testing.T) *netLab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("SKIP: creating network namespaces (ip netns add) needs root; run as root to test the agent through a real proxy")
	}
	if _, err := os.Stat(ipBin); err != nil {
		t.Fatalf("%s: %v (make test-deps installs iproute2)", ipBin, err)
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	id := hex.EncodeToString(b)
	lab := &netLab{srv: "mr" + id + "s", px: "mr" + id + "p", agent: "mr" + id + "a"}
	for i, ns := range []string{lab.srv, lab.px, lab.agent} {
		out, err := exec.Command(ipBin, "netns", "add", ns).CombinedOutput()
		if err != nil {
			if i == 0 {
				t.Skipf("SKIP: cannot create a network namespace here (ip netns add %s: %v: %s): the proxy test needs them", ns, err, strings.TrimSpace(string(out)))
			}
			t.Fatalf("ip netns add %s: %v: %s", ns, err, out)
		}
		t.Cleanup(func() {
			if out, err := exec.Command(ipBin, "netns", "del", ns).CombinedOutput(); err != nil {
				t.Errorf("ip netns del %s: %v: %s", ns, err, out)
			}
		})
	}
	// veths are made inside the namespaces: none ever exists in ours.
	lab.ip(t, "-n", lab.srv, "link", "add", "sp", "type", "veth", "peer", "name", "ps", "netns", lab.px)
	lab.ip(t, "-n", lab.px, "link", "add", "pa", "type", "veth", "peer", "name", "ap", "netns", lab.agent)
	for _, a := range []struct{ ns, dev, addr string }{
		{lab.srv, "sp", labServerIP + "/30"}, {lab.px, "ps", labProxyServerIP + "/30"},
		{lab.px, "pa", labProxyIP + "/30"}, {lab.agent, "ap", labAgentIP + "/30"},
	} {
		lab.ip(t, "-n", a.ns, "addr", "add", a.addr, "dev", a.dev)
		lab.ip(t, "-n", a.ns, "link", "set", a.dev, "up")
	}
	for _, ns := range []string{lab.srv, lab.px, lab.agent} {
		lab.ip(t, "-n", ns, "link", "set", "lo", "up")
	}
	// The proxy's namespace forwards nothing: only the proxy process
	// connects the agent to the server.
	if got := lab.exec(t, lab.px, "sh", "-c", "echo 0 > /proc/sys/net/ipv4/ip_forward && cat /proc/sys/net/ipv4/ip_forward"); strings.TrimSpace(got) != "0" {
		t.Fatalf("IP forwarding in %s: %q, want 0", lab.px, got)
	}
	if routes := lab.ip(t, "-n", lab.agent, "route", "show"); strings.Contains(routes, "default") || strings.Contains(routes, "10.231.0.0/30") {
		t.Fatalf("the agent's namespace has a route towards the server:\n%s", routes)
	}
	return lab
}

// ip runs ip with args and returns its output, failing the test on error.
func (l *netLab) ip(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(ipBin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// exec runs a command inside netns and returns its output.
func (l *netLab) exec(t *testing.T, netns string, args ...string) string {
	t.Helper()
	out, err := exec.Command(ipBin, append([]string{"netns", "exec", netns}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("in %s: %s: %v: %s", netns, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// command is a command to run inside netns.
func (l *netLab) command(netns, bin string, args ...string) *exec.Cmd {
	return exec.Command(ipBin, append([]string{"netns", "exec", netns, bin}, args...)...)
}

func (l *netLab) String() string {
	return fmt.Sprintf("netns %s (server %s), %s (proxy %s), %s (agent %s)", l.srv, labServerIP, l.px, labProxyIP, l.agent, labAgentIP)
}
