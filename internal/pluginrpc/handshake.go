package pluginrpc

// The start of meshroot-plugin. meshroot creates a folder only its user
// can enter (0700), starts the plugin with EnvSocket naming a socket in
// it, EnvCookie set to Cookie and EnvParentPID to its own pid, and waits
// for the plugin to write Ready as its first line on stdout: it then
// serves the KeyManager, Upstream and gRPC health services on the
// socket. Nothing else on this machine can connect: the folder's mode
// keeps other users out, as the admin socket's does.
const (
	// EnvSocket names the Unix socket the plugin listens on.
	EnvSocket = "MESHROOT_PLUGIN_SOCKET"
	// EnvCookie must hold Cookie. It only keeps meshroot-plugin from
	// being started by hand by mistake (it then says what it is and
	// exits); it is no security measure.
	EnvCookie = "MESHROOT_PLUGIN_COOKIE"
	// Cookie is EnvCookie's value; it changes whenever
	// api/meshroot/plugin/v1 changes incompatibly, so that a plugin of
	// another version refuses to start rather than misread calls.
	Cookie = "meshroot-plugin-v1-7c2d0f6e"
	// Ready is the plugin's first line on stdout once it serves.
	Ready = "meshroot-plugin v1 ready"
)

// EnvParentPID is set by the host to its process id: the plugin exits when
// its parent is gone, even if the kernel's parent-death signal was missed.
const EnvParentPID = "MESHROOT_PLUGIN_PARENT_PID"

// The plugin's callers prove they are the meshroot that started it: at
// each start meshroot makes a random token and writes it as the first
// line of the plugin's stdin (a pipe between the two processes: not in
// the environment, which other processes of the user can read), and
// sends it with every call in TokenHeader; the plugin refuses calls
// without it (constant-time comparison). Together with the 0700 folder,
// a process of the same user that finds the socket cannot sign with it.
const TokenHeader = "meshroot-plugin-token"
