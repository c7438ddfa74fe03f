package pluginhost

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// pluginBin is the real meshroot-plugin, built once by TestMain.
var pluginBin string

// helperEnv makes the test binary a host process that starts the plugin,
// prints its pid and waits to be killed (TestPluginDiesWithItsParent).
const helperEnv = "MESHROOT_PLUGINHOST_TEST_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		runHelper()
		return
	}
	dir, err := os.MkdirTemp("", "pluginhost-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pluginBin = filepath.Join(dir, BinaryName)
	// linked once per content for every harness of `make test`
	build := exec.Command(filepath.Join("..", "..", "test", "tools", "meshroot-bins.sh"), dir, BinaryName)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "test/tools/meshroot-bins.sh "+BinaryName+":", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// runHelper starts the plugin through a host and waits to be killed.
func runHelper() {
	h := New(os.Getenv(helperEnv), nil)
	if _, err := KeyBackend(h, KMSSchemes...).Open(context.Background(), "awskms:region=eu-west-1", keysConfig()); err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println(h.PID())
	select {}
}

// newHost is a host running the test's plugin binary, closed at the end.
func newHost(t *testing.T) *Host {
	t.Helper()
	h := New(pluginBin, nil)
	t.Cleanup(func() { h.Close() })
	return h
}

// closedPort is an address on 127.0.0.1 where nothing listens.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// offlineAWS points the AWS SDK (in the plugin, which inherits the
// environment) at a closed port on 127.0.0.1 with dummy credentials.
func offlineAWS(t *testing.T) {
	t.Helper()
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "not-a-secret")
	t.Setenv("AWS_ENDPOINT_URL_KMS", "http://"+closedPort(t))
	t.Setenv("AWS_MAX_ATTEMPTS", "1")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
}

// gone reports whether process pid has exited (gone, or a zombie that its
// parent has not reaped yet).
func gone(pid int) bool {
	if err := syscall.Kill(pid, 0); err == syscall.ESRCH {
		return true
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	// pid (comm) STATE ...
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] == 'Z'
}

// waitGone waits up to d for pid to exit.
func waitGone(t *testing.T, pid int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !gone(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("process %d still runs after %s", pid, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readLine reads one line from the helper's stdout within d.
func readLine(t *testing.T, r *bufio.Reader, d time.Duration) string {
	t.Helper()
	ch := make(chan string, 1)
	go func() {
		s, _ := r.ReadString('\n')
		ch <- strings.TrimSpace(s)
	}()
	select {
	case s := <-ch:
		return s
	case <-time.After(d):
		t.Fatalf("no line from the helper within %s", d)
		return ""
	}
}
