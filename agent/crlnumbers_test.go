package agent

import (
	"crypto/x509"
	"testing"
	"time"

	"github.com/meshroot/meshroot/ca"
)

// TestOwnCRLNumbersRise: two CRLs an agent signs for its intermediate
// within one reconcile (one for its report while ca-crl.pem is not
// written, then one for the file: both at the reconcile's now) get
// increasing numbers. The server refuses a cluster CRL whose number is
// not above the last one kept, so two with the same number made the
// second report fail (seen in the 1,000-agent bench). A later now gives
// its time again.
func TestOwnCRLNumbersRise(t *testing.T) {
	cert, key := testIssuer(t)
	cc := &ca.CACerts{Cert: cert, Key: key}
	now := time.Now()
	var nums crlNumbers
	number := func(at time.Time) int64 {
		t.Helper()
		der, err := ownCRL(nil, &nums, cc, at)
		if err != nil || der == nil {
			t.Fatalf("ownCRL: %v, %v", der, err)
		}
		rl, err := x509.ParseRevocationList(der)
		if err != nil {
			t.Fatal(err)
		}
		return rl.Number.Int64()
	}
	first, second := number(now), number(now)
	if first != now.UnixNano() {
		t.Errorf("first number %d, want the time in nanoseconds %d", first, now.UnixNano())
	}
	if second <= first {
		t.Errorf("the second CRL of one reconcile has number %d, not above the first's %d", second, first)
	}
	later := now.Add(time.Second)
	if got := number(later); got != later.UnixNano() {
		t.Errorf("a later reconcile's number %d, want its time %d", got, later.UnixNano())
	}
}
