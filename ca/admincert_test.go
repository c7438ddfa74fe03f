package ca_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/meshroot/meshroot/ca"
)

func adminCSR(t *testing.T) []byte {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// Concurrent first uses make one admin CA, audited once; it is a
// client-auth CA of its own, not a root of the trust domain.
func TestAdminCAMadeOnce(t *testing.T) {
	svc, st := newService(t)
	ctx := ca.WithActor(t.Context(), actor)
	var wg sync.WaitGroup
	got := make([]*x509.Certificate, 4)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := svc.AdminCA(ctx)
			if err != nil {
				t.Error(err)
			}
			got[i] = c
		}()
	}
	wg.Wait()
	for _, c := range got[1:] {
		if c == nil || got[0] == nil || !c.Equal(got[0]) {
			t.Fatalf("concurrent AdminCA calls returned different CAs")
		}
	}
	if !got[0].IsCA || got[0].Subject.CommonName != ca.AdminCAMarker || got[0].ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
		t.Errorf("admin CA %v: want a client-auth CA named %q", got[0].Subject, ca.AdminCAMarker)
	}
	entries, _ := st.ListAudit(t.Context(), 0, 0)
	n := 0
	for _, e := range entries {
		if e.Action == "admin_ca.init" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("admin_ca.init audited %d times, want once", n)
	}
}

func TestIssueAdminCertBounds(t *testing.T) {
	svc, _ := newService(t)
	ctx := ca.WithActor(t.Context(), actor)
	var pe *ca.PolicyError
	for name, req := range map[string]ca.AdminCertRequest{
		"too long":     {Name: "a", Role: ca.RoleViewer, TTL: 25 * time.Hour, CSR: adminCSR(t)},
		"unknown role": {Name: "a", Role: "root", CSR: adminCSR(t)},
		"bad name":     {Name: "a b/c", Role: ca.RoleViewer, CSR: adminCSR(t)},
		"bad CSR":      {Name: "a", Role: ca.RoleViewer, CSR: []byte("nope")},
	} {
		if _, err := svc.IssueAdminCert(ctx, req); !errors.As(err, &pe) {
			t.Errorf("%s: %v; want a PolicyError", name, err)
		}
	}
	v, err := svc.IssueAdminCert(ctx, ca.AdminCertRequest{Name: "alice@example.org", Role: ca.RoleOperator, TTL: 24 * time.Hour, CSR: adminCSR(t)})
	if err != nil {
		t.Fatal(err)
	}
	leaf := v.Chain[0]
	if leaf.Subject.CommonName != "alice@example.org" || leaf.Subject.OrganizationalUnit[0] != "operator" || leaf.IsCA {
		t.Errorf("admin certificate subject %v", leaf.Subject)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool(v.Chain[1]), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("the admin certificate does not verify under the admin CA for client auth: %v", err)
	}
	if rec, err := svc.CheckAdminCert(ctx, leaf); err != nil || rec.Role != "operator" {
		t.Errorf("CheckAdminCert = %+v, %v", rec, err)
	}
	if _, err := svc.RevokeAdminCert(ctx, v.Record.Serial); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.CheckAdminCert(ctx, leaf); !errors.Is(err, ca.ErrAdminCertRefused) {
		t.Errorf("CheckAdminCert after revocation: %v; want ErrAdminCertRefused", err)
	}
	if _, err := svc.RevokeAdminCert(ctx, v.Record.Serial); !errors.As(err, &pe) {
		t.Errorf("second revocation: %v; want a PolicyError", err)
	}
	if !ca.RoleOperator.Allows(ca.RoleViewer) || ca.RoleViewer.Allows(ca.RoleOperator) || ca.AdminRole("x").Allows(ca.RoleViewer) {
		t.Error("AdminRole.Allows ranks wrongly")
	}
}

func pool(c *x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c)
	return p
}
