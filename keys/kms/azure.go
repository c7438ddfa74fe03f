package kms

// Azure Key Vault registers itself with step's kms. This package, and so the
// SDK, is linked by meshroot-plugin only, never by meshroot itself.
import _ "go.step.sm/crypto/kms/azurekms"
