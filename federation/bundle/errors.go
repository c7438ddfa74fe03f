package bundle

import (
	"errors"
	"fmt"
)

// Reasons classify why a bundle, or the fetch of one, was refused. They are
// the values of the result label of meshroot_federation_fetch_total and the
// prefix of a peer's recorded last error.
const (
	ReasonTLS              = "tls"                // handshake failed: unknown CA, expired or wrong SVID, ...
	ReasonHTTPStatus       = "http_status"        // the endpoint answered something other than 200 (redirects are not followed)
	ReasonTooLarge         = "too_large"          // the document is over the size cap, or its roots over what the mesh may hold
	ReasonParse            = "parse"              // not a valid SPIFFE bundle document (or PEM, where allowed)
	ReasonEmpty            = "empty"              // no X.509 authority in the document
	ReasonWrongTrustDomain = "wrong_trust_domain" // the document names another trust domain
	ReasonOwnTrustDomain   = "own_trust_domain"   // the peer is this trust domain: it may not supply our roots
	ReasonLowerSequence    = "lower_sequence"     // spiffe_sequence is lower than the one held
	ReasonTimeout          = "timeout"            // the fetch took longer than its deadline
	ReasonNetwork          = "network"            // connection refused, reset, DNS failure, ...
	ReasonNoBundle         = "no_bundle"          // https_spiffe peer without a bundle to authenticate it
	ReasonConfig           = "config"             // the peer's URL, profile, endpoint SPIFFE ID or trust domain is unusable
	ReasonStore            = "store"              // the bundle could not be read from or written to the store
	ReasonCanceled         = "canceled"           // the caller gave up (shutdown)
)

// Error is a refused bundle or fetch, with its reason class.
type Error struct {
	Reason string // one of the Reason constants
	Err    error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// NewError returns err classed as reason.
func NewError(reason string, err error) error { return &Error{Reason: reason, Err: err} }

// Errorf returns a formatted error classed as reason.
func Errorf(reason, format string, args ...any) error {
	return &Error{Reason: reason, Err: fmt.Errorf(format, args...)}
}

// ReasonOf returns the reason class of err: the Reason of the first *Error
// in its chain, "" for nil, and "error" for anything else.
func ReasonOf(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return "error"
}
