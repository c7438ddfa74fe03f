package ca

import (
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"time"

	"github.com/meshroot/meshroot/keys"
	"github.com/meshroot/meshroot/store"
)

// AdminRole is what an admin client certificate lets its holder do on the
// remote admin listener: a viewer reads, an operator does everything.
// (The admin unix socket is not governed by roles: its file mode decides.)
type AdminRole string

// The admin roles, weakest first.
const (
	RoleViewer   AdminRole = "viewer"
	RoleOperator AdminRole = "operator"
)

// ParseAdminRole reads "viewer" or "operator".
func ParseAdminRole(s string) (AdminRole, error) {
	switch r := AdminRole(s); r {
	case RoleViewer, RoleOperator:
		return r, nil
	}
	return "", refusef("admin role %q: use viewer or operator", s)
}

// Allows reports whether r is at least min (operator allows everything a
// viewer may do). An unknown role allows nothing.
func (r AdminRole) Allows(min AdminRole) bool {
	rank := map[AdminRole]int{RoleViewer: 1, RoleOperator: 2}
	return rank[r] > 0 && rank[min] > 0 && rank[r] >= rank[min]
}

// Admin client certificates: their default and longest lifetime, and the
// admin CA's.
const (
	AdminCertDefaultTTL = 8 * time.Hour
	AdminCertMaxTTL     = 24 * time.Hour
	AdminCATTL          = 10 * 365 * 24 * time.Hour
)

// AdminCAMarker is the subject OU and common name of the admin CA, and
// AdminCertOrganization the organization of the certificates it issues;
// their OU is the role and their common name the holder's name.
const (
	AdminCAMarker         = "meshroot admin CA"
	AdminCertOrganization = "meshroot admin"
)

// Meta keys of the admin CA: its key reference in the key manager and its
// self-signed certificate (PEM).
const (
	metaAdminCAKey  = "admin_ca.key_ref"
	metaAdminCACert = "admin_ca.cert"
)

var adminNamePattern = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._@-]{0,63}$`)

// AdminCertRequest asks for an admin client certificate for the key of
// CSR (PEM or DER; only its public key is used).
type AdminCertRequest struct {
	Name string
	Role AdminRole
	TTL  time.Duration // 0: AdminCertDefaultTTL
	CSR  []byte
}

// AdminCertIssued is an admin client certificate just issued: its record
// and its chain (the certificate, then the admin CA).
type AdminCertIssued struct {
	Record store.AdminCert
	Chain  []*x509.Certificate
}

// AdminCertAdmin issues, lists and revokes admin client certificates.
type AdminCertAdmin interface {
	IssueAdminCert(ctx context.Context, req AdminCertRequest) (AdminCertIssued, error)
	ListAdminCerts(ctx context.Context) ([]store.AdminCert, error)
	RevokeAdminCert(ctx context.Context, serial string) (store.AdminCert, error)
}

// AdminCA returns the admin CA's certificate, making the admin CA (a key
// in the key manager, like a root's, and a self-signed certificate) on
// first use. It is separate from the trust domain's roots: nothing a root
// or a cluster intermediate signs is an admin certificate.
func (s *Service) AdminCA(ctx context.Context) (*x509.Certificate, error) {
	cert, _, err := s.adminCA(ctx, false)
	return cert, err
}

// adminCA loads the admin CA (with its signer when withKey), creating it
// when there is none. Of two concurrent creators the first to commit wins;
// the other's key stays unused in the key manager.
func (s *Service) adminCA(ctx context.Context, withKey bool) (*x509.Certificate, crypto.Signer, error) {
	cert, ref, err := s.storedAdminCA(ctx, s.store.Reader)
	if err != nil {
		return nil, nil, err
	}
	if cert == nil {
		if cert, ref, err = s.createAdminCA(ctx); err != nil {
			return nil, nil, err
		}
	}
	if !withKey {
		return cert, nil, nil
	}
	signer, err := s.keys.Signer(ctx, ref)
	if err != nil {
		return nil, nil, fmt.Errorf("load the admin CA key %s: %w", ref, err)
	}
	return cert, signer, nil
}

func (s *Service) storedAdminCA(ctx context.Context, r store.MetaReader) (*x509.Certificate, string, error) {
	pemData, err := r.Meta(ctx, metaAdminCACert)
	if err != nil || pemData == "" {
		return nil, "", err
	}
	ref, err := r.Meta(ctx, metaAdminCAKey)
	if err != nil {
		return nil, "", err
	}
	certs, err := ParseCerts([]byte(pemData))
	if err != nil || len(certs) != 1 {
		return nil, "", fmt.Errorf("the stored admin CA certificate is unreadable (%v): the store is damaged", err)
	}
	return certs[0], ref, nil
}

func (s *Service) createAdminCA(ctx context.Context) (*x509.Certificate, string, error) {
	actor := ActorFrom(ctx)
	if actor == "" {
		return nil, "", errNoActor
	}
	key, err := s.keys.CreateKey(ctx, newKeyName("admin-ca", s.now()), keys.DefaultKeyType)
	if err != nil {
		return nil, "", fmt.Errorf("create the admin CA key: %w", err)
	}
	signer, err := s.keys.Signer(ctx, key.Ref)
	if err != nil {
		return nil, "", fmt.Errorf("load the new admin CA key %s: %w", key.Ref, err)
	}
	now := s.now()
	serial, err := newSerial()
	if err != nil {
		return nil, "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{Organization: []string{"meshroot"}, OrganizationalUnit: []string{AdminCAMarker}, CommonName: AdminCAMarker},
		NotBefore:    now.Add(-time.Minute).UTC(), NotAfter: now.Add(AdminCATTL).UTC(),
		IsCA: true, BasicConstraintsValid: true, MaxPathLen: 0, MaxPathLenZero: true,
		KeyUsage:    x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if tmpl.SubjectKeyId, err = subjectKeyID(signer.Public()); err != nil {
		return nil, "", err
	}
	cert, err := createCertificate(tmpl, tmpl, signer.Public(), signer)
	if err != nil {
		return nil, "", fmt.Errorf("sign the admin CA: %w", err)
	}
	ref := key.Ref
	err = s.store.Update(ctx, func(tx store.Tx) error {
		// Re-check inside the transaction: another process may have made it.
		if other, otherRef, err := s.storedAdminCA(ctx, tx); err != nil || other != nil {
			cert, ref = other, otherRef
			return err
		}
		if err := tx.SetMeta(ctx, metaAdminCAKey, key.Ref); err != nil {
			return err
		}
		if err := tx.SetMeta(ctx, metaAdminCACert, string(EncodeCerts([]*x509.Certificate{cert}))); err != nil {
			return err
		}
		return s.audit(ctx, tx, actor, "admin_ca.init", SerialHex(cert.SerialNumber), "ok", map[string]any{"key_ref": key.Ref, "not_after": cert.NotAfter})
	})
	if err != nil {
		return nil, "", err
	}
	return cert, ref, nil
}

// IssueAdminCert issues a client certificate of the admin CA for the key of
// req.CSR: common name req.Name, OU the role, organization
// AdminCertOrganization, extended key usage clientAuth, valid for req.TTL
// (at most AdminCertMaxTTL); it records and audits it.
func (s *Service) IssueAdminCert(ctx context.Context, req AdminCertRequest) (AdminCertIssued, error) {
	actor := ActorFrom(ctx)
	if req.TTL == 0 {
		req.TTL = AdminCertDefaultTTL
	}
	var err error
	var csr *x509.CertificateRequest
	switch {
	case !adminNamePattern.MatchString(req.Name):
		err = refusef("admin certificate name %q: use 1 to 64 letters, digits, '.', '_', '@' or '-'", req.Name)
	case req.TTL < time.Minute || req.TTL > AdminCertMaxTTL:
		err = refusef("admin certificate lifetime %s: choose between 1m and %s", req.TTL, AdminCertMaxTTL)
	}
	if err == nil {
		_, err = ParseAdminRole(string(req.Role))
	}
	if err == nil {
		if csr, err = ParseCSR(req.CSR); err != nil {
			err = refuse(err)
		}
	}
	if err != nil {
		return AdminCertIssued{}, s.auditRefusal(ctx, actor, "admin_cert.issue", req.Name, err)
	}
	caCert, signer, err := s.adminCA(ctx, true)
	if err != nil {
		return AdminCertIssued{}, err
	}
	now := s.now()
	serial, err := newSerial()
	if err != nil {
		return AdminCertIssued{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{Organization: []string{AdminCertOrganization}, OrganizationalUnit: []string{string(req.Role)}, CommonName: req.Name},
		NotBefore:    now.Add(-time.Minute).UTC(), NotAfter: minTime(now.Add(req.TTL), caCert.NotAfter).UTC(),
		KeyUsage:       x509.KeyUsageDigitalSignature,
		ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		AuthorityKeyId: caCert.SubjectKeyId,
	}
	cert, err := createCertificate(tmpl, caCert, csr.PublicKey, signer)
	if err != nil {
		return AdminCertIssued{}, fmt.Errorf("sign the admin certificate: %w", err)
	}
	rec := store.AdminCert{Serial: SerialHex(serial), Name: req.Name, Role: string(req.Role), IssuedAt: now.UTC(), NotAfter: cert.NotAfter}
	err = s.store.Update(ctx, func(tx store.Tx) error {
		if err := tx.CreateAdminCert(ctx, rec); err != nil {
			return err
		}
		return s.audit(ctx, tx, actor, "admin_cert.issue", rec.Name, "ok", map[string]any{"serial": rec.Serial, "role": rec.Role, "not_after": rec.NotAfter})
	})
	if err != nil {
		return AdminCertIssued{}, err
	}
	return AdminCertIssued{Record: rec, Chain: []*x509.Certificate{cert, caCert}}, nil
}

// ListAdminCerts lists the admin client certificates issued.
func (s *Service) ListAdminCerts(ctx context.Context) ([]store.AdminCert, error) {
	return s.store.ListAdminCerts(ctx)
}

// RevokeAdminCert revokes the admin client certificate with serial (hex):
// the remote admin listener refuses it from the next call on.
func (s *Service) RevokeAdminCert(ctx context.Context, serial string) (store.AdminCert, error) {
	actor := ActorFrom(ctx)
	var rec store.AdminCert
	err := s.store.Update(ctx, func(tx store.Tx) error {
		if err := tx.RevokeAdminCert(ctx, serial, s.now().UTC()); err != nil {
			return err
		}
		var err error
		if rec, err = tx.GetAdminCert(ctx, serial); err != nil {
			return err
		}
		return s.audit(ctx, tx, actor, "admin_cert.revoke", rec.Name, "ok", map[string]any{"serial": serial, "role": rec.Role})
	})
	if err != nil {
		if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrConflict) {
			err = refuse(err)
		}
		return store.AdminCert{}, s.auditRefusal(ctx, actor, "admin_cert.revoke", serial, err)
	}
	return rec, nil
}

// ErrAdminCertRefused is returned (wrapped) by CheckAdminCert for a
// certificate that is unknown, revoked, expired or whose subject does not
// match its record.
var ErrAdminCertRefused = errors.New("admin certificate refused")

// CheckAdminCert decides whether leaf, which the TLS handshake verified
// against the admin CA, may still act: its record exists and is not
// revoked, it has not expired, and its name and role are those recorded.
// It returns the record (whose Role is authoritative).
func (s *Service) CheckAdminCert(ctx context.Context, leaf *x509.Certificate) (store.AdminCert, error) {
	serial := SerialHex(leaf.SerialNumber)
	rec, err := s.store.GetAdminCert(ctx, serial)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return store.AdminCert{}, fmt.Errorf("%w: serial %s was never issued here", ErrAdminCertRefused, serial)
	case err != nil:
		return store.AdminCert{}, err
	case !rec.RevokedAt.IsZero():
		return store.AdminCert{}, fmt.Errorf("%w: serial %s (%s) was revoked at %s; ask an operator for a new one", ErrAdminCertRefused, serial, rec.Name, rec.RevokedAt.Format(time.RFC3339))
	case !s.now().Before(rec.NotAfter) || !s.now().Before(leaf.NotAfter):
		return store.AdminCert{}, fmt.Errorf("%w: serial %s (%s) expired at %s; issue a new one", ErrAdminCertRefused, serial, rec.Name, rec.NotAfter.Format(time.RFC3339))
	case leaf.Subject.CommonName != rec.Name || !slices.Equal(leaf.Subject.OrganizationalUnit, []string{rec.Role}):
		return store.AdminCert{}, fmt.Errorf("%w: serial %s does not carry the name and role recorded for it", ErrAdminCertRefused, serial)
	}
	return rec, nil
}

// AdminCertActor is the audit actor of a call made with an admin client
// certificate: "admin-cert:NAME(ROLE)".
func AdminCertActor(rec store.AdminCert) Actor {
	return Actor(fmt.Sprintf("admin-cert:%s(%s)", rec.Name, rec.Role))
}
