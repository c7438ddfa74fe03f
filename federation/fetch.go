package federation

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/meshroot/meshroot/federation/bundle"
)

// DefaultMaxBundleBytes caps a fetched bundle document (1 MiB, the same cap
// bundle.Parse puts on every bundle).
const DefaultMaxBundleBytes int64 = bundle.MaxSize

// FetchTimeout bounds one whole fetch: connect, TLS handshake, request and
// reading the body.
const FetchTimeout = 10 * time.Second

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
// verification failure comes back as a *bundle.Error with bundle.ReasonTLS.
func (a FetchAuth) tlsConfig() (*tls.Config, error) {
	if !a.spiffe {
		return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: a.roots}, nil
	}
	if a.bundle == nil {
		return nil, bundle.Errorf(bundle.ReasonNoBundle, "no bundle to authenticate the endpoint")
	}
	if a.endpointID.IsZero() {
		return nil, bundle.Errorf(bundle.ReasonConfig, "https_spiffe needs the endpoint's SPIFFE ID")
	}
	cfg := tlsconfig.TLSClientConfig(a.bundle, tlsconfig.AuthorizeID(a.endpointID))
	verify := cfg.VerifyPeerCertificate
	cfg.VerifyPeerCertificate = func(raw [][]byte, chains [][]*x509.Certificate) error {
		if err := verify(raw, chains); err != nil {
			return bundle.Errorf(bundle.ReasonTLS, "endpoint SVID refused (want %s): %w", a.endpointID, err)
		}
		return nil
	}
	return cfg, nil
}

// FetchBundle fetches the SPIFFE bundle of td from the bundle endpoint at
// url (https only) and returns it with the document's bytes. The whole
// fetch is bounded by FetchTimeout (or ctx's earlier deadline); the status
// must be 200 (redirects are refused); the body is read up to maxBytes
// (<= 0: DefaultMaxBundleBytes) and checked with bundle.Parse (strict:
// a SPIFFE bundle document, no PEM). Every error is a *bundle.Error (see
// bundle.ReasonOf); a canceled ctx gives bundle.ReasonCanceled.
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
		return nil, nil, bundle.Errorf(bundle.ReasonConfig, "bundle endpoint URL %q: %v", url, err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", userAgent(ctx))
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
		return nil, nil, bundle.NewError(bundle.ReasonHTTPStatus, errors.New(msg))
	}
	if resp.ContentLength > maxBytes {
		return nil, nil, bundle.Errorf(bundle.ReasonTooLarge, "bundle over %s (Content-Length %d)", sizeString(maxBytes), resp.ContentLength)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBytes+1))
	if err != nil {
		return nil, nil, classify(ctx, "read bundle from "+url, err)
	}
	if int64(len(body)) > maxBytes {
		return nil, nil, bundle.Errorf(bundle.ReasonTooLarge, "bundle over %s", sizeString(maxBytes))
	}
	b, err := bundle.Parse(td, body, bundle.Options{MaxBytes: int(maxBytes)})
	if err != nil {
		return nil, nil, err
	}
	return b, body, nil
}

// checkEndpointURL refuses anything but an absolute https URL with a host.
func checkEndpointURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return bundle.Errorf(bundle.ReasonConfig, "bundle endpoint URL %q: %v", raw, err)
	}
	if u.Scheme != "https" || u.Host == "" {
		return bundle.Errorf(bundle.ReasonConfig, "bundle endpoint URL %q: want https://host[:port]/path", raw)
	}
	return nil
}

// classify turns a transport error into a *bundle.Error.
func classify(ctx context.Context, what string, err error) error {
	var fe *bundle.Error
	switch {
	case errors.As(err, &fe):
		return bundle.NewError(fe.Reason, fmt.Errorf("%s: %w", what, fe.Err))
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return bundle.Errorf(bundle.ReasonTimeout, "%s: no complete answer within the deadline (%s at most): %v", what, FetchTimeout, err)
	case errors.Is(ctx.Err(), context.Canceled):
		return bundle.Errorf(bundle.ReasonCanceled, "%s: %w", what, ctx.Err())
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
		return bundle.Errorf(bundle.ReasonTLS, "%s: %w", what, err)
	case errors.As(err, &netErr) && netErr.Timeout():
		return bundle.Errorf(bundle.ReasonTimeout, "%s: %w", what, err)
	}
	return bundle.Errorf(bundle.ReasonNetwork, "%s: %w", what, err)
}

func sizeString(n int64) string {
	if n >= 1<<20 && n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}
