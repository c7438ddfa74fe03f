package storetest

import (
	"testing"

	"github.com/meshroot/meshroot/store"
)

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
