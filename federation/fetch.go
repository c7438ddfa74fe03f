package federation

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/meshroot/meshroot/ca"
)

// DefaultMaxBundleBytes caps a fetched bundle document (1 MiB, the same cap
// ca.ParseBundleDocument puts on a bootstrap bundle).
const DefaultMaxBundleBytes int64 = ca.MaxBundleSize

// FetchTimeout bounds one whole fetch: connect, TLS handshake, request and
// reading the body.
const FetchTimeout = 10 * time.Second

// Reasons classify why a fetch or a fetched bundle was refused. They are the
// values of the result label of meshroot_federation_fetch_total and the
// prefix of FederationStatus.LastError.
const (
	ReasonTLS              = "tls"                // handshake failed: unknown CA, expired or wrong SVID, ...
	ReasonHTTPStatus       = "http_status"        // the endpoint answered something other than 200 (redirects are not followed)
	ReasonTooLarge         = "too_large"          // the body is over the size cap
	ReasonParse            = "parse"              // not a valid SPIFFE bundle document
	ReasonEmpty            = "empty"              // no X.509 authority in the document
	ReasonWrongTrustDomain = "wrong_trust_domain" // the document names another trust domain
	ReasonLowerSequence    = "lower_sequence"     // spiffe_sequence is lower than the one held
	ReasonTimeout          = "timeout"            // the fetch took longer than its deadline
	ReasonNetwork          = "network"            // connection refused, reset, DNS failure, ...
	ReasonNoBundle         = "no_bundle"          // https_spiffe peer without a bundle to authenticate it
	ReasonConfig           = "config"             // the peer's URL, profile or endpoint SPIFFE ID is unusable
	ReasonStore            = "store"              // the bundle could not be read from or written to the store
	ReasonCanceled         = "canceled"           // the caller gave up (shutdown)
)

// FetchError is a refused fetch or bundle, with its reason class.
type FetchError struct {
	Reason string // one of the Reason constants
	Err    error
}

func (e *FetchError) Error() string { return e.Err.Error() }
func (e *FetchError) Unwrap() error { return e.Err }

func fetchErr(reason string, err error) error { return &FetchError{Reason: reason, Err: err} }

func fetchErrf(reason, format string, args ...any) error {
	return &FetchError{Reason: reason, Err: fmt.Errorf(format, args...)}
}

// ErrorReason returns the reason class of err: the Reason of the first
// *FetchError in its chain, "" for nil, and "error" for anything else.
func ErrorReason(err error) string {
	if err == nil {
		return ""
	}
	var fe *FetchError
	if errors.As(err, &fe) {
		return fe.Reason
	}
	return "error"
}

// FetchAuth says how a bundle endpoint is authenticated: Web PKI (the zero
// value, with the system roots) or SPIFFE. Build it with WebPKIAuth or
// SPIFFEAuth.
type FetchAuth struct {
	roots      *x509.CertPool
	bundle     x509bundle.Source
	endpointID spiffeid.ID
	spiffe     bool
}

// WebPKIAuth authenticates the endpoint (profile https_web) with a
// certificate for its host name or IP that chains to roots (nil: the
// system roots).
func WebPKIAuth(roots *x509.CertPool) FetchAuth { return FetchAuth{roots: roots} }

// SPIFFEAuth authenticates the endpoint (profile https_spiffe) with an
// X.509-SVID that verifies against bundle and names exactly endpointID.
func SPIFFEAuth(bundle x509bundle.Source, endpointID spiffeid.ID) FetchAuth {
	return FetchAuth{bundle: bundle, endpointID: endpointID, spiffe: true}
}

// tlsConfig returns the client TLS configuration of a. Every certificate
// verification failure comes back as a *FetchError with ReasonTLS.
func (a FetchAuth) tlsConfig() (*tls.Config, error) {
	if !a.spiffe {
		return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: a.roots}, nil
	}
	if a.bundle == nil {
		return nil, fetchErrf(ReasonNoBundle, "no bundle to authenticate the endpoint")
	}
	if a.endpointID.IsZero() {
		return nil, fetchErrf(ReasonConfig, "https_spiffe needs the endpoint's SPIFFE ID")
	}
	cfg := tlsconfig.TLSClientConfig(a.bundle, tlsconfig.AuthorizeID(a.endpointID))
	verify := cfg.VerifyPeerCertificate
	cfg.VerifyPeerCertificate = func(raw [][]byte, chains [][]*x509.Certificate) error {
		if err := verify(raw, chains); err != nil {
			return fetchErrf(ReasonTLS, "endpoint SVID refused (want %s): %w", a.endpointID, err)
		}
		return nil
	}
	return cfg, nil
}

// FetchBundle fetches the SPIFFE bundle of td from the bundle endpoint at
// url (https only) and returns it with the document's bytes. The whole
// fetch is bounded by FetchTimeout (or ctx's earlier deadline); the status
// must be 200 (redirects are refused); the body is read up to maxBytes
// (<= 0: DefaultMaxBundleBytes) and checked with ParseBundle. Every error
// is a *FetchError (see ErrorReason), except that a canceled ctx gives
// ReasonCanceled.
func FetchBundle(ctx context.Context, td spiffeid.TrustDomain, url string, auth FetchAuth, maxBytes int64) (*spiffebundle.Bundle, []byte, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBundleBytes
	}
	if err := checkEndpointURL(url); err != nil {
		return nil, nil, err
	}
	tlsCfg, err := auth.tlsConfig()
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, FetchTimeout)
	defer cancel()

	tr := &http.Transport{
		Proxy:                  http.ProxyFromEnvironment,
		DialContext:            (&net.Dialer{Timeout: FetchTimeout, KeepAlive: -1}).DialContext,
		TLSClientConfig:        tlsCfg,
		TLSHandshakeTimeout:    FetchTimeout,
		ResponseHeaderTimeout:  FetchTimeout,
		DisableKeepAlives:      true,
		MaxResponseHeaderBytes: 64 << 10,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, http.NoBody)
	if err != nil {
		return nil, nil, fetchErrf(ReasonConfig, "bundle endpoint URL %q: %v", url, err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "meshroot-federation")
	resp, err := client.Do(req)
	if err != nil {
		return nil, nil, classify(ctx, "GET "+url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg := fmt.Sprintf("GET %s: HTTP %s", url, resp.Status)
		if loc := resp.Header.Get("Location"); loc != "" && resp.StatusCode/100 == 3 {
			msg += fmt.Sprintf(" (redirect to %.200q not followed)", loc)
		}
		return nil, nil, fetchErr(ReasonHTTPStatus, errors.New(msg))
	}
	if resp.ContentLength > maxBytes {
		return nil, nil, fetchErrf(ReasonTooLarge, "bundle over %s (Content-Length %d)", sizeString(maxBytes), resp.ContentLength)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBytes+1))
	if err != nil {
		return nil, nil, classify(ctx, "read bundle from "+url, err)
	}
	if int64(len(body)) > maxBytes {
		return nil, nil, fetchErrf(ReasonTooLarge, "bundle over %s", sizeString(maxBytes))
	}
	b, err := ParseBundle(td, body)
	if err != nil {
		return nil, nil, err
	}
	return b, body, nil
}

// checkEndpointURL refuses anything but an absolute https URL with a host.
func checkEndpointURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fetchErrf(ReasonConfig, "bundle endpoint URL %q: %v", raw, err)
	}
	if u.Scheme != "https" || u.Host == "" {
		return fetchErrf(ReasonConfig, "bundle endpoint URL %q: want https://host[:port]/path", raw)
	}
	return nil
}

// classify turns a transport error into a *FetchError.
func classify(ctx context.Context, what string, err error) error {
	var fe *FetchError
	switch {
	case errors.As(err, &fe):
		return fetchErr(fe.Reason, fmt.Errorf("%s: %w", what, fe.Err))
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return fetchErrf(ReasonTimeout, "%s: no complete answer within the deadline (%s at most): %v", what, FetchTimeout, err)
	case errors.Is(ctx.Err(), context.Canceled):
		return fetchErrf(ReasonCanceled, "%s: %w", what, ctx.Err())
	}
	var (
		verr   *tls.CertificateVerificationError
		alert  tls.AlertError
		record tls.RecordHeaderError
		uae    x509.UnknownAuthorityError
		hne    x509.HostnameError
		cie    x509.CertificateInvalidError
		netErr net.Error
	)
	switch {
	case errors.As(err, &verr), errors.As(err, &alert), errors.As(err, &record),
		errors.As(err, &uae), errors.As(err, &hne), errors.As(err, &cie):
		return fetchErrf(ReasonTLS, "%s: %w", what, err)
	case errors.As(err, &netErr) && netErr.Timeout():
		return fetchErrf(ReasonTimeout, "%s: %w", what, err)
	}
	return fetchErrf(ReasonNetwork, "%s: %w", what, err)
}

func sizeString(n int64) string {
	if n >= 1<<20 && n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}

// maxRefreshHintSeconds bounds spiffe_refresh_hint: anything larger
// overflows time.Duration arithmetic in go-spiffe (or is absurd anyway).
const maxRefreshHintSeconds = 1 << 31

// docMembers are the members of a bundle document ParseBundle checks
// beyond what spiffebundle.Parse does.
type docMembers struct {
	Sequence    *json.Number `json:"spiffe_sequence"`
	RefreshHint *json.Number `json:"spiffe_refresh_hint"`
	// Neither member is in the SPIFFE bundle format, which conveys the
	// trust domain out of band; some tools add one. When present it must
	// name the trust domain the document was fetched for.
	TrustDomain       *string `json:"trust_domain"`
	SPIFFETrustDomain *string `json:"spiffe_trust_domain"`
}

// ParseBundle parses and validates a SPIFFE bundle document for td. Beyond
// spiffebundle.Parse (JSON Web Key Set with a "keys" member, one certificate
// per x509-svid key) it refuses, as a *FetchError:
//   - ReasonParse: not a JSON object; spiffe_sequence not an integer in
//     [0, 2^63) (the store's range); spiffe_refresh_hint not an integer in
//     [0, 2^31) seconds (go-spiffe would overflow time.Duration);
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
func ParseBundle(td spiffeid.TrustDomain, doc []byte) (*spiffebundle.Bundle, error) {
	if td.IsZero() {
		return nil, fetchErrf(ReasonConfig, "no trust domain to parse the bundle for")
	}
	trimmed := bytes.TrimSpace(doc)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, fetchErrf(ReasonParse, "bundle of %s is not a JSON object", td)
	}
	var m docMembers
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		return nil, fetchErrf(ReasonParse, "bundle of %s is not a SPIFFE bundle document: %v", td, err)
	}
	if dec.More() {
		return nil, fetchErrf(ReasonParse, "bundle of %s has data after the JSON object", td)
	}
	for _, name := range []*string{m.TrustDomain, m.SPIFFETrustDomain} {
		if name != nil && *name != td.Name() && *name != td.IDString() {
			return nil, fetchErrf(ReasonWrongTrustDomain, "bundle fetched for %s names trust domain %.100q", td, *name)
		}
	}
	if m.Sequence != nil {
		if _, err := parseBounded(*m.Sequence, math.MaxInt64); err != nil {
			return nil, fetchErrf(ReasonParse, "bundle of %s: spiffe_sequence %.40s: %v", td, m.Sequence.String(), err)
		}
	}
	if m.RefreshHint != nil {
		if _, err := parseBounded(*m.RefreshHint, maxRefreshHintSeconds-1); err != nil {
			return nil, fetchErrf(ReasonParse, "bundle of %s: spiffe_refresh_hint %.40s: %v", td, m.RefreshHint.String(), err)
		}
	}
	b, err := spiffebundle.Parse(td, trimmed)
	if err != nil {
		return nil, fetchErrf(ReasonParse, "bundle of %s is not a SPIFFE bundle document: %v", td, err)
	}
	auths := b.X509Authorities()
	if len(auths) == 0 {
		return nil, fetchErrf(ReasonEmpty, "bundle of %s has no X.509 authorities (keys with use x509-svid): refusing to replace the held bundle with it", td)
	}
	for i, c := range auths {
		for _, u := range c.URIs {
			if u.Scheme != "spiffe" {
				continue
			}
			id, err := spiffeid.FromURI(u)
			if err != nil {
				return nil, fetchErrf(ReasonWrongTrustDomain, "bundle of %s: X.509 authority %d (%q) has an invalid SPIFFE ID %.200q", td, i, c.Subject, u.String())
			}
			if id.TrustDomain() != td {
				return nil, fetchErrf(ReasonWrongTrustDomain, "bundle fetched for %s holds an X.509 authority of trust domain %s (%q)", td, id.TrustDomain(), c.Subject)
			}
		}
	}
	return b, nil
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
