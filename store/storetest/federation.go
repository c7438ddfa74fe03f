package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/meshroot/meshroot/store"
)

// sampleFederationPeer returns an https_spiffe peer with every field set.
func sampleFederationPeer(trustDomain string, createdAt time.Time) store.FederationPeer {
	return store.FederationPeer{
		TrustDomain:      trustDomain,
		URL:              "https://bundle." + trustDomain + ":8443/",
		Profile:          store.ProfileHTTPSSPIFFE,
		EndpointSPIFFEID: "spiffe://" + trustDomain + "/spire/server",
		CreatedAt:        createdAt,
		Bundle:           sampleBundle(trustDomain, 7),
		Sequence:         7,
		BundleUpdatedAt:  createdAt.Add(time.Nanosecond),
		Status: store.FederationStatus{
			LastAttempt: createdAt.Add(time.Minute),
			LastSuccess: createdAt.Add(time.Minute - time.Nanosecond),
			LastError:   "",
			NextAttempt: createdAt.Add(6 * time.Minute),
		},
	}
}

// sampleBundle returns a SPIFFE bundle document for trustDomain.
func sampleBundle(trustDomain string, sequence uint64) []byte {
	return fmt.Appendf(nil, `{"keys":[{"use":"x509-svid","kty":"EC","x5c":["%s"]}],"spiffe_sequence":%d,"spiffe_refresh_hint":300}`,
		trustDomain, sequence)
}

// bareFederationPeer returns an https_web peer with only the required
// fields: zero times, no bundle, no status.
func bareFederationPeer(trustDomain string) store.FederationPeer {
	return store.FederationPeer{
		TrustDomain: trustDomain,
		URL:         "https://" + trustDomain + "/.well-known/spiffe-bundle",
		Profile:     store.ProfileHTTPSWeb,
	}
}

// createFederationPeers adds peers in one transaction.
func createFederationPeers(t *testing.T, s store.Store, peers ...store.FederationPeer) {
	t.Helper()
	update(t, s, func(tx store.Tx) error {
		for _, p := range peers {
			if err := tx.CreateFederationPeer(ctx(t), p); err != nil {
				return err
			}
		}
		return nil
	})
}

// getFederationPeer returns the peer for trustDomain, failing the test when
// there is none.
func getFederationPeer(t *testing.T, r store.FederationReader, trustDomain string) store.FederationPeer {
	t.Helper()
	p, err := r.GetFederationPeer(ctx(t), trustDomain)
	if err != nil {
		t.Fatalf("GetFederationPeer(%q): %v", trustDomain, err)
	}
	return p
}

func testFederationPeers(t *testing.T, s store.Store) {
	if list, err := s.ListFederationPeers(ctx(t)); err != nil || len(list) != 0 {
		t.Fatalf("ListFederationPeers of a new store = %v, %v; want none", list, err)
	}
	full := sampleFederationPeer("partner.example", base)
	full.Status.LastError = "fetch: unexpected status 503 \"Service Unavailable\""
	bare := bareFederationPeer("web.example")
	createFederationPeers(t, s, full, bare)

	got := getFederationPeer(t, s, "partner.example")
	checkFederationPeer(t, got, full)
	got = getFederationPeer(t, s, "web.example")
	checkFederationPeer(t, got, bare)
	if st := got.Status; got.Bundle != nil || !got.CreatedAt.IsZero() || !got.BundleUpdatedAt.IsZero() ||
		!st.LastAttempt.IsZero() || !st.LastSuccess.IsZero() || !st.NextAttempt.IsZero() {
		t.Errorf("peer created without bundle, times or status = %+v, want nil Bundle and zero times", got)
	}

	list, err := s.ListFederationPeers(ctx(t))
	if err != nil {
		t.Fatalf("ListFederationPeers: %v", err)
	}
	if len(list) != 2 {
		t.Fatalf("ListFederationPeers returned %d peers, want 2", len(list))
	}
	checkFederationPeer(t, list[0], full)
	checkFederationPeer(t, list[1], bare)

	_, err = s.GetFederationPeer(ctx(t), "missing.example")
	wantErr(t, "GetFederationPeer(missing)", err, store.ErrNotFound, "missing.example")

	dup := sampleFederationPeer("web.example", base.Add(time.Hour))
	err = s.Update(ctx(t), func(tx store.Tx) error { return tx.CreateFederationPeer(ctx(t), dup) })
	wantErr(t, "CreateFederationPeer(duplicate)", err, store.ErrAlreadyExists, "web.example")
	checkFederationPeer(t, getFederationPeer(t, s, "web.example"), bare) // not overwritten
}

func testFederationPeersOrdered(t *testing.T, s store.Store) {
	// Inserted out of order; the names share prefixes so that ordering by
	// anything but the whole trust domain shows.
	names := []string{"west.example.org", "east.example.org", "example.org", "east.example.com", "central.example.org"}
	var peers []store.FederationPeer
	for i, n := range names {
		// CreatedAt runs against the name order.
		peers = append(peers, sampleFederationPeer(n, base.Add(-time.Duration(i)*time.Second)))
	}
	createFederationPeers(t, s, peers...)

	list, err := s.ListFederationPeers(ctx(t))
	if err != nil {
		t.Fatalf("ListFederationPeers: %v", err)
	}
	var got []string
	for _, p := range list {
		got = append(got, p.TrustDomain)
	}
	want := "central.example.org,east.example.com,east.example.org,example.org,west.example.org"
	if strings.Join(got, ",") != want {
		t.Fatalf("ListFederationPeers order = %s, want %s (by trust domain)", strings.Join(got, ","), want)
	}
	byName := make(map[string]store.FederationPeer)
	for _, p := range peers {
		byName[p.TrustDomain] = p
	}
	for _, p := range list {
		checkFederationPeer(t, p, byName[p.TrustDomain])
	}
}

func testFederationPeerNoBundle(t *testing.T, s store.Store) {
	// Both read back as nil (see the package documentation).
	withNil := bareFederationPeer("nil.example")
	withEmpty := bareFederationPeer("empty.example")
	withEmpty.Bundle = []byte{}
	createFederationPeers(t, s, withNil, withEmpty)
	for _, td := range []string{"nil.example", "empty.example"} {
		if got := getFederationPeer(t, s, td); got.Bundle != nil {
			t.Errorf("peer %q created without a bundle: Bundle = %#v, want nil", td, got.Bundle)
		}
	}

	// A bundle set, then taken away again.
	update(t, s, func(tx store.Tx) error {
		return tx.SetFederatedBundle(ctx(t), "nil.example", sampleBundle("nil.example", 1), 1, base)
	})
	if got := getFederationPeer(t, s, "nil.example"); !bytes.Equal(got.Bundle, sampleBundle("nil.example", 1)) {
		t.Fatalf("Bundle after SetFederatedBundle = %q, want %q", got.Bundle, sampleBundle("nil.example", 1))
	}
	for _, b := range [][]byte{nil, {}} {
		update(t, s, func(tx store.Tx) error { return tx.SetFederatedBundle(ctx(t), "nil.example", b, 0, base) })
		if got := getFederationPeer(t, s, "nil.example"); got.Bundle != nil {
			t.Errorf("Bundle after SetFederatedBundle(%#v) = %#v, want nil", b, got.Bundle)
		}
	}
}

func testDeleteFederationPeer(t *testing.T, s store.Store) {
	createFederationPeers(t, s, sampleFederationPeer("a.example", base), sampleFederationPeer("b.example", base))
	update(t, s, func(tx store.Tx) error { return tx.DeleteFederationPeer(ctx(t), "a.example") })

	_, err := s.GetFederationPeer(ctx(t), "a.example")
	wantErr(t, "GetFederationPeer(deleted)", err, store.ErrNotFound, "a.example")
	list, err := s.ListFederationPeers(ctx(t))
	if err != nil {
		t.Fatalf("ListFederationPeers: %v", err)
	}
	if len(list) != 1 {
		t.Fatalf("ListFederationPeers after delete returned %d peers, want 1", len(list))
	}
	checkFederationPeer(t, list[0], sampleFederationPeer("b.example", base))

	err = s.Update(ctx(t), func(tx store.Tx) error { return tx.DeleteFederationPeer(ctx(t), "a.example") })
	wantErr(t, "DeleteFederationPeer(missing)", err, store.ErrNotFound, "a.example")

	// The trust domain can be added again, and nothing of the old peer
	// (its bundle in particular) comes back.
	again := bareFederationPeer("a.example")
	createFederationPeers(t, s, again)
	checkFederationPeer(t, getFederationPeer(t, s, "a.example"), again)
}

func testSetFederatedBundle(t *testing.T, s store.Store) {
	p := sampleFederationPeer("partner.example", base)
	p.Status.LastError = "previous failure"
	createFederationPeers(t, s, p)

	for _, tc := range []struct {
		bundle   []byte
		sequence uint64
		at       time.Time
	}{
		{sampleBundle("partner.example", 8), 8, base.Add(time.Hour + time.Nanosecond)},
		{sampleBundle("partner.example", 1<<63-1), 1<<63 - 1, base.Add(2 * time.Hour)},
		{sampleBundle("partner.example", 0), 0, base.Add(3 * time.Hour)}, // sequence may go down: the peer decides
		{nil, 0, time.Time{}}, // back to nothing, zero time included
	} {
		update(t, s, func(tx store.Tx) error {
			return tx.SetFederatedBundle(ctx(t), "partner.example", tc.bundle, tc.sequence, tc.at)
		})
		want := p
		want.Bundle, want.Sequence, want.BundleUpdatedAt = tc.bundle, tc.sequence, tc.at
		checkFederationPeer(t, getFederationPeer(t, s, "partner.example"), want) // Status and the rest unchanged
	}

	err := s.Update(ctx(t), func(tx store.Tx) error {
		return tx.SetFederatedBundle(ctx(t), "missing.example", sampleBundle("missing.example", 1), 1, base)
	})
	wantErr(t, "SetFederatedBundle(missing)", err, store.ErrNotFound, "missing.example")
	if _, err := s.GetFederationPeer(ctx(t), "missing.example"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetFederationPeer after SetFederatedBundle(missing): %v, want ErrNotFound", err)
	}
}

func testUpdateFederationStatus(t *testing.T, s store.Store) {
	p := sampleFederationPeer("partner.example", base)
	createFederationPeers(t, s, p)

	for _, st := range []store.FederationStatus{
		{LastAttempt: base.Add(time.Hour), LastSuccess: p.Status.LastSuccess, LastError: "dial tcp: connection refused", NextAttempt: base.Add(time.Hour + 30*time.Second)},
		{LastAttempt: base.Add(2 * time.Hour), LastSuccess: base.Add(2*time.Hour + time.Nanosecond), NextAttempt: base.Add(3 * time.Hour)},
		{LastError: "never reached"}, // zero times
		{},                           // back to zero
	} {
		update(t, s, func(tx store.Tx) error { return tx.UpdateFederationStatus(ctx(t), "partner.example", st) })
		want := p
		want.Status = st
		checkFederationPeer(t, getFederationPeer(t, s, "partner.example"), want) // Bundle and the rest unchanged
	}

	err := s.Update(ctx(t), func(tx store.Tx) error {
		return tx.UpdateFederationStatus(ctx(t), "missing.example", store.FederationStatus{LastAttempt: base, LastError: "x"})
	})
	wantErr(t, "UpdateFederationStatus(missing)", err, store.ErrNotFound, "missing.example")
	if _, err := s.GetFederationPeer(ctx(t), "missing.example"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetFederationPeer after UpdateFederationStatus(missing): %v, want ErrNotFound", err)
	}
}

// testFederationRollsBack checks that no federation write of a rolled back
// Update lands, on an existing peer as well as for new and deleted ones.
func testFederationRollsBack(t *testing.T, s store.Store) {
	kept, doomed := sampleFederationPeer("kept.example", base), sampleFederationPeer("doomed.example", base)
	createFederationPeers(t, s, kept, doomed)

	errBoom := errors.New("boom")
	err := s.Update(ctx(t), func(tx store.Tx) error {
		if err := tx.SetFederatedBundle(ctx(t), "kept.example", sampleBundle("kept.example", 99), 99, base.Add(time.Hour)); err != nil {
			return err
		}
		if err := tx.UpdateFederationStatus(ctx(t), "kept.example", store.FederationStatus{LastAttempt: base.Add(time.Hour), LastError: "x"}); err != nil {
			return err
		}
		if err := tx.DeleteFederationPeer(ctx(t), "doomed.example"); err != nil {
			return err
		}
		if err := tx.CreateFederationPeer(ctx(t), sampleFederationPeer("new.example", base)); err != nil {
			return err
		}
		// The transaction sees its own writes.
		if p, err := tx.GetFederationPeer(ctx(t), "kept.example"); err != nil || p.Sequence != 99 || p.Status.LastError != "x" {
			return fmt.Errorf("GetFederationPeer inside the transaction = %+v, %v; want sequence 99 and the new status", p, err)
		}
		if list, err := tx.ListFederationPeers(ctx(t)); err != nil || len(list) != 2 || list[0].TrustDomain != "kept.example" || list[1].TrustDomain != "new.example" {
			return fmt.Errorf("ListFederationPeers inside the transaction = %v, %v; want kept.example and new.example", list, err)
		}
		return errBoom
	})
	if !errors.Is(err, errBoom) {
		t.Fatalf("Update returned %v, want the error fn returned", err)
	}
	checkFederationPeer(t, getFederationPeer(t, s, "kept.example"), kept)
	checkFederationPeer(t, getFederationPeer(t, s, "doomed.example"), doomed)
	if _, err := s.GetFederationPeer(ctx(t), "new.example"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetFederationPeer after rollback: %v, want ErrNotFound", err)
	}
	if list, err := s.ListFederationPeers(ctx(t)); err != nil || len(list) != 2 {
		t.Errorf("ListFederationPeers after rollback = %d peers, %v; want 2", len(list), err)
	}
}

// checkFederationPeer compares every field. A want with no bundle bytes
// requires got.Bundle to be nil.
func checkFederationPeer(t *testing.T, got, want store.FederationPeer) {
	t.Helper()
	if got.TrustDomain != want.TrustDomain || got.URL != want.URL || got.Profile != want.Profile ||
		got.EndpointSPIFFEID != want.EndpointSPIFFEID || !got.CreatedAt.Equal(want.CreatedAt) ||
		!bytes.Equal(got.Bundle, want.Bundle) || (len(want.Bundle) == 0 && got.Bundle != nil) ||
		got.Sequence != want.Sequence || !got.BundleUpdatedAt.Equal(want.BundleUpdatedAt) {
		t.Errorf("federation peer %q mismatch:\n got %+v bundle %q\nwant %+v bundle %q",
			want.TrustDomain, got, got.Bundle, want, want.Bundle)
	}
	gs, ws := got.Status, want.Status
	if !gs.LastAttempt.Equal(ws.LastAttempt) || !gs.LastSuccess.Equal(ws.LastSuccess) ||
		gs.LastError != ws.LastError || !gs.NextAttempt.Equal(ws.NextAttempt) {
		t.Errorf("federation peer %q status mismatch:\n got %+v\nwant %+v", want.TrustDomain, gs, ws)
	}
}
