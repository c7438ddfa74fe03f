// Package pluginhost is meshroot's side of meshroot-plugin: it starts the
// plugin as a child process at the first use of a backend that runs in it
// (a cloud KMS key manager, the step-ca upstream), talks gRPC to it over
// a Unix socket in a fresh 0700 folder (internal/pluginrpc: a ready line,
// a token per start on every call), restarts it on the next call when it
// died, and stops it on
// Close. The child is killed by the kernel when meshroot exits, and exits
// by itself if that is missed.
//
// KeyBackend puts the plugin's key managers into the key catalog, and
// Upstream is a ca.ConstrainingUpstream whose calls go to the plugin.
// Requests carry URIs, references and file paths, never a secret; errors
// keep the backend's message and kind (errors.Is: keys.ErrKeyNotFound,
// keys.ErrNotConfigured, context.DeadlineExceeded ...).
package pluginhost
