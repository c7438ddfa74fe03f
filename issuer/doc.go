// Package issuer will hold meshroot's gRPC services (Issuer for agents, Admin
// for the CLI), requester authentication, the cluster agent and the cacerts
// Secret writer. Until then, clusters get their cacerts from
// `meshroot intermediate issue`.
package issuer
