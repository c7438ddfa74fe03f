// Package bundle is meshroot's one parser of SPIFFE trust bundles that come
// from outside: fetched from a federation peer's bundle endpoint, given by
// an operator as a peer's bootstrap bundle, or read back from the store.
// Every bundle goes through the same checks; the leniencies a caller may
// ask for are the explicit fields of Options.
//
// It imports only go-spiffe and the standard library, so that package ca
// (which validates bootstrap bundles inside its transactions) and package
// federation (which fetches and watches) can both use it without a cycle.
package bundle

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// MaxSize bounds a bundle document or PEM file meshroot accepts (1 MiB).
const MaxSize = 1 << 20

// MaxRootsPEM bounds what one foreign trust domain may put into the meshes:
// its X.509 authorities, PEM-encoded, as the agents write them into a
// ConfigMap key and a mesh config caCertificates entry (256 KiB; a
// Kubernetes object holds at most 1 MiB, and the agents cap the total of
// all peers too). A real bundle holds a few roots of about 1 KiB each.
const MaxRootsPEM = 256 << 10

// maxRefreshHintSeconds bounds spiffe_refresh_hint: anything larger
// overflows time.Duration arithmetic in go-spiffe (or is absurd anyway).
const maxRefreshHintSeconds = 1 << 31

// Options are the leniencies a caller may allow. The zero value is the
// strict parser used for everything a peer's endpoint serves.
type Options struct {
	// AllowPEM also takes PEM CERTIFICATE blocks instead of a SPIFFE bundle
	// document: the form an operator may give a bootstrap bundle in. The
	// certificates get the same trust-domain and size checks.
	AllowPEM bool
	// MaxBytes caps the input (<= 0: MaxSize).
	MaxBytes int
}

// docMembers are the members of a bundle document Parse checks beyond what
// spiffebundle.Parse does.
type docMembers struct {
	Sequence    *json.Number `json:"spiffe_sequence"`
	RefreshHint *json.Number `json:"spiffe_refresh_hint"`
	// Neither member is in the SPIFFE bundle format, which conveys the
	// trust domain out of band; some tools add one. When present it must
	// name the trust domain the document is parsed for.
	TrustDomain       *string `json:"trust_domain"`
	SPIFFETrustDomain *string `json:"spiffe_trust_domain"`
}

// Parse parses and validates a bundle of trust domain td. Beyond
// spiffebundle.Parse (JSON Web Key Set with a "keys" member, one
// certificate per x509-svid key) it refuses, as an *Error:
//   - ReasonTooLarge: input over opts.MaxBytes; X.509 authorities whose PEM
//     is over MaxRootsPEM;
//   - ReasonParse: not a JSON object (nor PEM certificates, with
//     AllowPEM); spiffe_sequence not an integer in [0, 2^63) (the store's
//     range); spiffe_refresh_hint not an integer in [0, 2^31) seconds
//     (go-spiffe would overflow time.Duration);
//   - ReasonEmpty: no x509-svid key (meshroot federates X.509 trust; a
//     JWT-only bundle is of no use to a mesh, and accepting {"keys":[]}
//     would wipe the peer's trust);
//   - ReasonWrongTrustDomain: a top-level "trust_domain" or
//     "spiffe_trust_domain" member that names another trust domain, or an
//     X.509 authority whose certificate carries a spiffe:// URI SAN outside
//     td (SPIRE's CA certificates carry spiffe://<td>). spiffebundle.Parse
//     itself cannot tell: the document does not name its trust domain, and
//     Parse just labels the result with td. An authority with no SPIFFE
//     URI SAN (an upstream or meshroot root) says nothing either way.
//
// A missing spiffe_sequence is not an error here: what a bundle without
// one may replace is the holder's decision (see package federation).
func Parse(td spiffeid.TrustDomain, data []byte, opts Options) (*spiffebundle.Bundle, error) {
	if td.IsZero() {
		return nil, Errorf(ReasonConfig, "no trust domain to parse the bundle for")
	}
	maxBytes := opts.MaxBytes
	if maxBytes <= 0 {
		maxBytes = MaxSize
	}
	if len(data) > maxBytes {
		return nil, Errorf(ReasonTooLarge, "bundle of %s is %d bytes: at most %d", td, len(data), maxBytes)
	}
	trimmed := bytes.TrimSpace(data)
	var b *spiffebundle.Bundle
	var err error
	switch {
	case opts.AllowPEM && bytes.HasPrefix(trimmed, []byte("-----BEGIN")):
		b, err = parsePEM(td, trimmed)
	case len(trimmed) == 0 || trimmed[0] != '{':
		want := "a JSON object (SPIFFE bundle document)"
		if opts.AllowPEM {
			want += " or PEM certificates"
		}
		return nil, Errorf(ReasonParse, "bundle of %s is not %s", td, want)
	default:
		b, err = parseDocument(td, trimmed)
	}
	if err != nil {
		return nil, err
	}
	if err := checkAuthorities(td, b.X509Authorities()); err != nil {
		return nil, err
	}
	return b, nil
}

// parsePEM reads PEM certificates as the X.509 authorities of td.
func parsePEM(td spiffeid.TrustDomain, data []byte) (*spiffebundle.Bundle, error) {
	xb, err := x509bundle.Parse(td, data)
	if err != nil {
		return nil, Errorf(ReasonParse, "bundle of %s: not PEM certificates: %v", td, err)
	}
	return spiffebundle.FromX509Authorities(td, xb.X509Authorities()), nil
}

// parseDocument reads a SPIFFE bundle document and checks the members
// spiffebundle.Parse leaves alone.
func parseDocument(td spiffeid.TrustDomain, doc []byte) (*spiffebundle.Bundle, error) {
	var m docMembers
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		return nil, Errorf(ReasonParse, "bundle of %s is not a SPIFFE bundle document: %v", td, err)
	}
	if dec.More() {
		return nil, Errorf(ReasonParse, "bundle of %s has data after the JSON object", td)
	}
	for _, name := range []*string{m.TrustDomain, m.SPIFFETrustDomain} {
		if name != nil && *name != td.Name() && *name != td.IDString() {
			return nil, Errorf(ReasonWrongTrustDomain, "bundle for %s names trust domain %.100q", td, *name)
		}
	}
	if m.Sequence != nil {
		if _, err := parseBounded(*m.Sequence, math.MaxInt64); err != nil {
			return nil, Errorf(ReasonParse, "bundle of %s: spiffe_sequence %.40s: %v", td, m.Sequence.String(), err)
		}
	}
	if m.RefreshHint != nil {
		if _, err := parseBounded(*m.RefreshHint, maxRefreshHintSeconds-1); err != nil {
			return nil, Errorf(ReasonParse, "bundle of %s: spiffe_refresh_hint %.40s: %v", td, m.RefreshHint.String(), err)
		}
	}
	b, err := spiffebundle.Parse(td, doc)
	if err != nil {
		return nil, Errorf(ReasonParse, "bundle of %s is not a SPIFFE bundle document: %v", td, err)
	}
	return b, nil
}

// checkAuthorities refuses no authority, an authority of another trust
// domain, and more than the mesh may hold.
func checkAuthorities(td spiffeid.TrustDomain, auths []*x509.Certificate) error {
	if len(auths) == 0 {
		return Errorf(ReasonEmpty, "bundle of %s has no X.509 authorities (keys with use x509-svid): refusing to replace the held bundle with it", td)
	}
	for i, c := range auths {
		for _, u := range c.URIs {
			if u.Scheme != "spiffe" {
				continue
			}
			id, err := spiffeid.FromURI(u)
			if err != nil {
				return Errorf(ReasonWrongTrustDomain, "bundle of %s: X.509 authority %d (%q) has an invalid SPIFFE ID %.200q", td, i, c.Subject, u.String())
			}
			if id.TrustDomain() != td {
				return Errorf(ReasonWrongTrustDomain, "bundle for %s holds an X.509 authority of trust domain %s (%q)", td, id.TrustDomain(), c.Subject)
			}
		}
	}
	if n := PEMSize(auths); n > MaxRootsPEM {
		return Errorf(ReasonTooLarge, "bundle of %s: its %d X.509 authorities take %d bytes as PEM, over the %d a mesh may hold for one trust domain", td, len(auths), n, MaxRootsPEM)
	}
	return nil
}

// PEMSize is the length of certs PEM-encoded, as the agents write them.
func PEMSize(certs []*x509.Certificate) int {
	n := 0
	for _, c := range certs {
		n += len(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
	}
	return n
}

// parseBounded parses n as an integer in [0, max].
func parseBounded(n json.Number, max uint64) (uint64, error) {
	var v uint64
	if err := json.Unmarshal([]byte(n), &v); err != nil {
		return 0, errors.New("not a non-negative integer")
	}
	if v > max {
		return 0, fmt.Errorf("above %d", max)
	}
	return v, nil
}
