// Package vaultpki is the upstream authority that lives in HashiCorp
// Vault's PKI secrets engine: Vault holds the signing CA (a root, or an
// intermediate under one) and signs meshroot's cluster intermediates with
// root/sign-intermediate, or issuer/REF/sign-intermediate on a mount with
// several issuers.
//
// meshroot does not take Vault's word for the result: every certificate is
// checked before it is returned (CA:true, path length 0, keyCertSign, the
// CSR's public key, the cluster's common name, the lifetime asked for, a
// signature by the configured issuer, and a chain that Go's verifier
// accepts up to a self-signed root).
//
// smallstep's cas/vaultcas does not fit here: it signs through
// pki/sign/<role>, which issues leaf certificates under a role's
// constraints and cannot make the CA:true, pathlen-0 certificates meshroot
// hands to each cluster.
package vaultpki

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/meshroot/meshroot/internal/vaultclient"
	"github.com/meshroot/meshroot/internal/vaultconf"
)

// DefaultMount is where the PKI engine is mounted by default.
const DefaultMount = "pki"

const component = "vault-pki upstream"

// notBeforeBackdate is how far Vault backdates NotBefore (as the ca
// package does for its own intermediates).
const notBeforeBackdate = 5 * time.Minute

// lifetimeSlack tolerates clock differences between meshroot and Vault
// when checking NotAfter.
const lifetimeSlack = 2 * time.Minute

// maxChainLen bounds the chain read from Vault.
const maxChainLen = 10

// Options configure the Vault PKI upstream.
type Options struct {
	// Vault says where Vault is and how to log in.
	Vault vaultclient.Config
	// Mount is the PKI mount (default "pki").
	Mount string
	// Issuer names the issuer (name or id) on a mount with several; empty
	// uses the mount's default issuer.
	Issuer string
}

// Upstream signs cluster intermediates with a CA held in Vault PKI.
type Upstream struct {
	c      *vaultclient.Client
	mount  string
	issuer string // "" for the default issuer
	now    func() time.Time

	mu    sync.Mutex
	chain []*x509.Certificate // issuer first, root last
}

var (
	issuerPattern  = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)
	clusterPattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
)

// New connects to Vault, logs in, and reads the issuer's chain, so that a
// wrong mount, issuer or permission shows at once.
func New(ctx context.Context, opts Options) (*Upstream, error) {
	mount, err := vaultconf.SecretsMount(component, opts.Mount, DefaultMount)
	if err != nil {
		return nil, err
	}
	if opts.Issuer != "" && !issuerPattern.MatchString(opts.Issuer) {
		return nil, fmt.Errorf("%s: issuer reference %q is invalid: give the issuer's name or id", component, opts.Issuer)
	}
	c, err := vaultclient.New(ctx, component, opts.Vault)
	if err != nil {
		return nil, err
	}
	u := &Upstream{c: c, mount: mount, issuer: opts.Issuer, now: time.Now}
	if _, err := u.Chain(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return u, nil
}

// Close stops token renewal.
func (u *Upstream) Close() error {
	u.c.Close()
	return nil
}

// issuerRef is the issuer as Vault's paths name it.
func (u *Upstream) issuerRef() string {
	if u.issuer == "" {
		return "default"
	}
	return u.issuer
}

// describe names the issuer for messages.
func (u *Upstream) describe() string {
	if u.issuer == "" {
		return "the default issuer of " + u.mount
	}
	return "issuer " + u.issuer + " of " + u.mount
}

// Chain reads the issuer's certificate chain from Vault: the issuer first,
// then each CA above it, ending with a self-signed root. It checks that
// each certificate signs the one before and that the issuer may sign CA
// certificates.
func (u *Upstream) Chain(ctx context.Context) ([]*x509.Certificate, error) {
	path := u.mount + "/issuer/" + u.issuerRef() + "/json"
	what := "read the chain of " + u.describe()
	s, err := u.c.Read(ctx, what, path)
	if err != nil {
		if strings.Contains(err.Error(), "unable to find PKI issuer") {
			return nil, fmt.Errorf("%s: %s: Vault %s: there is no issuer %q in %s: check the name (vault list %s/issuers)", component, what, path, u.issuerRef(), u.mount, u.mount)
		}
		return nil, err
	}
	if s == nil && u.issuer == "" {
		// Vault before 1.11 has no issuers: read the mount's CA chain.
		path = u.mount + "/cert/ca_chain"
		if s, err = u.c.Read(ctx, what, path); err != nil {
			return nil, err
		}
	}
	if s == nil {
		return nil, fmt.Errorf("%s: %s: Vault %s: no such issuer: check the mount (%s, a PKI engine?) and the issuer (vault list %s/issuers)", component, what, path, u.mount, u.mount)
	}
	var pemData []byte
	for _, key := range []string{"certificate", "ca_chain"} {
		switch v := s.Data[key].(type) {
		case string:
			pemData = append(pemData, v+"\n"...)
		case []any:
			for _, p := range v {
				if ps, ok := p.(string); ok {
					pemData = append(pemData, ps+"\n"...)
				}
			}
		}
	}
	certs, err := parseCerts(pemData)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: Vault %s: %v: is a CA configured in %s?", component, what, path, err, u.mount)
	}
	chain, err := orderChain(certs)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %v", component, what, err)
	}
	iss := chain[0]
	switch {
	case !iss.IsCA || !iss.BasicConstraintsValid:
		return nil, fmt.Errorf("%s: %s is %q, which is not a CA certificate", component, u.describe(), iss.Subject)
	case iss.KeyUsage != 0 && iss.KeyUsage&x509.KeyUsageCertSign == 0:
		return nil, fmt.Errorf("%s: %s (%q) lacks the keyCertSign key usage", component, u.describe(), iss.Subject)
	case iss.MaxPathLen == 0 && iss.MaxPathLenZero:
		return nil, fmt.Errorf("%s: %s (%q) has path length 0: it cannot sign cluster intermediates, which are CAs; use its parent", component, u.describe(), iss.Subject)
	}
	u.mu.Lock()
	u.chain = chain
	u.mu.Unlock()
	return append([]*x509.Certificate(nil), chain...), nil
}

// cachedChain returns the chain read last, reading it if there is none.
func (u *Upstream) cachedChain(ctx context.Context) ([]*x509.Certificate, error) {
	u.mu.Lock()
	chain := u.chain
	u.mu.Unlock()
	if chain != nil {
		return chain, nil
	}
	return u.Chain(ctx)
}

// SignIntermediate has Vault sign csr as cluster's intermediate CA, valid
// for ttl (or until the issuer expires, if sooner), and checks the result.
// It returns the intermediate first, then the issuer's chain, root last.
// The CSR is the cluster's: only its key is used (use_csr_values=false),
// so no extension a cluster asks for reaches its certificate.
func (u *Upstream) SignIntermediate(ctx context.Context, csr *x509.CertificateRequest, cluster string, ttl time.Duration) ([]*x509.Certificate, error) {
	if !clusterPattern.MatchString(cluster) {
		return nil, fmt.Errorf("%s: cluster name %q is invalid: use 1-63 lower-case letters, digits and '-', starting and ending with a letter or digit", component, cluster)
	}
	params := map[string]any{"common_name": cluster, "use_csr_values": false, "exclude_cn_from_sans": true}
	return u.sign(ctx, "sign the intermediate of cluster "+cluster, csr, ttl, params, func(inter *x509.Certificate) error {
		if inter.Subject.CommonName != cluster {
			return fmt.Errorf("its common name is %q, not the cluster %q", inter.Subject.CommonName, cluster)
		}
		if !extKeyUsageOK(inter.ExtKeyUsage) {
			return fmt.Errorf("its extended key usages %v would keep workloads' server and client certificates from verifying", inter.ExtKeyUsage)
		}
		return nil
	})
}

// SignServerCA has Vault sign meshroot's own server CA from csr, which
// meshroot made: use_csr_values=true copies its subject and the extensions
// it requests (the server CA's marker subject, extended key usage and name
// constraints). The caller checks that they arrived.
func (u *Upstream) SignServerCA(ctx context.Context, csr *x509.CertificateRequest, ttl time.Duration) ([]*x509.Certificate, error) {
	params := map[string]any{"use_csr_values": true, "exclude_cn_from_sans": true}
	if csr != nil {
		params["common_name"] = csr.Subject.CommonName
	}
	return u.sign(ctx, "sign meshroot's server CA", csr, ttl, params, func(inter *x509.Certificate) error {
		if len(inter.ExtKeyUsage) == 0 || len(inter.Subject.OrganizationalUnit) == 0 {
			return errors.New("it lacks the subject or extended key usage the request asked for: this Vault does not copy a CSR's subject and extensions with use_csr_values")
		}
		return nil
	})
}

// sign has Vault's sign-intermediate sign csr as a pathlen-0 CA with
// params added, and checks the result (check, then extra).
func (u *Upstream) sign(ctx context.Context, what string, csr *x509.CertificateRequest, ttl time.Duration, params map[string]any, extra func(*x509.Certificate) error) ([]*x509.Certificate, error) {
	switch {
	case csr == nil:
		return nil, fmt.Errorf("%s: no CSR given", component)
	case ttl <= 0:
		return nil, fmt.Errorf("%s: TTL %s must be positive", component, ttl)
	}
	// Vault's sign-intermediate does not check the CSR's signature (tested:
	// it signs a CSR with a broken one), so proof of possession is checked
	// here, whoever the caller is.
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%s: CSR signature is invalid: %v", component, err)
	}
	path := u.mount + "/root/sign-intermediate"
	if u.issuer != "" {
		path = u.mount + "/issuer/" + u.issuer + "/sign-intermediate"
	}
	chain, err := u.cachedChain(ctx)
	if err != nil {
		return nil, err
	}
	start := u.now()
	// Vault refuses a NotBefore before its issuer's: backdate less for a
	// young issuer.
	backdate := min(notBeforeBackdate, start.Sub(chain[0].NotBefore)-time.Second).Truncate(time.Second)
	// Vault refuses a NotAfter beyond its issuer's: cap the lifetime, as
	// the ca package does.
	if left := chain[0].NotAfter.Sub(start).Truncate(time.Second); left < ttl {
		if left <= 0 {
			return nil, fmt.Errorf("%s: %s (%q) expired at %s: renew or replace it in Vault", component, u.describe(), chain[0].Subject, chain[0].NotAfter.UTC().Format(time.RFC3339))
		}
		ttl = left
	}
	body := map[string]any{
		"csr":                 string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr.Raw})),
		"ttl":                 strconv.FormatInt(int64(ttl/time.Second), 10) + "s",
		"max_path_length":     0,
		"format":              "pem_bundle",
		"not_before_duration": strconv.FormatInt(int64(max(backdate, 0)/time.Second), 10) + "s",
	}
	for k, v := range params {
		body[k] = v
	}
	s, err := u.c.Write(ctx, what, path, body)
	if err != nil {
		return nil, err
	}
	if s == nil {
		return nil, fmt.Errorf("%s: %s: Vault %s returned nothing", component, what, path)
	}
	certPEM, _ := s.Data["certificate"].(string)
	certs, err := parseCerts([]byte(certPEM))
	if err != nil {
		return nil, fmt.Errorf("%s: %s: Vault %s: %v", component, what, path, err)
	}
	inter := certs[0]
	if !bytes.Equal(inter.RawIssuer, chain[0].RawSubject) || !bytes.Equal(inter.AuthorityKeyId, chain[0].SubjectKeyId) {
		// The mount's default issuer may have changed: read it again. (A
		// name and key id comparison: check verifies the signature.)
		if chain, err = u.Chain(ctx); err != nil {
			return nil, err
		}
	}
	if err := u.check(inter, chain, csr, start, ttl, extra); err != nil {
		return nil, fmt.Errorf("%s: %s: Vault %s returned a certificate meshroot refuses: %v", component, what, path, err)
	}
	return append([]*x509.Certificate{inter}, chain...), nil
}

// check verifies that inter is the CA meshroot asked for: the profile
// every CA meshroot gets from Vault shares, then extra.
func (u *Upstream) check(inter *x509.Certificate, chain []*x509.Certificate, csr *x509.CertificateRequest, start time.Time, ttl time.Duration, extra func(*x509.Certificate) error) error {
	pub, ok := inter.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	switch {
	case !inter.BasicConstraintsValid || !inter.IsCA:
		return errors.New("it is not a CA certificate (basicConstraints CA:true missing)")
	case inter.MaxPathLen != 0 || !inter.MaxPathLenZero:
		return fmt.Errorf("its path length is %s, not 0: set max_path_length=0 (a cluster intermediate must not issue CAs)", pathLen(inter))
	case inter.KeyUsage&x509.KeyUsageCertSign == 0:
		return errors.New("it lacks the keyCertSign key usage")
	case !ok || !pub.Equal(csr.PublicKey):
		return errors.New("its public key is not the CSR's")
	}
	if err := extra(inter); err != nil {
		return err
	}
	// One chain verification checks the signature by the issuer and the
	// issuer's own chain to the root.
	roots := x509.NewCertPool()
	roots.AddCert(chain[len(chain)-1])
	mids := x509.NewCertPool()
	for _, c := range chain[:len(chain)-1] {
		mids.AddCert(c)
	}
	now := u.now()
	if _, err := inter.Verify(x509.VerifyOptions{Roots: roots, Intermediates: mids, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fmt.Errorf("it does not verify under %s (%q) and its chain: %v", u.describe(), chain[0].Subject, err)
	}
	want := start.Add(ttl)
	if na := chain[0].NotAfter; na.Before(want) {
		want = na
	}
	if inter.NotAfter.Before(want.Add(-lifetimeSlack)) {
		return fmt.Errorf("Vault shortened its lifetime to %s (NotAfter %s, asked for %s): raise the mount's max lease TTL (vault secrets tune -max-lease-ttl=%s %s) or ask for less",
			inter.NotAfter.Sub(start).Round(time.Second), inter.NotAfter.UTC().Format(time.RFC3339), ttl, ttl, u.mount)
	}
	if inter.NotAfter.After(want.Add(lifetimeSlack)) {
		return fmt.Errorf("its NotAfter %s is later than asked for (%s)", inter.NotAfter.UTC().Format(time.RFC3339), want.UTC().Format(time.RFC3339))
	}
	return nil
}

func pathLen(c *x509.Certificate) string {
	if c.MaxPathLen < 0 || (c.MaxPathLen == 0 && !c.MaxPathLenZero) {
		return "unlimited"
	}
	return strconv.Itoa(c.MaxPathLen)
}

// extKeyUsageOK accepts no EKU (any use) or one that allows both TLS
// server and client authentication.
func extKeyUsageOK(ekus []x509.ExtKeyUsage) bool {
	if len(ekus) == 0 {
		return true
	}
	var server, client bool
	for _, e := range ekus {
		switch e {
		case x509.ExtKeyUsageAny:
			return true
		case x509.ExtKeyUsageServerAuth:
			server = true
		case x509.ExtKeyUsageClientAuth:
			client = true
		}
	}
	return server && client
}

// parseCerts parses PEM certificates, dropping duplicates.
func parseCerts(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("a certificate cannot be parsed: %v", err)
		}
		dup := false
		for _, o := range certs {
			dup = dup || bytes.Equal(o.Raw, c.Raw)
		}
		if !dup {
			certs = append(certs, c)
		}
		if len(certs) > maxChainLen {
			return nil, fmt.Errorf("more than %d certificates", maxChainLen)
		}
	}
	if len(certs) == 0 {
		return nil, errors.New("no certificate in the answer")
	}
	return certs, nil
}

// orderChain starts at certs[0] and follows issuers through certs up to a
// self-signed root.
func orderChain(certs []*x509.Certificate) ([]*x509.Certificate, error) {
	chain := []*x509.Certificate{certs[0]}
	for {
		cur := chain[len(chain)-1]
		if bytes.Equal(cur.RawIssuer, cur.RawSubject) && cur.CheckSignatureFrom(cur) == nil {
			return chain, nil
		}
		var parent *x509.Certificate
		for _, c := range certs {
			if c != cur && bytes.Equal(c.RawSubject, cur.RawIssuer) && cur.CheckSignatureFrom(c) == nil {
				parent = c
				break
			}
		}
		if parent == nil {
			return nil, fmt.Errorf("the chain ends at %q, which is not a self-signed root: import the root into the mount (issuers/import/cert) so the whole chain can be handed out", cur.Subject)
		}
		for _, c := range chain {
			if c == parent {
				return nil, fmt.Errorf("the chain loops at %q", parent.Subject)
			}
		}
		chain = append(chain, parent)
	}
}
