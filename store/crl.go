package store

import (
	"context"
	"time"
)

// CRL is the last certificate revocation list signed by one CA of the
// fleet: a root's signing authority ("root:<id>") or a cluster's
// intermediate ("cluster:<name>").
type CRL struct {
	// Issuer names the CA: "root:<root id>" or "cluster:<cluster name>".
	Issuer string
	// Number is the CRL's cRLNumber; a stored CRL is only ever replaced by
	// one with a higher number.
	Number     uint64
	DER        []byte
	ThisUpdate time.Time
	NextUpdate time.Time
}

// Revocation is when and why a cluster intermediate was revoked, for the
// CRL of the root that issued it.
type Revocation struct {
	Serial string
	// Reason is the RFC 5280 CRLReason code (0 unspecified, 1
	// keyCompromise, 2 cACompromise, 4 superseded, 5 cessationOfOperation).
	Reason    int
	RevokedAt time.Time
	// ListedIn is the CRL number of the first CRL of the issuing root
	// that listed the serial (0: on no CRL yet). A cluster whose cacerts
	// holds that root's CRL with at least this number enforces it.
	ListedIn uint64
}

// Quarantine is a cluster cut out of the trust domain: every intermediate
// revoked, all issuance for it refused until it is released.
type Quarantine struct {
	Cluster string
	Reason  string
	At      time.Time
	Actor   string
}

// RevocationReader reads CRLs, revocation records and quarantines.
type RevocationReader interface {
	// GetCRL returns the last CRL of issuer (ErrNotFound before the first).
	GetCRL(ctx context.Context, issuer string) (CRL, error)
	// ListCRLs returns every stored CRL ordered by issuer.
	ListCRLs(ctx context.Context) ([]CRL, error)
	// ListRevocations returns every revocation record ordered by serial.
	ListRevocations(ctx context.Context) ([]Revocation, error)
	// GetQuarantine returns cluster's quarantine (ErrNotFound when it is
	// not quarantined).
	GetQuarantine(ctx context.Context, cluster string) (Quarantine, error)
	// ListQuarantines returns every quarantine ordered by cluster.
	ListQuarantines(ctx context.Context) ([]Quarantine, error)
}

// RevocationWriter records CRLs, revocations and quarantines.
type RevocationWriter interface {
	// PutCRL stores c as its issuer's last CRL. It fails with ErrConflict
	// when the stored CRL's number is not lower than c.Number.
	PutCRL(ctx context.Context, c CRL) error
	// RecordRevocation records r; a serial already recorded keeps its first
	// record.
	RecordRevocation(ctx context.Context, r Revocation) error
	// MarkRevocationsListed sets ListedIn to number for each recorded
	// serial that is on no CRL yet (ListedIn 0); others keep theirs.
	MarkRevocationsListed(ctx context.Context, serials []string, number uint64) error
	// SetQuarantine records q, replacing an earlier quarantine of the
	// same cluster.
	SetQuarantine(ctx context.Context, q Quarantine) error
	// DeleteQuarantine lifts cluster's quarantine; ErrNotFound when it has
	// none.
	DeleteQuarantine(ctx context.Context, cluster string) error
}
