// Package storetest is the conformance suite every store.Store
// implementation must pass.
//
// Call Run from a test in the implementation's package:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store {
//			s, err := Open(t.Context(), filepath.Join(t.TempDir(), "meshroot.db"))
//			if err != nil {
//				t.Fatal(err)
//			}
//			t.Cleanup(func() { s.Close() })
//			return s
//		})
//	}
//
// Beyond what the doc comments in package store say, the suite holds
// implementations to these conventions:
//
//   - Times round-trip as the same instant (time.Time.Equal), to the
//     nanosecond; the zero time round-trips as the zero time.
//   - Byte slices round-trip by content: nil and empty are not told apart.
//   - A cluster's Auth.ServiceAccounts with no entries, nil or empty, reads
//     back as nil.
//   - A join token whose ExpiresAt is zero counts as expired.
//   - A federation peer's Bundle with no bytes, nil or empty, reads back as
//     nil (no bundle yet), whether given to CreateFederationPeer or to
//     SetFederatedBundle.
package storetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshroot/meshroot/store"
)

// Run runs the conformance suite. open must return a new, empty store for
// each call; it should register its own cleanup with t.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"Roots", testRoots},
		{"RootsOldestFirst", testRootsOldestFirst},
		{"UpdateRootState", testUpdateRootState},
		{"UpdateRootStateConflict", testUpdateRootStateConflict},
		{"ConcurrentUpdateRootState", testConcurrentUpdateRootState},
		{"Clusters", testClusters},
		{"DeleteCluster", testDeleteCluster},
		{"Intermediates", testIntermediates},
		{"UpdateIntermediateStatus", testUpdateIntermediateStatus},
		{"SupersedeIntermediates", testSupersedeIntermediates},
		{"RevokeClusterIntermediates", testRevokeClusterIntermediates},
		{"TxReadsOwnWrites", testTxReadsOwnWrites},
		{"UpdateRollsBackOnError", testUpdateRollsBackOnError},
		{"UpdateRollsBackOnPanic", testUpdateRollsBackOnPanic},
		{"BundleSequence", testBundleSequence},
		{"AppendAudit", testAppendAudit},
		{"ListAuditPaging", testListAuditPaging},
		{"ConcurrentAppendAudit", testConcurrentAppendAudit},
		{"Meta", testMeta},
		{"ClusterAuthAndStatus", testClusterAuthAndStatus},
		{"ClusterNoServiceAccounts", testClusterNoServiceAccounts},
		{"UpdateClusterStatus", testUpdateClusterStatus},
		{"JoinTokens", testJoinTokens},
		{"UseJoinToken", testUseJoinToken},
		{"ConcurrentUseJoinToken", testConcurrentUseJoinToken},
		{"DeleteExpiredJoinTokens", testDeleteExpiredJoinTokens},
		{"DeleteClusterDeletesJoinTokens", testDeleteClusterDeletesJoinTokens},
		{"FederationPeers", testFederationPeers},
		{"FederationPeersOrdered", testFederationPeersOrdered},
		{"FederationPeerNoBundle", testFederationPeerNoBundle},
		{"DeleteFederationPeer", testDeleteFederationPeer},
		{"SetFederatedBundle", testSetFederatedBundle},
		{"UpdateFederationStatus", testUpdateFederationStatus},
		{"FederationRollsBack", testFederationRollsBack},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fn(t, open(t))
		})
	}
}

// base is a fixed instant with a fractional second and a non-UTC zone, so
// that round-trips must keep nanoseconds and the instant.
var base = time.Date(2031, time.March, 4, 5, 6, 7, 123456789, time.FixedZone("UTC+2", 2*3600))

func sampleRoot(id string, createdAt time.Time) store.Root {
	return store.Root{
		ID:          id,
		TrustDomain: "example.org",
		State:       store.RootActive,
		KeyRef:      "key-" + id,
		ChainPEM:    []byte("-----BEGIN CERTIFICATE-----\n" + id + "\n-----END CERTIFICATE-----\n"),
		NotAfter:    createdAt.Add(365 * 24 * time.Hour),
		CreatedAt:   createdAt,
		// Every field set, so that round trips check them all.
		CrossPEM:      []byte("-----BEGIN CERTIFICATE-----\ncross-" + id + "\n-----END CERTIFICATE-----\n"),
		AddedSequence: 7,
	}
}

func sampleIntermediate(serial, cluster, rootID string, createdAt time.Time) store.Intermediate {
	return store.Intermediate{
		Serial:    serial,
		Cluster:   cluster,
		RootID:    rootID,
		NotBefore: createdAt.Add(-time.Minute),
		NotAfter:  createdAt.Add(48 * time.Hour),
		Status:    store.IntermediateActive,
		CertPEM:   []byte("cert " + serial),
		CreatedAt: createdAt,
	}
}

// update runs fn in s.Update and fails the test when it returns an error.
func update(t *testing.T, s store.Store, fn func(tx store.Tx) error) {
	t.Helper()
	if err := s.Update(t.Context(), fn); err != nil {
		t.Fatalf("Update: %v", err)
	}
}

// wantErr fails unless err wraps target and its message names key.
func wantErr(t *testing.T, what string, err, target error, key string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: got error %v, want one wrapping %q", what, err, target)
	}
	if !strings.Contains(err.Error(), key) {
		t.Errorf("%s: error %q does not name %q", what, err, key)
	}
}

func ctx(t *testing.T) context.Context { return t.Context() }

func testRoots(t *testing.T, s store.Store) {
	want := sampleRoot("r1", base)
	update(t, s, func(tx store.Tx) error { return tx.CreateRoot(ctx(t), want) })

	got, err := s.GetRoot(ctx(t), "r1")
	if err != nil {
		t.Fatalf("GetRoot: %v", err)
	}
	checkRoot(t, got, want)

	_, err = s.GetRoot(ctx(t), "missing")
	wantErr(t, "GetRoot(missing)", err, store.ErrNotFound, "missing")

	err = s.Update(ctx(t), func(tx store.Tx) error { return tx.CreateRoot(ctx(t), sampleRoot("r1", base)) })
	wantErr(t, "CreateRoot(duplicate)", err, store.ErrAlreadyExists, "r1")
}

func testRootsOldestFirst(t *testing.T, s store.Store) {
	// Inserted newest first. The whole-second time and the times around it
	// catch implementations that sort times as trimmed RFC 3339 text.
	whole := base.Truncate(time.Second)
	roots := []store.Root{
		sampleRoot("c", whole.Add(2*time.Second)),
		sampleRoot("b", whole.Add(500*time.Millisecond)),
		sampleRoot("a", whole),
		sampleRoot("z", whole.Add(-time.Nanosecond)),
	}
	update(t, s, func(tx store.Tx) error {
		for _, r := range roots {
			if err := tx.CreateRoot(ctx(t), r); err != nil {
				return err
			}
		}
		return nil
	})
	got, err := s.ListRoots(ctx(t))
	if err != nil {
		t.Fatalf("ListRoots: %v", err)
	}
	if ids := rootIDs(got); ids != "z,a,b,c" {
		t.Fatalf("ListRoots order = %s, want z,a,b,c (oldest CreatedAt first)", ids)
	}
	for i, want := range []store.Root{roots[3], roots[2], roots[1], roots[0]} {
		checkRoot(t, got[i], want)
	}
}

func testClusters(t *testing.T, s store.Store) {
	clusters := []store.Cluster{
		{Name: "west", TrustDomain: "west.example.org", CreatedAt: base},
		{Name: "east", TrustDomain: "east.example.org", CreatedAt: base.Add(time.Hour)},
		{Name: "central", TrustDomain: "central.example.org", CreatedAt: base.Add(-time.Hour)},
	}
	update(t, s, func(tx store.Tx) error {
		for _, c := range clusters {
			if err := tx.CreateCluster(ctx(t), c); err != nil {
				return err
			}
		}
		return nil
	})
	got, err := s.GetCluster(ctx(t), "east")
	if err != nil {
		t.Fatalf("GetCluster: %v", err)
	}
	checkCluster(t, got, clusters[1])

	list, err := s.ListClusters(ctx(t))
	if err != nil {
		t.Fatalf("ListClusters: %v", err)
	}
	if len(list) != 3 {
		t.Fatalf("ListClusters returned %d clusters, want 3", len(list))
	}
	for i, want := range []store.Cluster{clusters[2], clusters[1], clusters[0]} {
		checkCluster(t, list[i], want)
	}

	_, err = s.GetCluster(ctx(t), "north")
	wantErr(t, "GetCluster(missing)", err, store.ErrNotFound, "north")

	err = s.Update(ctx(t), func(tx store.Tx) error { return tx.CreateCluster(ctx(t), clusters[0]) })
	wantErr(t, "CreateCluster(duplicate)", err, store.ErrAlreadyExists, "west")
}

func testDeleteCluster(t *testing.T, s store.Store) {
	update(t, s, func(tx store.Tx) error {
		return tx.CreateCluster(ctx(t), store.Cluster{Name: "east", TrustDomain: "example.org", CreatedAt: base})
	})
	update(t, s, func(tx store.Tx) error { return tx.DeleteCluster(ctx(t), "east") })
	_, err := s.GetCluster(ctx(t), "east")
	wantErr(t, "GetCluster(deleted)", err, store.ErrNotFound, "east")
	list, err := s.ListClusters(ctx(t))
	if err != nil {
		t.Fatalf("ListClusters: %v", err)
	}
	if len(list) != 0 {
		t.Errorf("ListClusters after delete = %v, want none", list)
	}
	err = s.Update(ctx(t), func(tx store.Tx) error { return tx.DeleteCluster(ctx(t), "east") })
	wantErr(t, "DeleteCluster(missing)", err, store.ErrNotFound, "east")

	// The name can be registered again.
	update(t, s, func(tx store.Tx) error {
		return tx.CreateCluster(ctx(t), store.Cluster{Name: "east", TrustDomain: "example.org", CreatedAt: base})
	})
}

// sampleCluster returns a cluster with every Auth and Status field set.
func sampleCluster(name string, createdAt time.Time) store.Cluster {
	return store.Cluster{
		Name:        name,
		TrustDomain: name + ".example.org",
		CreatedAt:   createdAt,
		Auth: store.ClusterAuth{
			Issuer:          "https://kubernetes.default.svc/" + name,
			JWKS:            []byte(`{"keys":[{"kty":"EC","kid":"` + name + `"}]}`),
			OIDCDiscovery:   true,
			CAPEM:           []byte("-----BEGIN CERTIFICATE-----\n" + name + "\n-----END CERTIFICATE-----\n"),
			Kubeconfig:      []byte("apiVersion: v1\nkind: Config\n# " + name + "\n"),
			ServiceAccounts: []string{"meshroot/agent", "istio-system/istiod", "ns/with \"quotes\""},
		},
		Status: store.ClusterStatus{
			LastContact:        createdAt.Add(90*time.Minute + time.Nanosecond),
			BundleSequence:     42,
			IntermediateSerial: "0a1b2c",
		},
	}
}

func testClusterAuthAndStatus(t *testing.T, s store.Store) {
	full := sampleCluster("east", base)
	bare := store.Cluster{Name: "west", TrustDomain: "example.org", CreatedAt: base}
	update(t, s, func(tx store.Tx) error {
		if err := tx.CreateCluster(ctx(t), full); err != nil {
			return err
		}
		return tx.CreateCluster(ctx(t), bare)
	})
	got, err := s.GetCluster(ctx(t), "east")
	if err != nil {
		t.Fatalf("GetCluster: %v", err)
	}
	checkCluster(t, got, full)
	got, err = s.GetCluster(ctx(t), "west")
	if err != nil {
		t.Fatalf("GetCluster: %v", err)
	}
	checkCluster(t, got, bare)
	if !got.Status.LastContact.IsZero() {
		t.Errorf("LastContact of a cluster created without one = %v, want the zero time", got.Status.LastContact)
	}

	list, err := s.ListClusters(ctx(t))
	if err != nil {
		t.Fatalf("ListClusters: %v", err)
	}
	if len(list) != 2 {
		t.Fatalf("ListClusters returned %d clusters, want 2", len(list))
	}
	checkCluster(t, list[0], full)
	checkCluster(t, list[1], bare)
}

func testClusterNoServiceAccounts(t *testing.T, s store.Store) {
	// Both read back as nil (see the package documentation).
	withNil := store.Cluster{Name: "nil", TrustDomain: "example.org", CreatedAt: base}
	withEmpty := store.Cluster{Name: "empty", TrustDomain: "example.org", CreatedAt: base,
		Auth: store.ClusterAuth{ServiceAccounts: []string{}}}
	update(t, s, func(tx store.Tx) error {
		if err := tx.CreateCluster(ctx(t), withNil); err != nil {
			return err
		}
		return tx.CreateCluster(ctx(t), withEmpty)
	})
	for _, name := range []string{"nil", "empty"} {
		got, err := s.GetCluster(ctx(t), name)
		if err != nil {
			t.Fatalf("GetCluster(%q): %v", name, err)
		}
		if got.Auth.ServiceAccounts != nil {
			t.Errorf("cluster %q: ServiceAccounts = %#v, want nil", name, got.Auth.ServiceAccounts)
		}
	}
}

func testUpdateClusterStatus(t *testing.T, s store.Store) {
	c := sampleCluster("east", base)
	update(t, s, func(tx store.Tx) error { return tx.CreateCluster(ctx(t), c) })

	for _, st := range []store.ClusterStatus{
		{LastContact: base.Add(3 * time.Hour), BundleSequence: 43, IntermediateSerial: "0d"},
		{LastContact: base.Add(4 * time.Hour), BundleSequence: 1<<63 - 1, IntermediateSerial: ""},
		{}, // back to zero, LastContact included
	} {
		update(t, s, func(tx store.Tx) error { return tx.UpdateClusterStatus(ctx(t), "east", st) })
		got, err := s.GetCluster(ctx(t), "east")
		if err != nil {
			t.Fatalf("GetCluster: %v", err)
		}
		want := c
		want.Status = st
		checkCluster(t, got, want) // Auth and the rest unchanged
	}

	err := s.Update(ctx(t), func(tx store.Tx) error {
		return tx.UpdateClusterStatus(ctx(t), "north", store.ClusterStatus{LastContact: base, BundleSequence: 1})
	})
	wantErr(t, "UpdateClusterStatus(missing)", err, store.ErrNotFound, "north")
	if _, err := s.GetCluster(ctx(t), "north"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetCluster after UpdateClusterStatus(missing): %v, want ErrNotFound", err)
	}
}

func testIntermediates(t *testing.T, s store.Store) {
	ins := []store.Intermediate{
		sampleIntermediate("0a", "east", "r1", base.Add(3*time.Second)),
		sampleIntermediate("0b", "west", "r1", base.Add(2*time.Second)),
		sampleIntermediate("0c", "east", "r1", base.Add(time.Second)),
	}
	update(t, s, func(tx store.Tx) error {
		if err := tx.CreateRoot(ctx(t), sampleRoot("r1", base)); err != nil {
			return err
		}
		for _, c := range []string{"east", "west"} {
			if err := tx.CreateCluster(ctx(t), store.Cluster{Name: c, TrustDomain: "example.org", CreatedAt: base}); err != nil {
				return err
			}
		}
		for _, in := range ins {
			if err := tx.CreateIntermediate(ctx(t), in); err != nil {
				return err
			}
		}
		return nil
	})

	got, err := s.GetIntermediate(ctx(t), "0b")
	if err != nil {
		t.Fatalf("GetIntermediate: %v", err)
	}
	checkIntermediate(t, got, ins[1])

	for _, tc := range []struct {
		cluster string
		want    []store.Intermediate
	}{
		{"east", []store.Intermediate{ins[2], ins[0]}},
		{"west", []store.Intermediate{ins[1]}},
		{"", []store.Intermediate{ins[2], ins[1], ins[0]}},
		{"north", nil},
	} {
		list, err := s.ListIntermediates(ctx(t), tc.cluster)
		if err != nil {
			t.Fatalf("ListIntermediates(%q): %v", tc.cluster, err)
		}
		if len(list) != len(tc.want) {
			t.Fatalf("ListIntermediates(%q) returned %d, want %d", tc.cluster, len(list), len(tc.want))
		}
		for i := range list {
			checkIntermediate(t, list[i], tc.want[i])
		}
	}

	_, err = s.GetIntermediate(ctx(t), "ff")
	wantErr(t, "GetIntermediate(missing)", err, store.ErrNotFound, "ff")

	err = s.Update(ctx(t), func(tx store.Tx) error { return tx.CreateIntermediate(ctx(t), ins[0]) })
	wantErr(t, "CreateIntermediate(duplicate)", err, store.ErrAlreadyExists, "0a")
}

func testUpdateIntermediateStatus(t *testing.T, s store.Store) {
	update(t, s, func(tx store.Tx) error {
		if err := tx.CreateRoot(ctx(t), sampleRoot("r1", base)); err != nil {
			return err
		}
		return tx.CreateIntermediate(ctx(t), sampleIntermediate("0a", "east", "r1", base))
	})
	update(t, s, func(tx store.Tx) error {
		return tx.UpdateIntermediateStatus(ctx(t), "0a", store.IntermediateSuperseded)
	})
	got, err := s.GetIntermediate(ctx(t), "0a")
	if err != nil {
		t.Fatalf("GetIntermediate: %v", err)
	}
	if got.Status != store.IntermediateSuperseded {
		t.Errorf("Status = %q, want %q", got.Status, store.IntermediateSuperseded)
	}
	err = s.Update(ctx(t), func(tx store.Tx) error {
		return tx.UpdateIntermediateStatus(ctx(t), "ff", store.IntermediateRevoked)
	})
	wantErr(t, "UpdateIntermediateStatus(missing)", err, store.ErrNotFound, "ff")
}

func testSupersedeIntermediates(t *testing.T, s store.Store) {
	a, b, c, d := sampleIntermediate("0a", "east", "r1", base), sampleIntermediate("0b", "east", "r1", base.Add(time.Second)),
		sampleIntermediate("0c", "west", "r1", base), sampleIntermediate("0d", "east", "r1", base.Add(2*time.Second))
	d.Status = store.IntermediateRevoked
	update(t, s, func(tx store.Tx) error {
		if err := tx.CreateRoot(ctx(t), sampleRoot("r1", base)); err != nil {
			return err
		}
		for _, in := range []store.Intermediate{a, b, c, d} {
			if err := tx.CreateIntermediate(ctx(t), in); err != nil {
				return err
			}
		}
		return nil
	})
	var n int
	update(t, s, func(tx store.Tx) error {
		var err error
		n, err = tx.SupersedeIntermediates(ctx(t), "east", base.Add(time.Hour))
		return err
	})
	if n != 2 {
		t.Errorf("SupersedeIntermediates(east) = %d, want 2 (the active ones)", n)
	}
	for serial, want := range map[string]store.IntermediateStatus{
		"0a": store.IntermediateSuperseded, "0b": store.IntermediateSuperseded,
		"0c": store.IntermediateActive, "0d": store.IntermediateRevoked,
	} {
		got, err := s.GetIntermediate(ctx(t), serial)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != want {
			t.Errorf("%s: status %q, want %q", serial, got.Status, want)
		}
		if wantAt := want == store.IntermediateSuperseded; wantAt != got.SupersededAt.Equal(base.Add(time.Hour)) || wantAt == got.SupersededAt.IsZero() {
			t.Errorf("%s: SupersededAt = %v, want %v only when superseded here", serial, got.SupersededAt, base.Add(time.Hour))
		}
	}
}

func testRevokeClusterIntermediates(t *testing.T, s store.Store) {
	a, b, c, d := sampleIntermediate("0a", "east", "r1", base.Add(2*time.Second)), sampleIntermediate("0b", "east", "r1", base),
		sampleIntermediate("0c", "west", "r1", base), sampleIntermediate("0d", "east", "r1", base.Add(time.Second))
	b.Status, d.Status = store.IntermediateSuperseded, store.IntermediateRevoked
	update(t, s, func(tx store.Tx) error {
		if err := tx.CreateRoot(ctx(t), sampleRoot("r1", base)); err != nil {
			return err
		}
		for _, in := range []store.Intermediate{a, b, c, d} {
			if err := tx.CreateIntermediate(ctx(t), in); err != nil {
				return err
			}
		}
		return nil
	})
	var serials []string
	update(t, s, func(tx store.Tx) error {
		var err error
		serials, err = tx.RevokeClusterIntermediates(ctx(t), "east")
		return err
	})
	if !slices.Equal(serials, []string{"0b", "0a"}) {
		t.Errorf("RevokeClusterIntermediates(east) = %q, want [0b 0a] (not yet revoked, oldest first)", serials)
	}
	for serial, want := range map[string]store.IntermediateStatus{
		"0a": store.IntermediateRevoked, "0b": store.IntermediateRevoked,
		"0c": store.IntermediateActive, "0d": store.IntermediateRevoked,
	} {
		got, err := s.GetIntermediate(ctx(t), serial)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != want {
			t.Errorf("%s: status %q, want %q", serial, got.Status, want)
		}
	}
	update(t, s, func(tx store.Tx) error {
		var err error
		serials, err = tx.RevokeClusterIntermediates(ctx(t), "nowhere")
		return err
	})
	if len(serials) != 0 {
		t.Errorf("RevokeClusterIntermediates(nowhere) = %q, want none", serials)
	}
}

func testTxReadsOwnWrites(t *testing.T, s store.Store) {
	update(t, s, func(tx store.Tx) error {
		if err := tx.CreateCluster(ctx(t), store.Cluster{Name: "east", TrustDomain: "example.org", CreatedAt: base}); err != nil {
			return err
		}
		if _, err := tx.GetCluster(ctx(t), "east"); err != nil {
			return fmt.Errorf("GetCluster inside the transaction: %w", err)
		}
		if _, err := tx.IncrementBundleSequence(ctx(t)); err != nil {
			return err
		}
		if n, err := tx.BundleSequence(ctx(t)); err != nil || n != 1 {
			return fmt.Errorf("BundleSequence inside the transaction = %d, %v; want 1", n, err)
		}
		if err := tx.SetMeta(ctx(t), "k", "v"); err != nil {
			return err
		}
		if v, err := tx.Meta(ctx(t), "k"); err != nil || v != "v" {
			return fmt.Errorf("Meta inside the transaction = %q, %v; want \"v\"", v, err)
		}
		if err := tx.CreateJoinToken(ctx(t), sampleJoinToken("t1", "east", base)); err != nil {
			return err
		}
		if err := tx.UseJoinToken(ctx(t), "t1", base); err != nil {
			return err
		}
		if jt, err := tx.GetJoinToken(ctx(t), "t1"); err != nil || !jt.UsedAt.Equal(base) {
			return fmt.Errorf("GetJoinToken inside the transaction = %+v, %v; want UsedAt %v", jt, err, base)
		}
		return nil
	})
}

// writeEverything writes one of each kind of record in tx.
func writeEverything(t *testing.T, tx store.Tx) error {
	if err := tx.CreateRoot(ctx(t), sampleRoot("r1", base)); err != nil {
		return err
	}
	if err := tx.CreateCluster(ctx(t), store.Cluster{Name: "east", TrustDomain: "example.org", CreatedAt: base}); err != nil {
		return err
	}
	if err := tx.CreateIntermediate(ctx(t), sampleIntermediate("0a", "east", "r1", base)); err != nil {
		return err
	}
	if _, err := tx.IncrementBundleSequence(ctx(t)); err != nil {
		return err
	}
	if _, err := tx.AppendAudit(ctx(t), store.AuditEntry{Time: base, Actor: "test", Action: "x", Result: "ok", Details: "{}"}); err != nil {
		return err
	}
	if err := tx.CreateJoinToken(ctx(t), sampleJoinToken("t1", "east", base)); err != nil {
		return err
	}
	if err := tx.CreateFederationPeer(ctx(t), sampleFederationPeer("partner.example", base)); err != nil {
		return err
	}
	return tx.SetMeta(ctx(t), "k", "v")
}

// checkNothingLanded fails if any record written by writeEverything exists.
func checkNothingLanded(t *testing.T, s store.Store) {
	t.Helper()
	if _, err := s.GetRoot(ctx(t), "r1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetRoot after rollback: %v, want ErrNotFound", err)
	}
	if _, err := s.GetCluster(ctx(t), "east"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetCluster after rollback: %v, want ErrNotFound", err)
	}
	if _, err := s.GetIntermediate(ctx(t), "0a"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetIntermediate after rollback: %v, want ErrNotFound", err)
	}
	if n, err := s.BundleSequence(ctx(t)); err != nil || n != 0 {
		t.Errorf("BundleSequence after rollback = %d, %v; want 0", n, err)
	}
	if entries, err := s.ListAudit(ctx(t), 0, 0); err != nil || len(entries) != 0 {
		t.Errorf("ListAudit after rollback = %d entries, %v; want none", len(entries), err)
	}
	if v, err := s.Meta(ctx(t), "k"); err != nil || v != "" {
		t.Errorf("Meta after rollback = %q, %v; want \"\"", v, err)
	}
	if _, err := s.GetJoinToken(ctx(t), "t1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetJoinToken after rollback: %v, want ErrNotFound", err)
	}
	if _, err := s.GetFederationPeer(ctx(t), "partner.example"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetFederationPeer after rollback: %v, want ErrNotFound", err)
	}
	if list, err := s.ListFederationPeers(ctx(t)); err != nil || len(list) != 0 {
		t.Errorf("ListFederationPeers after rollback = %d peers, %v; want none", len(list), err)
	}
}

// checkStillWorks fails unless s accepts a write after a rolled back one.
func checkStillWorks(t *testing.T, s store.Store) {
	t.Helper()
	update(t, s, func(tx store.Tx) error { return writeEverything(t, tx) })
	if _, err := s.GetCluster(ctx(t), "east"); err != nil {
		t.Errorf("GetCluster after a successful Update: %v", err)
	}
	e, err := s.ListAudit(ctx(t), 0, 0)
	if err != nil || len(e) != 1 || e[0].Seq != 1 {
		t.Errorf("ListAudit after rollback then commit = %v, %v; want one entry with seq 1", e, err)
	}
}

func testUpdateRollsBackOnError(t *testing.T, s store.Store) {
	errBoom := errors.New("boom")
	err := s.Update(ctx(t), func(tx store.Tx) error {
		if err := writeEverything(t, tx); err != nil {
			return err
		}
		return errBoom
	})
	if !errors.Is(err, errBoom) {
		t.Fatalf("Update returned %v, want the error fn returned", err)
	}
	checkNothingLanded(t, s)
	checkStillWorks(t, s)
}

func testUpdateRollsBackOnPanic(t *testing.T, s store.Store) {
	var writeErr error
	recovered := func() (p any) {
		defer func() { p = recover() }()
		_ = s.Update(ctx(t), func(tx store.Tx) error {
			if writeErr = writeEverything(t, tx); writeErr != nil {
				return writeErr
			}
			panic("boom")
		})
		return nil
	}()
	if writeErr != nil {
		t.Fatalf("writes before the panic: %v", writeErr)
	}
	if recovered != "boom" {
		t.Fatalf("Update did not re-panic with fn's value: recovered %v", recovered)
	}
	checkNothingLanded(t, s)
	checkStillWorks(t, s)
}

func testBundleSequence(t *testing.T, s store.Store) {
	if n, err := s.BundleSequence(ctx(t)); err != nil || n != 0 {
		t.Fatalf("BundleSequence of a new store = %d, %v; want 0", n, err)
	}
	var want uint64
	for range 3 {
		want++
		update(t, s, func(tx store.Tx) error {
			n, err := tx.IncrementBundleSequence(ctx(t))
			if err != nil {
				return err
			}
			if n != want {
				t.Errorf("IncrementBundleSequence = %d, want %d", n, want)
			}
			return nil
		})
	}
	update(t, s, func(tx store.Tx) error {
		for range 2 {
			want++
			n, err := tx.IncrementBundleSequence(ctx(t))
			if err != nil {
				return err
			}
			if n != want {
				t.Errorf("IncrementBundleSequence (same transaction) = %d, want %d", n, want)
			}
		}
		return nil
	})
	if n, err := s.BundleSequence(ctx(t)); err != nil || n != want {
		t.Errorf("BundleSequence = %d, %v; want %d", n, err, want)
	}
}

func testAppendAudit(t *testing.T, s store.Store) {
	in := []store.AuditEntry{
		{Time: base, Actor: "cli:uid=1000", Action: "root.init", Target: "r1", Result: "ok", Details: `{"trust_domain":"example.org"}`},
		{Time: base.Add(time.Nanosecond), Actor: "cluster:east", Action: "intermediate.issue", Target: "0a", Result: "ok", Details: `{}`},
		{Time: base.Add(time.Second), Actor: "cluster:west", Action: "intermediate.issue", Target: "", Result: "denied", Details: `{"reason":"unknown cluster"}`},
	}
	var appended []store.AuditEntry
	for i, e := range in {
		update(t, s, func(tx store.Tx) error {
			got, err := tx.AppendAudit(ctx(t), e)
			if err != nil {
				return err
			}
			appended = append(appended, got)
			return nil
		})
		got := appended[i]
		if got.Seq != int64(i+1) {
			t.Errorf("entry %d: Seq = %d, want %d", i, got.Seq, i+1)
		}
		wantPrev := ""
		if i > 0 {
			wantPrev = appended[i-1].Hash
		}
		if got.PrevHash != wantPrev {
			t.Errorf("entry %d: PrevHash = %q, want %q", i, got.PrevHash, wantPrev)
		}
		if want := store.ChainHash(got.PrevHash, got); got.Hash != want {
			t.Errorf("entry %d: Hash = %q, want ChainHash = %q", i, got.Hash, want)
		}
		checkAudit(t, got, store.AuditEntry{Seq: got.Seq, Time: e.Time, Actor: e.Actor, Action: e.Action,
			Target: e.Target, Result: e.Result, Details: e.Details, PrevHash: got.PrevHash, Hash: got.Hash})
	}

	list, err := s.ListAudit(ctx(t), 0, 0)
	if err != nil {
		t.Fatalf("ListAudit: %v", err)
	}
	if len(list) != len(appended) {
		t.Fatalf("ListAudit returned %d entries, want %d", len(list), len(appended))
	}
	for i := range list {
		checkAudit(t, list[i], appended[i])
	}
	if err := store.VerifyChain(list, nil); err != nil {
		t.Errorf("VerifyChain: %v", err)
	}
	checkVerifier(t, s)
}

func testListAuditPaging(t *testing.T, s store.Store) {
	update(t, s, func(tx store.Tx) error {
		for i := range 5 {
			if _, err := tx.AppendAudit(ctx(t), store.AuditEntry{Time: base, Actor: "test", Action: "a", Target: fmt.Sprint(i), Result: "ok", Details: "{}"}); err != nil {
				return err
			}
		}
		return nil
	})
	for _, tc := range []struct {
		after int64
		limit int
		want  []int64
	}{
		{0, 0, []int64{1, 2, 3, 4, 5}},
		{0, -1, []int64{1, 2, 3, 4, 5}},
		{0, 2, []int64{1, 2}},
		{2, 2, []int64{3, 4}},
		{4, 10, []int64{5}},
		{5, 0, nil},
	} {
		list, err := s.ListAudit(ctx(t), tc.after, tc.limit)
		if err != nil {
			t.Fatalf("ListAudit(%d, %d): %v", tc.after, tc.limit, err)
		}
		var seqs []int64
		for _, e := range list {
			seqs = append(seqs, e.Seq)
		}
		if fmt.Sprint(seqs) != fmt.Sprint(tc.want) {
			t.Errorf("ListAudit(%d, %d) seqs = %v, want %v", tc.after, tc.limit, seqs, tc.want)
		}
	}
}

func testConcurrentAppendAudit(t *testing.T, s store.Store) {
	const goroutines, perGoroutine = 8, 25
	var (
		wg   sync.WaitGroup
		done = make(chan struct{})
	)
	// A reader runs throughout: reads must not fail while writes happen.
	readerDone := make(chan error, 1)
	go func() {
		for {
			select {
			case <-done:
				readerDone <- nil
				return
			default:
			}
			if _, err := s.ListAudit(ctx(t), 0, 10); err != nil {
				readerDone <- fmt.Errorf("ListAudit during appends: %w", err)
				return
			}
			if _, err := s.BundleSequence(ctx(t)); err != nil {
				readerDone <- fmt.Errorf("BundleSequence during appends: %w", err)
				return
			}
		}
	}()
	for g := range goroutines {
		wg.Go(func() {
			for i := range perGoroutine {
				err := s.Update(ctx(t), func(tx store.Tx) error {
					_, err := tx.AppendAudit(ctx(t), store.AuditEntry{
						Time: time.Now(), Actor: fmt.Sprintf("g%d", g), Action: "test.append",
						Target: fmt.Sprint(i), Result: "ok", Details: "{}",
					})
					return err
				})
				if err != nil {
					t.Errorf("goroutine %d append %d: %v", g, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(done)
	if err := <-readerDone; err != nil {
		t.Error(err)
	}

	list, err := s.ListAudit(ctx(t), 0, 0)
	if err != nil {
		t.Fatalf("ListAudit: %v", err)
	}
	if len(list) != goroutines*perGoroutine {
		t.Fatalf("ListAudit returned %d entries, want %d", len(list), goroutines*perGoroutine)
	}
	seen := make(map[string]bool)
	for i, e := range list {
		if e.Seq != int64(i+1) {
			t.Fatalf("entry %d has Seq %d, want %d", i, e.Seq, i+1)
		}
		key := e.Actor + "/" + e.Target
		if seen[key] {
			t.Errorf("entry %s appended twice", key)
		}
		seen[key] = true
	}
	if err := store.VerifyChain(list, nil); err != nil {
		t.Errorf("VerifyChain: %v", err)
	}
	checkVerifier(t, s)
}

func testMeta(t *testing.T, s store.Store) {
	if v, err := s.Meta(ctx(t), "unset"); err != nil || v != "" {
		t.Fatalf("Meta(unset) = %q, %v; want \"\", nil", v, err)
	}
	update(t, s, func(tx store.Tx) error {
		if err := tx.SetMeta(ctx(t), "a", "1"); err != nil {
			return err
		}
		return tx.SetMeta(ctx(t), "b", "two words\nand a line")
	})
	update(t, s, func(tx store.Tx) error { return tx.SetMeta(ctx(t), "a", "3") })
	for key, want := range map[string]string{"a": "3", "b": "two words\nand a line"} {
		if v, err := s.Meta(ctx(t), key); err != nil || v != want {
			t.Errorf("Meta(%q) = %q, %v; want %q", key, v, err, want)
		}
	}
}

// checkVerifier runs VerifyAudit when s implements store.AuditVerifier.
func checkVerifier(t *testing.T, s store.Store) {
	t.Helper()
	if v, ok := s.(store.AuditVerifier); ok {
		if err := v.VerifyAudit(ctx(t)); err != nil {
			t.Errorf("VerifyAudit: %v", err)
		}
	}
	// A store that verifies row by row counts every row it checked.
	if _, ok := s.(store.AuditRowVerifier); ok {
		n, err := store.VerifyAuditLog(ctx(t), s)
		all, lerr := s.ListAudit(ctx(t), 0, 0)
		if err != nil || lerr != nil || n != int64(len(all)) {
			t.Errorf("VerifyAuditLog = %d rows, %v; the log has %d rows (%v)", n, err, len(all), lerr)
		}
	}
}

func rootIDs(roots []store.Root) string {
	ids := make([]string, len(roots))
	for i, r := range roots {
		ids[i] = r.ID
	}
	return strings.Join(ids, ",")
}

func checkRoot(t *testing.T, got, want store.Root) {
	t.Helper()
	if got.ID != want.ID || got.TrustDomain != want.TrustDomain || got.State != want.State ||
		got.KeyRef != want.KeyRef || !bytes.Equal(got.ChainPEM, want.ChainPEM) ||
		!got.NotAfter.Equal(want.NotAfter) || !got.CreatedAt.Equal(want.CreatedAt) ||
		!bytes.Equal(got.CrossPEM, want.CrossPEM) || got.AddedSequence != want.AddedSequence || !got.StateChangedAt.Equal(want.StateChangedAt) {
		t.Errorf("root mismatch:\n got %+v\nwant %+v", got, want)
	}
}

// checkCluster compares every field. A want with no service accounts
// requires got.Auth.ServiceAccounts to be nil.
func checkCluster(t *testing.T, got, want store.Cluster) {
	t.Helper()
	ga, wa := got.Auth, want.Auth
	if got.Name != want.Name || got.TrustDomain != want.TrustDomain || !got.CreatedAt.Equal(want.CreatedAt) ||
		ga.Issuer != wa.Issuer || !bytes.Equal(ga.JWKS, wa.JWKS) || ga.OIDCDiscovery != wa.OIDCDiscovery || !bytes.Equal(ga.CAPEM, wa.CAPEM) ||
		!bytes.Equal(ga.Kubeconfig, wa.Kubeconfig) || !slices.Equal(ga.ServiceAccounts, wa.ServiceAccounts) ||
		(len(wa.ServiceAccounts) == 0 && ga.ServiceAccounts != nil) {
		// Auth holds a credential (Kubeconfig): print only what differs.
		t.Errorf("cluster %q mismatch:\n got name %q trust domain %q created %v auth %s\nwant name %q trust domain %q created %v auth %s",
			want.Name, got.Name, got.TrustDomain, got.CreatedAt, describeAuth(ga),
			want.Name, want.TrustDomain, want.CreatedAt, describeAuth(wa))
	}
	checkClusterStatus(t, want.Name, got.Status, want.Status)
}

// describeAuth describes a without printing the kubeconfig.
func describeAuth(a store.ClusterAuth) string {
	return fmt.Sprintf("{Issuer:%q JWKS:%q OIDCDiscovery:%v CAPEM:%q Kubeconfig:(%d bytes, sha256 %x) ServiceAccounts:%#v}",
		a.Issuer, a.JWKS, a.OIDCDiscovery, a.CAPEM, len(a.Kubeconfig), sha256.Sum256(a.Kubeconfig), a.ServiceAccounts)
}

func checkClusterStatus(t *testing.T, cluster string, got, want store.ClusterStatus) {
	t.Helper()
	if !got.LastContact.Equal(want.LastContact) || got.BundleSequence != want.BundleSequence ||
		got.IntermediateSerial != want.IntermediateSerial {
		t.Errorf("cluster %q status mismatch:\n got %+v\nwant %+v", cluster, got, want)
	}
}

func checkJoinToken(t *testing.T, got, want store.JoinToken) {
	t.Helper()
	if got.ID != want.ID || got.Cluster != want.Cluster || !bytes.Equal(got.SecretHash, want.SecretHash) ||
		!got.CreatedAt.Equal(want.CreatedAt) || !got.ExpiresAt.Equal(want.ExpiresAt) || !got.UsedAt.Equal(want.UsedAt) {
		t.Errorf("join token mismatch:\n got %+v\nwant %+v", got, want)
	}
}

func checkIntermediate(t *testing.T, got, want store.Intermediate) {
	t.Helper()
	if got.Serial != want.Serial || got.Cluster != want.Cluster || got.RootID != want.RootID ||
		!got.NotBefore.Equal(want.NotBefore) || !got.NotAfter.Equal(want.NotAfter) ||
		got.Status != want.Status || !bytes.Equal(got.CertPEM, want.CertPEM) || !got.CreatedAt.Equal(want.CreatedAt) ||
		!got.SupersededAt.Equal(want.SupersededAt) {
		t.Errorf("intermediate mismatch:\n got %+v\nwant %+v", got, want)
	}
}

func checkAudit(t *testing.T, got, want store.AuditEntry) {
	t.Helper()
	if got.Seq != want.Seq || !got.Time.Equal(want.Time) || got.Actor != want.Actor || got.Action != want.Action ||
		got.Target != want.Target || got.Result != want.Result || got.Details != want.Details ||
		got.PrevHash != want.PrevHash || got.Hash != want.Hash {
		t.Errorf("audit entry mismatch:\n got %+v\nwant %+v", got, want)
	}
}
