package pluginserve

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	pluginv1 "github.com/meshroot/meshroot/api/meshroot/plugin/v1"
	"github.com/meshroot/meshroot/internal/pluginrpc"

	// The cloud KMS key managers register their schemes with the key
	// catalog that keyServer opens them from.
	_ "github.com/meshroot/meshroot/keys/kms"
)

// Serve serves the plugin's services to the meshroot that started this
// process (internal/pluginrpc: the socket it names, then the ready line on
// stdout), until SIGTERM or until its parent is gone. It returns an error,
// without serving, when the process was not started by meshroot.
func Serve() error {
	if os.Getenv(pluginrpc.EnvCookie) != pluginrpc.Cookie {
		return errors.New("meshroot-plugin runs the cloud KMS key managers and the step-ca upstream for meshroot, which starts it when it needs them: it is not run by hand (docs/keys.md)")
	}
	sock := os.Getenv(pluginrpc.EnvSocket)
	if !filepath.IsAbs(sock) {
		return fmt.Errorf("meshroot-plugin: %s=%q is not an absolute socket path: the meshroot that started it is of another version", pluginrpc.EnvSocket, sock)
	}
	// JSON lines on stderr, which meshroot forwards to its own log.
	slog.SetDefault(slog.New(slog.NewJSONHandler(os.Stderr, nil)))
	token, err := bufio.NewReader(io.LimitReader(os.Stdin, 256)).ReadString('\n')
	if token = strings.TrimSpace(token); len(token) < 32 {
		return fmt.Errorf("meshroot-plugin: no token on stdin (%v): the meshroot that started it is of another version", err)
	}
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return fmt.Errorf("meshroot-plugin: listen on %s: %w", sock, err)
	}
	ks, us := newKeyServer(), newUpstreamServer()
	defer ks.close()
	s := grpc.NewServer(pluginrpc.TokenCheck(token)...)
	pluginv1.RegisterKeyManagerServer(s, ks)
	pluginv1.RegisterUpstreamServer(s, us)
	healthpb.RegisterHealthServer(s, health.NewServer()) // "" serving
	go exitWithParent()
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		s.GracefulStop()
	}()
	if _, err := fmt.Fprintln(os.Stdout, pluginrpc.Ready); err != nil {
		return err
	}
	return s.Serve(ln)
}

// exitWithParent ends the process once its parent is gone: the host sets
// the kernel's parent-death signal, and this covers what it misses (the
// signal follows the thread that started the process, not the process).
func exitWithParent() {
	want, err := strconv.Atoi(os.Getenv(pluginrpc.EnvParentPID))
	if err != nil || want <= 1 {
		return
	}
	for range time.Tick(time.Second) {
		if os.Getppid() != want {
			fmt.Fprintln(os.Stderr, "meshroot-plugin: the meshroot process that started it is gone: exiting")
			os.Exit(1)
		}
	}
}
