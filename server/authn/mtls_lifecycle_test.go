package authn

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/keys"
	"github.com/meshroot/meshroot/keys/disk"
	"github.com/meshroot/meshroot/store"
)

// issueFor has svc issue an intermediate for a fresh key of cluster.
func issueFor(t *testing.T, svc *ca.Service, cluster string) ca.Issued {
	t.Helper()
	k, err := keys.ECP256.Generate()
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(nil, &x509.CertificateRequest{}, k)
	if err != nil {
		t.Fatal(err)
	}
	issued, err := svc.IssueIntermediate(ca.WithActor(context.Background(), "test"), ca.IssueRequest{Cluster: cluster, CSRData: der})
	if err != nil {
		t.Fatal(err)
	}
	return issued
}

// TestMTLSAfterClusterRemove runs the real service: `cluster remove` revokes
// every intermediate of the cluster (audited, in the removal's transaction),
// and none of them renews for the cluster registered again under its name.
func TestMTLSAfterClusterRemove(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	km, err := disk.New(disk.Options{Dir: filepath.Join(t.TempDir(), "keys"), Passphrase: []byte("test passphrase")})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := ca.NewService(st, km, ca.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.InitRoot(ca.WithActor(ctx, "test"), ca.InitRootRequest{TrustDomain: "example.org"}); err != nil {
		t.Fatal(err)
	}
	a := New(st, Options{Roots: func(ctx context.Context) ([]*x509.Certificate, error) {
		tb, err := svc.TrustBundle(ctx)
		return tb.Roots, err
	}})
	renew := func(cluster string, in ca.Issued) error {
		_, err := a.Authenticate(ctx, cluster, Credential{PeerChain: in.Chain})
		return err
	}
	if _, err := svc.AddCluster(ca.WithActor(ctx, "test"), ca.AddClusterRequest{Name: "east"}); err != nil {
		t.Fatal(err)
	}
	first := issueFor(t, svc, "east")
	second := issueFor(t, svc, "east")
	rec, err := st.GetIntermediate(ctx, ca.SerialHex(first.Cert.SerialNumber))
	if err != nil {
		t.Fatal(err)
	}
	if rec.Status != store.IntermediateSuperseded || rec.SupersededAt.IsZero() {
		t.Fatalf("first intermediate after the second was issued: status %s, superseded at %v; want superseded at a recorded time", rec.Status, rec.SupersededAt)
	}
	for name, in := range map[string]ca.Issued{"superseded (within grace)": first, "active": second} {
		if err := renew("east", in); err != nil {
			t.Fatalf("%s intermediate before removal: %v", name, err)
		}
	}

	if err := svc.RemoveCluster(ca.WithActor(ctx, "test"), "east"); err != nil {
		t.Fatal(err)
	}
	list, err := st.ListIntermediates(ctx, "east")
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range list {
		if in.Status != store.IntermediateRevoked {
			t.Errorf("after cluster remove, intermediate %s is %s, want revoked", in.Serial, in.Status)
		}
	}
	entries, err := st.ListAudit(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	last := entries[len(entries)-1]
	var details struct {
		Count   int      `json:"revoked_intermediates"`
		Serials []string `json:"revoked_serials"`
	}
	if err := json.Unmarshal([]byte(last.Details), &details); err != nil {
		t.Fatal(err)
	}
	if last.Action != "cluster.remove" || details.Count != 2 || len(details.Serials) != 2 ||
		details.Serials[0] != ca.SerialHex(first.Cert.SerialNumber) || details.Serials[1] != ca.SerialHex(second.Cert.SerialNumber) {
		t.Errorf("last audit row = %s %s, want cluster.remove naming both revoked serials", last.Action, last.Details)
	}

	if _, err := svc.AddCluster(ca.WithActor(ctx, "test"), ca.AddClusterRequest{Name: "east"}); err != nil {
		t.Fatal(err)
	}
	for name, in := range map[string]ca.Issued{"superseded": first, "formerly active": second} {
		err := renew("east", in)
		wantRefusal(t, err, PermissionDenied, "to an earlier registration of cluster east, which was removed")
		if t.Failed() {
			t.Fatalf("%s intermediate of the removed registration", name)
		}
	}
	// The new registration's own intermediate renews.
	if err := renew("east", issueFor(t, svc, "east")); err != nil {
		t.Fatalf("intermediate of the new registration: %v", err)
	}
}
