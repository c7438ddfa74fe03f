package ca_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/store"
)

// TestQuarantineEnforcementPerCluster: a quarantine shows, per other
// cluster, pending until its agent reports a ca-crl.pem with the root CRL
// number that first listed the quarantined intermediates, then applied.
func TestQuarantineEnforcementPerCluster(t *testing.T) {
	f := newCRLFleet(t)
	ctx := ca.WithActor(context.Background(), actor)
	if _, err := f.svc.AddCluster(ctx, ca.AddClusterRequest{Name: "north"}); err != nil {
		t.Fatal(err)
	}
	first, err := f.svc.RootCRL(ctx, f.root.ID)
	if err != nil {
		t.Fatal(err)
	}
	report := func(cluster string, applied map[string]uint64) {
		t.Helper()
		if err := f.svc.Report(ctx, ca.StatusReport{Cluster: cluster, AppliedCRLs: applied}); err != nil {
			t.Fatalf("report of %s: %v", cluster, err)
		}
	}
	report("east", map[string]uint64{f.root.ID: first.Number})
	if _, err := f.svc.QuarantineCluster(ctx, ca.QuarantineRequest{Cluster: "west", Reason: "INC-1"}); err != nil {
		t.Fatal(err)
	}
	status := func() ca.QuarantineStatus {
		t.Helper()
		qs, err := f.svc.ListQuarantines(ctx)
		if err != nil || len(qs) != 1 || qs[0].Cluster != "west" || qs[0].Reason != "INC-1" {
			t.Fatalf("ListQuarantines = %+v, %v", qs, err)
		}
		return qs[0]
	}
	want := func(q ca.QuarantineStatus, cluster string, applied bool, detail string) {
		t.Helper()
		for _, e := range q.Enforcement {
			if e.Cluster == cluster {
				if e.Applied != applied || !strings.Contains(e.Detail, detail) {
					t.Errorf("%s: applied %v (%q), want %v (%q)", cluster, e.Applied, e.Detail, applied, detail)
				}
				return
			}
		}
		t.Errorf("%s missing from the enforcement %+v", cluster, q.Enforcement)
	}
	// Before the root CRL is re-signed: on no CRL yet, nobody enforces.
	q := status()
	if q.Listed || len(q.Enforcement) != 2 || len(q.Pending()) != 2 {
		t.Fatalf("before re-signing: %+v", q)
	}
	want(q, "east", false, "do not list")
	second, err := f.svc.RootCRL(ctx, f.root.ID)
	if err != nil || second.Number != first.Number+1 {
		t.Fatalf("re-signed CRL %d, %v", second.Number, err)
	}
	q = status()
	if !q.Listed || q.Required[f.root.ID] != second.Number {
		t.Fatalf("after re-signing: listed %v, required %v, want %s: %d", q.Listed, q.Required, f.root.ID, second.Number)
	}
	want(q, "east", false, fmt.Sprintf("holds CRL %d, CRL %d lists", first.Number, second.Number))
	want(q, "north", false, "has not reported")
	report("north", map[string]uint64{})
	want(status(), "north", false, "no ca-crl.pem")
	report("east", map[string]uint64{f.root.ID: second.Number})
	q = status()
	want(q, "east", true, "")
	if p := q.Pending(); len(p) != 1 || p[0].Cluster != "north" {
		t.Errorf("pending = %+v, want north", p)
	}
	// A report without the CRLs (an older agent) keeps the last one.
	report("east", nil)
	want(status(), "east", true, "")
	// Later CRLs (more revocations) still count: the number only grows.
	if _, err := f.svc.RevokeIntermediate(ctx, ca.SerialHex(f.cert["east"].SerialNumber), "superseded"); err != nil {
		t.Fatal(err)
	}
	third, _ := f.svc.RootCRL(ctx, f.root.ID)
	report("north", map[string]uint64{f.root.ID: third.Number})
	q = status()
	want(q, "north", true, "")
	if q.Required[f.root.ID] != second.Number {
		t.Errorf("required moved to %d with an unrelated revocation, want %d", q.Required[f.root.ID], second.Number)
	}
	// root status carries the same.
	rs, err := f.svc.RotationStatus(ctx, 0)
	if err != nil || len(rs.Quarantines) != 1 || len(rs.Quarantines[0].Pending()) != 0 {
		t.Fatalf("RotationStatus quarantines = %+v, %v", rs.Quarantines, err)
	}
	// Reports are bounded.
	big := map[string]uint64{}
	for i := range ca.MaxAppliedCRLs + 1 {
		big[fmt.Sprint(i)] = 1
	}
	if err := f.svc.Report(ctx, ca.StatusReport{Cluster: "north", AppliedCRLs: big}); err == nil {
		t.Error("a report naming too many roots was accepted")
	}
	if err := f.svc.Report(ctx, ca.StatusReport{Cluster: "north", AppliedCRLs: map[string]uint64{strings.Repeat("r", 129): 1}}); err == nil {
		t.Error("a report with an oversized root ID was accepted")
	}
	// Released: no longer listed.
	if _, err := f.svc.ReleaseCluster(ctx, "west"); err != nil {
		t.Fatal(err)
	}
	if qs, err := f.svc.ListQuarantines(ctx); err != nil || len(qs) != 0 {
		t.Errorf("after release: %+v, %v", qs, err)
	}
}

// TestQuarantineEnforcementUnrecordedRevocation: an intermediate revoked
// without a revocation record (an older database) counts as listed by its
// root's current CRL, so the status does not stay "not listed" forever.
func TestQuarantineEnforcementUnrecordedRevocation(t *testing.T) {
	f := newCRLFleet(t)
	ctx := ca.WithActor(context.Background(), actor)
	if err := f.st.Update(ctx, func(tx store.Tx) error {
		_, err := tx.RevokeClusterIntermediates(ctx, "west")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.QuarantineCluster(ctx, ca.QuarantineRequest{Cluster: "west", Reason: "old"}); err != nil {
		t.Fatal(err)
	}
	qs, err := f.svc.ListQuarantines(ctx)
	if err != nil || len(qs) != 1 || qs[0].Listed {
		t.Fatalf("before any root CRL: %+v, %v; want not listed", qs, err)
	}
	c, err := f.svc.RootCRL(ctx, f.root.ID)
	if err != nil {
		t.Fatal(err)
	}
	qs, _ = f.svc.ListQuarantines(ctx)
	if !qs[0].Listed || qs[0].Required[f.root.ID] != c.Number {
		t.Fatalf("after the root CRL: listed %v, required %v; want %d", qs[0].Listed, qs[0].Required, c.Number)
	}
	if err := f.svc.Report(ctx, ca.StatusReport{Cluster: "east", AppliedCRLs: map[string]uint64{f.root.ID: c.Number}}); err != nil {
		t.Fatal(err)
	}
	if qs, _ = f.svc.ListQuarantines(ctx); len(qs[0].Pending()) != 0 {
		t.Errorf("east reported the current CRL, still pending: %+v", qs[0].Pending())
	}
}
