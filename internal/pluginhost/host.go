package pluginhost

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/meshroot/meshroot/internal/pluginrpc"
)

// StartTimeout bounds how long the plugin may take to start serving.
const StartTimeout = 30 * time.Second

// healthTimeout bounds the health check before each use of a running plugin.
const healthTimeout = 5 * time.Second

// Host runs meshroot-plugin on demand. The zero value is not usable: call
// New. It is safe for concurrent use.
type Host struct {
	mu     sync.Mutex
	path   string // configured binary; "" looks next to os.Executable, then in $PATH
	log    *slog.Logger
	child  *child
	conn   *grpc.ClientConn
	dir    string // the socket's 0700 folder
	closed bool
}

// child is a started plugin process.
type child struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed once it exited
}

func (c *child) hasExited() bool {
	select {
	case <-c.exited:
		return true
	default:
		return false
	}
}

// New returns a host that will look for the plugin at path when it is
// set, else next to the running executable, then in $PATH. Nothing is
// started yet.
func New(path string, log *slog.Logger) *Host {
	return &Host{path: path, log: log}
}

// SetPath sets where the plugin is (see New). A running plugin from
// another path is stopped; the new one starts on the next call.
func (h *Host) SetPath(path string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if path != h.path {
		h.stopLocked()
	}
	h.path = path
	h.closed = false
}

// SetLogger sets where the plugin's log goes (nil: slog.Default()), from
// the next start on.
func (h *Host) SetLogger(log *slog.Logger) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.log = log
}

func (h *Host) logger() *slog.Logger {
	if h.log != nil {
		return h.log
	}
	return slog.Default()
}

// connect returns a connection to a running plugin that answers, starting
// it (again) when needed. what names the backend the caller needs, for
// errors: "awskms key manager", "step-ca upstream".
//
// Each use asks the plugin's health service first (one round trip on the
// socket, outside the lock): a plugin that was killed may still look
// connected for a moment, and its death must cost the next call nothing.
func (h *Host) connect(ctx context.Context, what string) (*grpc.ClientConn, error) {
	h.mu.Lock()
	c, conn, closed := h.child, h.conn, h.closed
	h.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("%s: meshroot-plugin was stopped: meshroot is shutting down", what)
	}
	if c != nil && !c.hasExited() && healthy(ctx, conn) {
		return conn, nil
	}
	// The caller's deadline, not the plugin, may have failed the check.
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, fmt.Errorf("%s: meshroot-plugin was stopped: meshroot is shutting down", what)
	}
	if h.child != c && h.child != nil {
		return h.conn, nil // another call started it again meanwhile
	}
	if h.child != nil {
		h.logger().Warn("meshroot-plugin is gone: starting it again", "pid", h.pid(), "for", what)
		h.stopLocked()
	}
	if err := h.startLocked(what); err != nil {
		return nil, err
	}
	return h.conn, nil
}

// healthy asks the plugin's health service, within ctx and healthTimeout:
// it also reconnects a connection that went idle.
func healthy(ctx context.Context, conn *grpc.ClientConn) bool {
	ctx, cancel := context.WithTimeout(ctx, healthTimeout)
	defer cancel()
	r, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	return err == nil && r.GetStatus() == healthpb.HealthCheckResponse_SERVING
}

func (h *Host) pid() int {
	if h.child == nil {
		return 0
	}
	return h.child.cmd.Process.Pid
}

// startLocked starts the plugin and connects to it.
func (h *Host) startLocked(what string) error {
	path, err := locate(h.path, what)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "meshroot-plugin-")
	if err != nil {
		return fmt.Errorf("%s: a folder for meshroot-plugin's socket: %w", what, err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		os.RemoveAll(dir)
		return fmt.Errorf("%s: a folder for meshroot-plugin's socket: %w", what, err)
	}
	sock := filepath.Join(dir, "plugin.sock")
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		os.RemoveAll(dir)
		return err
	}
	token := hex.EncodeToString(raw[:])
	c, err := startChild(path, sock, token, newLineLogger(h.logger()))
	if err != nil {
		os.RemoveAll(dir)
		return fmt.Errorf("%s: meshroot-plugin (%s) did not start: %v: see meshroot's log for its output", what, path, err)
	}
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(pluginrpc.TokenCredentials(token)))
	if err != nil {
		c.kill()
		os.RemoveAll(dir)
		return fmt.Errorf("%s: meshroot-plugin's socket %s: %w", what, sock, err)
	}
	h.child, h.conn, h.dir = c, conn, dir
	// The server's log notes it; a CLI command (default logger) does not.
	lvl := slog.LevelDebug
	if h.log != nil {
		lvl = slog.LevelInfo
	}
	h.logger().Log(context.Background(), lvl, "started meshroot-plugin", "path", path, "pid", h.pid(), "for", what)
	return nil
}

// startChild starts the plugin at path, serving on sock and answering
// calls that carry token, and waits for its ready line (StartTimeout at
// most). Its stderr goes to stderr.
func startChild(path, sock, token string, stderr *lineLogger) (*child, error) {
	cmd := exec.Command(path)
	cmd.Env = append(os.Environ(),
		pluginrpc.EnvCookie+"="+pluginrpc.Cookie,
		pluginrpc.EnvSocket+"="+sock,
		pluginrpc.EnvParentPID+"="+strconv.Itoa(os.Getpid()))
	cmd.Stderr = stderr
	// The kernel kills the plugin when meshroot dies, whatever the reason.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stdin = strings.NewReader(token + "\n") // a pipe, not the environment
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{cmd: cmd, exited: make(chan struct{})}
	first := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		line := ""
		if sc.Scan() {
			line = sc.Text()
		}
		first <- line
		for sc.Scan() { // anything later on stdout goes to the log too
			stderr.line([]byte(sc.Text()))
		}
	}()
	go func() { _ = cmd.Wait(); close(c.exited) }()
	select {
	case line := <-first:
		if strings.TrimSpace(line) == pluginrpc.Ready {
			return c, nil
		}
		c.kill()
		if line == "" {
			return nil, fmt.Errorf("it exited before it served (%v)", cmd.ProcessState)
		}
		return nil, fmt.Errorf("it said %q, not %q: it is not meshroot-plugin, or of another version", trim(line), pluginrpc.Ready)
	case <-time.After(StartTimeout):
		c.kill()
		return nil, fmt.Errorf("it did not say it serves within %s", StartTimeout)
	}
}

// kill stops the process and waits for it.
func (c *child) kill() {
	_ = c.cmd.Process.Kill()
	<-c.exited
}

func trim(s string) string {
	if len(s) > 120 {
		return s[:120] + "..."
	}
	return s
}

// stopLocked stops a running plugin and removes its socket folder.
func (h *Host) stopLocked() {
	if h.conn != nil {
		h.conn.Close()
	}
	if h.child != nil {
		h.child.kill()
	}
	if h.dir != "" {
		os.RemoveAll(h.dir)
	}
	h.child, h.conn, h.dir = nil, nil, ""
}

// Close stops the plugin if it runs. Later calls fail until SetPath.
func (h *Host) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stopLocked()
	h.closed = true
	return nil
}

// SocketDir is the folder of the running plugin's socket, "" when none
// runs. For tests and diagnostics.
func (h *Host) SocketDir() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.dir
}

// PID is the running plugin's process id, 0 when none runs.
func (h *Host) PID() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.pid()
}

// fail turns an error of a call to the plugin into the backend's error
// (pluginrpc.FromStatus), or says that the plugin went away.
func fail(what string, err error) error {
	if st, ok := status.FromError(err); ok && st.Code() == codes.Unavailable {
		return fmt.Errorf("%s: meshroot-plugin stopped answering (%s): it is started again on the next call", what, st.Message())
	}
	return pluginrpc.FromStatus(err)
}
