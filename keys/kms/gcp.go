//go:build !nocloudkms

package kms

// Google Cloud KMS registers itself with step's kms; build with -tags nocloudkms to
// leave it (and its SDK) out of the binary.
import _ "go.step.sm/crypto/kms/cloudkms"
