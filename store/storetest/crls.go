package storetest

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/meshroot/meshroot/store"
)

// testCRLs checks that a CRL is stored, read back, listed, and replaced
// only by a higher number.
func testCRLs(t *testing.T, s store.Store) {
	if _, err := s.GetCRL(ctx(t), "root:a"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetCRL before any: %v, want ErrNotFound", err)
	}
	c1 := store.CRL{Issuer: "root:a", Number: 1, DER: []byte{1, 2}, ThisUpdate: base, NextUpdate: base.Add(time.Hour)}
	c2 := store.CRL{Issuer: "cluster:east", Number: 7, DER: []byte{3}, ThisUpdate: base, NextUpdate: base.Add(2 * time.Hour)}
	update(t, s, func(tx store.Tx) error {
		if err := tx.PutCRL(ctx(t), c1); err != nil {
			return err
		}
		return tx.PutCRL(ctx(t), c2)
	})
	got, err := s.GetCRL(ctx(t), "root:a")
	if err != nil || got.Number != 1 || string(got.DER) != string(c1.DER) || !got.ThisUpdate.Equal(base) || !got.NextUpdate.Equal(c1.NextUpdate) {
		t.Fatalf("GetCRL = %+v, %v; want %+v", got, err, c1)
	}
	for _, n := range []uint64{1, 0} {
		err := s.Update(ctx(t), func(tx store.Tx) error {
			return tx.PutCRL(ctx(t), store.CRL{Issuer: "root:a", Number: n, DER: []byte{9}, ThisUpdate: base, NextUpdate: base})
		})
		wantErr(t, "PutCRL with a number not above", err, store.ErrConflict, "root:a")
	}
	update(t, s, func(tx store.Tx) error {
		return tx.PutCRL(ctx(t), store.CRL{Issuer: "root:a", Number: 2, DER: []byte{5}, ThisUpdate: base, NextUpdate: base})
	})
	all, err := s.ListCRLs(ctx(t))
	if err != nil || len(all) != 2 || all[0].Issuer != "cluster:east" || all[1].Number != 2 || string(all[1].DER) != "\x05" {
		t.Fatalf("ListCRLs = %+v, %v", all, err)
	}
}

// testRevocations checks that the first record of a serial is kept.
func testRevocations(t *testing.T, s store.Store) {
	update(t, s, func(tx store.Tx) error {
		if err := tx.RecordRevocation(ctx(t), store.Revocation{Serial: "0b", Reason: 1, RevokedAt: base}); err != nil {
			return err
		}
		if err := tx.RecordRevocation(ctx(t), store.Revocation{Serial: "0a", Reason: 5, RevokedAt: base}); err != nil {
			return err
		}
		return tx.RecordRevocation(ctx(t), store.Revocation{Serial: "0b", Reason: 4, RevokedAt: base.Add(time.Hour)})
	})
	got, err := s.ListRevocations(ctx(t))
	if err != nil || len(got) != 2 || got[0].Serial != "0a" || got[1].Reason != 1 || !got[1].RevokedAt.Equal(base) || got[0].ListedIn != 0 {
		t.Fatalf("ListRevocations = %+v, %v", got, err)
	}
	// The first CRL that listed a serial stays its ListedIn; unknown
	// serials are ignored; a recorded ListedIn is kept (a store copy).
	update(t, s, func(tx store.Tx) error {
		if err := tx.MarkRevocationsListed(ctx(t), []string{"0a", "0c"}, 7); err != nil {
			return err
		}
		if err := tx.MarkRevocationsListed(ctx(t), nil, 8); err != nil {
			return err
		}
		return tx.RecordRevocation(ctx(t), store.Revocation{Serial: "0d", Reason: 2, RevokedAt: base, ListedIn: 5})
	})
	update(t, s, func(tx store.Tx) error {
		return tx.MarkRevocationsListed(ctx(t), []string{"0a", "0b", "0d"}, 9)
	})
	got, err = s.ListRevocations(ctx(t))
	if err != nil || len(got) != 3 || got[0].ListedIn != 7 || got[1].ListedIn != 9 || got[2].ListedIn != 5 {
		t.Fatalf("ListRevocations after MarkRevocationsListed = %+v, %v; want ListedIn 7, 9, 5", got, err)
	}
	// Many serials at once (more than one batch of parameters).
	many := make([]string, 1200)
	update(t, s, func(tx store.Tx) error {
		for i := range many {
			many[i] = fmt.Sprintf("1%04x", i)
			if err := tx.RecordRevocation(ctx(t), store.Revocation{Serial: many[i], Reason: 2, RevokedAt: base}); err != nil {
				return err
			}
		}
		return tx.MarkRevocationsListed(ctx(t), many, 11)
	})
	got, err = s.ListRevocations(ctx(t))
	if err != nil || len(got) != 1203 || got[1202].ListedIn != 11 || got[3].ListedIn != 11 {
		t.Fatalf("ListRevocations after marking 1200: %d records, %v", len(got), err)
	}
}

// testQuarantines checks quarantine, listing and release.
func testQuarantines(t *testing.T, s store.Store) {
	q := store.Quarantine{Cluster: "west", Reason: "node compromised", At: base, Actor: "cli:uid=0"}
	update(t, s, func(tx store.Tx) error { return tx.SetQuarantine(ctx(t), q) })
	got, err := s.GetQuarantine(ctx(t), "west")
	if err != nil || got.Reason != q.Reason || !got.At.Equal(base) || got.Actor != q.Actor {
		t.Fatalf("GetQuarantine = %+v, %v", got, err)
	}
	if l, err := s.ListQuarantines(ctx(t)); err != nil || len(l) != 1 || l[0].Cluster != "west" {
		t.Fatalf("ListQuarantines = %+v, %v", l, err)
	}
	update(t, s, func(tx store.Tx) error { return tx.DeleteQuarantine(ctx(t), "west") })
	if _, err := s.GetQuarantine(ctx(t), "west"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetQuarantine after release: %v, want ErrNotFound", err)
	}
	err = s.Update(ctx(t), func(tx store.Tx) error { return tx.DeleteQuarantine(ctx(t), "west") })
	wantErr(t, "DeleteQuarantine twice", err, store.ErrNotFound, "west")
}
