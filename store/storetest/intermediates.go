package storetest

import (
	"bytes"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/meshroot/meshroot/store"
)

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

	update(t, s, func(tx store.Tx) error { return tx.UpdateIntermediateStatus(ctx(t), "0b", store.IntermediateRevoked) })
	for _, tc := range []struct {
		status store.IntermediateStatus
		want   []store.Intermediate
	}{
		{store.IntermediateActive, []store.Intermediate{ins[2], ins[0]}},
		{store.IntermediateRevoked, []store.Intermediate{ins[1]}},
		{store.IntermediateSuperseded, nil},
	} {
		list, err := s.ListIntermediatesByStatus(ctx(t), tc.status)
		if err != nil {
			t.Fatalf("ListIntermediatesByStatus(%q): %v", tc.status, err)
		}
		if len(list) != len(tc.want) {
			t.Fatalf("ListIntermediatesByStatus(%q) returned %d, want %d", tc.status, len(list), len(tc.want))
		}
		for i := range list {
			want := tc.want[i]
			if want.Serial == "0b" {
				want.Status = store.IntermediateRevoked
			}
			checkIntermediate(t, list[i], want)
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

func checkIntermediate(t *testing.T, got, want store.Intermediate) {
	t.Helper()
	if got.Serial != want.Serial || got.Cluster != want.Cluster || got.RootID != want.RootID ||
		!got.NotBefore.Equal(want.NotBefore) || !got.NotAfter.Equal(want.NotAfter) ||
		got.Status != want.Status || !bytes.Equal(got.CertPEM, want.CertPEM) || !got.CreatedAt.Equal(want.CreatedAt) ||
		!got.SupersededAt.Equal(want.SupersededAt) {
		t.Errorf("intermediate mismatch:\n got %+v\nwant %+v", got, want)
	}
}

func testRegisteredIntermediate(t *testing.T, s store.Store) {
	east := sampleIntermediate("0a", "east", "r1", base.Add(time.Second))
	orphan := sampleIntermediate("0b", "gone", "r1", base.Add(time.Second))
	update(t, s, func(tx store.Tx) error {
		if err := tx.CreateRoot(ctx(t), sampleRoot("r1", base)); err != nil {
			return err
		}
		if err := tx.CreateCluster(ctx(t), sampleCluster("east", base)); err != nil {
			return err
		}
		for _, in := range []store.Intermediate{east, orphan} {
			if err := tx.CreateIntermediate(ctx(t), in); err != nil {
				return err
			}
		}
		return nil
	})
	check := func(what string, got store.RegisteredIntermediate, want store.Intermediate, registered time.Time) {
		t.Helper()
		checkIntermediate(t, got.Intermediate, want)
		if got.Registration.Name != want.Cluster || !got.Registration.CreatedAt.Equal(registered) {
			t.Errorf("%s: registration = %+v, want cluster %s registered at %s", what, got.Registration, want.Cluster, registered)
		}
	}
	got, err := s.GetRegisteredIntermediate(ctx(t), "0a")
	if err != nil {
		t.Fatalf("GetRegisteredIntermediate: %v", err)
	}
	check("GetRegisteredIntermediate", got, east, base)

	// No such intermediate, or its cluster is not registered.
	_, err = s.GetRegisteredIntermediate(ctx(t), "ff")
	wantErr(t, "GetRegisteredIntermediate(missing)", err, store.ErrNotFound, "ff")
	_, err = s.GetRegisteredIntermediate(ctx(t), "0b")
	wantErr(t, "GetRegisteredIntermediate(cluster not registered)", err, store.ErrNotFound, "0b")

	// Removed and registered again: the intermediate comes with the new
	// registration, later than it was issued; in a transaction, as the
	// transaction left it.
	later := base.Add(time.Hour)
	update(t, s, func(tx store.Tx) error {
		if err := tx.DeleteCluster(ctx(t), "east"); err != nil {
			return err
		}
		if _, err := tx.GetRegisteredIntermediate(ctx(t), "0a"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetRegisteredIntermediate in the transaction that removed its cluster: err = %v, want ErrNotFound", err)
		}
		if err := tx.CreateCluster(ctx(t), sampleCluster("east", later)); err != nil {
			return err
		}
		got, err := tx.GetRegisteredIntermediate(ctx(t), "0a")
		if err != nil {
			return err
		}
		check("GetRegisteredIntermediate in the transaction", got, east, later)
		return nil
	})
	got, err = s.GetRegisteredIntermediate(ctx(t), "0a")
	if err != nil {
		t.Fatalf("GetRegisteredIntermediate after registering again: %v", err)
	}
	check("GetRegisteredIntermediate after registering again", got, east, later)
}
