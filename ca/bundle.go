package ca

import (
	"crypto/x509"
	"time"
)

// TrustBundle is the set of roots a trust domain trusts, with a sequence
// number that increases on every change.
type TrustBundle struct {
	TrustDomain string
	Roots       []*x509.Certificate
	Sequence    uint64
	// RefreshHint tells consumers how often to re-fetch.
	RefreshHint time.Duration
}
