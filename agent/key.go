package agent

import "go.step.sm/crypto/pemutil"

// parsePrivateKey parses an unencrypted PEM private key (PKCS#8, PKCS#1 or SEC 1).
func parsePrivateKey(pemData []byte) (any, error) { return pemutil.ParseKey(pemData) }
