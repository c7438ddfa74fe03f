package spiffe

import (
	"context"
	"crypto/ecdsa"
	"log/slog"
	"math/big"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/internal/testca"
	"github.com/meshroot/meshroot/keys/disk"
	"github.com/meshroot/meshroot/store"
	"github.com/meshroot/meshroot/store/sqlite"
)

// The test CA and helpers are shared with other packages' tests.
type testCA = testca.CA

func newCA(t testing.TB, td string) *testCA { return testca.New(t, td) }

func quietLog(t testing.TB) *slog.Logger { return testca.QuietLog(t) }

func p256Key(t testing.TB) *ecdsa.PrivateKey { return testca.Key(t) }

func nextSerial() *big.Int { return testca.Serial() }

// newStore opens a real SQLite store in a temporary directory.
func newStore(t testing.TB) store.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "meshroot.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// newService returns a CA service with an active root for td.
func newService(t testing.TB, td string) (*ca.Service, store.Store) {
	t.Helper()
	svc, st := newBareService(t)
	if _, err := svc.InitRoot(ca.WithActor(context.Background(), "test"), ca.InitRootRequest{TrustDomain: td}); err != nil {
		t.Fatal(err)
	}
	return svc, st
}

// newBareService returns a CA service without a root.
func newBareService(t testing.TB) (*ca.Service, store.Store) {
	t.Helper()
	st := newStore(t)
	// Plain-text keys: encryption is not under test, and its KDF is slow
	// under -race.
	km, err := disk.New(disk.Options{Dir: filepath.Join(t.TempDir(), "keys"), InsecurePlaintext: true})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := ca.NewService(st, km, ca.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	return svc, st
}

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	testca.WaitFor(t, timeout, what, cond)
}
