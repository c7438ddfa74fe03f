package ca_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/keys"
	"github.com/meshroot/meshroot/keys/disk"
	"github.com/meshroot/meshroot/store"
	"github.com/meshroot/meshroot/store/sqlite"
)

const actor = ca.Actor("test")

// newService opens a service over a real SQLite file and disk key manager.
// The keys are plaintext: the service does not see how the key manager
// stores them, and each encrypted key costs two PBKDF2 derivations
// (600,000 iterations: stored, then loaded back to sign the root), 77 % of
// this package's test CPU when they were encrypted. keys/disk tests the
// encryption; test/e2e runs the service with encrypted keys end to end.
func newService(t testing.TB) (*ca.Service, store.Store) {
	t.Helper()
	return newServiceOver(t, nil)
}

// newServiceOver is newService over wrap(the store), when wrap is set.
func newServiceOver(t testing.TB, wrap func(store.Store) store.Store) (*ca.Service, store.Store) {
	t.Helper()
	return newServiceIn(t, t.TempDir(), wrap)
}

// newServiceIn is newServiceOver with its files in dir: the SQLite file
// meshroot.db and the keys folder keys.
func newServiceIn(t testing.TB, dir string, wrap func(store.Store) store.Store) (*ca.Service, store.Store) {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(dir, "meshroot.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if wrap != nil {
		st = wrap(st)
	}
	km, err := disk.New(disk.Options{Dir: filepath.Join(dir, "keys"), InsecurePlaintext: true})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := ca.NewService(st, km, ca.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	return svc, st
}

// newServiceWithCluster is newService with an active root for example.org
// and the cluster name registered.
func newServiceWithCluster(t testing.TB, name string) (*ca.Service, store.Store) {
	t.Helper()
	svc, st := newService(t)
	addRootAndCluster(t, svc, name)
	return svc, st
}

// addRootAndCluster gives svc an active root for example.org and
// registers the cluster name.
func addRootAndCluster(t testing.TB, svc *ca.Service, name string) {
	t.Helper()
	ctx := ca.WithActor(context.Background(), actor)
	if _, err := svc.InitRoot(ctx, ca.InitRootRequest{TrustDomain: "example.org"}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.AddCluster(ctx, ca.AddClusterRequest{Name: name}); err != nil {
		t.Fatal(err)
	}
}

func csrFor(t testing.TB) (*x509.CertificateRequest, keys.KeyType) {
	t.Helper()
	k, _ := keys.ECP256.Generate()
	der, err := x509.CreateCertificateRequest(nil, &x509.CertificateRequest{}, k)
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := x509.ParseCertificateRequest(der)
	return csr, keys.ECP256
}

func TestServiceIssueFlow(t *testing.T) {
	ctx := context.Background()
	svc, _ := newService(t)
	root, err := svc.InitRoot(ca.WithActor(ctx, actor), ca.InitRootRequest{TrustDomain: "example.org"})
	if err != nil {
		t.Fatal(err)
	}
	if root.State != store.RootActive || !strings.HasPrefix(root.KeyRef, "disk:") {
		t.Fatalf("root = %+v", root)
	}
	if _, err := svc.InitRoot(ca.WithActor(ctx, actor), ca.InitRootRequest{TrustDomain: "example.org"}); err == nil {
		t.Fatal("a second root init was accepted")
	}
	if _, err := svc.AddCluster(ca.WithActor(ctx, actor), ca.AddClusterRequest{Name: "east"}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.AddCluster(ca.WithActor(ctx, actor), ca.AddClusterRequest{Name: "east"}); err == nil {
		t.Fatal("duplicate cluster accepted")
	}
	csr, _ := csrFor(t)
	first, err := svc.IssueIntermediate(ca.WithActor(ctx, actor), ca.IssueRequest{Cluster: "east", CSR: csr})
	if err != nil {
		t.Fatal(err)
	}
	if first.RootID != root.ID || len(first.Chain) != 2 || first.Bundle.Sequence != 1 || len(first.Bundle.Roots) != 1 {
		t.Fatalf("issued = root %s chain %d seq %d roots %d", first.RootID, len(first.Chain), first.Bundle.Sequence, len(first.Bundle.Roots))
	}
	second, err := svc.IssueIntermediate(ca.WithActor(ctx, actor), ca.IssueRequest{Cluster: "east", CSR: csr, TTL: 72 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	list, err := svc.ListIntermediates(ctx, "east")
	if err != nil || len(list) != 2 {
		t.Fatalf("ListIntermediates = %d, %v", len(list), err)
	}
	status := map[string]store.IntermediateStatus{}
	for _, in := range list {
		status[in.Serial] = in.Status
	}
	if status[ca.SerialHex(first.Cert.SerialNumber)] != store.IntermediateSuperseded || status[ca.SerialHex(second.Cert.SerialNumber)] != store.IntermediateActive {
		t.Errorf("statuses after re-issue: %v", status)
	}
}

func TestServiceRefusalsAreAudited(t *testing.T) {
	ctx := context.Background()
	svc, st := newService(t)
	csr, _ := csrFor(t)
	_, err := svc.IssueIntermediate(ca.WithActor(ctx, actor), ca.IssueRequest{Cluster: "east", CSR: csr})
	var pe *ca.PolicyError
	if !errors.As(err, &pe) {
		t.Fatalf("issue before root init: %v, want a PolicyError", err)
	}
	if _, err := svc.InitRoot(ca.WithActor(ctx, actor), ca.InitRootRequest{TrustDomain: "example.org"}); err != nil {
		t.Fatal(err)
	}
	_, err = svc.IssueIntermediate(ca.WithActor(ctx, actor), ca.IssueRequest{Cluster: "west", CSR: csr})
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), "not registered") {
		t.Fatalf("issue for unknown cluster: %v", err)
	}
	entries, err := st.ListAudit(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var denied int
	for _, e := range entries {
		if e.Action == "intermediate.issue" && e.Result == "denied" {
			denied++
			var d map[string]string
			if err := json.Unmarshal([]byte(e.Details), &d); err != nil || d["reason"] == "" {
				t.Errorf("denied entry without a reason: %s", e.Details)
			}
		}
	}
	if denied != 2 {
		t.Errorf("%d denied intermediate.issue entries, want 2", denied)
	}
	if err := st.VerifyAudit(ctx); err != nil {
		t.Errorf("audit chain: %v", err)
	}
}

func TestServiceImportRoot(t *testing.T) {
	ctx := context.Background()
	svc, _ := newService(t)
	rootKey, _ := keys.ECP256.Generate()
	root, err := ca.NewRoot(rootKey, ca.RootOptions{TrustDomain: "example.org"})
	if err != nil {
		t.Fatal(err)
	}
	// Importing with a key that does not match is refused and stores nothing.
	otherKey, _ := keys.ECP256.Generate()
	if _, err := svc.ImportRoot(ca.WithActor(ctx, actor), ca.ImportRootRequest{TrustDomain: "example.org", ChainPEM: ca.EncodeCerts([]*x509.Certificate{root}), Key: otherKey}); err == nil {
		t.Fatal("import with a mismatched key accepted")
	}
	if roots, _ := svc.ListRoots(ctx); len(roots) != 0 {
		t.Fatalf("a refused import left %d roots", len(roots))
	}
	r, err := svc.ImportRoot(ca.WithActor(ctx, actor), ca.ImportRootRequest{TrustDomain: "example.org", ChainPEM: ca.EncodeCerts([]*x509.Certificate{root}), Key: rootKey})
	if err != nil {
		t.Fatal(err)
	}
	if r.ID != ca.RootID(root) {
		t.Errorf("imported root id %s, want %s", r.ID, ca.RootID(root))
	}
	tb, err := svc.TrustBundle(ctx)
	if err != nil || len(tb.Roots) != 1 || !tb.Roots[0].Equal(root) || tb.TrustDomain != "example.org" {
		t.Fatalf("bundle after import: %+v, %v", tb, err)
	}
}

func TestServicePrepareRoot(t *testing.T) {
	ctx := context.Background()
	svc, _ := newService(t)
	if _, err := svc.PrepareRoot(ca.WithActor(ctx, actor), ca.PrepareRootRequest{}); err == nil {
		t.Fatal("prepare without an active root was accepted")
	}
	active, err := svc.InitRoot(ca.WithActor(ctx, actor), ca.InitRootRequest{TrustDomain: "example.org"})
	if err != nil {
		t.Fatal(err)
	}
	next, err := svc.PrepareRoot(ca.WithActor(ctx, actor), ca.PrepareRootRequest{KeyType: keys.ECP384})
	if err != nil {
		t.Fatal(err)
	}
	if next.State != store.RootPrepared || next.TrustDomain != "example.org" || next.ID == active.ID {
		t.Fatalf("prepared root: %+v", next)
	}
	tb, err := svc.TrustBundle(ctx)
	if err != nil || len(tb.Roots) != 2 || tb.Sequence != 2 {
		t.Fatalf("bundle after prepare: %d roots, seq %d, %v", len(tb.Roots), tb.Sequence, err)
	}
	if _, err := svc.PrepareRoot(ca.WithActor(ctx, actor), ca.PrepareRootRequest{}); err == nil || !strings.Contains(err.Error(), "already prepared") {
		t.Fatalf("second prepare: %v", err)
	}
	// The active root keeps signing.
	if _, err := svc.AddCluster(ca.WithActor(ctx, actor), ca.AddClusterRequest{Name: "east"}); err != nil {
		t.Fatal(err)
	}
	csr, _ := csrFor(t)
	out, err := svc.IssueIntermediate(ca.WithActor(ctx, actor), ca.IssueRequest{Cluster: "east", CSR: csr})
	if err != nil {
		t.Fatal(err)
	}
	if out.RootID != active.ID || len(out.Bundle.Roots) != 2 {
		t.Errorf("issued under %s with %d roots; want the active root %s and both roots", out.RootID, len(out.Bundle.Roots), active.ID)
	}
}

// TestIssueWithRegistrationReadByTheCaller: a record handed in with the
// request (the server's authentication read it) saves the service a read,
// and the issuing transaction still refuses a record that stopped being
// the cluster's current registration.
func TestIssueWithRegistrationReadByTheCaller(t *testing.T) {
	ctx := ca.WithActor(context.Background(), actor)
	svc, st := newServiceWithCluster(t, "east")
	rec, err := st.GetCluster(ctx, "east")
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := csrFor(t)

	out, err := svc.IssueIntermediate(ctx, ca.IssueRequest{Cluster: "east", CSR: csr, Registered: &rec})
	if err != nil {
		t.Fatalf("issue with the current registration: %v", err)
	}
	if out.Cert.Subject.CommonName != "east" {
		t.Fatalf("issued for %q, want east", out.Cert.Subject.CommonName)
	}

	// Another cluster's record is a caller's bug, never an issuance.
	if _, err := svc.AddCluster(ctx, ca.AddClusterRequest{Name: "west"}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.IssueIntermediate(ctx, ca.IssueRequest{Cluster: "west", CSR: csr, Registered: &rec}); err == nil {
		t.Fatal("issued for west with east's record")
	}

	// east removed and registered again: the record read before is stale.
	if err := svc.RemoveCluster(ctx, "east"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Millisecond) // a new registration time
	if _, err := svc.AddCluster(ctx, ca.AddClusterRequest{Name: "east"}); err != nil {
		t.Fatal(err)
	}
	cur, err := st.GetCluster(ctx, "east")
	if err != nil {
		t.Fatal(err)
	}
	_, err = svc.IssueIntermediate(ctx, ca.IssueRequest{Cluster: "east", CSR: csr, Registered: &rec})
	if err == nil || !strings.Contains(err.Error(), "registered again") {
		t.Fatalf("issue with the removed registration's record: err = %v, want a refusal naming the new registration", err)
	}
	ints, err := svc.ListIntermediates(ctx, "east")
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range ints {
		if !i.CreatedAt.Before(cur.CreatedAt) {
			t.Fatalf("an intermediate was recorded for the new registration from the stale record: %+v", i)
		}
	}
}
