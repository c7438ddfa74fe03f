package authn

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"math/big"
	"sync"
	"testing"
	"time"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/store"
)

// testCA is a CA certificate with its key.
type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

var serialLimit = new(big.Int).Lsh(big.NewInt(1), 128)

// newCert makes a certificate for a fresh P-256 key, signed by parent
// (self-signed when nil), with tmpl's fields; a zero serial gets a random
// one and zero times get t0-1h to t0+24h.
func newCert(t testing.TB, parent *testCA, tmpl x509.Certificate) *testCA {
	t.Helper()
	key := ecKey(t)
	if tmpl.SerialNumber == nil {
		s, err := rand.Int(rand.Reader, serialLimit)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.SerialNumber = s.Add(s, big.NewInt(1))
	}
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = t0.Add(-time.Hour)
	}
	if tmpl.NotAfter.IsZero() {
		tmpl.NotAfter = t0.Add(24 * time.Hour)
	}
	signer, issuer := crypto.Signer(key), &tmpl
	if parent != nil {
		signer, issuer = parent.key, parent.cert
	}
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, issuer, key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key}
}

func caTemplate(cn string, maxPathLenZero bool) x509.Certificate {
	return x509.Certificate{
		Subject:               pkix.Name{CommonName: cn},
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        maxPathLenZero,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
}

// mtlsFixture is a store with a root, a signing CA under it, and cluster
// intermediates in every status.
type mtlsFixture struct {
	st   store.Store
	a    *Authenticator
	clk  *clock
	root *testCA
	// signing is the signing authority: an intermediate under root, so
	// that chains are longer than one.
	signing *testCA
	// Intermediates signed by signing, recorded in the store.
	active, superseded, revoked, expired, west *testCA
	// staleSuperseded was superseded longer ago than the renewal grace
	// period; legacySuperseded has no recorded supersession time.
	staleSuperseded, legacySuperseded *testCA
	// unrecorded was signed by signing but is not in the store.
	unrecorded *testCA
	// lookalike has active's serial but is another certificate.
	lookalike *testCA
	// foreign is recorded for east but chains to another root.
	foreign *testCA
	// leaf is a workload certificate under active.
	leaf *testCA
	// report makes auth call AuthenticateReport, not Authenticate.
	report bool
}

// forEachEntry runs fn with a fixture of its own for each way in:
// Authenticate and AuthenticateReport, whose outcomes must be the same.
func forEachEntry(t *testing.T, fn func(t *testing.T, f *mtlsFixture)) {
	for _, report := range []bool{false, true} {
		name := "Authenticate"
		if report {
			name = "AuthenticateReport"
		}
		t.Run(name, func(t *testing.T) {
			f := newMTLSFixture(t)
			f.report = report
			fn(t, f)
		})
	}
}

func newMTLSFixture(t testing.TB) *mtlsFixture {
	t.Helper()
	f := &mtlsFixture{st: newStore(t), clk: newClock()}
	f.root = newCert(t, nil, caTemplate("meshroot root", false))
	f.signing = newCert(t, f.root, caTemplate("meshroot signing", false))
	inter := func(cluster string) *testCA { return newCert(t, f.signing, caTemplate(cluster, true)) }
	f.active = inter("east")
	f.superseded = inter("east")
	f.staleSuperseded = inter("east")
	f.legacySuperseded = inter("east")
	f.revoked = inter("east")
	f.west = inter("west")
	f.unrecorded = inter("east")
	exp := caTemplate("east", true)
	exp.NotBefore, exp.NotAfter = t0.Add(-48*time.Hour), t0.Add(-time.Hour)
	f.expired = newCert(t, f.signing, exp)
	look := caTemplate("east", true)
	look.SerialNumber = f.active.cert.SerialNumber
	f.lookalike = newCert(t, f.signing, look)
	otherRoot := newCert(t, nil, caTemplate("other root", false))
	f.foreign = newCert(t, otherRoot, caTemplate("east", true))
	f.leaf = newCert(t, f.active, x509.Certificate{Subject: pkix.Name{CommonName: "workload"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})

	addCluster(t, f.st, store.Cluster{Name: "east"})
	addCluster(t, f.st, store.Cluster{Name: "west"})
	rootID := ca.RootID(f.root.cert)
	update(t, f.st, func(ctx context.Context, tx store.Tx) error {
		if err := tx.CreateRoot(ctx, store.Root{
			ID: rootID, TrustDomain: "example.org", State: store.RootActive, KeyRef: "test",
			ChainPEM: ca.EncodeCerts([]*x509.Certificate{f.signing.cert, f.root.cert}), NotAfter: f.signing.cert.NotAfter, CreatedAt: t0,
		}); err != nil {
			return err
		}
		for _, r := range []struct {
			c            *testCA
			cluster      string
			status       store.IntermediateStatus
			supersededAt time.Time
		}{
			{f.active, "east", store.IntermediateActive, time.Time{}},
			{f.superseded, "east", store.IntermediateSuperseded, t0.Add(-time.Minute)},
			{f.staleSuperseded, "east", store.IntermediateSuperseded, t0.Add(-ca.DefaultSupersededRenewalGrace - time.Second)},
			{f.legacySuperseded, "east", store.IntermediateSuperseded, time.Time{}},
			{f.revoked, "east", store.IntermediateRevoked, time.Time{}},
			{f.expired, "east", store.IntermediateActive, time.Time{}},
			{f.west, "west", store.IntermediateActive, time.Time{}},
			{f.foreign, "east", store.IntermediateActive, time.Time{}},
		} {
			if err := tx.CreateIntermediate(ctx, store.Intermediate{
				Serial: ca.SerialHex(r.c.cert.SerialNumber), Cluster: r.cluster, RootID: rootID,
				NotBefore: r.c.cert.NotBefore, NotAfter: r.c.cert.NotAfter, Status: r.status,
				CertPEM: ca.EncodeCerts([]*x509.Certificate{r.c.cert}), CreatedAt: t0, SupersededAt: r.supersededAt,
			}); err != nil {
				return err
			}
		}
		return nil
	})
	f.a = New(f.st, Options{Now: f.clk.Now, Roots: func(context.Context) ([]*x509.Certificate, error) {
		return []*x509.Certificate{f.root.cert}, nil
	}})
	return f
}

// chain is c's chain as an agent presents it: c, then the signing CA.
func (f *mtlsFixture) chain(c *testCA) []*x509.Certificate {
	return []*x509.Certificate{c.cert, f.signing.cert}
}

func (f *mtlsFixture) auth(cluster string, chain []*x509.Certificate) (Identity, error) {
	if f.report {
		return f.a.AuthenticateReport(context.Background(), cluster, Credential{PeerChain: chain})
	}
	return f.a.Authenticate(context.Background(), cluster, Credential{PeerChain: chain})
}

func TestMTLS(t *testing.T) { forEachEntry(t, testMTLS) }

func testMTLS(t *testing.T, f *mtlsFixture) {
	for name, c := range map[string]*testCA{"active": f.active, "superseded": f.superseded} {
		t.Run(name, func(t *testing.T) {
			id, err := f.auth("east", f.chain(c))
			want := Identity{Cluster: "east", Method: MethodMTLS, Subject: ca.SerialHex(c.cert.SerialNumber)}
			if f.report {
				wantReportIdentity(t, id, err, want)
			} else {
				wantIdentity(t, id, err, want)
			}
		})
	}
}

func TestMTLSRefusals(t *testing.T) { forEachEntry(t, testMTLSRefusals) }

func testMTLSRefusals(t *testing.T, f *mtlsFixture) {
	serial := func(c *testCA) string { return ca.SerialHex(c.cert.SerialNumber) }
	long := make([]*x509.Certificate, 9)
	for i := range long {
		long[i] = f.signing.cert
	}
	long[0] = f.active.cert
	for _, tc := range []struct {
		name    string
		cluster string
		chain   []*x509.Certificate
		code    Code
		want    []string
	}{
		{"chain too long", "east", long, Unauthenticated,
			[]string{"client certificate chain has 9 certificates: at most 8 are accepted"}},
		{"nil certificate", "east", []*x509.Certificate{f.active.cert, nil}, Unauthenticated,
			[]string{"client certificate chain: certificate 2 is missing"}},
		{"not a CA", "east", []*x509.Certificate{f.leaf.cert, f.active.cert, f.signing.cert}, Unauthenticated,
			[]string{"client certificate " + serial(f.leaf) + " is not a cluster intermediate: it is not a CA certificate"}},
		{"other root", "east", []*x509.Certificate{f.foreign.cert}, Unauthenticated,
			[]string{"client certificate " + serial(f.foreign) + " does not verify against the trust bundle", "unknown authority"}},
		{"chain missing", "east", []*x509.Certificate{f.active.cert}, Unauthenticated,
			[]string{"does not verify against the trust bundle"}},
		{"expired", "east", f.chain(f.expired), Unauthenticated,
			[]string{"client certificate " + serial(f.expired) + " does not verify against the trust bundle", "expired"}},
		{"not issued by meshroot", "east", f.chain(f.unrecorded), Unauthenticated,
			[]string{"certificate was not issued by meshroot (serial " + serial(f.unrecorded) + ")"}},
		{"same serial, other certificate", "east", f.chain(f.lookalike), Unauthenticated,
			[]string{"certificate was not issued by meshroot (serial " + serial(f.active) + " names another certificate)"}},
		{"other cluster", "east", f.chain(f.west), PermissionDenied,
			[]string{"intermediate " + serial(f.west) + " is for cluster west, not east"}},
		{"active, presented for another cluster", "west", f.chain(f.active), PermissionDenied,
			[]string{"intermediate " + serial(f.active) + " is for cluster east, not west"}},
		{"revoked", "east", f.chain(f.revoked), Unauthenticated,
			[]string{"intermediate " + serial(f.revoked) + " is revoked"}},
		{"superseded beyond the grace period", "east", f.chain(f.staleSuperseded), Unauthenticated,
			[]string{"intermediate " + serial(f.staleSuperseded) + " was superseded at 2026-03-01T11:49:59Z, more than the renewal grace period 10m0s ago, and can no longer renew"}},
		{"cluster not registered", "north", f.chain(f.active), PermissionDenied,
			[]string{"cluster north is not registered"}},
		{"cluster name invalid", "East", f.chain(f.active), PermissionDenied,
			[]string{"cluster name"}},
		{"superseded at an unrecorded time", "east", f.chain(f.legacySuperseded), Unauthenticated,
			[]string{"intermediate " + serial(f.legacySuperseded) + " was superseded (at a time not recorded) and can no longer renew"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.auth(tc.cluster, tc.chain)
			wantRefusal(t, err, tc.code, tc.want...)
		})
	}
}

func TestMTLSExpiresWithClock(t *testing.T) { forEachEntry(t, testMTLSExpiresWithClock) }

func testMTLSExpiresWithClock(t *testing.T, f *mtlsFixture) {
	if _, err := f.auth("east", f.chain(f.active)); err != nil {
		t.Fatal(err)
	}
	f.clk.Advance(25 * time.Hour) // past NotAfter
	_, err := f.auth("east", f.chain(f.active))
	wantRefusal(t, err, Unauthenticated, "does not verify against the trust bundle", "expired")
}

func TestMTLSRootLeftBundle(t *testing.T) {
	f := newMTLSFixture(t)
	other := newCert(t, nil, caTemplate("new root", false))
	a := New(f.st, Options{Now: f.clk.Now, Roots: func(context.Context) ([]*x509.Certificate, error) {
		return []*x509.Certificate{other.cert}, nil
	}})
	_, err := a.Authenticate(context.Background(), "east", Credential{PeerChain: f.chain(f.active)})
	wantRefusal(t, err, Unauthenticated, "does not verify against the trust bundle")
}

// TestMTLSVerifiedAcrossRootChanges: a chain verified once is not
// verified again while its path's root stays in the trust bundle, also
// when the bundle gains and loses other roots (a rotation's prepare and
// rollback); once its root leaves the bundle it is refused, and it is
// verified again when the root comes back.
func TestMTLSVerifiedAcrossRootChanges(t *testing.T) {
	f := newMTLSFixture(t)
	other := newCert(t, nil, caTemplate("next root", false))
	var mu sync.Mutex
	roots := []*x509.Certificate{f.root.cert}
	setRoots := func(rs ...*x509.Certificate) {
		mu.Lock()
		defer mu.Unlock()
		roots = rs
	}
	a := New(f.st, Options{Now: f.clk.Now, Roots: func(context.Context) ([]*x509.Certificate, error) {
		mu.Lock()
		defer mu.Unlock()
		return roots, nil
	}})
	auth := func() error {
		_, err := a.Authenticate(context.Background(), "east", Credential{PeerChain: f.chain(f.active)})
		return err
	}
	verifications := func() int {
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.verifications
	}
	if err := auth(); err != nil || verifications() != 1 {
		t.Fatalf("first: %v, %d verifications; want 1", err, verifications())
	}
	setRoots(f.root.cert, other.cert) // prepare
	if err := auth(); err != nil || verifications() != 1 {
		t.Errorf("a root added: %v, %d verifications; want the chain remembered (1)", err, verifications())
	}
	setRoots(other.cert, f.root.cert) // another order
	if err := auth(); err != nil || verifications() != 1 {
		t.Errorf("roots reordered: %v, %d verifications; want 1", err, verifications())
	}
	setRoots(other.cert) // the chain's root left
	wantRefusal(t, auth(), Unauthenticated, "does not verify against the trust bundle")
	setRoots(f.root.cert)
	if err := auth(); err != nil {
		t.Errorf("the root back: %v", err)
	}
	// A revoked intermediate is refused even though its chain verified.
	if _, err := a.Authenticate(context.Background(), "east", Credential{PeerChain: f.chain(f.revoked)}); err == nil {
		t.Error("a revoked intermediate authenticated")
	}
	n := verifications()
	setRoots(f.root.cert, other.cert)
	wantRefusal(t, func() error {
		_, err := a.Authenticate(context.Background(), "east", Credential{PeerChain: f.chain(f.revoked)})
		return err
	}(), Unauthenticated, "revoked")
	if verifications() != n {
		t.Errorf("the revoked chain was verified again after a root was added (%d -> %d)", n, verifications())
	}
	// The memo ends with the path's first expiry, whatever the roots.
	f.clk.Advance(25 * time.Hour)
	wantRefusal(t, auth(), Unauthenticated, "does not verify against the trust bundle", "expired")
}

func TestMTLSServerErrors(t *testing.T) {
	f := newMTLSFixture(t)
	_, err := New(f.st, Options{Now: f.clk.Now}).Authenticate(context.Background(), "east", Credential{PeerChain: f.chain(f.active)})
	wantInternal(t, err, "no trust bundle configured (Options.Roots)")

	a := New(f.st, Options{Now: f.clk.Now, Roots: func(context.Context) ([]*x509.Certificate, error) {
		return nil, errors.New("store is closed")
	}})
	_, err = a.Authenticate(context.Background(), "east", Credential{PeerChain: f.chain(f.active)})
	wantInternal(t, err, "trust bundle: store is closed")
}

// TestMTLSSupersededGrace: a superseded intermediate renews only within the
// stored policy's grace period after it was superseded (10 minutes by
// default; here it was superseded at t0-1m).
func TestMTLSSupersededGrace(t *testing.T) { forEachEntry(t, testMTLSSupersededGrace) }

func testMTLSSupersededGrace(t *testing.T, f *mtlsFixture) {
	if _, err := f.auth("east", f.chain(f.superseded)); err != nil {
		t.Fatalf("within the grace period: %v", err)
	}
	f.clk.Advance(ca.DefaultSupersededRenewalGrace - time.Minute + time.Second)
	_, err := f.auth("east", f.chain(f.superseded))
	wantRefusal(t, err, Unauthenticated, "more than the renewal grace period 10m0s ago")
	if _, err := f.auth("east", f.chain(f.active)); err != nil {
		t.Fatalf("the active intermediate still renews: %v", err)
	}

	// The grace period is the stored policy's.
	b, err := json.Marshal(ca.Policy{SupersededRenewalGrace: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	update(t, f.st, func(ctx context.Context, tx store.Tx) error { return tx.SetMeta(ctx, ca.MetaPolicy, string(b)) })
	if _, err := f.auth("east", f.chain(f.superseded)); err != nil {
		t.Fatalf("within a stored grace period of 1h: %v", err)
	}
	f.clk.Advance(time.Hour)
	_, err = f.auth("east", f.chain(f.superseded))
	wantRefusal(t, err, Unauthenticated, "more than the renewal grace period 1h0m0s ago")
}

// TestMTLSEarlierRegistration: an intermediate issued to a cluster that was
// removed does not renew for a cluster registered later under the same name,
// even when it was left active (as versions before removal revoked them did).
func TestMTLSEarlierRegistration(t *testing.T) { forEachEntry(t, testMTLSEarlierRegistration) }

func testMTLSEarlierRegistration(t *testing.T, f *mtlsFixture) {
	if _, err := f.auth("east", f.chain(f.active)); err != nil {
		t.Fatal(err)
	}
	update(t, f.st, func(ctx context.Context, tx store.Tx) error {
		if err := tx.DeleteCluster(ctx, "east"); err != nil {
			return err
		}
		return tx.CreateCluster(ctx, store.Cluster{Name: "east", TrustDomain: "example.org", CreatedAt: t0.Add(time.Minute)})
	})
	_, err := f.auth("east", f.chain(f.active))
	wantRefusal(t, err, PermissionDenied, "intermediate "+ca.SerialHex(f.active.cert.SerialNumber)+" was issued at 2026-03-01T12:00:00Z to an earlier registration of cluster east, which was removed")
}

// readCounter is a store that counts authentication's reads, and fails
// GetRegisteredIntermediate with failRegistered when it is set.
type readCounter struct {
	store.Store
	mu                                  sync.Mutex
	clusters, intermediates, registered int
	failRegistered                      error
}

func (r *readCounter) GetCluster(ctx context.Context, name string) (store.Cluster, error) {
	r.mu.Lock()
	r.clusters++
	r.mu.Unlock()
	return r.Store.GetCluster(ctx, name)
}

func (r *readCounter) GetIntermediate(ctx context.Context, serial string) (store.Intermediate, error) {
	r.mu.Lock()
	r.intermediates++
	r.mu.Unlock()
	return r.Store.GetIntermediate(ctx, serial)
}

func (r *readCounter) GetRegisteredIntermediate(ctx context.Context, serial string) (store.RegisteredIntermediate, error) {
	r.mu.Lock()
	r.registered++
	fail := r.failRegistered
	r.mu.Unlock()
	if fail != nil {
		return store.RegisteredIntermediate{}, fail
	}
	return r.Store.GetRegisteredIntermediate(ctx, serial)
}

func (r *readCounter) counts() [3]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := [3]int{r.clusters, r.intermediates, r.registered}
	r.clusters, r.intermediates, r.registered = 0, 0, 0
	return n
}

// TestAuthenticateReportReads: a status report by the cluster's own
// intermediate reads the intermediate and its cluster's registration
// once, together, not the cluster's record; Authenticate reads the record
// and the intermediate. Another cluster's intermediate takes
// Authenticate's reads (they say why it is refused), and a store failure
// is a failure, not a refusal.
func TestAuthenticateReportReads(t *testing.T) {
	f := newMTLSFixture(t)
	rc := &readCounter{Store: f.st}
	a := New(rc, Options{Now: f.clk.Now, Roots: func(context.Context) ([]*x509.Certificate, error) {
		return []*x509.Certificate{f.root.cert}, nil
	}})
	ctx := context.Background()
	cred := Credential{PeerChain: f.chain(f.active)}

	id, err := a.AuthenticateReport(ctx, "east", cred)
	wantReportIdentity(t, id, err, Identity{Cluster: "east", Method: MethodMTLS, Subject: ca.SerialHex(f.active.cert.SerialNumber)})
	if got, want := rc.counts(), [3]int{0, 0, 1}; got != want {
		t.Errorf("AuthenticateReport read clusters, intermediates, registered intermediates %v times, want %v", got, want)
	}
	if _, err := a.Authenticate(ctx, "east", cred); err != nil {
		t.Fatal(err)
	}
	if got, want := rc.counts(), [3]int{1, 1, 0}; got != want {
		t.Errorf("Authenticate read clusters, intermediates, registered intermediates %v times, want %v", got, want)
	}
	_, err = a.AuthenticateReport(ctx, "east", Credential{PeerChain: f.chain(f.west)})
	wantRefusal(t, err, PermissionDenied, "is for cluster west, not east")
	if got, want := rc.counts(), [3]int{1, 1, 1}; got != want {
		t.Errorf("AuthenticateReport of another cluster's intermediate read %v times, want %v", got, want)
	}

	rc.failRegistered = errors.New("database is locked")
	_, err = a.AuthenticateReport(ctx, "east", cred)
	wantInternal(t, err, "authenticate for cluster east", "database is locked")
}
