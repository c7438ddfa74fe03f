// Package stepca is the upstream authority that lives in smallstep's
// step-ca: an organisation keeps its root (and an issuing intermediate
// under it) in step-ca, and meshroot obtains each cluster's pathlen-0
// intermediate from it through smallstep's own CAS interface
// (github.com/smallstep/certificates/cas/apiv1, implemented by cas/stepcas)
// with a JWK provisioner whose X.509 template makes CA certificates.
//
// meshroot does not take step-ca's word for the result: every certificate
// is checked before it is returned (the cluster's common name, the
// lifetime asked for, the trust-domain name constraint when asked for, a
// chain that Go's verifier accepts up to the configured root), and the ca
// package checks the intermediate profile (CA:true, path length 0,
// keyCertSign, the CSR's key) once more.
//
// Where the CAS interface does not fit, this package says so (docs/keys.md):
//   - its methods take no context and stepcas sets no timeout, so every
//     call runs under a deadline here and is abandoned when it passes;
//   - GetCertificateAuthority returns the root only: the issuing chain is
//     read from step-ca's /intermediates.pem, over TLS verified by that
//     root (itself checked against the configured fingerprint);
//   - CreateCertificate passes step-ca only a subject, SANs and NotAfter:
//     NotBefore, the CA profile and name constraints come from the
//     provisioner's template, so they are what meshroot verifies;
//   - the CSR is forwarded as it is, so step-ca's JWK provisioner wants its
//     common name to be empty or the cluster's name (meshroot's agent and
//     CLI write the cluster's name).
package stepca

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/smallstep/certificates/cas/apiv1"
	"github.com/smallstep/certificates/cas/stepcas"
)

const component = "step-ca upstream"

// DefaultTimeout bounds each request to step-ca when Options.Timeout is zero.
const DefaultTimeout = 30 * time.Second

// lifetimeSlack tolerates clock differences between meshroot and step-ca
// when checking NotAfter.
const lifetimeSlack = 2 * time.Minute

// maxChainBytes bounds what is read from /intermediates.pem.
const maxChainBytes = 1 << 20

// maxChainLen bounds the number of intermediates accepted.
const maxChainLen = 8

// Options configure the step-ca upstream.
type Options struct {
	// URL is step-ca's address, "https://HOST:PORT".
	URL string
	// Fingerprint is the SHA-256 of step-ca's root certificate in hex, as
	// `step certificate fingerprint root_ca.crt` prints it; it
	// authenticates step-ca.
	Fingerprint string
	// Provisioner is the name of the JWK provisioner whose template makes
	// cluster intermediates.
	Provisioner string
	// KeyFile is the provisioner's private key (PEM, encrypted with
	// Password or not). Empty fetches the provisioner's encrypted key from
	// step-ca and decrypts it with Password.
	KeyFile string
	// Password decrypts the provisioner key; required when KeyFile is empty.
	Password string
	// ServerProvisioner is the name of the JWK provisioner whose template
	// makes meshroot's server CA (ServerTemplate in docs/keys.md); empty
	// is Provisioner + DefaultServerSuffix. It is used, and its key loaded,
	// on the first SignServerCA.
	ServerProvisioner string
	// ServerKeyFile is the server provisioner's private key (PEM,
	// encrypted with Password or not). Empty fetches its encrypted key
	// from step-ca and decrypts it with Password.
	ServerKeyFile string
	// Timeout bounds each request to step-ca (DefaultTimeout).
	Timeout time.Duration
}

// Upstream signs cluster intermediates with step-ca.
type Upstream struct {
	cas     *stepcas.StepCAS
	url     *url.URL
	fp      string
	timeout time.Duration
	now     func() time.Time
	opts    Options

	mu        sync.Mutex
	chain     []*x509.Certificate // issuer first, root last
	serverCAS *stepcas.StepCAS    // opened on the first SignServerCA
}

var (
	fingerprintPattern = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)
	clusterPattern     = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	trustDomainPattern = regexp.MustCompile(`^[a-z0-9._-]{1,255}$`)
)

// New connects to step-ca, checks its root against the fingerprint, loads
// the provisioner key and reads the issuing chain, so that a wrong address,
// fingerprint, provisioner or key shows at once.
func New(ctx context.Context, opts Options) (*Upstream, error) {
	u, err := url.Parse(opts.URL)
	switch {
	case err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/"):
		return nil, fmt.Errorf("%s: address %q is invalid: want https://HOST:PORT", component, opts.URL)
	case !fingerprintPattern.MatchString(opts.Fingerprint):
		return nil, fmt.Errorf("%s: root fingerprint %q is invalid: want the SHA-256 of step-ca's root certificate in hex (step certificate fingerprint root_ca.crt)", component, opts.Fingerprint)
	case opts.Provisioner == "":
		return nil, fmt.Errorf("%s: no provisioner named: give the JWK provisioner whose template makes intermediates", component)
	case opts.KeyFile == "" && opts.Password == "":
		// stepcas would prompt on the terminal for the password.
		return nil, fmt.Errorf("%s: provisioner %s: give its key file, or the password of the encrypted key step-ca holds for it", component, opts.Provisioner)
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	if opts.ServerProvisioner == "" {
		opts.ServerProvisioner = opts.Provisioner + DefaultServerSuffix
	}
	up := &Upstream{url: u, fp: strings.ToLower(opts.Fingerprint), timeout: timeout, now: time.Now, opts: opts}
	cas, err := up.open(ctx, opts.Provisioner, opts.KeyFile)
	if err != nil {
		return nil, err
	}
	up.cas = cas
	if _, err := up.Chain(ctx); err != nil {
		return nil, err
	}
	return up, nil
}

// open connects a CAS client that signs with the JWK provisioner prov,
// its key from keyFile or, when that is empty, fetched from step-ca and
// decrypted with the password.
func (u *Upstream) open(ctx context.Context, prov, keyFile string) (*stepcas.StepCAS, error) {
	casOpts := apiv1.Options{
		Type:                            string(apiv1.StepCAS),
		CertificateAuthority:            "https://" + u.url.Host,
		CertificateAuthorityFingerprint: u.fp,
		CertificateIssuer: &apiv1.CertificateIssuer{
			Type: "jwk", Provisioner: prov, Key: keyFile, Password: u.opts.Password,
		},
	}
	return call(ctx, u, "connect and load provisioner "+prov, func() (*stepcas.StepCAS, error) {
		return stepcas.New(ctx, casOpts)
	})
}

// call runs f under the upstream's timeout and ctx: the CAS interface takes
// no context and its client sets no timeout, so a step-ca that accepts
// connections and never answers would otherwise hang the caller. f is
// abandoned (left to finish in the background) when the deadline passes.
//
// The error of an abandoned call wraps the context's (errors.Is
// context.DeadlineExceeded or context.Canceled), so that a caller across
// the plugin boundary still sees a deadline as a deadline; it says whether
// the upstream's timeout or the caller's context ended the wait.
func call[T any](parent context.Context, u *Upstream, what string, f func() (T, error)) (T, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(parent, u.timeout)
	defer cancel()
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := f()
		done <- result{v, err}
	}()
	var zero T
	select {
	case r := <-done:
		if r.err != nil {
			return zero, fmt.Errorf("%s: %s at %s: %v: is step-ca running and reachable, and the provisioner and key right?", component, what, u.url.Host, r.err)
		}
		return r.v, nil
	case <-ctx.Done():
		if err := parent.Err(); err != nil {
			return zero, fmt.Errorf("%s: %s at %s: the caller stopped waiting after %s: %w", component, what, u.url.Host, time.Since(start).Round(time.Millisecond), err)
		}
		return zero, fmt.Errorf("%s: %s at %s: no answer within %s (%w): is step-ca running and reachable?", component, what, u.url.Host, u.timeout, ctx.Err())
	}
}

// Chain reads step-ca's chain: its issuing intermediate first, then each
// CA above it, ending with the root whose fingerprint was configured.
func (u *Upstream) Chain(ctx context.Context) ([]*x509.Certificate, error) {
	resp, err := call(ctx, u, "read the root", func() (*apiv1.GetCertificateAuthorityResponse, error) {
		return u.cas.GetCertificateAuthority(&apiv1.GetCertificateAuthorityRequest{})
	})
	if err != nil {
		return nil, err
	}
	root := resp.RootCertificate
	if sum := sha256.Sum256(root.Raw); hex.EncodeToString(sum[:]) != u.fp {
		return nil, fmt.Errorf("%s: step-ca's root does not have the configured fingerprint %s", component, u.fp)
	}
	if !bytes.Equal(root.RawIssuer, root.RawSubject) || root.CheckSignatureFrom(root) != nil {
		return nil, fmt.Errorf("%s: the certificate with fingerprint %s is not a self-signed root", component, u.fp)
	}
	mids, err := u.intermediates(ctx, root)
	if err != nil {
		return nil, err
	}
	chain, err := chainTo(mids, root, u.now())
	if err != nil {
		return nil, fmt.Errorf("%s: %v", component, err)
	}
	iss := chain[0]
	switch {
	case !iss.IsCA || !iss.BasicConstraintsValid:
		return nil, fmt.Errorf("%s: step-ca's issuer %q is not a CA certificate", component, iss.Subject)
	case iss.KeyUsage != 0 && iss.KeyUsage&x509.KeyUsageCertSign == 0:
		return nil, fmt.Errorf("%s: step-ca's issuer %q lacks the keyCertSign key usage", component, iss.Subject)
	case iss.MaxPathLen == 0 && iss.MaxPathLenZero:
		return nil, fmt.Errorf("%s: step-ca's issuer %q has path length 0 (as `step ca init` makes it): it cannot sign cluster intermediates, which are CAs; give step-ca an intermediate with path length 1 (docs/keys.md)", component, iss.Subject)
	}
	u.mu.Lock()
	u.chain = chain
	u.mu.Unlock()
	return append([]*x509.Certificate(nil), chain...), nil
}

// intermediates reads /intermediates.pem over TLS verified by root. (The
// CAS interface has no call for the issuing chain.)
func (u *Upstream) intermediates(ctx context.Context, root *x509.Certificate) ([]*x509.Certificate, error) {
	pool := x509.NewCertPool()
	pool.AddCert(root)
	client := &http.Client{
		Timeout:   u.timeout,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}},
	}
	defer client.CloseIdleConnections()
	endpoint := "https://" + u.url.Host + "/intermediates.pem"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: read the issuing chain: %v: is step-ca running and reachable?", component, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxChainBytes+1))
	switch {
	case err != nil:
		return nil, fmt.Errorf("%s: read the issuing chain: %v", component, err)
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("%s: GET %s: %s (step-ca v0.26 or later serves it)", component, endpoint, resp.Status)
	case len(body) > maxChainBytes:
		return nil, fmt.Errorf("%s: GET %s: more than %d bytes", component, endpoint, maxChainBytes)
	}
	var certs []*x509.Certificate
	for rest := body; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: GET %s: a certificate cannot be parsed: %v", component, endpoint, err)
		}
		if certs = append(certs, c); len(certs) > maxChainLen {
			return nil, fmt.Errorf("%s: GET %s: more than %d certificates", component, endpoint, maxChainLen)
		}
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s: GET %s: no certificate", component, endpoint)
	}
	return certs, nil
}

// chainTo orders step-ca's intermediates into a chain from the first
// (the issuer) to root, using Go's verifier.
func chainTo(mids []*x509.Certificate, root *x509.Certificate, now time.Time) ([]*x509.Certificate, error) {
	if bytes.Equal(mids[0].Raw, root.Raw) {
		return []*x509.Certificate{root}, nil // step-ca signs with its root
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)
	pool := x509.NewCertPool()
	for _, c := range mids[1:] {
		pool.AddCert(c)
	}
	chains, err := mids[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		return nil, fmt.Errorf("step-ca's issuer %q does not verify under the root with the configured fingerprint: %v", mids[0].Subject, err)
	}
	return chains[0], nil
}

// SignIntermediate has step-ca sign csr as cluster's intermediate CA, valid
// for ttl (or until the issuer expires, if sooner), and checks the result.
// It returns the intermediate first, then the issuer's chain, root last.
func (u *Upstream) SignIntermediate(ctx context.Context, csr *x509.CertificateRequest, cluster string, ttl time.Duration) ([]*x509.Certificate, error) {
	return u.sign(ctx, csr, cluster, "", ttl)
}

// SignConstrainedIntermediate is SignIntermediate with the trust-domain
// name constraint: the trust domain goes to step-ca as the URI SAN
// spiffe://TRUST-DOMAIN, from which the provisioner's template writes the
// constraint (docs/keys.md), and the answer must carry it.
func (u *Upstream) SignConstrainedIntermediate(ctx context.Context, csr *x509.CertificateRequest, cluster, trustDomain string, ttl time.Duration) ([]*x509.Certificate, error) {
	if !trustDomainPattern.MatchString(trustDomain) {
		return nil, fmt.Errorf("%s: trust domain %q is invalid", component, trustDomain)
	}
	return u.sign(ctx, csr, cluster, trustDomain, ttl)
}

func (u *Upstream) sign(ctx context.Context, csr *x509.CertificateRequest, cluster, td string, ttl time.Duration) ([]*x509.Certificate, error) {
	switch {
	case !clusterPattern.MatchString(cluster):
		return nil, fmt.Errorf("%s: cluster name %q is invalid: use 1-63 lower-case letters, digits and '-', starting and ending with a letter or digit", component, cluster)
	case csr == nil:
		return nil, fmt.Errorf("%s: no CSR given", component)
	case ttl <= 0:
		return nil, fmt.Errorf("%s: TTL %s must be positive", component, ttl)
	case csr.Subject.CommonName != "" && csr.Subject.CommonName != cluster:
		return nil, fmt.Errorf("%s: the CSR's common name is %q: step-ca's JWK provisioner signs a CSR only with no common name or the cluster's (%q): make the CSR again", component, csr.Subject.CommonName, cluster)
	}
	tmpl := &x509.Certificate{}
	tmpl.Subject.CommonName = cluster
	if td != "" {
		tmpl.URIs = []*url.URL{{Scheme: "spiffe", Host: td}}
	}
	what := "sign the intermediate of cluster " + cluster
	inter, chain, err := u.create(ctx, u.cas, what, tmpl, csr, ttl, func(inter *x509.Certificate) error {
		return checkIntermediate(inter, cluster, td)
	})
	if err != nil {
		return nil, err
	}
	return append([]*x509.Certificate{inter}, chain...), nil
}

// checkIntermediate checks what the intermediate provisioner's template
// decides: CA with path length 0, the common name, no SANs, the name
// constraint. (The ca package checks the intermediate profile once more:
// keyCertSign, the CSR's key.)
func checkIntermediate(inter *x509.Certificate, cluster, td string) error {
	switch {
	case !inter.BasicConstraintsValid || !inter.IsCA:
		return errors.New("it is not a CA certificate (basicConstraints CA:true missing): give the provisioner the intermediate template (docs/keys.md)")
	case inter.MaxPathLen != 0 || !inter.MaxPathLenZero:
		return errors.New("its path length is not 0: set \"maxPathLen\": 0 in the provisioner's template")
	case inter.Subject.CommonName != cluster:
		return fmt.Errorf("its common name is %q, not the cluster %q", inter.Subject.CommonName, cluster)
	case len(inter.DNSNames)+len(inter.IPAddresses)+len(inter.EmailAddresses)+len(inter.URIs) != 0:
		return errors.New("it carries subject alternative names: the provisioner's template must not copy the request's SANs into an intermediate")
	}
	if td != "" {
		if !inter.PermittedDNSDomainsCritical || len(inter.PermittedURIDomains) != 1 || inter.PermittedURIDomains[0] != td ||
			len(inter.ExcludedURIDomains) != 1 || inter.ExcludedURIDomains[0] != "."+td {
			return fmt.Errorf("its name constraints (critical %t, permitted URI domains %v, excluded %v) are not the trust domain's (%s, excluding .%s): use the template in docs/keys.md",
				inter.PermittedDNSDomainsCritical, inter.PermittedURIDomains, inter.ExcludedURIDomains, td, td)
		}
	}
	return nil
}

// checkIssued checks what meshroot asked step-ca for and step-ca may
// change: the signature chain up to the configured root and the lifetime.
func (u *Upstream) checkIssued(inter *x509.Certificate, chain []*x509.Certificate, start time.Time, ttl time.Duration) error {
	roots := x509.NewCertPool()
	roots.AddCert(chain[len(chain)-1])
	mids := x509.NewCertPool()
	for _, c := range chain[:len(chain)-1] {
		mids.AddCert(c)
	}
	if _, err := inter.Verify(x509.VerifyOptions{Roots: roots, Intermediates: mids, CurrentTime: u.now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fmt.Errorf("it does not verify under step-ca's issuer %q and root: %v", chain[0].Subject, err)
	}
	want := start.Add(ttl)
	if inter.NotAfter.Before(want.Add(-lifetimeSlack)) {
		return fmt.Errorf("step-ca shortened its lifetime to %s (asked for %s): raise the provisioner's maxTLSCertDuration or ask for less",
			inter.NotAfter.Sub(start).Round(time.Second), ttl)
	}
	if inter.NotAfter.After(want.Add(lifetimeSlack)) {
		return fmt.Errorf("its NotAfter %s is later than asked for (%s)", inter.NotAfter.UTC().Format(time.RFC3339), want.UTC().Format(time.RFC3339))
	}
	return nil
}

// create has step-ca sign csr through cas with tmpl (its subject and SANs
// go into the one-time token), valid for ttl capped at the issuer's
// expiry, then checks the result with profile and checkIssued. It returns
// the certificate and the issuer's chain, root last.
func (u *Upstream) create(ctx context.Context, cas *stepcas.StepCAS, what string, tmpl *x509.Certificate, csr *x509.CertificateRequest, ttl time.Duration, profile func(*x509.Certificate) error) (*x509.Certificate, []*x509.Certificate, error) {
	if err := csr.CheckSignature(); err != nil {
		return nil, nil, fmt.Errorf("%s: CSR signature is invalid: %v", component, err)
	}
	u.mu.Lock()
	chain := u.chain
	u.mu.Unlock()
	start := u.now()
	if left := chain[0].NotAfter.Sub(start).Truncate(time.Second); left < ttl {
		if left <= 0 {
			return nil, nil, fmt.Errorf("%s: step-ca's issuer %q expired at %s: renew it in step-ca", component, chain[0].Subject, chain[0].NotAfter.UTC().Format(time.RFC3339))
		}
		ttl = left
	}
	resp, err := call(ctx, u, what, func() (*apiv1.CreateCertificateResponse, error) {
		return cas.CreateCertificate(&apiv1.CreateCertificateRequest{Template: tmpl, CSR: csr, Lifetime: ttl})
	})
	if err != nil {
		return nil, nil, err
	}
	cert := resp.Certificate
	if cert == nil {
		return nil, nil, fmt.Errorf("%s: %s: step-ca returned no certificate", component, what)
	}
	if len(resp.CertificateChain) == 0 || !bytes.Equal(resp.CertificateChain[0].Raw, chain[0].Raw) {
		// step-ca's issuer may have changed: read the chain again.
		if chain, err = u.Chain(ctx); err != nil {
			return nil, nil, err
		}
	}
	err = profile(cert)
	if err == nil {
		err = u.checkIssued(cert, chain, start, ttl)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %s: step-ca returned a certificate meshroot refuses: %v", component, what, err)
	}
	return cert, chain, nil
}
