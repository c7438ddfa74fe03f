// Package spiffe turns meshroot's trust bundle into SPIFFE bundle documents
// (go-spiffe's spiffebundle) and, in time, serves and federates them.
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
