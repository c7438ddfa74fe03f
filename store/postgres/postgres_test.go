package postgres

import (
	"testing"

	"github.com/meshroot/meshroot/store"
	"github.com/meshroot/meshroot/store/postgres/pgtest"
	"github.com/meshroot/meshroot/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return openTest(t, pgtest.NewDatabase(t)).asStore()
	})
}

// openTest opens the store at dsn and closes it at the end of the test.
func openTest(t testing.TB, dsn string) *Store {
	t.Helper()
	s, err := open(t.Context(), dsn)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
