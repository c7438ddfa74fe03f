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
	report := func(reg store.Registration, serial string) error {
		return svc.Report(ctx, ca.StatusReport{Cluster: "east", Registered: reg, BundleSequence: 2, IntermediateSerial: serial,
			Istiod: store.IstiodStatus{State: store.IstiodLoaded, BundleSequence: 2, Serial: serial, Since: time.Now()}})
	}
	// The registration as authenticated, still current: recorded.
	if err := report(old.Registration(), oldSerial); err != nil {
		t.Fatalf("report of the current registration: %v", err)
	}
	if err := svc.Report(ctx, ca.StatusReport{Cluster: "east", Registered: old.Registration(), BundleSequence: 1}); err != nil {
		t.Fatal(err)
	}

	if err := svc.RemoveCluster(ctx, "east"); err != nil {
		t.Fatal(err)
	}
	if err := report(old.Registration(), oldSerial); err == nil || !strings.Contains(err.Error(), "removed") {
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
	err = svc.Report(ctx, ca.StatusReport{Cluster: "east", Registered: old.Registration(), BundleSequence: 2})
	if err == nil || !strings.Contains(err.Error(), "registered again") {
		t.Fatalf("report of the removed registration: err = %v, want a refusal naming the new registration", err)
	}
	// The new registration naming the earlier registration's intermediate:
	// refused, with or without the registration handed in.
	for _, reg := range []store.Registration{fresh.Registration(), {}} {
		if err := report(reg, oldSerial); err == nil || !strings.Contains(err.Error(), "earlier registration") {
			t.Fatalf("report naming the removed registration's intermediate (registration handed in: %v): err = %v", reg != store.Registration{}, err)
		}
	}
	// Another cluster's registration handed in is a caller's bug.
	west, err := st.GetCluster(ctx, "west")
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Report(ctx, ca.StatusReport{Cluster: "east", Registered: west.Registration(), BundleSequence: 2}); err == nil {
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
	if err := svc.Report(ctx, ca.StatusReport{Cluster: "east", Registered: fresh.Registration(), BundleSequence: 2}); err != nil {
		t.Fatalf("report of the new registration: %v", err)
	}
	if got, err = st.GetCluster(ctx, "east"); err != nil || got.Status.BundleSequence != 2 {
		t.Fatalf("after its own report: %+v, %v", got.Status, err)
	}
}

// TestReportChecksWithoutRereads: a report's bundle sequence is checked
// against the server's without a read while it is at or below one already
// read (the sequence only grows), and read again when it is above; the
// intermediate record authentication read is checked as the store's would
// be, and one of another serial is not taken for the reported one.
func TestReportChecksWithoutRereads(t *testing.T) {
	ctx := ca.WithActor(context.Background(), actor)
	svc, st, _ := rotationFixture(t)
	east, err := st.GetCluster(ctx, "east")
	if err != nil {
		t.Fatal(err)
	}
	west, err := st.GetCluster(ctx, "west")
	if err != nil {
		t.Fatal(err)
	}
	report := func(seq uint64, serial string, rec *store.Intermediate) error {
		return svc.Report(ctx, ca.StatusReport{Cluster: "east", Registered: east.Registration(), BundleSequence: seq, IntermediateSerial: serial, Intermediate: rec})
	}
	if err := report(1, "", nil); err != nil {
		t.Fatalf("report of the current sequence: %v", err)
	}
	if err := report(2, "", nil); err == nil || !strings.Contains(err.Error(), "ahead of the server's 1") {
		t.Fatalf("report ahead of the server: %v, want a refusal", err)
	}
	if _, err := svc.PrepareRoot(ctx, ca.PrepareRootRequest{}); err != nil {
		t.Fatal(err)
	}
	// The sequence moved on: the one read before no longer bounds it.
	if err := report(2, "", nil); err != nil {
		t.Fatalf("report of the new sequence: %v", err)
	}
	if err := report(3, "", nil); err == nil || !strings.Contains(err.Error(), "ahead of the server's 2") {
		t.Fatalf("report ahead of the new sequence: %v, want a refusal", err)
	}

	eastRec, err := st.GetIntermediate(ctx, east.Status.IntermediateSerial)
	if err != nil {
		t.Fatal(err)
	}
	westRec, err := st.GetIntermediate(ctx, west.Status.IntermediateSerial)
	if err != nil {
		t.Fatal(err)
	}
	// West's intermediate, its record handed in: checked, refused.
	if err := report(2, westRec.Serial, &westRec); err == nil || !strings.Contains(err.Error(), "not one issued to cluster east") {
		t.Fatalf("east reporting west's intermediate with its record: %v, want a refusal", err)
	}
	// West's intermediate with east's record handed in: the record is of
	// another serial, so the store's is read, and it is refused.
	if err := report(2, westRec.Serial, &eastRec); err == nil || !strings.Contains(err.Error(), "not one issued to cluster east") {
		t.Fatalf("east reporting west's intermediate with east's record: %v, want a refusal", err)
	}
	// Its own, with its record: recorded.
	if err := report(2, eastRec.Serial, &eastRec); err != nil {
		t.Fatalf("east reporting its own intermediate: %v", err)
	}
	got, err := st.GetCluster(ctx, "east")
	if err != nil || got.Status.BundleSequence != 2 || got.Status.IntermediateSerial != eastRec.Serial {
		t.Fatalf("east's status after its reports: %+v, %v", got.Status, err)
	}
}
