// Package federation keeps the bundles of the foreign trust domains this
// one federates with: one watcher per peer fetches the peer's SPIFFE
// bundle endpoint (FetchBundle, Federator), every bundle from a peer or an
// operator goes through the one parser (package federation/bundle), and
// the held bundles are read back, parsed once per stored version, for the
// agents that write them into the meshes (Held).
package federation
