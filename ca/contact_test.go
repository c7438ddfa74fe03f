package ca_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshroot/meshroot/ca"
)

// TestReportWithCreationTimeInAnotherForm: a status report is recorded in
// one UPDATE that compares the registration's stored creation time as
// text. A row whose time is stored in another RFC 3339 form (here, with
// an offset instead of Z) is the same registration: the report is
// recorded all the same, not refused.
func TestReportWithCreationTimeInAnotherForm(t *testing.T) {
	ctx := ca.WithActor(context.Background(), actor)
	dir := t.TempDir()
	svc, st := newServiceIn(t, dir, nil)
	path := filepath.Join(dir, "meshroot.db")
	if _, err := svc.AddCluster(ctx, ca.AddClusterRequest{Name: "east", TrustDomain: "example.org"}); err != nil {
		t.Fatal(err)
	}
	reg, err := st.GetCluster(ctx, "east")
	if err != nil {
		t.Fatal(err)
	}
	other := reg.CreatedAt.In(time.FixedZone("UTC+2", 2*3600)).Format(time.RFC3339Nano)
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `UPDATE clusters SET created_at = ? WHERE name = 'east'`, other); err != nil {
		t.Fatal(err)
	}
	if again, err := st.GetCluster(ctx, "east"); err != nil || !again.CreatedAt.Equal(reg.CreatedAt) {
		t.Fatalf("after storing the creation time as %s: %v, %v; want the same instant", other, again.CreatedAt, err)
	}

	if err := svc.Report(ctx, ca.StatusReport{Cluster: "east", Registered: reg.Registration(), AppliedCRLs: map[string]uint64{"r": 3}}); err != nil {
		t.Fatalf("report of the registration: %v", err)
	}
	got, err := st.GetCluster(ctx, "east")
	if err != nil {
		t.Fatal(err)
	}
	if got.Status.LastContact.IsZero() || got.Status.AppliedCRLs["r"] != 3 {
		t.Fatalf("status after the report: %+v, want the contact and the applied CRL recorded", got.Status)
	}
}
