package pluginhost

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	plugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
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
	client *plugin.Client
	conn   *grpc.ClientConn
	dir    string // the socket's 0700 folder
	closed bool
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
	client, conn, closed := h.client, h.conn, h.closed
	h.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("%s: meshroot-plugin was stopped: meshroot is shutting down", what)
	}
	if client != nil && !client.Exited() && healthy(ctx, conn) {
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
	if h.client != client && h.client != nil {
		return h.conn, nil // another call started it again meanwhile
	}
	if h.client != nil {
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
	_, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: plugin.GRPCServiceName})
	return err == nil
}

func (h *Host) pid() int {
	if h.client == nil || h.client.ReattachConfig() == nil || h.client.ReattachConfig().Pid == 0 {
		return 0
	}
	return h.client.ReattachConfig().Pid
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
	cmd := exec.Command(path)
	cmd.Env = append(os.Environ(),
		plugin.EnvUnixSocketDir+"="+dir,
		pluginrpc.EnvParentPID+"="+strconv.Itoa(os.Getpid()))
	// The kernel kills the plugin when meshroot dies, whatever the reason.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  pluginrpc.Handshake,
		Plugins:          plugin.PluginSet{pluginrpc.Name: hostPlugin{}},
		Cmd:              cmd,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         true,
		StartTimeout:     StartTimeout,
		Logger:           hclog.NewNullLogger(),
		Stderr:           newLineLogger(h.logger()),
	})
	conn, err := dispense(client)
	if err != nil {
		client.Kill()
		os.RemoveAll(dir)
		return fmt.Errorf("%s: meshroot-plugin (%s) did not start: %v: run %s --help to check the binary, and see meshroot's log for its output", what, path, err, path)
	}
	h.client, h.conn, h.dir = client, conn, dir
	// The server's log notes it; a CLI command (default logger) does not.
	lvl := slog.LevelDebug
	if h.log != nil {
		lvl = slog.LevelInfo
	}
	h.logger().Log(context.Background(), lvl, "started meshroot-plugin", "path", path, "pid", h.pid(), "for", what)
	return nil
}

// dispense performs the handshake and returns the gRPC connection.
func dispense(client *plugin.Client) (*grpc.ClientConn, error) {
	rpc, err := client.Client()
	if err != nil {
		return nil, err
	}
	raw, err := rpc.Dispense(pluginrpc.Name)
	if err != nil {
		return nil, err
	}
	conn, ok := raw.(*grpc.ClientConn)
	if !ok {
		return nil, fmt.Errorf("the plugin dispensed %T, not a gRPC connection", raw)
	}
	return conn, nil
}

// stopLocked stops a running plugin and removes its socket folder.
func (h *Host) stopLocked() {
	if h.client != nil {
		h.client.Kill()
	}
	if h.dir != "" {
		os.RemoveAll(h.dir)
	}
	h.client, h.conn, h.dir = nil, nil, ""
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

// hostPlugin hands go-plugin's gRPC connection out as it is.
type hostPlugin struct{ plugin.NetRPCUnsupportedPlugin }

// GRPCServer is the plugin's side, never the host's.
func (hostPlugin) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error {
	return errors.New("meshroot does not serve plugins")
}

// GRPCClient returns conn.
func (hostPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, conn *grpc.ClientConn) (any, error) {
	return conn, nil
}
