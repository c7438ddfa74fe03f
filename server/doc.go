// Package server serves meshroot over gRPC: the Issuer service that cluster
// agents call for their intermediates and the trust bundle, the Admin
// service behind the CLI, and the assembly of the `meshroot serve` process.
// Requesters are authenticated by server/authn; the cluster agent lives in
// the agent package.
package server
