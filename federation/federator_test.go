package federation

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshroot/meshroot/internal/testca"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshroot/meshroot/federation/bundle"
	"github.com/meshroot/meshroot/store"
)

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer = testca.SyncBuffer

func addPeer(t *testing.T, st store.Store, p store.FederationPeer) {
	t.Helper()
	if p.Profile == "" {
		p.Profile = store.ProfileHTTPSWeb
	}
	p.CreatedAt = time.Now()
	if len(p.Bundle) > 0 {
		b, err := bundle.Parse(spiffeid.RequireTrustDomainFromString(p.TrustDomain), p.Bundle, bundle.Options{})
		if err != nil {
			t.Fatal(err)
		}
		p.Sequence, _ = b.SequenceNumber()
	}
	addPeerRaw(t, st, p)
}

// addPeerRaw stores p as given, its bundle unchecked.
func addPeerRaw(t *testing.T, st store.Store, p store.FederationPeer) {
	t.Helper()
	if p.Profile == "" {
		p.Profile = store.ProfileHTTPSWeb
	}
	p.CreatedAt = time.Now()
	if err := st.Update(context.Background(), func(tx store.Tx) error { return tx.CreateFederationPeer(context.Background(), p) }); err != nil {
		t.Fatal(err)
	}
}

func getPeer(t *testing.T, st store.Store, td string) store.FederationPeer {
	t.Helper()
	p, err := st.GetFederationPeer(context.Background(), td)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// runFederator runs f until the test ends and checks Run returns promptly.
func runFederator(t *testing.T, f *Federator) {
	t.Helper()
	testca.Run(t, f.Run)
}

func count(td, result string) float64 {
	return testutil.ToFloat64(fetchTotal.WithLabelValues(td, result))
}

func TestFederatorHappyPath(t *testing.T) {
	t.Parallel()
	const td = "happy.org"
	st := newStore(t)
	webCA := newCA(t, "")
	caA, caB := newCA(t, td), newCA(t, td)
	var mu sync.Mutex
	var fetches []time.Time
	doc := bundleDoc(t, td, 1, time.Second, caA)
	var docMu sync.Mutex
	p := newPeer(t, webCA.Leaf(t, testca.LeafOpts{IP: true}), func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		fetches = append(fetches, time.Now())
		mu.Unlock()
		docMu.Lock()
		d := doc
		docMu.Unlock()
		serveDoc(d)(w, r)
	})
	addPeer(t, st, store.FederationPeer{TrustDomain: td, URL: p.url})
	changes := make(chan string, 10)
	f := NewFederator(st, FederatorOptions{
		MinRefresh: 500 * time.Millisecond, MaxRefresh: 10 * time.Second, DefaultRefresh: time.Minute, PollPeers: 50 * time.Millisecond,
		Roots: webCA.Pool(), OnChange: func(td string) { changes <- td }, Log: quietLog(t),
	})
	runFederator(t, f)

	waitChange := func() {
		t.Helper()
		select {
		case got := <-changes:
			if got != td {
				t.Fatalf("OnChange(%q)", got)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("OnChange not called")
		}
	}
	waitChange()
	peer := getPeer(t, st, td)
	b, err := spiffebundle.Parse(spiffeid.RequireTrustDomainFromString(td), peer.Bundle)
	if err != nil {
		t.Fatal(err)
	}
	if peer.Sequence != 1 || len(b.X509Authorities()) != 1 || !b.X509Authorities()[0].Equal(caA.Cert) {
		t.Fatalf("stored sequence %d, %d authorities", peer.Sequence, len(b.X509Authorities()))
	}
	if s := peer.Status; s.LastError != "" || s.LastSuccess.IsZero() || !s.LastAttempt.Equal(s.LastSuccess) || s.NextAttempt.Sub(s.LastAttempt) != time.Second {
		t.Fatalf("status %+v, want a success with the next attempt 1s (the refresh hint) later", s)
	}
	updated := peer.BundleUpdatedAt
	unchangedBefore := count(td, "unchanged")

	// The hint (1s) is honoured: the next fetch comes about 1s later, finds
	// the same document, and neither rewrites it nor calls OnChange.
	waitFor(t, 4*time.Second, "the second fetch", func() bool { return p.requests.Load() >= 2 })
	mu.Lock()
	gap := fetches[1].Sub(fetches[0])
	mu.Unlock()
	if gap < 900*time.Millisecond || gap > 3*time.Second {
		t.Fatalf("second fetch %s after the first, want about the 1s refresh hint", gap)
	}
	waitFor(t, 2*time.Second, "the unchanged fetch to be counted", func() bool { return count(td, "unchanged") > unchangedBefore })
	if peer := getPeer(t, st, td); !peer.BundleUpdatedAt.Equal(updated) || peer.Sequence != 1 {
		t.Fatalf("unchanged document was rewritten: updated %s -> %s", updated, peer.BundleUpdatedAt)
	}
	select {
	case <-changes:
		t.Fatal("OnChange called for an unchanged document")
	default:
	}

	// A new sequence is stored; a huge hint is clamped to MaxRefresh.
	okBefore := count(td, "ok")
	docMu.Lock()
	doc = bundleDoc(t, td, 2, 10*time.Hour, caA, caB)
	docMu.Unlock()
	f.Refresh(td)
	waitChange()
	peer = getPeer(t, st, td)
	if peer.Sequence != 2 || !peer.BundleUpdatedAt.After(updated) {
		t.Fatalf("after the change: sequence %d, updated %s", peer.Sequence, peer.BundleUpdatedAt)
	}
	if d := peer.Status.NextAttempt.Sub(peer.Status.LastAttempt); d != 10*time.Second {
		t.Fatalf("next attempt in %s, want the 10h hint clamped to MaxRefresh 10s", d)
	}
	if got := count(td, "ok"); got != okBefore+1 {
		t.Fatalf("ok count %v, want %v", got, okBefore+1)
	}
	if got := testutil.ToFloat64(bundleSequence.WithLabelValues(td)); got != 2 {
		t.Fatalf("sequence gauge %v, want 2", got)
	}
}

func TestFederatorRefusals(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	webCA := newCA(t, "")
	cert := webCA.Leaf(t, testca.LeafOpts{IP: true})
	unknownCA := newCA(t, "")
	type badPeer struct {
		td     string
		reason string
		msg    string
		bad    func(p *peer)
		p      *peer
		before store.FederationPeer
	}
	serve := func(doc []byte) func(p *peer) { return func(p *peer) { p.serve(doc) } }
	peers := []*badPeer{
		{td: "wrongtd.org", reason: bundle.ReasonWrongTrustDomain, msg: "evil.org", bad: serve(bundleDoc(t, "wrongtd.org", 6, 0, newCA(t, "evil.org")))},
		{td: "lowerseq.org", reason: bundle.ReasonLowerSequence, msg: "sequence 3 is lower than the held 5", bad: serve(bundleDoc(t, "lowerseq.org", 3, 0, newCA(t, "lowerseq.org")))},
		{td: "garbage.org", reason: bundle.ReasonParse, bad: serve([]byte(`{"keys": [garbage`))},
		{td: "empty.org", reason: bundle.ReasonEmpty, bad: serve([]byte(`{"keys":[],"spiffe_sequence":9}`))},
		{td: "large.org", reason: bundle.ReasonTooLarge, msg: "bundle over 1 MiB", bad: func(p *peer) { p.set(bigBody(10<<20, false)) }},
		{td: "manyroots.org", reason: bundle.ReasonTooLarge, msg: "as PEM, over the 262144 a mesh may hold", bad: serve(bundleDoc(t, "manyroots.org", 6, 0, overMeshBudget(t, "manyroots.org")...))},
		{td: "slow.org", reason: bundle.ReasonTimeout, bad: func(p *peer) { p.set(trickle) }},
		{td: "unknownca.org", reason: bundle.ReasonTLS, bad: func(p *peer) { p.setCert(unknownCA.Leaf(t, testca.LeafOpts{IP: true})) }},
		{td: "status.org", reason: bundle.ReasonHTTPStatus, msg: "500", bad: func(p *peer) {
			p.set(func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "down", 500) })
		}},
	}
	for _, bp := range peers {
		bp.p = newPeer(t, cert, serveDoc(bundleDoc(t, bp.td, 5, 0, newCA(t, bp.td))))
		addPeer(t, st, store.FederationPeer{TrustDomain: bp.td, URL: bp.p.url})
	}
	good := newPeer(t, cert, serveDoc(bundleDoc(t, "good.org", 1, 0, newCA(t, "good.org"))))
	addPeer(t, st, store.FederationPeer{TrustDomain: "good.org", URL: good.url})

	var logs syncBuffer
	f := NewFederator(st, FederatorOptions{
		MinRefresh: 800 * time.Millisecond, MaxRefresh: time.Minute, DefaultRefresh: time.Minute, PollPeers: 50 * time.Millisecond,
		Roots: webCA.Pool(), Log: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	f.fetchTimeout = time.Second
	runFederator(t, f)

	// Every peer starts good.
	for _, bp := range peers {
		waitFor(t, 5*time.Second, bp.td+" stored", func() bool { return getPeer(t, st, bp.td).Sequence == 5 })
		bp.before = getPeer(t, st, bp.td)
	}
	// Then turns bad.
	before := map[string]float64{}
	for _, bp := range peers {
		before[bp.td] = count(bp.td, bp.reason)
		bp.bad(bp.p)
		f.Refresh(bp.td)
	}
	for _, bp := range peers {
		t.Run(bp.td, func(t *testing.T) {
			var now store.FederationPeer
			waitFor(t, 5*time.Second, bp.reason+" recorded", func() bool {
				now = getPeer(t, st, bp.td)
				return strings.HasPrefix(now.Status.LastError, bp.reason+": ")
			})
			if !strings.Contains(now.Status.LastError, bp.msg) {
				t.Errorf("LastError %q does not say %q", now.Status.LastError, bp.msg)
			}
			if now.Sequence != 5 || !bytes.Equal(now.Bundle, bp.before.Bundle) || !now.BundleUpdatedAt.Equal(bp.before.BundleUpdatedAt) {
				t.Errorf("the last good bundle was not kept: sequence %d", now.Sequence)
			}
			if !now.Status.LastSuccess.Equal(bp.before.Status.LastSuccess) || !now.Status.NextAttempt.After(now.Status.LastAttempt) {
				t.Errorf("status %+v", now.Status)
			}
			if count(bp.td, bp.reason) <= before[bp.td] {
				t.Errorf("meshroot_federation_fetch_total{result=%q} did not move", bp.reason)
			}
			if l := logs.String(); !strings.Contains(l, "trust_domain="+bp.td) || !strings.Contains(l, "reason="+bp.reason) {
				t.Errorf("refusal not logged with its trust domain and reason")
			}
		})
	}
	// The federator still serves the good peer.
	good.serve(bundleDoc(t, "good.org", 2, 0, newCA(t, "good.org")))
	f.Refresh("good.org")
	waitFor(t, 5*time.Second, "good.org sequence 2", func() bool { return getPeer(t, st, "good.org").Sequence == 2 })
}

func TestFederatorSPIFFE(t *testing.T) {
	t.Parallel()
	const td = "spiffe.org"
	st := newStore(t)
	ca1, ca2 := newCA(t, td), newCA(t, td)
	id := "spiffe://spiffe.org/spire/server"
	p := newPeer(t, ca1.Leaf(t, testca.LeafOpts{URI: id}), serveDoc(bundleDoc(t, td, 2, 0, ca1, ca2)))
	// The bootstrap bundle (sequence 1) holds ca1 only.
	addPeer(t, st, store.FederationPeer{TrustDomain: td, URL: p.url, Profile: store.ProfileHTTPSSPIFFE, EndpointSPIFFEID: id, Bundle: bundleDoc(t, td, 1, 0, ca1)})
	// No bootstrap bundle: refused before any contact.
	nobundle := newPeer(t, ca1.Leaf(t, testca.LeafOpts{URI: "spiffe://nobundle.org/x"}), serveDoc(bundleDoc(t, "nobundle.org", 1, 0, newCA(t, "nobundle.org"))))
	addPeer(t, st, store.FederationPeer{TrustDomain: "nobundle.org", URL: nobundle.url, Profile: store.ProfileHTTPSSPIFFE, EndpointSPIFFEID: "spiffe://nobundle.org/x"})
	// A bootstrap bundle that does not hold the endpoint's CA.
	otherCA := newCA(t, "wrongboot.org")
	wrongboot := newPeer(t, newCA(t, "wrongboot.org").Leaf(t, testca.LeafOpts{URI: "spiffe://wrongboot.org/x"}), serveDoc(bundleDoc(t, "wrongboot.org", 2, 0, otherCA)))
	addPeer(t, st, store.FederationPeer{TrustDomain: "wrongboot.org", URL: wrongboot.url, Profile: store.ProfileHTTPSSPIFFE, EndpointSPIFFEID: "spiffe://wrongboot.org/x", Bundle: bundleDoc(t, "wrongboot.org", 1, 0, otherCA)})

	f := NewFederator(st, FederatorOptions{MinRefresh: 800 * time.Millisecond, MaxRefresh: time.Minute, DefaultRefresh: time.Minute, PollPeers: 50 * time.Millisecond, Log: quietLog(t)})
	runFederator(t, f)

	waitFor(t, 5*time.Second, "sequence 2 fetched over SPIFFE auth", func() bool { return getPeer(t, st, td).Sequence == 2 })
	waitFor(t, 5*time.Second, "nobundle.org refused", func() bool {
		return getPeer(t, st, "nobundle.org").Status.LastError == "no_bundle: no bundle to authenticate the endpoint: give --bootstrap-bundle"
	})
	if nobundle.requests.Load() != 0 {
		t.Error("a https_spiffe peer without a bundle was contacted")
	}
	waitFor(t, 5*time.Second, "wrongboot.org refused", func() bool {
		return strings.HasPrefix(getPeer(t, st, "wrongboot.org").Status.LastError, "tls: ")
	})
	if got := getPeer(t, st, "wrongboot.org"); got.Sequence != 1 {
		t.Errorf("wrongboot.org: sequence %d, want the bootstrap's 1", got.Sequence)
	}

	// The endpoint moves to an SVID of ca2, known from the fetched bundle
	// (not the bootstrap one): it is authenticated with the held bundle.
	p.setCert(ca2.Leaf(t, testca.LeafOpts{URI: id}))
	p.serve(bundleDoc(t, td, 3, 0, ca1, ca2))
	f.Refresh(td)
	waitFor(t, 5*time.Second, "sequence 3 over an SVID of the new CA", func() bool { return getPeer(t, st, td).Sequence == 3 })

	// An expired SVID, then one with the wrong SPIFFE ID, are refused.
	p.serve(bundleDoc(t, td, 4, 0, ca1, ca2))
	for _, c := range []struct {
		name string
		cert testca.LeafOpts
		msg  string
	}{
		{"expired SVID", testca.LeafOpts{URI: id, NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Minute)}, "expired"},
		{"wrong SPIFFE ID", testca.LeafOpts{URI: "spiffe://spiffe.org/impostor"}, "spiffe://spiffe.org/impostor"},
		{"SVID of another trust domain", testca.LeafOpts{URI: "spiffe://evil.org/spire/server"}, "evil.org"},
	} {
		tlsBefore := count(td, bundle.ReasonTLS)
		p.setCert(ca2.Leaf(t, c.cert))
		f.Refresh(td)
		var got store.FederationPeer
		waitFor(t, 5*time.Second, c.name+" refused", func() bool {
			got = getPeer(t, st, td)
			return strings.HasPrefix(got.Status.LastError, "tls: ") && strings.Contains(got.Status.LastError, c.msg)
		})
		if got.Sequence != 3 {
			t.Errorf("%s: sequence %d, want the last good 3", c.name, got.Sequence)
		}
		if count(td, bundle.ReasonTLS) <= tlsBefore {
			t.Errorf("%s: tls count did not move", c.name)
		}
	}
}

func TestFederatorPeerRemoval(t *testing.T) {
	t.Parallel()
	st := newStore(t)
	webCA := newCA(t, "")
	cert := webCA.Leaf(t, testca.LeafOpts{IP: true})
	pa := newPeer(t, cert, serveDoc(bundleDoc(t, "gone.org", 1, 0, newCA(t, "gone.org"))))
	pb := newPeer(t, cert, serveDoc(bundleDoc(t, "stays.org", 1, 0, newCA(t, "stays.org"))))
	addPeer(t, st, store.FederationPeer{TrustDomain: "gone.org", URL: pa.url})
	addPeer(t, st, store.FederationPeer{TrustDomain: "stays.org", URL: pb.url})
	// A short MaxRefresh makes watchers fetch every 400ms: a watcher left
	// running would show in the request counts.
	f := NewFederator(st, FederatorOptions{MinRefresh: 200 * time.Millisecond, MaxRefresh: 400 * time.Millisecond, PollPeers: 50 * time.Millisecond, Roots: webCA.Pool(), Log: quietLog(t)})
	runFederator(t, f)
	for _, td := range []string{"gone.org", "stays.org"} {
		waitFor(t, 5*time.Second, td+" fetched", func() bool { return getPeer(t, st, td).Sequence == 1 })
	}
	reg := prometheus.NewRegistry()
	if err := RegisterMetrics(reg); err != nil {
		t.Fatal(err)
	}
	if err := RegisterMetrics(reg); err != nil {
		t.Fatalf("second registration: %v", err)
	}
	// The watcher records its metrics just after the store's commit that
	// the wait above saw, so they may trail it by a moment.
	waitFor(t, 5*time.Second, "metrics for gone.org", func() bool { return seriesOf(t, reg, "gone.org") > 0 })

	ctx := context.Background()
	if err := st.Update(ctx, func(tx store.Tx) error { return tx.DeleteFederationPeer(ctx, "gone.org") }); err != nil {
		t.Fatal(err)
	}
	staysBefore := pb.requests.Load()
	waitFor(t, 5*time.Second, "gone.org's watcher to stop", func() bool { return !f.running("gone.org") })
	n := pa.requests.Load()
	f.Refresh("gone.org") // no watcher: a no-op apart from a store poll
	time.Sleep(600 * time.Millisecond)
	if got := pa.requests.Load(); got != n {
		t.Fatalf("gone.org fetched %d more times after its removal", got-n)
	}
	if !f.running("stays.org") {
		t.Fatal("stays.org's watcher stopped too")
	}
	// Its next fetch is due within MaxRefresh; on a loaded machine the
	// timer may fire late, so the test waits for it rather than a count.
	waitFor(t, 5*time.Second, "stays.org fetched again after gone.org's removal", func() bool { return pb.requests.Load() > staysBefore })
	if n := seriesOf(t, reg, "gone.org"); n != 0 {
		t.Fatalf("%d metric series left for the removed peer", n)
	}

	// A peer added while running gets a watcher.
	pc := newPeer(t, cert, serveDoc(bundleDoc(t, "new.org", 4, 0, newCA(t, "new.org"))))
	addPeer(t, st, store.FederationPeer{TrustDomain: "new.org", URL: pc.url})
	f.Refresh("new.org")
	waitFor(t, 5*time.Second, "new.org fetched", func() bool { return getPeer(t, st, "new.org").Sequence == 4 })

	// A peer removed and re-added with another URL gets a fresh watcher.
	pd := newPeer(t, cert, serveDoc(bundleDoc(t, "new.org", 5, 0, newCA(t, "new.org"))))
	err := st.Update(ctx, func(tx store.Tx) error {
		if err := tx.DeleteFederationPeer(ctx, "new.org"); err != nil {
			return err
		}
		return tx.CreateFederationPeer(ctx, store.FederationPeer{TrustDomain: "new.org", URL: pd.url, Profile: store.ProfileHTTPSWeb, CreatedAt: time.Now()})
	})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "new.org fetched from its new URL", func() bool { return getPeer(t, st, "new.org").Sequence == 5 })
}

// seriesOf counts the federation metric series labelled with td.
func seriesOf(t *testing.T, g prometheus.Gatherer, td string) int {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "trust_domain" && l.GetValue() == td {
					n++
				}
			}
		}
	}
	return n
}

func TestFederatorIntervals(t *testing.T) {
	t.Parallel()
	f := NewFederator(nil, FederatorOptions{MinRefresh: 30 * time.Second, MaxRefresh: time.Hour, DefaultRefresh: 5 * time.Minute})
	td := spiffeid.RequireTrustDomainFromString("x.org")
	for _, c := range []struct {
		hint time.Duration // 0: none
		want time.Duration
	}{
		{0, 5 * time.Minute},
		{time.Second, 30 * time.Second},
		{10 * time.Minute, 10 * time.Minute},
		{48 * time.Hour, time.Hour},
	} {
		b := spiffebundle.New(td)
		if c.hint > 0 {
			b.SetRefreshHint(c.hint)
		}
		if got := f.interval(b); got != c.want {
			t.Errorf("hint %s: interval %s, want %s", c.hint, got, c.want)
		}
	}
	// Backoff: MinRefresh/8, doubling, capped at MaxRefresh, with up to a
	// quarter of jitter below.
	want := 30 * time.Second / 8
	for n := 1; n <= 20; n++ {
		for range 20 {
			got := f.backoff(n)
			if got > want || got < want*3/4 {
				t.Fatalf("failure %d: backoff %s outside [%s, %s]", n, got, want*3/4, want)
			}
		}
		want = min(want*2, time.Hour)
	}
	d := NewFederator(nil, FederatorOptions{}).opts
	if d.MinRefresh != 30*time.Second || d.MaxRefresh != time.Hour || d.DefaultRefresh != 5*time.Minute || d.MaxBytes != 1<<20 || d.PollPeers != 5*time.Second {
		t.Fatalf("defaults %+v", d)
	}
}

// overMeshBudget returns CAs of td whose PEM is just over what one trust
// domain may put into a mesh (bundle.MaxRootsPEM), in a document well
// under the 1 MiB fetch cap.
func overMeshBudget(t *testing.T, td string) []*testCA {
	t.Helper()
	var cas []*testCA
	var certs []*x509.Certificate
	for bundle.PEMSize(certs) <= bundle.MaxRootsPEM {
		cas = append(cas, newCA(t, td))
		certs = append(certs, cas[len(cas)-1].Cert)
	}
	return cas
}

// docWithoutSequence marshals a bundle of td with no spiffe_sequence.
func docWithoutSequence(t *testing.T, td string, cas ...*testCA) []byte {
	t.Helper()
	var certs []*x509.Certificate
	for _, c := range cas {
		certs = append(certs, c.Cert)
	}
	doc, err := spiffebundle.FromX509Authorities(spiffeid.RequireTrustDomainFromString(td), certs).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(doc, []byte("spiffe_sequence")) {
		t.Fatalf("document has a sequence: %s", doc)
	}
	return doc
}

// TestFederatorKeepsSequenceWithoutOne: a peer bundle without
// spiffe_sequence must not reset rollback protection. It is stored only
// when its authorities are new, under the held sequence; a bundle with a
// lower sequence than the held one is still refused afterwards.
func TestFederatorKeepsSequenceWithoutOne(t *testing.T) {
	t.Parallel()
	const td = "noseq.org"
	st := newStore(t)
	webCA := newCA(t, "")
	caA, caB, caOld := newCA(t, td), newCA(t, td), newCA(t, td)
	p := newPeer(t, webCA.Leaf(t, testca.LeafOpts{IP: true}), serveDoc(bundleDoc(t, td, 5, 0, caA)))
	addPeer(t, st, store.FederationPeer{TrustDomain: td, URL: p.url})
	f := NewFederator(st, FederatorOptions{MinRefresh: time.Minute, PollPeers: 50 * time.Millisecond, Roots: webCA.Pool(), Log: quietLog(t)})
	runFederator(t, f)
	waitFor(t, 5*time.Second, "sequence 5 stored", func() bool { return getPeer(t, st, td).Sequence == 5 })

	// Same authorities, no sequence: nothing to store.
	before := getPeer(t, st, td)
	attempts := before.Status.LastAttempt
	p.serve(docWithoutSequence(t, td, caA))
	f.Refresh(td)
	waitFor(t, 5*time.Second, "a fetch", func() bool { return getPeer(t, st, td).Status.LastAttempt.After(attempts) })
	if now := getPeer(t, st, td); !now.BundleUpdatedAt.Equal(before.BundleUpdatedAt) || now.Sequence != 5 {
		t.Fatalf("an unchanged bundle without a sequence was stored: sequence %d, updated %s", now.Sequence, now.BundleUpdatedAt)
	}

	// New authorities, no sequence: stored, under the held sequence 5.
	p.serve(docWithoutSequence(t, td, caB))
	f.Refresh(td)
	var now store.FederationPeer
	waitFor(t, 5*time.Second, "caB stored", func() bool {
		now = getPeer(t, st, td)
		return bytes.Contains(now.Bundle, []byte(base64.StdEncoding.EncodeToString(caB.Cert.Raw)[:64]))
	})
	if now.Sequence != 5 {
		t.Fatalf("held sequence after a bundle without one: %d, want 5 (kept)", now.Sequence)
	}
	held, err := spiffebundle.Parse(spiffeid.RequireTrustDomainFromString(td), now.Bundle)
	if err != nil {
		t.Fatal(err)
	}
	if seq, ok := held.SequenceNumber(); !ok || seq != 5 {
		t.Errorf("stored document's sequence %d (%v), want 5", seq, ok)
	}

	// Rollback protection still holds: sequence 3 is refused.
	p.serve(bundleDoc(t, td, 3, 0, caOld))
	f.Refresh(td)
	waitFor(t, 5*time.Second, "lower_sequence recorded", func() bool {
		return strings.HasPrefix(getPeer(t, st, td).Status.LastError, bundle.ReasonLowerSequence+": ")
	})
	if got := getPeer(t, st, td); got.Sequence != 5 || !bytes.Equal(got.Bundle, now.Bundle) {
		t.Fatalf("a lower sequence replaced the held bundle: sequence %d", got.Sequence)
	}
	// And a higher one moves on.
	p.serve(bundleDoc(t, td, 6, 0, caA))
	f.Refresh(td)
	waitFor(t, 5*time.Second, "sequence 6 stored", func() bool { return getPeer(t, st, td).Sequence == 6 })
}
