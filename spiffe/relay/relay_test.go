package relay

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/federation/bundle"
	"github.com/meshroot/meshroot/internal/testca"
	"github.com/meshroot/meshroot/keys/disk"
	"github.com/meshroot/meshroot/spiffe"
	"github.com/meshroot/meshroot/store/sqlite"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// upstream is a meshroot bundle endpoint (spiffe.NewEndpoint and
// spiffe.NewHandler, https_web) serving whatever trust bundle the test sets.
type upstream struct {
	url   string
	ca    *testca.CA // issued the endpoint's certificate
	serve atomic.Pointer[ca.TrustBundle]
}

func startUpstream(t *testing.T) *upstream {
	t.Helper()
	u := &upstream{ca: testca.New(t, "")}
	certFile, keyFile := u.ca.LeafFiles(t)
	h := spiffe.NewHandler(func() (ca.TrustBundle, bool) {
		tb := u.serve.Load()
		if tb == nil {
			return ca.TrustBundle{}, false
		}
		return *tb, true
	}, 0, testca.QuietLog(t))
	ep, err := spiffe.NewEndpoint(spiffe.EndpointConfig{Listen: "127.0.0.1:0", Profile: spiffe.ProfileWeb, CertFile: certFile, KeyFile: keyFile, Handler: h, Log: testca.QuietLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	testca.Run(t, ep.Run)
	u.url = "https://" + ep.Addr() + "/"
	return u
}

// set makes the upstream serve roots under seq.
func (u *upstream) set(seq uint64, roots ...*x509.Certificate) {
	u.serve.Store(&ca.TrustBundle{TrustDomain: td.String(), Roots: roots, Sequence: seq, RefreshHint: 7 * time.Second})
}

func root(t *testing.T) *x509.Certificate { return testca.New(t, "").Cert }

func newRelay(t *testing.T, cfg Config) *Relay {
	t.Helper()
	cfg.TrustDomain = td
	if cfg.Log == nil {
		cfg.Log = testca.QuietLog(t)
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// serveRelay serves r's bundle on an https_web endpoint, as meshroot-bundle
// does, and returns its URL and the pool that authenticates it.
func serveRelay(t *testing.T, r *Relay) (string, *x509.CertPool) {
	t.Helper()
	c := testca.New(t, "")
	certFile, keyFile := c.LeafFiles(t)
	ep, err := spiffe.NewEndpoint(spiffe.EndpointConfig{Listen: "127.0.0.1:0", Profile: spiffe.ProfileWeb, CertFile: certFile, KeyFile: keyFile,
		Handler: spiffe.NewHandler(r.Bundle, 0, testca.QuietLog(t)), Log: testca.QuietLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	testca.Run(t, ep.Run)
	return "https://" + ep.Addr() + "/", c.Pool()
}

// fetch is a federation peer (go-spiffe's client) fetching from url.
func fetch(t *testing.T, url string, pool *x509.CertPool) *spiffebundle.Bundle {
	t.Helper()
	b, err := federation.FetchBundle(context.Background(), td, url, federation.WithWebPKIRoots(pool))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustRefresh(t *testing.T, r *Relay, wantChanged bool) {
	t.Helper()
	changed, err := r.Refresh(context.Background())
	if err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	if changed != wantChanged {
		t.Fatalf("Refresh reported changed=%v, want %v", changed, wantChanged)
	}
}

func wantServed(t *testing.T, b *spiffebundle.Bundle, seq uint64, roots ...*x509.Certificate) {
	t.Helper()
	if s, ok := b.SequenceNumber(); !ok || s != seq {
		t.Errorf("served sequence %d (set: %v), want %d", s, ok, seq)
	}
	if !slices.EqualFunc(b.X509Authorities(), roots, (*x509.Certificate).Equal) {
		t.Errorf("served %d authorities, want the %d the upstream serves", len(b.X509Authorities()), len(roots))
	}
	if h, ok := b.RefreshHint(); !ok || h != 7*time.Second {
		t.Errorf("served refresh hint %v (set: %v), want the upstream's 7s", h, ok)
	}
}

func wantReason(t *testing.T, err error, reason string) {
	t.Helper()
	if err == nil {
		t.Fatalf("Refresh took what it should refuse (%s)", reason)
	}
	if got := bundle.ReasonOf(err); got != reason {
		t.Fatalf("Refresh refused with reason %q (%v), want %q", got, err, reason)
	}
}

// TestRelayFollowsUpstream: the relay serves nothing (503) until its first
// fetch, then the upstream's bundle, and each new sequence after the next
// fetch; a fetch of the same bundle changes nothing.
func TestRelayFollowsUpstream(t *testing.T) {
	t.Parallel()
	up := startUpstream(t)
	a, b := root(t), root(t)
	up.set(1, a)
	r := newRelay(t, Config{URL: up.url, Roots: up.ca.Pool()})
	url, pool := serveRelay(t, r)

	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("before its first fetch the relay answered %s, want 503", resp.Status)
	}
	mustRefresh(t, r, true)
	wantServed(t, fetch(t, url, pool), 1, a)

	up.set(2, a, b)
	mustRefresh(t, r, true)
	wantServed(t, fetch(t, url, pool), 2, a, b)
	mustRefresh(t, r, false)
	if seq, _ := r.Sequence(); seq != 2 {
		t.Fatalf("Sequence() = %d, want 2", seq)
	}
}

// TestRelayRefusesWhatItMustNot: a lower sequence (rollback), other roots
// under the sequence held, an upstream it cannot authenticate and an
// unreachable one all leave the bundle held in service; a new refresh
// hint under the same sequence and roots is taken.
func TestRelayRefusesWhatItMustNot(t *testing.T) {
	t.Parallel()
	up := startUpstream(t)
	a, b, evil := root(t), root(t), root(t)
	up.set(5, a, b)
	r := newRelay(t, Config{URL: up.url, Roots: up.ca.Pool()})
	url, pool := serveRelay(t, r)
	mustRefresh(t, r, true)

	up.set(4, evil)
	_, err := r.Refresh(context.Background())
	wantReason(t, err, bundle.ReasonLowerSequence)
	wantServed(t, fetch(t, url, pool), 5, a, b)

	up.set(5, a, evil)
	_, err = r.Refresh(context.Background())
	wantReason(t, err, bundle.ReasonLowerSequence)
	if !strings.Contains(err.Error(), "under the sequence 5 held") {
		t.Errorf("same sequence, other roots: refused with %v", err)
	}
	wantServed(t, fetch(t, url, pool), 5, a, b)

	// The same roots under the same sequence with another refresh hint
	// (the server's setting changed) is taken: it changes no trust.
	up.serve.Store(&ca.TrustBundle{TrustDomain: td.String(), Roots: []*x509.Certificate{a, b}, Sequence: 5, RefreshHint: time.Minute})
	mustRefresh(t, r, true)
	if tb, _ := r.Bundle(); tb.RefreshHint != time.Minute || tb.Sequence != 5 {
		t.Fatalf("after a new refresh hint the relay holds hint %v, sequence %d; want 1m0s, 5", tb.RefreshHint, tb.Sequence)
	}
	up.set(5, a, b) // back to 7 s for the checks below
	mustRefresh(t, r, true)

	// A relay that trusts another CA refuses this upstream's certificate
	// (an impostor between the relay and the upstream).
	other := newRelay(t, Config{URL: up.url, Roots: testca.New(t, "").Pool()})
	up.set(6, a)
	_, err = other.Refresh(context.Background())
	wantReason(t, err, bundle.ReasonTLS)
	if _, ok := other.Bundle(); ok {
		t.Fatal("a relay that could not authenticate the upstream holds a bundle")
	}

	// An upstream that is gone.
	gone := newRelay(t, Config{URL: "https://127.0.0.1:1/", Roots: up.ca.Pool()})
	_, err = gone.Refresh(context.Background())
	wantReason(t, err, bundle.ReasonNetwork)
}

// TestRelayRefusesBundleWithoutSequence: the relay needs a sequence to
// refuse rollbacks; an upstream document without one is refused.
func TestRelayRefusesBundleWithoutSequence(t *testing.T) {
	t.Parallel()
	a := root(t)
	doc, err := spiffebundle.FromX509Authorities(td, []*x509.Certificate{a}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(doc), "spiffe_sequence") {
		t.Fatalf("the test document carries a sequence: %s", doc)
	}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(doc) }))
	t.Cleanup(srv.Close)
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	r := newRelay(t, Config{URL: srv.URL + "/", Roots: pool})
	_, err = r.Refresh(context.Background())
	wantReason(t, err, bundle.ReasonParse)
	if _, ok := r.Bundle(); ok {
		t.Fatal("the relay holds a bundle without a sequence")
	}
}

// TestRelayCacheFile: a restarted relay serves the cached bundle before the
// upstream answers, and still refuses what is older than it; a cache file
// that holds no bundle stops the relay from starting.
func TestRelayCacheFile(t *testing.T) {
	t.Parallel()
	up := startUpstream(t)
	a, b := root(t), root(t)
	up.set(3, a, b)
	cache := filepath.Join(t.TempDir(), "bundle.json")
	first := newRelay(t, Config{URL: up.url, Roots: up.ca.Pool(), CacheFile: cache})
	mustRefresh(t, first, true)
	fi, err := os.Stat(cache)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("cache file mode %v, want 0644 (a public document)", fi.Mode().Perm())
	}

	// Restart while the upstream is unreachable.
	again := newRelay(t, Config{URL: "https://127.0.0.1:1/", Roots: up.ca.Pool(), CacheFile: cache})
	url, pool := serveRelay(t, again)
	wantServed(t, fetch(t, url, pool), 3, a, b)
	if _, err := again.Refresh(context.Background()); err == nil {
		t.Fatal("a fetch from a closed port succeeded")
	}
	wantServed(t, fetch(t, url, pool), 3, a, b)

	// Restart against an upstream rolled back to an older bundle.
	up.set(2, a)
	rolled := newRelay(t, Config{URL: up.url, Roots: up.ca.Pool(), CacheFile: cache})
	_, err = rolled.Refresh(context.Background())
	wantReason(t, err, bundle.ReasonLowerSequence)
	if seq, _ := rolled.Sequence(); seq != 3 {
		t.Fatalf("after a refused rollback the relay holds sequence %d, want 3", seq)
	}

	// A newer bundle replaces the cached one on disk.
	up.set(9, b)
	mustRefresh(t, rolled, true)
	onDisk, err := readCache(cache, td)
	if err != nil {
		t.Fatal(err)
	}
	if seq, _ := onDisk.SequenceNumber(); seq != 9 {
		t.Fatalf("cache file holds sequence %d, want 9", seq)
	}

	// Garbage in the cache file.
	if err := os.WriteFile(cache, []byte("not a bundle"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = New(Config{TrustDomain: td, URL: up.url, CacheFile: cache, Log: testca.QuietLog(t)})
	if err == nil || !strings.Contains(err.Error(), "delete it") {
		t.Fatalf("New with a garbage cache file: %v, want an error that says what to do", err)
	}
}

// TestRelayRunPolls: Run fetches at once and again every Poll.
func TestRelayRunPolls(t *testing.T) {
	t.Parallel()
	up := startUpstream(t)
	a, b := root(t), root(t)
	up.set(1, a)
	r := newRelay(t, Config{URL: up.url, Roots: up.ca.Pool(), Poll: MinPoll})
	testca.Run(t, r.Run)
	testca.WaitFor(t, 5*time.Second, "the first fetch", func() bool { s, ok := r.Sequence(); return ok && s == 1 })
	up.set(2, a, b)
	start := time.Now()
	testca.WaitFor(t, 5*time.Second, "the next poll", func() bool { s, _ := r.Sequence(); return s == 2 })
	if d := time.Since(start); d > MinPoll+MinPoll/10+time.Second {
		t.Errorf("the change took %v to reach the relay, over one poll interval", d)
	}
}

// TestRelaySPIFFEUpstream: an https_spiffe upstream (meshroot's endpoint
// with its own SVID) is authenticated with the bootstrap bundle first and
// then with the bundle held; without a bootstrap bundle, or expecting
// another endpoint ID, the relay refuses it.
func TestRelaySPIFFEUpstream(t *testing.T) {
	t.Parallel()
	ctx := ca.WithActor(context.Background(), "test")
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "meshroot.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	km, err := disk.New(disk.Options{Dir: filepath.Join(t.TempDir(), "keys"), InsecurePlaintext: true})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := ca.NewService(st, km, ca.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.InitRoot(ctx, ca.InitRootRequest{TrustDomain: td.String()}); err != nil {
		t.Fatal(err)
	}
	source := func() (ca.TrustBundle, bool) {
		tb, err := svc.TrustBundle(context.Background())
		return tb, err == nil
	}
	svids := spiffe.NewSVIDSource(svc, td.String(), 0, testca.QuietLog(t))
	testca.Run(t, svids.Run)
	ep, err := spiffe.NewEndpoint(spiffe.EndpointConfig{Listen: "127.0.0.1:0", Profile: spiffe.ProfileSPIFFE, SVIDs: svids, Handler: spiffe.NewHandler(source, 0, nil), Log: testca.QuietLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	testca.Run(t, ep.Run)
	url := "https://" + ep.Addr() + "/"
	id := spiffeid.RequireFromPath(td, spiffe.BundleEndpointPath)
	tb, err := svc.TrustBundle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bootstrap := spiffebundle.FromX509Authorities(td, tb.Roots)

	none := newRelay(t, Config{URL: url, EndpointID: id})
	_, err = none.Refresh(ctx)
	wantReason(t, err, bundle.ReasonNoBundle)

	wrongID := newRelay(t, Config{URL: url, EndpointID: spiffeid.RequireFromPath(td, "/not/the/endpoint"), Bootstrap: bootstrap})
	_, err = wrongID.Refresh(ctx)
	wantReason(t, err, bundle.ReasonTLS)

	r := newRelay(t, Config{URL: url, EndpointID: id, Bootstrap: bootstrap})
	mustRefresh(t, r, true)
	// A prepared root: the relay authenticates the endpoint with the
	// bundle it holds and takes the new one.
	if _, err := svc.PrepareRoot(ctx, ca.PrepareRootRequest{}); err != nil {
		t.Fatal(err)
	}
	mustRefresh(t, r, true)
	got, _ := r.Bundle()
	want, err := svc.TrustBundle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got.Sequence != want.Sequence || !slices.EqualFunc(got.Roots, want.Roots, (*x509.Certificate).Equal) || len(got.Roots) != 2 {
		t.Fatalf("relay holds sequence %d with %d roots, want the upstream's %d with %d", got.Sequence, len(got.Roots), want.Sequence, len(want.Roots))
	}
}

// TestNewChecksConfig: what New refuses.
func TestNewChecksConfig(t *testing.T) {
	t.Parallel()
	other := spiffeid.RequireTrustDomainFromString("other.org")
	a := root(t)
	cases := map[string]Config{
		"no trust domain":        {URL: "https://x/"},
		"no URL":                 {TrustDomain: td},
		"plain HTTP upstream":    {TrustDomain: td, URL: "http://x/"},
		"endpoint ID elsewhere":  {TrustDomain: td, URL: "https://x/", EndpointID: spiffeid.RequireFromPath(other, "/e")},
		"bootstrap without ID":   {TrustDomain: td, URL: "https://x/", Bootstrap: spiffebundle.FromX509Authorities(td, []*x509.Certificate{a})},
		"bootstrap of other TD":  {TrustDomain: td, URL: "https://x/", EndpointID: spiffeid.RequireFromPath(td, "/e"), Bootstrap: spiffebundle.FromX509Authorities(other, []*x509.Certificate{a})},
		"poll under the minimum": {TrustDomain: td, URL: "https://x/", Poll: MinPoll / 2},
		"poll over the maximum":  {TrustDomain: td, URL: "https://x/", Poll: MaxPoll + time.Second},
	}
	for name, cfg := range cases {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
	if _, err := New(Config{TrustDomain: td, URL: "https://x/"}); err != nil {
		t.Errorf("a minimal config: %v", err)
	}
}
