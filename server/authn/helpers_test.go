package authn

import (
	"context"
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshroot/meshroot/store"
	"github.com/meshroot/meshroot/store/sqlite"
)

// t0 is the tests' "now".
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// clock is a settable clock for Options.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: t0} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// newStore opens a fresh SQLite store in a temporary directory.
func newStore(t testing.TB) store.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "meshroot.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// addCluster registers c (trust domain and creation time filled in).
func addCluster(t testing.TB, st store.Store, c store.Cluster) {
	t.Helper()
	if c.TrustDomain == "" {
		c.TrustDomain = "example.org"
	}
	if c.CreatedAt.IsZero() {
		c.CreatedAt = t0
	}
	if err := st.Update(context.Background(), func(tx store.Tx) error { return tx.CreateCluster(context.Background(), c) }); err != nil {
		t.Fatal(err)
	}
}

// update runs fn in a transaction and fails the test on error.
func update(t testing.TB, st store.Updater, fn func(ctx context.Context, tx store.Tx) error) {
	t.Helper()
	ctx := context.Background()
	if err := st.Update(ctx, func(tx store.Tx) error { return fn(ctx, tx) }); err != nil {
		t.Fatal(err)
	}
}

// wantRefusal fails unless err is an *Error with code whose reason
// contains every one of want.
func wantRefusal(t testing.TB, err error, code Code, want ...string) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error = %v (%T), want a refusal (*Error) with code %s", err, err, code)
	}
	if e.Code != code {
		t.Errorf("code = %s, want %s (reason %q)", e.Code, code, e.Reason)
	}
	if e.Error() != e.Reason {
		t.Errorf("Error() = %q, want the reason %q", e.Error(), e.Reason)
	}
	for _, w := range want {
		if !strings.Contains(e.Reason, w) {
			t.Errorf("reason %q does not contain %q", e.Reason, w)
		}
	}
}

// wantInternal fails unless err is a non-nil error that is not a refusal
// and whose message contains every one of want.
func wantInternal(t testing.TB, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatal("no error, want an internal error")
	}
	var e *Error
	if errors.As(err, &e) {
		t.Fatalf("error is a refusal (%s: %q), want an internal error", e.Code, e.Reason)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
}

// wantIdentity fails unless err is nil, id is want and id carries the
// registration of want's cluster and its record (as Authenticate reads
// it).
func wantIdentity(t testing.TB, id Identity, err error, want Identity) {
	t.Helper()
	if err == nil && (id.Record == nil || id.Record.Registration() != id.Registration) {
		t.Fatalf("identity's record = %+v, want the record of registration %+v", id.Record, id.Registration)
	}
	id.Record = nil
	wantReportIdentity(t, id, err, want)
}

// wantReportIdentity is wantIdentity for AuthenticateReport by client
// certificate, which does not read the cluster's record.
func wantReportIdentity(t testing.TB, id Identity, err error, want Identity) {
	t.Helper()
	if err != nil {
		t.Fatalf("Authenticate: %v", err)
	}
	if id.Registration.Name != want.Cluster || id.Registration.CreatedAt.IsZero() {
		t.Fatalf("identity's registration = %+v, want cluster %s's", id.Registration, want.Cluster)
	}
	if id.Record != nil {
		t.Fatalf("identity's record = %+v, want none (not read)", id.Record)
	}
	id.Registration = want.Registration
	// By client certificate, the presented intermediate's record comes
	// with the identity; by the other methods, none.
	if in := id.Intermediate; want.Method == MethodMTLS {
		if in == nil || in.Serial != want.Subject || in.Cluster != want.Cluster {
			t.Fatalf("identity's intermediate = %+v, want the record of %s issued to %s", in, want.Subject, want.Cluster)
		}
	} else if in != nil {
		t.Fatalf("identity by %s carries an intermediate record %+v", want.Method, in)
	}
	id.Intermediate = want.Intermediate
	if !reflect.DeepEqual(id, want) {
		t.Fatalf("identity = %+v, want %+v", id, want)
	}
}
