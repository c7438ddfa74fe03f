package ca

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"go.step.sm/crypto/keyutil"
	"go.step.sm/crypto/pemutil"
)

// Format is a layout of the cacerts files that istiod reads.
type Format string

// The cacerts layouts istiod understands.
const (
	// FormatIstio is ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem.
	FormatIstio Format = "istio"
	// FormatTLS is the kubernetes.io/tls layout: tls.crt (the intermediate
	// and any CAs between it and the root), tls.key, ca.crt (the roots).
	// istiod prefers it when tls.crt is present.
	FormatTLS Format = "tls"
)

// ParseFormat parses "istio" or "tls"; "" yields FormatIstio.
func ParseFormat(s string) (Format, error) {
	switch Format(s) {
	case "", FormatIstio:
		return FormatIstio, nil
	case FormatTLS:
		return FormatTLS, nil
	}
	return "", fmt.Errorf("unknown cacerts format %q: use istio or tls", s)
}

// The cacerts file names.
const (
	CACertFile    = "ca-cert.pem"
	CAKeyFile     = "ca-key.pem"
	CertChainFile = "cert-chain.pem"
	RootCertFile  = "root-cert.pem"
	TLSCertFile   = "tls.crt"
	TLSKeyFile    = "tls.key"
	TLSCAFile     = "ca.crt"
)

// SecretFiles lists the files of a format that hold private keys and must
// be written with mode 0600.
func (f Format) SecretFiles() []string {
	if f == FormatTLS {
		return []string{TLSKeyFile}
	}
	return []string{CAKeyFile}
}

// CACerts is what istiod needs to sign workload certificates: the cluster
// intermediate, its key, the chain up to the root, and every trusted root.
type CACerts struct {
	// Cert is the cluster intermediate.
	Cert *x509.Certificate
	// Key is the intermediate's private key.
	Key crypto.Signer
	// Chain is the intermediate, then every CA above it, root last.
	Chain []*x509.Certificate
	// Roots is every root the mesh trusts (old and new during rotation).
	Roots []*x509.Certificate
	// KeyPEM, when not nil, is Key as an earlier Files wrote it (a PKCS#8
	// PEM block): Files writes it as is instead of encoding Key again,
	// which costs a scalar multiplication per write. Set it only from the
	// key file of a Files of the same Key.
	KeyPEM []byte
}

// Verify runs the checks istiod skips, so that a broken cacerts never
// leaves meshroot: the chain verifies to the roots at now, the key matches,
// the intermediate is a CA with keyCertSign and path length 0, the chain
// starts with the intermediate and ends with one of the roots, each link is
// signed by the next, and every root is a self-signed CA.
func (c *CACerts) Verify(now time.Time) error {
	if c.Key == nil {
		return errors.New("cacerts: intermediate key missing")
	}
	if c.Cert == nil {
		return errors.New("cacerts: intermediate certificate missing")
	}
	if err := keyutil.VerifyPair(c.Cert.PublicKey, c.Key); err != nil {
		return errors.New("cacerts: ca-key.pem does not match ca-cert.pem")
	}
	return c.VerifyCerts(now)
}

// VerifyCerts runs every check of Verify except the key match, for
// certificates whose key stays elsewhere (an intermediate issued from a CSR).
//
// A pass is remembered for the same certificates (by their bytes) for as
// long as all of them are valid (verifymemo.go): the next call with them
// returns at once.
func (c *CACerts) VerifyCerts(now time.Time) error {
	if c.Cert == nil {
		return errors.New("cacerts: intermediate certificate missing")
	}
	if len(c.Chain) == 0 || len(c.Roots) == 0 {
		return errors.New("cacerts: chain or roots missing")
	}
	k := certsKey(c)
	if verifiedCerts.passed(k, now) {
		return nil
	}
	if err := c.verifyCerts(now); err != nil {
		return err
	}
	verifiedCerts.remember(k, c, now)
	return nil
}

// verifyCerts is VerifyCerts without the memo, for a set with an
// intermediate, a chain and roots.
func (c *CACerts) verifyCerts(now time.Time) error {
	if now.Before(c.Cert.NotBefore) || now.After(c.Cert.NotAfter) {
		return fmt.Errorf("cacerts: the intermediate is not valid now (valid %s to %s)", c.Cert.NotBefore.Format(time.RFC3339), c.Cert.NotAfter.Format(time.RFC3339))
	}
	if !c.Cert.IsCA || !c.Cert.BasicConstraintsValid {
		return errors.New("cacerts: the intermediate is not a CA (basicConstraints CA:true missing)")
	}
	if c.Cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return errors.New("cacerts: the intermediate lacks the keyCertSign key usage")
	}
	if c.Cert.MaxPathLen != 0 || !c.Cert.MaxPathLenZero {
		return errors.New("cacerts: the intermediate's path length is not 0")
	}
	if !bytes.Equal(c.Chain[0].Raw, c.Cert.Raw) {
		return errors.New("cacerts: cert-chain.pem does not start with the intermediate")
	}
	// A chain that verified to its own top, a root, verifies to any set of
	// roots holding that root (verifymemo.go): a change of the bundle's
	// other roots does not check its signatures again.
	ck := chainKey(c)
	anchored := verifiedChains.passed(ck, now)
	if !anchored {
		chainChecks.Add(1)
		for i := 0; i+1 < len(c.Chain); i++ {
			if err := c.Chain[i].CheckSignatureFrom(c.Chain[i+1]); err != nil {
				return fmt.Errorf("cacerts: cert-chain.pem entry %d (%q) is not signed by entry %d (%q)", i, c.Chain[i].Subject, i+1, c.Chain[i+1].Subject)
			}
		}
	}
	top := c.Chain[len(c.Chain)-1]
	inRoots := false
	for i, r := range c.Roots {
		if !r.IsCA || !rootSelfSigned(r, now) {
			return fmt.Errorf("cacerts: root-cert.pem entry %d (%q) is not a self-signed CA", i, r.Subject)
		}
		if now.Before(r.NotBefore) || now.After(r.NotAfter) {
			return fmt.Errorf("cacerts: root-cert.pem entry %d (%q) is not valid now (valid %s to %s)", i, r.Subject, r.NotBefore.Format(time.RFC3339), r.NotAfter.Format(time.RFC3339))
		}
		inRoots = inRoots || bytes.Equal(r.Raw, top.Raw)
	}
	if !inRoots {
		return fmt.Errorf("cacerts: cert-chain.pem ends at %q, which is not in root-cert.pem", top.Subject)
	}
	if anchored {
		return nil
	}
	if _, err := verifyChain(c.Chain, []*x509.Certificate{top}, now); err == nil {
		verifiedChains.remember(ck, &CACerts{Cert: c.Cert, Chain: c.Chain}, now)
		return nil
	}
	// Not to its top alone: a path through another of the roots.
	if _, err := verifyChain(c.Chain, c.Roots, now); err != nil {
		return fmt.Errorf("cacerts: the chain does not verify to root-cert.pem: %w", err)
	}
	return nil
}

// Files self-checks c at now and returns the file contents of format f,
// keyed by file name. Nothing is returned when a check fails. When c.Key is
// nil (the key stays with whoever made the CSR) the key file is left out.
func (c *CACerts) Files(f Format, now time.Time) (map[string][]byte, error) {
	var key []byte
	if c.Key != nil {
		if err := c.Verify(now); err != nil {
			return nil, err
		}
		if key = c.KeyPEM; key == nil {
			keyBlock, err := pemutil.Serialize(c.Key, pemutil.WithPKCS8(true))
			if err != nil {
				return nil, fmt.Errorf("cacerts: encode key: %w", err)
			}
			key = pem.EncodeToMemory(keyBlock)
		}
	} else if err := c.VerifyCerts(now); err != nil {
		return nil, err
	}
	roots := EncodeCerts(c.Roots)
	var files map[string][]byte
	var keyName string
	switch f {
	case FormatIstio, "":
		files = map[string][]byte{
			CACertFile:    EncodeCerts(c.Chain[:1]),
			CertChainFile: EncodeCerts(c.Chain),
			RootCertFile:  roots,
		}
		keyName = CAKeyFile
	case FormatTLS:
		// istiod builds the chain as tls.crt followed by ca.crt, so tls.crt
		// stops below the root.
		files = map[string][]byte{
			TLSCertFile: EncodeCerts(c.Chain[:max(1, len(c.Chain)-1)]),
			TLSCAFile:   roots,
		}
		keyName = TLSKeyFile
	default:
		return nil, fmt.Errorf("unknown cacerts format %q", f)
	}
	if key != nil {
		files[keyName] = key
	}
	return files, nil
}

// EncodeCerts encodes certificates as concatenated PEM blocks.
func EncodeCerts(certs []*x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.Bytes()
}

// ParseCerts parses one or more PEM CERTIFICATE blocks, refusing other
// block types and trailing garbage.
func ParseCerts(data []byte) ([]*x509.Certificate, error) {
	return ParseCertsWith(data, x509.ParseCertificate)
}

// ParseCertsWith is ParseCerts with each certificate's DER handed to
// parse: x509.ParseCertificate, or a cache of certificates parsed before
// that falls back to it.
func ParseCertsWith(data []byte, parse func(der []byte) (*x509.Certificate, error)) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %d is %q: want CERTIFICATE", len(certs)+1, block.Type)
		}
		c, err := parse(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PEM block %d: %v", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("trailing data after the last PEM certificate")
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return certs, nil
}
