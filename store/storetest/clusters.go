package storetest

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/meshroot/meshroot/store"
)

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

// sampleCluster returns a cluster with every field set.
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
		PermitDNS: []string{name + ".svc.example.org", "istio-system.svc"},
		PermitIPs: []string{"10.0.0.0/8", "fd00::/8"},
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
		{LastContact: base.Add(5 * time.Hour), BundleSequence: 44, IntermediateSerial: "0e", Gate: store.GateSecret,
			Istiod: store.IstiodStatus{State: store.IstiodStale, BundleSequence: 43, Serial: "0d", Probed: true, Roots: []string{"r1", "r2"},
				Since: base.Add(90 * time.Minute), StaleSince: base.Add(2 * time.Hour), Detail: "istiod serves 1 root"}},
		{LastContact: base.Add(6 * time.Hour), BundleSequence: 44, Gate: store.GateIstiod,
			Istiod:      store.IstiodStatus{State: store.IstiodLoaded, BundleSequence: 44, Since: base.Add(6 * time.Hour)},
			AppliedCRLs: map[string]uint64{"r1": 3, "r2": 1<<63 + 5}},
		// An agent that wrote no ca-crl.pem: empty, not nil.
		{LastContact: base.Add(7 * time.Hour), BundleSequence: 44, AppliedCRLs: map[string]uint64{}},
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

func testRecordContact(t *testing.T, s store.Store) {
	c := sampleCluster("east", base)
	c.Status.Gate = store.GateIstiod
	c.Status.Istiod = store.IstiodStatus{State: store.IstiodPending, BundleSequence: 41, Since: base.Add(time.Hour), Detail: "waiting"}
	c.Status.AppliedCRLs = map[string]uint64{"r1": 7}
	update(t, s, func(tx store.Tx) error { return tx.CreateCluster(ctx(t), c) })
	record := func(createdAt time.Time, st store.ClusterStatus) error {
		return s.Update(ctx(t), func(tx store.Tx) error { return tx.RecordContact(ctx(t), "east", createdAt, st) })
	}
	want := c
	check := func(what string) {
		t.Helper()
		got, err := s.GetCluster(ctx(t), "east")
		if err != nil {
			t.Fatalf("%s: GetCluster: %v", what, err)
		}
		checkCluster(t, got, want)
	}

	// A report of nothing but contact keeps everything else.
	if err := record(base, store.ClusterStatus{LastContact: base.Add(2 * time.Hour)}); err != nil {
		t.Fatalf("RecordContact(contact only): %v", err)
	}
	want.Status.LastContact = base.Add(2 * time.Hour)
	check("contact only")

	// Sequence and serial replace theirs; istiod, the CRLs and the gate stay.
	if err := record(base, store.ClusterStatus{LastContact: base.Add(3 * time.Hour), BundleSequence: 1<<63 - 1, IntermediateSerial: "0d"}); err != nil {
		t.Fatalf("RecordContact(sequence, serial): %v", err)
	}
	want.Status.LastContact, want.Status.BundleSequence, want.Status.IntermediateSerial = base.Add(3*time.Hour), 1<<63-1, "0d"
	check("sequence and serial")

	// Istiod and the applied CRLs (empty: no ca-crl.pem) replace theirs;
	// a Gate in the report is not the agent's to set.
	ist := store.IstiodStatus{State: store.IstiodLoaded, BundleSequence: 44, Serial: "0d", Probed: true, Roots: []string{"r1"}, Since: base.Add(4 * time.Hour)}
	if err := record(base, store.ClusterStatus{LastContact: base.Add(4 * time.Hour), BundleSequence: 44, Istiod: ist, AppliedCRLs: map[string]uint64{}, Gate: store.GateSecret}); err != nil {
		t.Fatalf("RecordContact(istiod, CRLs): %v", err)
	}
	want.Status.LastContact, want.Status.BundleSequence, want.Status.Istiod, want.Status.AppliedCRLs = base.Add(4*time.Hour), 44, ist, map[string]uint64{}
	check("istiod and CRLs")

	// Another registration's report (the cluster removed and registered
	// again: another creation time) changes nothing.
	err := record(base.Add(-time.Nanosecond), store.ClusterStatus{LastContact: base.Add(5 * time.Hour), BundleSequence: 45})
	wantErr(t, "RecordContact(another registration)", err, store.ErrNotFound, "east")
	check("another registration")

	// A sequence beyond what is storable is refused, and nothing is written.
	if err := record(base, store.ClusterStatus{LastContact: base.Add(6 * time.Hour), BundleSequence: 1 << 63}); err == nil || errors.Is(err, store.ErrNotFound) {
		t.Errorf("RecordContact(sequence 1<<63): %v, want an error about the value", err)
	}
	check("sequence too large")

	err = s.Update(ctx(t), func(tx store.Tx) error {
		return tx.RecordContact(ctx(t), "north", base, store.ClusterStatus{LastContact: base})
	})
	wantErr(t, "RecordContact(missing)", err, store.ErrNotFound, "north")
	if _, err := s.GetCluster(ctx(t), "north"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetCluster after RecordContact(missing): %v, want ErrNotFound", err)
	}
}

// checkCluster compares every field. A want with no service accounts
// requires got.Auth.ServiceAccounts to be nil; likewise for the permitted
// names and ranges.
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
	if !slices.Equal(got.PermitDNS, want.PermitDNS) || (len(want.PermitDNS) == 0 && got.PermitDNS != nil) ||
		!slices.Equal(got.PermitIPs, want.PermitIPs) || (len(want.PermitIPs) == 0 && got.PermitIPs != nil) {
		t.Errorf("cluster %q permitted names mismatch:\n got DNS %#v IPs %#v\nwant DNS %#v IPs %#v",
			want.Name, got.PermitDNS, got.PermitIPs, want.PermitDNS, want.PermitIPs)
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
	gi, wi := got.Istiod, want.Istiod
	if !got.LastContact.Equal(want.LastContact) || got.BundleSequence != want.BundleSequence ||
		got.IntermediateSerial != want.IntermediateSerial || got.Gate != want.Gate ||
		gi.State != wi.State || gi.BundleSequence != wi.BundleSequence || gi.Serial != wi.Serial || gi.Probed != wi.Probed ||
		!slices.Equal(gi.Roots, wi.Roots) || !gi.Since.Equal(wi.Since) || !gi.StaleSince.Equal(wi.StaleSince) || gi.Detail != wi.Detail ||
		!maps.Equal(got.AppliedCRLs, want.AppliedCRLs) || (got.AppliedCRLs == nil) != (want.AppliedCRLs == nil) {
		t.Errorf("cluster %q status mismatch:\n got %+v\nwant %+v", cluster, got, want)
	}
}
