package ca_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/keys"
	"github.com/meshroot/meshroot/store"
)

// interleaved is a store's Updater that runs a function, once, when the
// next write transaction is asked for, before it starts: a change another
// caller commits between a method's reads and its transaction.
type interleaved struct {
	store.Updater
	mu      sync.Mutex
	between func()
}

// before arms f to run before the next Update.
func (u *interleaved) before(f func()) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.between = f
}

func (u *interleaved) Update(ctx context.Context, fn func(store.Tx) error) error {
	u.mu.Lock()
	f := u.between
	u.between = nil
	u.mu.Unlock()
	if f != nil {
		f()
	}
	return u.Updater.Update(ctx, fn)
}

// newInterleavedService is newServiceWithCluster("east") over a store
// whose writes can be interleaved.
func newInterleavedService(t *testing.T) (*ca.Service, store.Store, *interleaved) {
	t.Helper()
	u := &interleaved{}
	svc, st := newServiceOver(t, func(st store.Store) store.Store {
		u.Updater, st.Updater = st.Updater, u
		return st
	})
	addRootAndCluster(t, svc, "east")
	return svc, st, u
}

// An issuance keeps what changed in the cluster's status while it
// signed: an operator's gate and an agent's report committed between its
// read of the cluster and its transaction are not put back to what it
// read.
func TestIssueKeepsStatusChangedMeanwhile(t *testing.T) {
	ctx := ca.WithActor(context.Background(), actor)
	svc, st, u := newInterleavedService(t)
	reg, err := st.GetCluster(ctx, "east")
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := csrFor(t)
	u.before(func() {
		if err := svc.SetClusterGate(ctx, "east", store.GateIstiod); err != nil {
			t.Error(err)
		}
		if err := svc.Report(ctx, ca.StatusReport{Cluster: "east", BundleSequence: 1, AppliedCRLs: map[string]uint64{}}); err != nil {
			t.Error(err)
		}
	})
	out, err := svc.IssueIntermediate(ctx, ca.IssueRequest{Cluster: "east", CSR: csr, Registered: &reg})
	if err != nil {
		t.Fatal(err)
	}
	got, err := st.GetCluster(ctx, "east")
	if err != nil {
		t.Fatal(err)
	}
	if got.Status.Gate != store.GateIstiod {
		t.Errorf("gate %q after the issuance, want the istiod gate set while it signed", got.Status.Gate)
	}
	if got.Status.BundleSequence != 1 || got.Status.AppliedCRLs == nil {
		t.Errorf("status %+v: the report recorded while the issuance signed was put back", got.Status)
	}
	if got.Status.IntermediateSerial != ca.SerialHex(out.Cert.SerialNumber) {
		t.Errorf("status names intermediate %s, want the one issued", got.Status.IntermediateSerial)
	}
}

// An intermediate signed under a policy that was replaced before the
// issuance committed is not recorded: the caller retries under the new
// one.
func TestIssueRefusedWhenPolicyChangedMeanwhile(t *testing.T) {
	ctx := ca.WithActor(context.Background(), actor)
	svc, _, u := newInterleavedService(t)
	csr, _ := csrFor(t)
	u.before(func() {
		if _, _, err := svc.SetPolicy(ctx, ca.Policy{AllowedKeyTypes: []keys.KeyType{keys.ECP384}}); err != nil {
			t.Error(err)
		}
	})
	_, err := svc.IssueIntermediate(ctx, ca.IssueRequest{Cluster: "east", CSR: csr})
	if err == nil || !strings.Contains(err.Error(), "policy was changed during issuance") {
		t.Fatalf("issuance across a policy change: err = %v, want a refusal to retry", err)
	}
	ints, err := svc.ListIntermediates(ctx, "east")
	if err != nil || len(ints) != 0 {
		t.Fatalf("intermediates recorded: %d, %v; want none", len(ints), err)
	}
	// The retry runs under the new policy, which refuses a P-256 CSR.
	if _, err := svc.IssueIntermediate(ctx, ca.IssueRequest{Cluster: "east", CSR: csr}); err == nil {
		t.Fatal("the retry issued for a key type the new policy refuses")
	}
	// A policy stored again unchanged is no change.
	if _, _, err := svc.SetPolicy(ctx, ca.Policy{}); err != nil {
		t.Fatal(err)
	}
	u.before(func() {
		if _, _, err := svc.SetPolicy(ctx, ca.Policy{}); err != nil {
			t.Error(err)
		}
	})
	if _, err := svc.IssueIntermediate(ctx, ca.IssueRequest{Cluster: "east", CSR: csr}); err != nil {
		t.Fatalf("issuance with the same policy stored again meanwhile: %v", err)
	}
}

// A join token asked for a registration that was removed, and its name
// registered again, before the token was stored is not made: it would
// have let the new registration join with a token issued for the old.
func TestJoinTokenForRegistrationRemovedMeanwhile(t *testing.T) {
	ctx := ca.WithActor(context.Background(), actor)
	svc, st, u := newInterleavedService(t)
	var minted []store.JoinToken
	svc.SetJoinTokenMinter(func(cluster string, ttl time.Duration, now time.Time) (string, store.JoinToken, error) {
		t := store.JoinToken{ID: "tok" + string(rune('a'+len(minted))), Cluster: cluster, SecretHash: make([]byte, 32), CreatedAt: now, ExpiresAt: now.Add(ttl)}
		minted = append(minted, t)
		return t.ID, t, nil
	})
	u.before(func() {
		if err := svc.RemoveCluster(ctx, "east"); err != nil {
			t.Error(err)
		}
		time.Sleep(2 * time.Millisecond) // a new registration time
		if _, err := svc.AddCluster(ctx, ca.AddClusterRequest{Name: "east"}); err != nil {
			t.Error(err)
		}
	})
	_, err := svc.CreateJoinToken(ctx, ca.JoinTokenRequest{Cluster: "east", TTL: time.Hour})
	if err == nil || !strings.Contains(err.Error(), "registered again") {
		t.Fatalf("join token across a re-registration: err = %v, want a refusal", err)
	}
	if _, err := st.GetJoinToken(ctx, minted[0].ID); err == nil {
		t.Fatal("the token minted for the removed registration was stored")
	}
	wantAudit(t, st, "token.create", "denied", 1)
	// Asked again, for the registration that is there now: made.
	if _, err := svc.CreateJoinToken(ctx, ca.JoinTokenRequest{Cluster: "east", TTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetJoinToken(ctx, minted[1].ID); err != nil {
		t.Fatalf("the token asked for the current registration: %v", err)
	}
}

// A revocation that finds the intermediate revoked by the time it
// commits (a quarantine, another revoke) changes nothing: the first
// reason stays.
func TestRevokeIntermediateRevokedMeanwhile(t *testing.T) {
	ctx := ca.WithActor(context.Background(), actor)
	svc, st, u := newInterleavedService(t)
	csr, _ := csrFor(t)
	out, err := svc.IssueIntermediate(ctx, ca.IssueRequest{Cluster: "east", CSR: csr})
	if err != nil {
		t.Fatal(err)
	}
	serial := ca.SerialHex(out.Cert.SerialNumber)
	u.before(func() {
		if _, err := svc.QuarantineCluster(ctx, ca.QuarantineRequest{Cluster: "east", Reason: "key leaked"}); err != nil {
			t.Error(err)
		}
	})
	if _, err := svc.RevokeIntermediate(ctx, serial, "superseded"); err != nil {
		t.Fatal(err)
	}
	revs, err := st.ListRevocations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range revs {
		if r.Serial == serial {
			found = true
			if r.Reason != ca.ReasonCACompromise {
				t.Errorf("revocation reason %d, want the quarantine's cACompromise (%d)", r.Reason, ca.ReasonCACompromise)
			}
		}
	}
	if !found {
		t.Fatal("the intermediate is not on the revocation list")
	}
	wantAudit(t, st, "intermediate.revoke", "ok", 0)
}
