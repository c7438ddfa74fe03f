//go:build !noawskms

package kms

// AWS KMS registers itself with step's kms; build with -tags noawskms to
// leave it (and its SDK) out of the binary.
import _ "go.step.sm/crypto/kms/awskms"
