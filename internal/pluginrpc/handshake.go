package pluginrpc

import plugin "github.com/hashicorp/go-plugin"

// Handshake is the go-plugin handshake between meshroot and
// meshroot-plugin. The magic cookie only keeps meshroot-plugin from being
// started by hand by mistake (it then says it is a plugin and exits); it
// is no security measure. ProtocolVersion changes whenever
// api/meshroot/plugin/v1 changes incompatibly.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  1,
	MagicCookieKey:   "MESHROOT_PLUGIN_COOKIE",
	MagicCookieValue: "meshroot-plugin-v1-7c2d0f6e",
}

// Name is the one plugin meshroot-plugin serves: the KeyManager and
// Upstream gRPC services on one connection.
const Name = "backends"

// EnvParentPID is set by the host to its process id: the plugin exits when
// its parent is gone, even if the kernel's parent-death signal was missed.
const EnvParentPID = "MESHROOT_PLUGIN_PARENT_PID"
