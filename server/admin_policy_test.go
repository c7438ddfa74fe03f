package server_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	meshrootv1 "github.com/meshroot/meshroot/api/meshroot/v1"
	"github.com/meshroot/meshroot/api/wire"
	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/store"
)

// TestAdminPolicyAndAnchor: the stored policy and the audit anchor through
// the admin socket.
func TestAdminPolicyAndAnchor(t *testing.T) {
	ts := startServer(t)
	ts.bootstrap(t)
	ctx := t.Context()

	got, err := ts.admin.GetPolicy(ctx, &meshrootv1.GetPolicyRequest{})
	if err != nil || got.GetStored() {
		t.Fatalf("GetPolicy before any is stored: %v, %v", got, err)
	}
	b, err := ca.PolicyJSON(ca.Policy{MaxTTL: 48 * time.Hour, DefaultTTL: 48 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	set, err := ts.admin.SetPolicy(ctx, &meshrootv1.SetPolicyRequest{PolicyJson: b})
	if err != nil || !set.GetStored() || !set.GetChanged() {
		t.Fatalf("SetPolicy: %v, %v", set, err)
	}
	p, err := ca.ParsePolicyJSON(set.GetPolicyJson())
	if err != nil || p.MaxTTL != 48*time.Hour || p.MinTTL != ca.DefaultMinIntermediateTTL {
		t.Fatalf("stored policy %+v, %v", p, err)
	}
	_, err = ts.admin.SetPolicy(ctx, &meshrootv1.SetPolicyRequest{PolicyJson: []byte(`{"MaxTTL":1,"NoSuchField":true}`)})
	wantCode(t, err, codes.InvalidArgument, "unknown field")
	c, _ := csr(t)
	_, err = ts.admin.IssueIntermediate(ctx, &meshrootv1.IssueIntermediateRequest{Cluster: "east", Csr: c.Raw, TtlSeconds: int64((72 * time.Hour).Seconds())})
	wantCode(t, err, codes.InvalidArgument, "exceeds the policy maximum 48h0m0s")

	resp, err := ts.admin.AnchorAudit(ctx, &meshrootv1.AnchorAuditRequest{})
	if err != nil {
		t.Fatal(err)
	}
	a, err := ca.ParseAuditAnchor(resp.GetAnchorPem())
	if err != nil {
		t.Fatal(err)
	}
	tb, err := ts.admin.GetTrustBundle(ctx, &meshrootv1.GetTrustBundleRequest{})
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := wire.BundleFromProto(tb)
	if err != nil {
		t.Fatal(err)
	}
	err = ca.VerifyAuditAnchor(a, bundle.Roots, func(seq int64) (store.AuditEntry, bool, error) {
		l, err := ts.admin.ListAudit(context.Background(), &meshrootv1.ListAuditRequest{AfterSeq: seq - 1, Limit: 1})
		if err != nil || len(l.GetEntries()) == 0 || l.GetEntries()[0].GetSeq() != seq {
			return store.AuditEntry{}, false, err
		}
		return store.AuditEntry{Seq: seq, Hash: l.GetEntries()[0].GetHash()}, true, nil
	})
	if err != nil {
		t.Fatalf("anchor made through the admin socket: %v", err)
	}
}
