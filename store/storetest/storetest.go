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
//   - Every concern's interface in the Store, and in the Tx that Update
//     hands out, is set; the audit log verifies (AuditVerifier).
//   - Update after Close fails without running its fn.
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
	"context"
	"errors"
	"reflect"
	"strings"
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
		{"EveryConcernImplemented", testEveryConcernImplemented},
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
		{"RegisteredIntermediate", testRegisteredIntermediate},
		{"TxReadsOwnWrites", testTxReadsOwnWrites},
		{"UpdateRollsBackOnError", testUpdateRollsBackOnError},
		{"UpdateRollsBackOnPanic", testUpdateRollsBackOnPanic},
		{"BundleSequence", testBundleSequence},
		{"AppendAudit", testAppendAudit},
		{"ListAuditPaging", testListAuditPaging},
		{"ConcurrentAppendAudit", testConcurrentAppendAudit},
		{"VerifyEmptyAudit", testVerifyEmptyAudit},
		{"Meta", testMeta},
		{"AdminCerts", testAdminCerts},
		{"ClusterAuthAndStatus", testClusterAuthAndStatus},
		{"ClusterNoServiceAccounts", testClusterNoServiceAccounts},
		{"UpdateClusterStatus", testUpdateClusterStatus},
		{"RecordContact", testRecordContact},
		{"JoinTokens", testJoinTokens},
		{"UseJoinToken", testUseJoinToken},
		{"ConcurrentUseJoinToken", testConcurrentUseJoinToken},
		{"JoinTokenIssue", testJoinTokenIssue},
		{"DeleteExpiredJoinTokens", testDeleteExpiredJoinTokens},
		{"DeleteClusterDeletesJoinTokens", testDeleteClusterDeletesJoinTokens},
		{"FederationPeers", testFederationPeers},
		{"FederationPeersOrdered", testFederationPeersOrdered},
		{"FederationPeerNoBundle", testFederationPeerNoBundle},
		{"DeleteFederationPeer", testDeleteFederationPeer},
		{"SetFederatedBundle", testSetFederatedBundle},
		{"UpdateFederationStatus", testUpdateFederationStatus},
		{"FederationRollsBack", testFederationRollsBack},
		{"CRLs", testCRLs},
		{"Revocations", testRevocations},
		{"Quarantines", testQuarantines},
		{"Close", testClose},
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

// testEveryConcernImplemented fails when the Store, or the Tx that Update
// hands out, leaves a concern's interface unset (its methods would panic).
func testEveryConcernImplemented(t *testing.T, s store.Store) {
	checkFieldsSet(t, "Store", reflect.ValueOf(s))
	update(t, s, func(tx store.Tx) error {
		checkFieldsSet(t, "Tx", reflect.ValueOf(tx))
		return nil
	})
}

// checkFieldsSet fails for every nil interface field of the struct v,
// looking into embedded structs.
func checkFieldsSet(t *testing.T, path string, v reflect.Value) {
	t.Helper()
	for i := range v.NumField() {
		f, name := v.Field(i), path+"."+v.Type().Field(i).Name
		switch f.Kind() {
		case reflect.Struct:
			checkFieldsSet(t, name, f)
		case reflect.Interface:
			if f.IsNil() {
				t.Errorf("%s is nil: the implementation must set every concern's interface", name)
			}
		}
	}
}
