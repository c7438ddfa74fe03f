package ca_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/keys/disk"
	"github.com/meshroot/meshroot/store"
	"github.com/meshroot/meshroot/store/sqlite"
)

// TestStoredPolicy: the policy set in the store is what every service over
// that store issues under, whatever policy the service was made with.
func TestStoredPolicy(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "meshroot.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	km, err := disk.New(disk.Options{Dir: filepath.Join(dir, "keys"), InsecurePlaintext: true}) // as newService's
	if err != nil {
		t.Fatal(err)
	}
	// The server's service, made with a policy of its own.
	svc, err := ca.NewService(st, km, ca.Policy{MaxTTL: 1000 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	p, stored, err := svc.Policy(ctx)
	if err != nil || stored || p.MaxTTL != 1000*time.Hour || p.SupersededRenewalGrace != ca.DefaultSupersededRenewalGrace {
		t.Fatalf("Policy before any is stored = %+v, stored %v, %v; want the service's own with defaults", p, stored, err)
	}
	if _, err := svc.InitRoot(ca.WithActor(ctx, actor), ca.InitRootRequest{TrustDomain: "example.org"}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.AddCluster(ca.WithActor(ctx, actor), ca.AddClusterRequest{Name: "east"}); err != nil {
		t.Fatal(err)
	}

	_, _, err = svc.SetPolicy(ca.WithActor(ctx, actor), ca.Policy{MinTTL: 72 * time.Hour, MaxTTL: 48 * time.Hour})
	var pe *ca.PolicyError
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), "minimum TTL 72h0m0s exceeds maximum TTL 48h0m0s") {
		t.Fatalf("contradictory policy: %v, want a refusal", err)
	}
	set, changed, err := svc.SetPolicy(ca.WithActor(ctx, actor), ca.Policy{MaxTTL: 48 * time.Hour, DefaultTTL: 48 * time.Hour, TrustDomainConstraint: true})
	if err != nil || !changed || set.MinTTL != ca.DefaultMinIntermediateTTL {
		t.Fatalf("SetPolicy = %+v, %v, %v", set, changed, err)
	}
	if _, changed, err := svc.SetPolicy(ca.WithActor(ctx, actor), set); err != nil || changed {
		t.Fatalf("setting the same policy again: changed %v, %v", changed, err)
	}
	entries, err := st.ListAudit(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var sets, denied int
	for _, e := range entries {
		if e.Action == "policy.set" && e.Result == "ok" {
			sets++
			if !strings.Contains(e.Details, `"MaxTTL":172800000000000`) {
				t.Errorf("policy.set details %s do not record the new policy", e.Details)
			}
		}
		if e.Action == "policy.set" && e.Result == "denied" {
			denied++
		}
	}
	if sets != 1 || denied != 1 {
		t.Errorf("audit rows: %d policy.set ok, %d denied; want 1 and 1 (an unchanged policy writes none)", sets, denied)
	}

	// A second service over the same store, made with an empty policy (as
	// the data-dir CLI is), issues under the stored one.
	other, err := ca.NewService(st, km, ca.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := csrFor(t)
	_, err = other.IssueIntermediate(ca.WithActor(ctx, actor), ca.IssueRequest{Cluster: "east", CSR: csr, TTL: 72 * time.Hour})
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), "exceeds the policy maximum 48h0m0s") {
		t.Fatalf("issue for 72h under a stored maximum of 48h: %v", err)
	}
	issued, err := other.IssueIntermediate(ca.WithActor(ctx, actor), ca.IssueRequest{Cluster: "east", CSR: csr})
	if err != nil {
		t.Fatal(err)
	}
	if got := issued.Cert.NotAfter.Sub(issued.Cert.NotBefore); got > 48*time.Hour+ca.DefaultBackdate {
		t.Errorf("default lifetime %s, want the stored default 48h", got)
	}
	if len(issued.Cert.PermittedURIDomains) == 0 {
		t.Error("the stored policy's trust-domain constraint was not applied")
	}

	// A corrupt stored policy stops issuance rather than falling back.
	if err := st.Update(ctx, func(tx store.Tx) error { return tx.SetMeta(ctx, ca.MetaPolicy, `{"MaxTTL":-1}`) }); err != nil {
		t.Fatal(err)
	}
	if _, err := other.IssueIntermediate(ca.WithActor(ctx, actor), ca.IssueRequest{Cluster: "east", CSR: csr}); err == nil || !strings.Contains(err.Error(), "stored intermediate policy") {
		t.Errorf("issue under a corrupt stored policy: %v", err)
	}
}
