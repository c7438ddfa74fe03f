package ca_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/store"
)

// rotationFixture is a service with a root and clusters east and west, each
// holding an intermediate and having reported the current bundle.
func rotationFixture(t *testing.T) (*ca.Service, store.Store, store.Root) {
	t.Helper()
	ctx := context.Background()
	svc, st := newService(t)
	root, err := svc.InitRoot(ca.WithActor(ctx, actor), ca.InitRootRequest{TrustDomain: "example.org"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"east", "west"} {
		if _, err := svc.AddCluster(ca.WithActor(ctx, actor), ca.AddClusterRequest{Name: c}); err != nil {
			t.Fatal(err)
		}
		issueAndReport(t, svc, c)
	}
	return svc, st, root
}

// issueAndReport issues for cluster and reports the current bundle applied,
// as an agent does; it returns what was issued.
func issueAndReport(t *testing.T, svc *ca.Service, cluster string) ca.Issued {
	t.Helper()
	ctx := context.Background()
	csr, _ := csrFor(t)
	out, err := svc.IssueIntermediate(ca.WithActor(ctx, actor), ca.IssueRequest{Cluster: cluster, CSR: csr})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.ReportStatus(ctx, cluster, out.Bundle.Sequence, ca.SerialHex(out.Cert.SerialNumber)); err != nil {
		t.Fatal(err)
	}
	return out
}

func rootStates(t *testing.T, svc *ca.Service) map[string]store.RootState {
	t.Helper()
	roots, err := svc.ListRoots(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]store.RootState{}
	for _, r := range roots {
		m[r.ID] = r.State
	}
	return m
}

func TestRotationPhasesAndGates(t *testing.T) {
	ctx := context.Background()
	svc, st, old := rotationFixture(t)
	next, err := svc.PrepareRoot(ca.WithActor(ctx, actor), ca.PrepareRootRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if next.AddedSequence != 2 {
		t.Fatalf("prepared root added at sequence %d, want 2", next.AddedSequence)
	}

	// Activate waits for every cluster to apply bundle 2, and names them.
	dry, err := svc.ActivateRoot(ca.WithActor(ctx, actor), ca.PhaseRequest{DryRun: true})
	if err != nil || len(dry.Blockers) != 2 || dry.Done {
		t.Fatalf("dry-run activate: %+v, %v", dry, err)
	}
	if _, err := svc.ActivateRoot(ca.WithActor(ctx, actor), ca.PhaseRequest{}); err == nil || !strings.Contains(err.Error(), "east") || !strings.Contains(err.Error(), "west") {
		t.Fatalf("activate before clusters applied the bundle: %v", err)
	}
	if rootStates(t, svc)[next.ID] != store.RootPrepared {
		t.Fatal("a refused activate changed state")
	}
	for _, c := range []string{"east", "west"} {
		cl, _ := st.GetCluster(ctx, c)
		if err := svc.ReportStatus(ctx, c, 2, cl.Status.IntermediateSerial); err != nil {
			t.Fatal(err)
		}
	}
	if err := svc.ReportStatus(ctx, "east", 99, ""); err == nil {
		t.Error("a report ahead of the server's sequence was accepted")
	}
	res, err := svc.ActivateRoot(ca.WithActor(ctx, actor), ca.PhaseRequest{})
	if err != nil || !res.Done {
		t.Fatalf("activate: %+v, %v", res, err)
	}
	states := rootStates(t, svc)
	if states[next.ID] != store.RootActive || states[old.ID] != store.RootRetiring {
		t.Fatalf("after activate: %v", states)
	}
	// Resuming an activate that already happened is a no-op.
	if res, err := svc.ActivateRoot(ca.WithActor(ctx, actor), ca.PhaseRequest{}); err != nil || !res.Done {
		t.Fatalf("second activate: %+v, %v", res, err)
	}

	// Retire waits for every cluster's intermediate to come from the new root.
	east := issueAndReport(t, svc, "east")
	if east.RootID != next.ID || len(east.Bundle.Roots) != 2 {
		t.Fatalf("after activate, issued under %s with %d roots", east.RootID, len(east.Bundle.Roots))
	}
	_, err = svc.RetireRoot(ca.WithActor(ctx, actor), ca.PhaseRequest{WorkloadCertTTL: time.Nanosecond})
	if err == nil || !strings.Contains(err.Error(), "west") || strings.Contains(err.Error(), "east:") {
		t.Fatalf("retire with west still on the old root: %v", err)
	}
	issueAndReport(t, svc, "west")
	// ... and for the workload certificate lifetime after the last switch.
	_, err = svc.RetireRoot(ca.WithActor(ctx, actor), ca.PhaseRequest{WorkloadCertTTL: time.Hour})
	if err == nil || !strings.Contains(err.Error(), "workload certificates") {
		t.Fatalf("retire within the workload certificate lifetime: %v", err)
	}
	res, err = svc.RetireRoot(ca.WithActor(ctx, actor), ca.PhaseRequest{WorkloadCertTTL: time.Nanosecond})
	if err != nil || !res.Done {
		t.Fatalf("retire: %+v, %v", res, err)
	}
	tb, _ := svc.TrustBundle(ctx)
	if len(tb.Roots) != 1 || ca.RootID(tb.Roots[0]) != next.ID || tb.Sequence != 3 {
		t.Fatalf("bundle after retire: %d roots, seq %d", len(tb.Roots), tb.Sequence)
	}
}

func TestRotationForceIsAudited(t *testing.T) {
	ctx := context.Background()
	svc, st, _ := rotationFixture(t)
	if _, err := svc.PrepareRoot(ca.WithActor(ctx, actor), ca.PrepareRootRequest{}); err != nil {
		t.Fatal(err)
	}
	res, err := svc.ActivateRoot(ca.WithActor(ctx, actor), ca.PhaseRequest{Force: true})
	if err != nil || !res.Forced || len(res.LosingTrust) != 2 {
		t.Fatalf("forced activate: %+v, %v", res, err)
	}
	entries, _ := st.ListAudit(ctx, 0, 0)
	last := entries[len(entries)-1]
	var d struct {
		Forced   bool
		Blockers []ca.Blocker
	}
	if err := json.Unmarshal([]byte(last.Details), &d); err != nil || last.Action != "root.activate" || !d.Forced || len(d.Blockers) != 2 {
		t.Fatalf("audit of forced activate: %s %s", last.Action, last.Details)
	}
}

func TestRotationRollbackAndDryRun(t *testing.T) {
	ctx := context.Background()
	svc, _, old := rotationFixture(t)
	if _, err := svc.PrepareRoot(ca.WithActor(ctx, actor), ca.PrepareRootRequest{DryRun: true}); err != nil {
		t.Fatal(err)
	}
	if len(rootStates(t, svc)) != 1 {
		t.Fatal("a dry-run prepare created a root")
	}
	next, err := svc.PrepareRoot(ca.WithActor(ctx, actor), ca.PrepareRootRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.RollbackPrepared(ca.WithActor(ctx, actor), ca.PhaseRequest{}); err != nil {
		t.Fatal(err)
	}
	states := rootStates(t, svc)
	tb, _ := svc.TrustBundle(ctx)
	if states[next.ID] != store.RootRetired || states[old.ID] != store.RootActive || len(tb.Roots) != 1 || tb.Sequence != 3 {
		t.Fatalf("after rollback: %v, %d roots, seq %d", states, len(tb.Roots), tb.Sequence)
	}
}

// TestCrossSignedChains checks that, while the old root is retiring, chains
// from the new root go through the cross certificate and verify for peers
// that trust only the old root, only the new root, or both.
func TestCrossSignedChains(t *testing.T) {
	ctx := context.Background()
	svc, _, old := rotationFixture(t)
	next, err := svc.PrepareRoot(ca.WithActor(ctx, actor), ca.PrepareRootRequest{CrossSign: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(next.CrossPEM) == 0 {
		t.Fatal("no cross certificate stored")
	}
	if _, err := svc.ActivateRoot(ca.WithActor(ctx, actor), ca.PhaseRequest{Force: true}); err != nil {
		t.Fatal(err)
	}
	out := issueAndReport(t, svc, "east")
	if len(out.Chain) != 3 || ca.RootID(out.Chain[2]) != old.ID || out.RootID != next.ID {
		t.Fatalf("chain during cross-signing: %d certs ending at %s, signed by %s", len(out.Chain), ca.RootID(out.Chain[len(out.Chain)-1]), out.RootID)
	}
	var oldCert, newCert *x509.Certificate
	for _, r := range out.Bundle.Roots {
		switch ca.RootID(r) {
		case old.ID:
			oldCert = r
		case next.ID:
			newCert = r
		}
	}
	for name, roots := range map[string][]*x509.Certificate{"old only": {oldCert}, "new only": {newCert}, "both": {oldCert, newCert}} {
		pool := x509.NewCertPool()
		for _, r := range roots {
			pool.AddCert(r)
		}
		inter := x509.NewCertPool()
		inter.AddCert(out.Chain[1])
		if _, err := out.Cert.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Errorf("peer trusting %s: %v", name, err)
		}
	}
	// After retire the chain no longer uses the cross certificate.
	issueAndReport(t, svc, "west")
	if _, err := svc.RetireRoot(ca.WithActor(ctx, actor), ca.PhaseRequest{WorkloadCertTTL: time.Nanosecond}); err != nil {
		t.Fatal(err)
	}
	out = issueAndReport(t, svc, "east")
	if len(out.Chain) != 2 || ca.RootID(out.Chain[1]) != next.ID {
		t.Fatalf("chain after retire: %d certs ending at %s", len(out.Chain), ca.RootID(out.Chain[len(out.Chain)-1]))
	}
}

func TestEmergencyRevoke(t *testing.T) {
	ctx := context.Background()
	svc, st, old := rotationFixture(t)
	if _, err := svc.RevokeRoot(ca.WithActor(ctx, actor), ca.RevokeRequest{RootID: old.ID}); err == nil || !strings.Contains(err.Error(), "--emergency") {
		t.Fatalf("revoke without --emergency: %v", err)
	}
	dry, err := svc.RevokeRoot(ca.WithActor(ctx, actor), ca.RevokeRequest{RootID: old.ID, Emergency: true, DryRun: true})
	if err != nil || strings.Join(dry.LosingTrust, ",") != "east,west" {
		t.Fatalf("dry-run revoke: %+v, %v", dry, err)
	}
	if _, err := svc.RevokeRoot(ca.WithActor(ctx, actor), ca.RevokeRequest{RootID: old.ID, Emergency: true}); err != nil {
		t.Fatal(err)
	}
	states := rootStates(t, svc)
	if states[old.ID] != store.RootRevoked || len(states) != 2 {
		t.Fatalf("after revoke: %v", states)
	}
	tb, _ := svc.TrustBundle(ctx)
	if len(tb.Roots) != 1 || ca.RootID(tb.Roots[0]) == old.ID {
		t.Fatal("the revoked root is still in the bundle")
	}
	list, _ := st.ListIntermediates(ctx, "")
	for _, in := range list {
		if in.RootID == old.ID && in.Status != store.IntermediateRevoked {
			t.Errorf("intermediate %s of the revoked root is %s", in.Serial, in.Status)
		}
	}
	// Issuance goes on from the replacement root.
	out := issueAndReport(t, svc, "east")
	if out.RootID == old.ID {
		t.Fatal("issued under the revoked root")
	}
}
