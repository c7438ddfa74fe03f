// Package pluginrpc is what meshroot and meshroot-plugin share about the
// plugin protocol: how the plugin is started and says it serves
// (handshake.go), and the mapping of backend errors
// to gRPC status and back, so that the CLI shows the backend's own
// message. The services themselves are api/meshroot/plugin/v1; the host
// side is internal/pluginhost, the plugin side internal/pluginserve.
package pluginrpc
