// Package issuer serves meshroot over gRPC: the Issuer service that cluster
// agents call for their intermediates and the trust bundle, and the Admin
// service behind the CLI. Requesters are authenticated by issuer/authn; the
// cluster agent lives in issuer/agent.
package issuer
