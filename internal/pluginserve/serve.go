package pluginserve

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/hashicorp/go-hclog"
	plugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	pluginv1 "github.com/meshroot/meshroot/api/meshroot/plugin/v1"
	"github.com/meshroot/meshroot/internal/pluginrpc"

	// The cloud KMS key managers register their schemes with the key
	// catalog that keyServer opens them from.
	_ "github.com/meshroot/meshroot/keys/kms"
)

// Serve serves the plugin's services to the meshroot that started this
// process, until it is told to stop or its parent is gone. It returns an
// error, without serving, when the process was not started by meshroot.
func Serve() error {
	if os.Getenv(pluginrpc.Handshake.MagicCookieKey) != pluginrpc.Handshake.MagicCookieValue {
		return errors.New("meshroot-plugin runs the cloud KMS key managers and the step-ca upstream for meshroot, which starts it when it needs them: it is not run by hand (docs/keys.md)")
	}
	ks, us := newKeyServer(), newUpstreamServer()
	defer ks.close()
	go exitWithParent()
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: pluginrpc.Handshake,
		Plugins:         plugin.PluginSet{pluginrpc.Name: &grpcPlugin{keys: ks, upstreams: us}},
		GRPCServer:      plugin.DefaultGRPCServer,
		// JSON lines on stderr, which meshroot forwards to its own log.
		Logger: hclog.New(&hclog.LoggerOptions{Name: "meshroot-plugin", Level: hclog.Info, Output: os.Stderr, JSONFormat: true}),
	})
	return nil
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

// grpcPlugin registers the services on go-plugin's gRPC server.
type grpcPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	keys      *keyServer
	upstreams *upstreamServer
}

// GRPCServer registers KeyManager and Upstream.
func (p *grpcPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	pluginv1.RegisterKeyManagerServer(s, p.keys)
	pluginv1.RegisterUpstreamServer(s, p.upstreams)
	return nil
}

// GRPCClient is the host's side, which this process never is.
func (p *grpcPlugin) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, errors.New("meshroot-plugin is not a plugin host")
}
