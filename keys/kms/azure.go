//go:build !noazurekms

package kms

// Azure Key Vault registers itself with step's kms; build with -tags noazurekms to
// leave it (and its SDK) out of the binary.
import _ "go.step.sm/crypto/kms/azurekms"
