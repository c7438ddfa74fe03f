// Package browser loads meshroot's fleet page in a real Chromium, driven
// over the DevTools protocol, against the real meshroot binary. It is its
// own module so that meshroot itself never depends on chromedp.
package browser

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// meshrootBin is the binary TestMain builds from the repository.
var meshrootBin string

func TestMain(m *testing.M) {
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	dir, err := os.MkdirTemp("", "meshroot-browser-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "browser:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	meshrootBin = filepath.Join(dir, "meshroot")
	// linked once per content for every harness of `make test`
	build := exec.Command(filepath.Join("..", "tools", "meshroot-bins.sh"), dir, "meshroot")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "browser: test/tools/meshroot-bins.sh meshroot:", err)
		return 1
	}
	return m.Run()
}

// requireChromium finds Debian's chromium: `make test-deps` installs it. It
// skips when absent, except in CI where its absence is a failure.
func requireChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium is not on PATH: make test-deps installs it (apt-get install chromium)")
	}
	t.Skip("chromium is not on PATH (make test-deps installs it)")
	return ""
}

// outDir is where screenshots go: $MESHROOT_BROWSER_OUT when set (kept),
// else the test's temporary folder.
func outDir(t *testing.T) string {
	if d := os.Getenv("MESHROOT_BROWSER_OUT"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

// shortDir is a temporary folder with a short path (unix socket paths are
// bounded), removed at the end of the test.
func shortDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "mrb")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// cli runs meshroot with args in an environment free of MESHROOT_*.
func cli(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(meshrootBin, args...)
	cmd.Env = cleanEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}

func cliOK(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, code := cli(t, args...)
	if code != 0 {
		t.Fatalf("meshroot %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MESHROOT_") {
			env = append(env, kv)
		}
	}
	return env
}

// devServer is a running `meshroot serve --dev` and what its banner says.
type devServer struct {
	socket, fleetURL, issuer, serverCA string
	agentArgs                          []string // the banner's folder agent command
	mu                                 sync.Mutex
	log                                bytes.Buffer
}

var bannerRE = regexp.MustCompile(`fleet page: +(https?://\S+/fleet)[\s\S]*?\n  meshroot (agent --server (\S+) --server-ca (\S+) [^\n]*\\\n[^\n]*--out \S+)`)

// startDev runs `meshroot serve --dev` on free loopback ports, with extra
// flags, and waits for its ready banner.
func startDev(t *testing.T, dir string, extra ...string) *devServer {
	t.Helper()
	s := &devServer{socket: filepath.Join(dir, "admin.sock")}
	cmd := exec.Command(meshrootBin, append([]string{"serve", "--dev", "--data-dir", filepath.Join(dir, "data"), "--socket", s.socket,
		"--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--bundle-endpoint-listen", "off"}, extra...)...)
	cmd.Env = cleanEnv()
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); pw.Close() }()
	ready := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sent := false
		for sc.Scan() {
			s.mu.Lock()
			s.log.WriteString(sc.Text() + "\n")
			m := bannerRE.FindStringSubmatch(s.log.String())
			s.mu.Unlock()
			if m != nil && !sent {
				ready <- m
				sent = true
			}
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			s.mu.Lock()
			t.Logf("server log:\n%s", s.log.String())
			s.mu.Unlock()
		}
	})
	select {
	case m := <-ready:
		s.fleetURL, s.issuer, s.serverCA = m[1], m[3], m[4]
		s.agentArgs = strings.Fields(strings.ReplaceAll(m[2], "\\\n", " "))
	case err := <-exited:
		t.Fatalf("meshroot serve --dev exited: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("meshroot serve --dev printed no ready banner within 60 s")
	}
	return s
}

// logText is what the server has logged so far.
func (s *devServer) logText() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.log.String()
}
