// Package spiffe serves the trust domain's own SPIFFE bundle: the bundle
// document (go-spiffe's spiffebundle), the bundle endpoint that serves it
// and the endpoint's X.509-SVID. Fetching the bundles of other trust
// domains is package federation's.
package spiffe

import (
	"fmt"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"

	"github.com/meshroot/meshroot/ca"
)

// Bundle converts a trust bundle to a SPIFFE bundle: the roots as X.509
// authorities, the sequence number and, when set, the refresh hint.
func Bundle(tb ca.TrustBundle) (*spiffebundle.Bundle, error) {
	td, err := ca.ParseTrustDomain(tb.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("trust bundle: %w", err)
	}
	b := spiffebundle.FromX509Authorities(td, tb.Roots)
	b.SetSequenceNumber(tb.Sequence)
	if tb.RefreshHint > 0 {
		b.SetRefreshHint(tb.RefreshHint)
	}
	return b, nil
}

// MarshalBundle returns the SPIFFE bundle document (JWKS JSON) of tb.
func MarshalBundle(tb ca.TrustBundle) ([]byte, error) {
	b, err := Bundle(tb)
	if err != nil {
		return nil, err
	}
	return b.Marshal()
}
