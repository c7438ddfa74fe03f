//go:build tools

// Package tools pins the Vault server used as a test peer (BSL-licensed:
// built and run in tests only, never shipped).
package tools

import _ "github.com/hashicorp/vault"
