package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/meshroot/meshroot/store"
)

func testAdminCerts(t *testing.T, s store.Store) {
	a := store.AdminCert{Serial: "0a", Name: "alice", Role: "operator", IssuedAt: base, NotAfter: base.Add(8 * time.Hour)}
	b := store.AdminCert{Serial: "0b", Name: "bob", Role: "viewer", IssuedAt: base.Add(time.Minute), NotAfter: base.Add(time.Hour)}
	if _, err := s.GetAdminCert(ctx(t), "0a"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetAdminCert before create: %v; want ErrNotFound", err)
	}
	update(t, s, func(tx store.Tx) error {
		if err := tx.CreateAdminCert(ctx(t), b); err != nil {
			return err
		}
		return tx.CreateAdminCert(ctx(t), a)
	})
	if err := s.Update(ctx(t), func(tx store.Tx) error { return tx.CreateAdminCert(ctx(t), a) }); !errors.Is(err, store.ErrAlreadyExists) {
		t.Fatalf("CreateAdminCert twice: %v; want ErrAlreadyExists", err)
	}
	got, err := s.ListAdminCerts(ctx(t))
	if err != nil || len(got) != 2 || got[0].Serial != "0a" || got[1].Serial != "0b" {
		t.Fatalf("ListAdminCerts = %+v, %v; want 0a then 0b", got, err)
	}
	if !got[0].IssuedAt.Equal(a.IssuedAt) || !got[0].NotAfter.Equal(a.NotAfter) || got[0].Role != "operator" || got[0].Name != "alice" || !got[0].RevokedAt.IsZero() {
		t.Fatalf("ListAdminCerts[0] = %+v; want %+v", got[0], a)
	}
	update(t, s, func(tx store.Tx) error { return tx.RevokeAdminCert(ctx(t), "0a", base.Add(time.Hour)) })
	if c, err := s.GetAdminCert(ctx(t), "0a"); err != nil || !c.RevokedAt.Equal(base.Add(time.Hour)) {
		t.Fatalf("GetAdminCert after revoke = %+v, %v; want revoked at %v", c, err, base.Add(time.Hour))
	}
	if err := s.Update(ctx(t), func(tx store.Tx) error { return tx.RevokeAdminCert(ctx(t), "0a", base) }); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("RevokeAdminCert twice: %v; want ErrConflict", err)
	}
	if err := s.Update(ctx(t), func(tx store.Tx) error { return tx.RevokeAdminCert(ctx(t), "ff", base) }); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("RevokeAdminCert(unknown): %v; want ErrNotFound", err)
	}
}
