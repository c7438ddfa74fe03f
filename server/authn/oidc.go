package authn

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/meshroot/meshroot/store"
)

const (
	// maxOIDCResponse bounds a discovery document or JWKS response body.
	maxOIDCResponse = 1 << 20
	// minRefetchInterval is the least time between two fetches of a
	// cluster's keys when a token names an unknown key, or after a failed
	// fetch, so that tokens cannot make meshroot hammer an issuer.
	minRefetchInterval = 10 * time.Second
	maxRedirects       = 3
)

// oidcKeys caches the keys of one cluster's issuer, found through OIDC
// discovery.
type oidcKeys struct {
	// fingerprint identifies the registration (issuer, CA bundle) the
	// entry was made for; a changed registration gets a new entry.
	fingerprint [sha256.Size]byte
	client      *http.Client

	// mu guards the fields below. It is never held during a fetch.
	mu          sync.Mutex
	keys        *keySet
	fetchedAt   time.Time // when keys were fetched
	lastAttempt time.Time // when a fetch was last started
	lastErr     error     // the last fetch's error, nil after a success
	// fetching is the fetch in flight (nil when none): concurrent requests
	// wait for it instead of each making their own.
	fetching *oidcFetch
}

// oidcFetch is one fetch of an issuer's keys. Its outcome is set before
// done is closed.
type oidcFetch struct {
	done chan struct{}
	keys *keySet
	err  error
}

func oidcFingerprint(auth store.ClusterAuth) [sha256.Size]byte {
	h := sha256.New()
	fmt.Fprintf(h, "%d:%s:", len(auth.Issuer), auth.Issuer)
	h.Write(auth.CAPEM)
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}

// oidcEntry returns the cache entry for cluster c's current registration.
func (a *Authenticator) oidcEntry(c store.Cluster) (*oidcKeys, error) {
	fp := oidcFingerprint(c.Auth)
	a.mu.Lock()
	defer a.mu.Unlock()
	if e := a.oidc[c.Name]; e != nil && e.fingerprint == fp {
		return e, nil
	}
	client, err := a.oidcClient(c.Auth.CAPEM)
	if err != nil {
		return nil, fmt.Errorf("cluster %s: OIDC discovery: %w", c.Name, err)
	}
	if old := a.oidc[c.Name]; old != nil {
		old.client.CloseIdleConnections()
	}
	e := &oidcKeys{fingerprint: fp, client: client}
	a.oidc[c.Name] = e
	return e, nil
}

// oidcClient returns an HTTPS-only client that trusts caPEM (the system
// roots when empty).
func (a *Authenticator) oidcClient(caPEM []byte) (*http.Client, error) {
	var pool *x509.CertPool
	if len(caPEM) > 0 {
		pool = x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return nil, errors.New("the registered CA bundle holds no PEM certificate")
		}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &http.Client{
		Transport: tr,
		Timeout:   a.httpTimeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) > maxRedirects {
				return fmt.Errorf("more than %d redirects", maxRedirects)
			}
			if req.URL.Scheme != "https" {
				return fmt.Errorf("redirect to %s is not HTTPS", req.URL.Redacted())
			}
			return nil
		},
	}, nil
}

// oidcKeySet returns cluster c's keys from its issuer's OIDC discovery,
// fetching them when there are none, when they are older than the cache
// TTL, or when refresh is set (a token named an unknown key) and the last
// attempt is at least minRefetchInterval old. Fetch failures are not
// refusals: they are returned as plain errors.
//
// The fetch is detached from the request that started it: it runs with its
// own timeout (HTTPClientTimeout per request), not under the caller's
// context, so a caller that gives up (or comes with a 1 ms deadline) stops
// waiting but cannot fail the fetch for the requests after it. Only the
// issuer's own failures are remembered for minRefetchInterval.
func (a *Authenticator) oidcKeySet(ctx context.Context, c store.Cluster, refresh bool) (*keySet, error) {
	e, err := a.oidcEntry(c)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	now := a.now()
	fresh := e.keys != nil && now.Sub(e.fetchedAt) < a.jwksTTL
	recent := !e.lastAttempt.IsZero() && now.Sub(e.lastAttempt) < minRefetchInterval
	switch {
	case fresh && (!refresh || recent):
		keys := e.keys
		e.mu.Unlock()
		return keys, nil
	case !fresh && recent && e.lastErr != nil && e.fetching == nil:
		err := e.lastErr
		e.mu.Unlock()
		return nil, err
	}
	f := e.fetching
	if f == nil {
		f = &oidcFetch{done: make(chan struct{})}
		e.fetching, e.lastAttempt = f, now
		// WithoutCancel keeps the request's values (none are used today)
		// but not its deadline or cancellation.
		go a.fetchOIDC(context.WithoutCancel(ctx), e, f, c.Name, c.Auth.Issuer, now)
	}
	e.mu.Unlock()
	select {
	case <-f.done:
		return f.keys, f.err
	case <-ctx.Done():
		return nil, fmt.Errorf("cluster %s: waiting for the service-account token keys: %w (the fetch continues for later requests)", c.Name, ctx.Err())
	}
}

// fetchOIDC runs fetch f for entry e and records its outcome. A failure is
// remembered (and served for minRefetchInterval) only when it is the
// issuer's: should a context error reach here anyway, it is not kept and
// the next request fetches again.
func (a *Authenticator) fetchOIDC(ctx context.Context, e *oidcKeys, f *oidcFetch, cluster, issuer string, started time.Time) {
	ctx, cancel := context.WithTimeout(ctx, 2*a.httpTimeout+time.Second) // discovery + JWKS
	defer cancel()
	keys, err := fetchOIDCKeys(ctx, e.client, issuer)
	e.mu.Lock()
	defer e.mu.Unlock()
	defer close(f.done)
	e.fetching = nil
	if err != nil {
		f.err = fmt.Errorf("cluster %s: fetch service-account token keys: %w", cluster, err)
		if errors.Is(err, context.Canceled) {
			e.lastAttempt = time.Time{}
			return
		}
		e.lastErr = f.err
		return
	}
	f.keys = &keySet{keys: keys}
	e.keys, e.fetchedAt, e.lastErr = f.keys, started, nil
}

// fetchOIDCKeys fetches issuer's discovery document, checks that it is
// the issuer's, and fetches the JWKS it points to.
func fetchOIDCKeys(ctx context.Context, client *http.Client, issuer string) ([]jose.JSONWebKey, error) {
	if err := requireHTTPS("issuer", issuer); err != nil {
		return nil, err
	}
	discovery := strings.TrimSuffix(issuer, "/") + "/.well-known/openid-configuration"
	body, err := get(ctx, client, discovery)
	if err != nil {
		return nil, err
	}
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("discovery document %s is not JSON: %v", discovery, err)
	}
	if doc.Issuer != issuer {
		return nil, fmt.Errorf("discovery document %s names issuer %q, not the registered %q", discovery, quoteSafe(doc.Issuer), issuer)
	}
	if doc.JWKSURI == "" {
		return nil, fmt.Errorf("discovery document %s has no jwks_uri", discovery)
	}
	if err := requireHTTPS("discovery document "+discovery+" jwks_uri", doc.JWKSURI); err != nil {
		return nil, err
	}
	body, err = get(ctx, client, doc.JWKSURI)
	if err != nil {
		return nil, err
	}
	keys, err := parseJWKS(body)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", doc.JWKSURI, err)
	}
	return keys, nil
}

func requireHTTPS(what, raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%s %q is not a URL: %v", what, quoteSafe(raw), err)
	}
	if u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("%s %q is not an https:// URL", what, u.Redacted())
	}
	return nil
}

// get fetches target and returns its body, refusing anything but 200 and a
// body larger than maxOIDCResponse.
func get(ctx context.Context, client *http.Client, target string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return nil, err
	}
	// kube-apiserver answers 406 to its JWKS path when only
	// application/json is accepted: it serves application/jwk-set+json.
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", target, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxOIDCResponse+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %v", target, err)
	}
	if len(body) > maxOIDCResponse {
		return nil, fmt.Errorf("GET %s: response is larger than %d bytes (1 MiB)", target, maxOIDCResponse)
	}
	return body, nil
}
