// Package ca is meshroot's authority: it creates roots, signs cluster
// intermediates under the intermediate policy, assembles and self-checks the
// Istio cacerts files, and holds the trust bundle.
//
// The package is pure: it imports no gRPC, HTTP or Kubernetes code, and its
// keys come from a crypto.Signer that a key manager supplies.
package ca
