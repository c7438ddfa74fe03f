package ca_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/store"
)

// reportIstiod reports cluster at bundle seq with its current intermediate
// and istiod in state, as a confirming agent does.
func reportIstiod(t *testing.T, svc *ca.Service, st store.Store, cluster string, seq uint64, state string, istiodSeq uint64, istiodSerial string) {
	t.Helper()
	ctx := context.Background()
	cl, err := st.GetCluster(ctx, cluster)
	if err != nil {
		t.Fatal(err)
	}
	ist := store.IstiodStatus{State: state, BundleSequence: istiodSeq, Serial: istiodSerial, Detail: "saw " + state,
		Since: time.Now(), StaleSince: time.Now()}
	if err := svc.Report(ctx, ca.StatusReport{Cluster: cluster, BundleSequence: seq, IntermediateSerial: cl.Status.IntermediateSerial, Istiod: ist}); err != nil {
		t.Fatal(err)
	}
}

// TestActivateGatesOnIstiod: with a confirming agent, activate waits for
// istiod to serve the prepared bundle, not only for the Secret; stale and
// unconfirmed clusters are named; `cluster gate NAME secret` (audited)
// lets the Secret count for a cluster that cannot confirm.
func TestActivateGatesOnIstiod(t *testing.T) {
	ctx := context.Background()
	svc, st, _ := rotationFixture(t)
	if _, err := svc.PrepareRoot(ca.WithActor(ctx, actor), ca.PrepareRootRequest{}); err != nil {
		t.Fatal(err)
	}
	// Both Secrets hold bundle 2; east's istiod is still pending, west's
	// stale.
	reportIstiod(t, svc, st, "east", 2, store.IstiodPending, 1, "")
	reportIstiod(t, svc, st, "west", 2, store.IstiodStale, 1, "")
	_, err := svc.ActivateRoot(ca.WithActor(ctx, actor), ca.PhaseRequest{})
	if err == nil || !strings.Contains(err.Error(), "east: istiod has not confirmed trust bundle 2") ||
		!strings.Contains(err.Error(), "west: istiod stale since") {
		t.Fatalf("activate with istiods not serving bundle 2: %v", err)
	}
	// A report of "loaded" for another sequence than the Secret's is refused.
	cl, _ := st.GetCluster(ctx, "east")
	if err := svc.Report(ctx, ca.StatusReport{Cluster: "east", BundleSequence: 2, IntermediateSerial: cl.Status.IntermediateSerial, Istiod: store.IstiodStatus{State: store.IstiodLoaded, BundleSequence: 1}}); err == nil {
		t.Error("loaded at sequence 1 with the Secret at 2 was accepted")
	}
	if err := svc.Report(ctx, ca.StatusReport{Cluster: "east", BundleSequence: 2, Istiod: store.IstiodStatus{State: "bogus"}}); err == nil {
		t.Error("an unknown istiod state was accepted")
	}
	if err := svc.Report(ctx, ca.StatusReport{Cluster: "east", BundleSequence: 2, Istiod: store.IstiodStatus{State: store.IstiodPending, Detail: strings.Repeat("x", 2000)}}); err == nil {
		t.Error("an oversized istiod detail was accepted")
	}

	reportIstiod(t, svc, st, "east", 2, store.IstiodLoaded, 2, cl.Status.IntermediateSerial)
	reportIstiod(t, svc, st, "west", 2, store.IstiodUnconfirmed, 1, "")
	_, err = svc.ActivateRoot(ca.WithActor(ctx, actor), ca.PhaseRequest{})
	if err == nil || strings.Contains(err.Error(), "east:") || !strings.Contains(err.Error(), "west: unconfirmed") ||
		!strings.Contains(err.Error(), "cluster gate west secret") {
		t.Fatalf("activate with west unconfirmed: %v", err)
	}
	status, err := svc.RotationStatus(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range status.Clusters {
		if c.Gate != store.GateIstiod {
			t.Errorf("%s: gate %q, want istiod (its agent confirms)", c.Cluster, c.Gate)
		}
		if c.Cluster == "east" && (c.Istiod.State != store.IstiodLoaded || c.Istiod.BundleSequence != 2) {
			t.Errorf("east status: %+v", c.Istiod)
		}
	}

	if err := svc.SetClusterGate(ca.WithActor(ctx, actor), "west", "bogus"); err == nil {
		t.Error("gate bogus accepted")
	}
	if err := svc.SetClusterGate(ca.WithActor(ctx, actor), "north", store.GateSecret); err == nil {
		t.Error("gate on an unknown cluster accepted")
	}
	if err := svc.SetClusterGate(ca.WithActor(ctx, actor), "west", store.GateSecret); err != nil {
		t.Fatal(err)
	}
	entries, err := svc.ListAudit(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var gates []string
	for _, e := range entries {
		if e.Action == "cluster.gate" {
			gates = append(gates, e.Target+":"+e.Result)
		}
	}
	if strings.Join(gates, ",") != "west:denied,north:denied,west:ok" {
		t.Errorf("cluster.gate audit rows %v, want west:denied,north:denied,west:ok", gates)
	}
	// The gate survives the agent's next report.
	reportIstiod(t, svc, st, "west", 2, store.IstiodUnconfirmed, 1, "")
	if res, err := svc.ActivateRoot(ca.WithActor(ctx, actor), ca.PhaseRequest{}); err != nil || !res.Done {
		t.Fatalf("activate with east loaded and west gated on its Secret: %+v, %v", res, err)
	}
}

// TestRetireGatesOnIstiodSerial: retire waits for istiod to serve the
// intermediate from the new root, not only for the Secret to hold it.
func TestRetireGatesOnIstiodSerial(t *testing.T) {
	ctx := context.Background()
	svc, st, _ := rotationFixture(t)
	if _, err := svc.PrepareRoot(ca.WithActor(ctx, actor), ca.PrepareRootRequest{}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"east", "west"} {
		cl, _ := st.GetCluster(ctx, c)
		reportIstiod(t, svc, st, c, 2, store.IstiodLoaded, 2, cl.Status.IntermediateSerial)
	}
	if _, err := svc.ActivateRoot(ca.WithActor(ctx, actor), ca.PhaseRequest{}); err != nil {
		t.Fatal(err)
	}
	oldEast, _ := st.GetCluster(ctx, "east")
	for _, c := range []string{"east", "west"} {
		issueAndReport(t, svc, c) // Secrets hold the new intermediates; istiod still the old
	}
	reportIstiod(t, svc, st, "east", 2, store.IstiodLoaded, 2, oldEast.Status.IntermediateSerial)
	west, _ := st.GetCluster(ctx, "west")
	reportIstiod(t, svc, st, "west", 2, store.IstiodLoaded, 2, west.Status.IntermediateSerial)
	_, err := svc.RetireRoot(ca.WithActor(ctx, actor), ca.PhaseRequest{WorkloadCertTTL: time.Nanosecond})
	if err == nil || !strings.Contains(err.Error(), "east: istiod") || strings.Contains(err.Error(), "west:") {
		t.Fatalf("retire with east's istiod on its old intermediate: %v", err)
	}
	east, _ := st.GetCluster(ctx, "east")
	reportIstiod(t, svc, st, "east", 2, store.IstiodLoaded, 2, east.Status.IntermediateSerial)
	if res, err := svc.RetireRoot(ca.WithActor(ctx, actor), ca.PhaseRequest{WorkloadCertTTL: time.Nanosecond}); err != nil || !res.Done {
		t.Fatalf("retire: %+v, %v", res, err)
	}
}

// TestReportOfRemovedRegistration: a report is recorded for the
// registration its agent was authenticated against, and only while that
// registration is the cluster's: an agent of a cluster removed and
// registered again meanwhile, or one naming an intermediate of the
// earlier registration, does not move the new registration's status
// (which the rotation gates read).
func TestReportOfRemovedRegistration(t *testing.T) {
	ctx := ca.WithActor(context.Background(), actor)
	svc, st, _ := rotationFixture(t)
	old, err := st.GetCluster(ctx, "east")
	if err != nil {
		t.Fatal(err)
	}
	oldSerial := old.Status.IntermediateSerial
	if _, err := svc.PrepareRoot(ctx, ca.PrepareRootRequest{}); err != nil {
		t.Fatal(err)
	}
	report := func(reg *store.Cluster, serial string) error {
		return svc.Report(ctx, ca.StatusReport{Cluster: "east", Registered: reg, BundleSequence: 2, IntermediateSerial: serial,
			Istiod: store.IstiodStatus{State: store.IstiodLoaded, BundleSequence: 2, Serial: serial, Since: time.Now()}})
	}
	// The registration as authenticated, still current: recorded.
	if err := report(&old, oldSerial); err != nil {
		t.Fatalf("report of the current registration: %v", err)
	}
	if err := svc.Report(ctx, ca.StatusReport{Cluster: "east", Registered: &old, BundleSequence: 1}); err != nil {
		t.Fatal(err)
	}

	if err := svc.RemoveCluster(ctx, "east"); err != nil {
		t.Fatal(err)
	}
	if err := report(&old, oldSerial); err == nil || !strings.Contains(err.Error(), "removed") {
		t.Fatalf("report for a removed cluster: err = %v, want a refusal saying it was removed", err)
	}
	time.Sleep(2 * time.Millisecond) // a new registration time
	if _, err := svc.AddCluster(ctx, ca.AddClusterRequest{Name: "east"}); err != nil {
		t.Fatal(err)
	}
	fresh, err := st.GetCluster(ctx, "east")
	if err != nil {
		t.Fatal(err)
	}

	// The earlier registration's agent, authenticated a moment before the
	// removal: refused inside the transaction.
	err = svc.Report(ctx, ca.StatusReport{Cluster: "east", Registered: &old, BundleSequence: 2})
	if err == nil || !strings.Contains(err.Error(), "registered again") {
		t.Fatalf("report of the removed registration: err = %v, want a refusal naming the new registration", err)
	}
	// The new registration naming the earlier registration's intermediate:
	// refused, with or without the registration handed in.
	for _, reg := range []*store.Cluster{&fresh, nil} {
		if err := report(reg, oldSerial); err == nil || !strings.Contains(err.Error(), "earlier registration") {
			t.Fatalf("report naming the removed registration's intermediate (registration handed in: %v): err = %v", reg != nil, err)
		}
	}
	// Another cluster's registration handed in is a caller's bug.
	west, err := st.GetCluster(ctx, "west")
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Report(ctx, ca.StatusReport{Cluster: "east", Registered: &west, BundleSequence: 2}); err == nil {
		t.Fatal("east's report recorded with west's registration")
	}
	got, err := st.GetCluster(ctx, "east")
	if err != nil {
		t.Fatal(err)
	}
	if got.Status.BundleSequence != 0 || got.Status.IntermediateSerial != "" || got.Status.Istiod.State != "" || !got.Status.LastContact.IsZero() {
		t.Fatalf("the new registration's status moved: %+v", got.Status)
	}

	// The new registration's own report is recorded.
	if err := svc.Report(ctx, ca.StatusReport{Cluster: "east", Registered: &fresh, BundleSequence: 2}); err != nil {
		t.Fatalf("report of the new registration: %v", err)
	}
	if got, err = st.GetCluster(ctx, "east"); err != nil || got.Status.BundleSequence != 2 {
		t.Fatalf("after its own report: %+v, %v", got.Status, err)
	}
}
