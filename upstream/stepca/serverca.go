package stepca

import (
	"bytes"
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"time"

	"github.com/smallstep/certificates/cas/stepcas"

	"github.com/meshroot/meshroot/ca"
)

// DefaultServerSuffix names the server provisioner when Options leave it
// empty: the intermediate provisioner's name with this suffix
// ("meshroot" -> "meshroot-server").
const DefaultServerSuffix = "-server"

// ServerTemplate is the X.509 template of the server provisioner
// (docs/keys.md shows the same): a CA with path length 0 whose subject and
// extensions (extended key usage serverAuth, name constraints to
// meshroot's own names) are copied from the request meshroot makes
// (ca.NewServerCACSR). Give it only to a provisioner meshroot alone holds
// the key of: whoever holds it can have step-ca sign any CA subject.
const ServerTemplate = `{
	"subject": {{ toJson .Insecure.CR.Subject }},
	"extensions": {{ toJson .Insecure.CR.Extensions }},
	"keyUsage": ["certSign", "crlSign"],
	"basicConstraints": {"isCA": true, "maxPathLen": 0}
}`

var (
	oidExtKeyUsage     = asn1.ObjectIdentifier{2, 5, 29, 37}
	oidNameConstraints = asn1.ObjectIdentifier{2, 5, 29, 30}
)

// SignServerCA has step-ca sign meshroot's own server CA from csr (made by
// ca.NewServerCACSR) with the server provisioner (Options.ServerProvisioner),
// whose template copies the request's subject and extensions into a
// pathlen-0 CA. The answer is refused unless it is a server CA
// (ca.IsServerCA) carrying the request's subject, extended key usage and
// name constraints, for the lifetime asked, chaining to the configured
// root. It returns the server CA first, root last.
func (u *Upstream) SignServerCA(ctx context.Context, csr *x509.CertificateRequest, ttl time.Duration) ([]*x509.Certificate, error) {
	switch {
	case csr == nil:
		return nil, fmt.Errorf("%s: no CSR given", component)
	case ttl <= 0:
		return nil, fmt.Errorf("%s: TTL %s must be positive", component, ttl)
	}
	cas, err := u.serverClient(ctx)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{}
	tmpl.Subject.CommonName = csr.Subject.CommonName
	what := "sign meshroot's server CA with provisioner " + u.opts.ServerProvisioner
	cert, chain, err := u.create(ctx, cas, what, tmpl, csr, ttl, func(c *x509.Certificate) error {
		return checkServerCA(c, csr)
	})
	if err != nil {
		return nil, err
	}
	return append([]*x509.Certificate{cert}, chain...), nil
}

// serverClient opens the server provisioner's CAS client once.
func (u *Upstream) serverClient(ctx context.Context) (*stepcas.StepCAS, error) {
	u.mu.Lock()
	cas := u.serverCAS
	u.mu.Unlock()
	if cas != nil {
		return cas, nil
	}
	if u.opts.ServerKeyFile == "" && u.opts.Password == "" {
		return nil, fmt.Errorf("%s: server provisioner %s: give its key file, or the password of the encrypted key step-ca holds for it (docs/keys.md)", component, u.opts.ServerProvisioner)
	}
	cas, err := u.open(ctx, u.opts.ServerProvisioner, u.opts.ServerKeyFile)
	if err != nil {
		return nil, fmt.Errorf("%v (meshroot's server CA needs a JWK provisioner %q with the server CA template: docs/keys.md)", err, u.opts.ServerProvisioner)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.serverCAS == nil {
		u.serverCAS = cas
	}
	return u.serverCAS, nil
}

// checkServerCA checks what the server provisioner's template decides: a
// server CA (path length 0, the marker OU, serverAuth alone) with the
// request's subject, extended key usage and name constraints, no SANs.
func checkServerCA(c *x509.Certificate, csr *x509.CertificateRequest) error {
	switch {
	case !ca.IsServerCA(c):
		return fmt.Errorf("it is not a meshroot server CA (CA with path length 0, OU %q, extended key usage serverAuth alone): give the server provisioner the server CA template (docs/keys.md)", ca.ServerCAMarker)
	case !bytes.Equal(c.RawSubject, csr.RawSubject):
		return fmt.Errorf("its subject %q is not the request's %q: the server provisioner's template must copy the request's subject", c.Subject, csr.Subject)
	case len(c.DNSNames)+len(c.IPAddresses)+len(c.EmailAddresses)+len(c.URIs) != 0:
		return errors.New("it carries subject alternative names: the server provisioner's template must not add SANs")
	case c.KeyUsage&x509.KeyUsageCertSign == 0:
		return errors.New("it lacks the keyCertSign key usage: use the server CA template (docs/keys.md)")
	}
	for _, id := range []asn1.ObjectIdentifier{oidExtKeyUsage, oidNameConstraints} {
		want, wok := extension(csr.Extensions, id)
		got, gok := extension(c.Extensions, id)
		if wok != gok || !bytes.Equal(want.Value, got.Value) || want.Critical != got.Critical {
			return fmt.Errorf("its extension %v differs from the request's: the server provisioner's template must copy the request's extensions", id)
		}
	}
	return nil
}

// extension finds the extension id in exts.
func extension(exts []pkix.Extension, id asn1.ObjectIdentifier) (pkix.Extension, bool) {
	for _, e := range exts {
		if e.Id.Equal(id) {
			return e, true
		}
	}
	return pkix.Extension{}, false
}
