package ca_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/keys"
	"github.com/meshroot/meshroot/keys/disk"
	"github.com/meshroot/meshroot/store"
	"github.com/meshroot/meshroot/store/sqlite"
)

// barrierStore is a real store whose first n Updates wait until all n
// have arrived (or a timeout passed) before any runs: each command has
// done every read it makes outside its transaction before either commits,
// the interleaving in which a check made outside the transaction goes stale.
type barrierStore struct {
	store.Updater
	n       int32
	arrived atomic.Int32
	all     chan struct{}
	once    sync.Once
}

func newBarrierStore(s store.Store, n int) *barrierStore {
	return &barrierStore{Updater: s.Updater, n: int32(n), all: make(chan struct{})}
}

// wrap returns s with its Updates going through b.
func (b *barrierStore) wrap(s store.Store) store.Store {
	s.Updater = b
	return s
}

func (b *barrierStore) Update(ctx context.Context, fn func(tx store.Tx) error) error {
	if k := b.arrived.Add(1); k <= b.n {
		if k == b.n {
			b.once.Do(func() { close(b.all) })
		}
		select {
		case <-b.all:
		case <-time.After(5 * time.Second): // a command refused before its transaction
		}
	}
	return b.Updater.Update(ctx, fn)
}

// slowKeys is a key manager whose key creation takes a while, like an HSM
// under load: the window in which an operator retries.
type slowKeys struct {
	keys.KeyManager
	delay time.Duration
}

func (k slowKeys) CreateKey(ctx context.Context, name string, kt keys.KeyType) (keys.Key, error) {
	time.Sleep(k.delay)
	return k.KeyManager.CreateKey(ctx, name, kt)
}

// raceEnv is one service over one SQLite store (with a barrier for the next
// two Updates once armed) and its disk key manager.
type raceEnv struct {
	svc *ca.Service
	st  store.Store
	bar *barrierStore
	km  keys.KeyManager
}

func newRaceEnv(t *testing.T, keyDelay time.Duration) *raceEnv {
	t.Helper()
	dir := t.TempDir()
	st, err := sqlite.Open(context.Background(), filepath.Join(dir, "meshroot.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	// Plaintext keys: each round makes several, and the passphrase's key
	// derivation is deliberately slow.
	km, err := disk.New(disk.Options{Dir: filepath.Join(dir, "keys"), InsecurePlaintext: true})
	if err != nil {
		t.Fatal(err)
	}
	// The barrier is disarmed (already passed) until arm.
	bar := newBarrierStore(st, 0)
	bar.arrived.Store(1 << 20)
	svc, err := ca.NewService(bar.wrap(st), slowKeys{km, keyDelay}, ca.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	return &raceEnv{svc: svc, st: st, bar: bar, km: km}
}

// arm makes the next two Updates meet before either runs.
func (e *raceEnv) arm() {
	e.bar.all, e.bar.once = make(chan struct{}), sync.Once{}
	e.bar.n = 2
	e.bar.arrived.Store(0)
}

// race runs a and b at the same moment and returns their errors.
func race(a, b func() error) [2]error {
	var errs [2]error
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, f := range []func() error{a, b} {
		wg.Go(func() {
			<-start
			errs[i] = f()
		})
	}
	close(start)
	wg.Wait()
	return errs
}

// oneWins fails unless exactly one of errs is nil and the other a refusal.
func oneWins(t *testing.T, what string, errs [2]error) int {
	t.Helper()
	var pe *ca.PolicyError
	switch {
	case errs[0] == nil && errs[1] == nil:
		t.Errorf("%s: both won", what)
	case errs[0] != nil && errs[1] != nil:
		t.Errorf("%s: neither won: %v; %v", what, errs[0], errs[1])
	case errs[0] == nil && !errors.As(errs[1], &pe), errs[1] == nil && !errors.As(errs[0], &pe):
		t.Errorf("%s: the loser failed without a refusal: %v %v", what, errs[0], errs[1])
	case errs[0] == nil:
		return 0
	default:
		return 1
	}
	return -1
}

// consistent checks the store's invariants: exactly one active root (when
// any root exists), at most one prepared, the served bundle holds exactly
// the roots in state prepared/active/retiring, no intermediate under a
// revoked root is still valid, and the audit chain verifies.
func consistent(t *testing.T, e *raceEnv) {
	t.Helper()
	ctx := context.Background()
	roots, err := e.st.ListRoots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	count := map[store.RootState]int{}
	inBundle := map[string]bool{}
	revoked := map[string]bool{}
	for _, r := range roots {
		count[r.State]++
		inBundle[r.ID] = r.State.InBundle()
		revoked[r.ID] = r.State == store.RootRevoked
	}
	if len(roots) > 0 && count[store.RootActive] != 1 || count[store.RootPrepared] > 1 {
		t.Errorf("roots by state %v: want exactly one active and at most one prepared", count)
	}
	if len(roots) > 0 {
		tb, err := e.svc.TrustBundle(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, c := range tb.Roots {
			if !inBundle[ca.RootID(c)] {
				t.Errorf("the served bundle holds root %s, which is not prepared, active or retiring", ca.RootID(c))
			}
			n++
		}
		want := count[store.RootPrepared] + count[store.RootActive] + count[store.RootRetiring]
		if n != want {
			t.Errorf("the served bundle holds %d roots, want %d", n, want)
		}
	}
	inters, err := e.st.ListIntermediates(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range inters {
		if revoked[in.RootID] && in.Status != store.IntermediateRevoked {
			t.Errorf("intermediate %s under revoked root %s is %s", in.Serial, in.RootID, in.Status)
		}
	}
	if err := e.st.VerifyAudit(ctx); err != nil {
		t.Errorf("audit chain: %v", err)
	}
}

// okAudits counts audit rows of action with result ok.
func okAudits(t *testing.T, st store.Store, action string) int {
	t.Helper()
	entries, err := st.ListAudit(context.Background(), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if e.Action == action && e.Result == "ok" {
			n++
		}
	}
	return n
}

// rounds is how many times each race runs: each round is a fresh store,
// and the barrier makes every round the stale-read interleaving.
const rounds = 20

// withRoot initialises the root and a cluster holding an intermediate that
// has reported the current bundle.
func withRoot(t *testing.T, e *raceEnv) store.Root {
	t.Helper()
	ctx := context.Background()
	root, err := e.svc.InitRoot(ca.WithActor(ctx, actor), ca.InitRootRequest{TrustDomain: "example.org"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.AddCluster(ca.WithActor(ctx, actor), ca.AddClusterRequest{Name: "east"}); err != nil {
		t.Fatal(err)
	}
	issueAndReport(t, e.svc, "east")
	return root
}

// TestRaceTwoEmergencyRevokes: an operator retries `root revoke
// --emergency` while the HSM is slow to create the replacement key. One
// revocation happens; the other is refused; one root is active.
func TestRaceTwoEmergencyRevokes(t *testing.T) {
	ctx := context.Background()
	for range rounds {
		e := newRaceEnv(t, 50*time.Millisecond)
		old := withRoot(t, e)
		e.arm()
		req := ca.RevokeRequest{RootID: old.ID, Emergency: true}
		revoke := func() error { _, err := e.svc.RevokeRoot(ca.WithActor(ctx, actor), req); return err }
		errs := race(revoke, revoke)
		if w := oneWins(t, "two revokes of the same root", errs); w >= 0 && !strings.Contains(errs[1-w].Error(), "already revoked") {
			t.Errorf("the losing revoke: %v; want it to say the root is already revoked", errs[1-w])
		}
		consistent(t, e)
		if n := okAudits(t, e.st, "root.revoke"); n != 1 {
			t.Errorf("%d successful root.revoke audit rows, want 1", n)
		}
		if t.Failed() {
			return
		}
	}
}

// TestRaceActivateAndRevoke: `root activate` and `root revoke --emergency`
// of the prepared root run together. Exactly one happens, and a revoked
// root never comes back into the bundle.
func TestRaceActivateAndRevoke(t *testing.T) {
	ctx := context.Background()
	wins := [2]int{}
	for range rounds {
		e := newRaceEnv(t, 0)
		withRoot(t, e)
		next, err := e.svc.PrepareRoot(ca.WithActor(ctx, actor), ca.PrepareRootRequest{})
		if err != nil {
			t.Fatal(err)
		}
		issueAndReport(t, e.svc, "east")
		e.arm()
		errs := race(
			func() error { _, err := e.svc.ActivateRoot(ca.WithActor(ctx, actor), ca.PhaseRequest{}); return err },
			func() error {
				_, err := e.svc.RevokeRoot(ca.WithActor(ctx, actor), ca.RevokeRequest{RootID: next.ID, Emergency: true})
				return err
			})
		if w := oneWins(t, "activate and revoke", errs); w >= 0 {
			wins[w]++
		}
		got, err := e.st.GetRoot(ctx, next.ID)
		if err != nil {
			t.Fatal(err)
		}
		tb, _ := e.svc.TrustBundle(ctx)
		for _, c := range tb.Roots {
			if ca.RootID(c) == next.ID && got.State == store.RootRevoked {
				t.Errorf("the revoked root %s is back in the bundle", next.ID)
			}
		}
		consistent(t, e)
		if t.Failed() {
			return
		}
	}
	t.Logf("over %d rounds: activate won %d, revoke won %d", rounds, wins[0], wins[1])
}

// TestRaceTwoInits: two `root init` at once leave one active root.
func TestRaceTwoInits(t *testing.T) {
	ctx := context.Background()
	for range rounds {
		e := newRaceEnv(t, 0)
		e.arm()
		initRoot := func() error {
			_, err := e.svc.InitRoot(ca.WithActor(ctx, actor), ca.InitRootRequest{TrustDomain: "example.org"})
			return err
		}
		oneWins(t, "two inits", race(initRoot, initRoot))
		consistent(t, e)
		if seq, _ := e.st.BundleSequence(ctx); seq != 1 {
			t.Errorf("bundle sequence %d after one init, want 1", seq)
		}
		if t.Failed() {
			return
		}
	}
}

// TestRaceTwoPrepares: two `root prepare` at once leave one prepared root.
func TestRaceTwoPrepares(t *testing.T) {
	ctx := context.Background()
	for range rounds {
		e := newRaceEnv(t, 0)
		withRoot(t, e)
		e.arm()
		prepare := func() error {
			_, err := e.svc.PrepareRoot(ca.WithActor(ctx, actor), ca.PrepareRootRequest{CrossSign: true})
			return err
		}
		oneWins(t, "two prepares", race(prepare, prepare))
		consistent(t, e)
		if n := okAudits(t, e.st, "root.prepare"); n != 1 {
			t.Errorf("%d successful root.prepare audit rows, want 1", n)
		}
		if t.Failed() {
			return
		}
	}
}

// TestRaceTwoActivates: of two `root activate` at once, one activates and
// the other finds nothing left to do; one activation is recorded.
func TestRaceTwoActivates(t *testing.T) {
	ctx := context.Background()
	for range rounds {
		e := newRaceEnv(t, 0)
		withRoot(t, e)
		if _, err := e.svc.PrepareRoot(ca.WithActor(ctx, actor), ca.PrepareRootRequest{}); err != nil {
			t.Fatal(err)
		}
		issueAndReport(t, e.svc, "east")
		e.arm()
		var results [2]ca.PhaseResult
		errs := race(
			func() (err error) {
				results[0], err = e.svc.ActivateRoot(ca.WithActor(ctx, actor), ca.PhaseRequest{})
				return err
			},
			func() (err error) {
				results[1], err = e.svc.ActivateRoot(ca.WithActor(ctx, actor), ca.PhaseRequest{})
				return err
			})
		if errs[0] != nil || errs[1] != nil {
			t.Fatalf("two activates: %v; %v", errs[0], errs[1])
		}
		noop := 0
		for _, r := range results {
			if len(r.Changes) == 1 && strings.HasPrefix(r.Changes[0], "nothing to do") {
				noop++
			}
		}
		if n := okAudits(t, e.st, "root.activate"); n != 1 || noop != 1 {
			t.Errorf("two activates: %d recorded activations and %d no-ops, want 1 and 1", n, noop)
		}
		consistent(t, e)
		if t.Failed() {
			return
		}
	}
}

// mintUnder signs a CA certificate for a new key with parentKey as issuer
// parent: what whoever holds a root's key can make.
func mintUnder(t *testing.T, parent *x509.Certificate, parentKey crypto.Signer, ca bool, id string) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	key, err := keys.ECP256.Generate()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "minted"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IsCA: ca, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature,
	}
	if ca {
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	} else {
		u, _ := url.Parse(id)
		tmpl.URIs = []*url.URL{u}
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, key
}

// TestRevokeCrossSignedRootDropsItsSigner: after `prepare --cross-sign`
// and activate, the new root P is revoked. Whoever holds P's key can mint
// an intermediate and a leaf and present them with the public cross
// certificate (P certified by the old root A); the bundle after the
// revocation must not let that chain verify, so A leaves it too, and the
// dry run says so.
func TestRevokeCrossSignedRootDropsItsSigner(t *testing.T) {
	ctx := context.Background()
	e := newRaceEnv(t, 0)
	old := withRoot(t, e)
	next, err := e.svc.PrepareRoot(ca.WithActor(ctx, actor), ca.PrepareRootRequest{CrossSign: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.ActivateRoot(ca.WithActor(ctx, actor), ca.PhaseRequest{Force: true}); err != nil {
		t.Fatal(err)
	}
	issued := issueAndReport(t, e.svc, "east")
	if len(issued.Chain) != 3 {
		t.Fatalf("chain under the cross-signed root: %d certificates, want intermediate, cross, old root", len(issued.Chain))
	}
	cross := issued.Chain[1]

	// What the holder of P's key makes.
	pKey, err := e.km.Signer(ctx, next.KeyRef)
	if err != nil {
		t.Fatal(err)
	}
	pCerts, _ := ca.ParseCerts(next.ChainPEM)
	inter, interKey := mintUnder(t, pCerts[0], pKey, true, "")
	leaf, _ := mintUnder(t, inter, interKey, false, "spiffe://example.org/ns/x/sa/attacker")
	verify := func(roots []*x509.Certificate) error {
		pool, ipool := x509.NewCertPool(), x509.NewCertPool()
		for _, r := range roots {
			pool.AddCert(r)
		}
		ipool.AddCert(inter)
		ipool.AddCert(cross)
		_, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: ipool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		return err
	}
	before, _ := e.svc.TrustBundle(ctx)
	oldCert, _ := ca.ParseCerts(old.ChainPEM)
	if err := verify(oldCert); err != nil {
		t.Fatalf("before the revocation, the minted chain must verify against the old root alone (the attack's premise): %v", err)
	}
	if err := verify(before.Roots); err != nil {
		t.Fatalf("before the revocation, the minted chain must verify against the bundle: %v", err)
	}

	dry, err := e.svc.RevokeRoot(ca.WithActor(ctx, actor), ca.RevokeRequest{RootID: next.ID, Emergency: true, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if s := strings.Join(dry.Changes, "\n"); !strings.Contains(s, old.ID) || !strings.Contains(s, "cross-signed") {
		t.Errorf("the dry run does not say that the cross-signing root %s leaves the bundle too:\n%s", old.ID, s)
	}
	if _, err := e.svc.RevokeRoot(ca.WithActor(ctx, actor), ca.RevokeRequest{RootID: next.ID, Emergency: true}); err != nil {
		t.Fatal(err)
	}
	states := rootStates(t, e.svc)
	if states[next.ID] != store.RootRevoked || states[old.ID] != store.RootRevoked {
		t.Errorf("after revoking the cross-signed root: %v; want it and its cross-signer revoked", states)
	}
	after, err := e.svc.TrustBundle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ua x509.UnknownAuthorityError
	if err := verify(after.Roots); !errors.As(err, &ua) {
		t.Errorf("a chain minted with the revoked key, with the cross certificate, against the bundle after the revocation: %v; want an unknown-authority refusal", err)
	}
	consistent(t, e)
	// Issuance goes on from the replacement, with a chain of its own.
	out := issueAndReport(t, e.svc, "east")
	if out.RootID == next.ID || out.RootID == old.ID || len(out.Chain) != 2 {
		t.Errorf("after the revocation: issued under %s with a chain of %d", out.RootID, len(out.Chain))
	}
	entries, _ := e.st.ListAudit(ctx, 0, 0)
	for _, en := range entries {
		if en.Action == "root.revoke" && en.Result == "ok" && !strings.Contains(en.Details, old.ID) {
			t.Errorf("the revocation's audit row does not name the cross-signer: %s", en.Details)
		}
	}
}

// TestRevokePreparedCrossSignedRoot: a prepared root cross-signed by the
// active root is revoked before activation; the cross certificate exists,
// so the active root goes too and a replacement takes over.
func TestRevokePreparedCrossSignedRoot(t *testing.T) {
	ctx := context.Background()
	e := newRaceEnv(t, 0)
	old := withRoot(t, e)
	next, err := e.svc.PrepareRoot(ca.WithActor(ctx, actor), ca.PrepareRootRequest{CrossSign: true})
	if err != nil {
		t.Fatal(err)
	}
	res, err := e.svc.RevokeRoot(ca.WithActor(ctx, actor), ca.RevokeRequest{RootID: next.ID, Emergency: true})
	if err != nil {
		t.Fatal(err)
	}
	states := rootStates(t, e.svc)
	if states[next.ID] != store.RootRevoked || states[old.ID] != store.RootRevoked || len(states) != 3 {
		t.Errorf("after revoking the prepared cross-signed root: %v; want both revoked and a replacement", states)
	}
	if strings.Join(res.LosingTrust, ",") != "east" {
		t.Errorf("clusters losing trust: %v, want east (its intermediate is under the cross-signer)", res.LosingTrust)
	}
	consistent(t, e)
}
