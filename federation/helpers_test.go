package federation

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshroot/meshroot/internal/testca"
	"github.com/meshroot/meshroot/store"
	"github.com/meshroot/meshroot/store/sqlite"
)

// The test CA and helpers are shared with other packages' tests.
type testCA = testca.CA

func newCA(t testing.TB, td string) *testCA { return testca.New(t, td) }

func quietLog(t testing.TB) *slog.Logger { return testca.QuietLog(t) }

func p256Key(t testing.TB) *ecdsa.PrivateKey { return testca.Key(t) }

func nextSerial() *big.Int { return testca.Serial() }

// bundleDoc marshals a SPIFFE bundle for td (hint 0: none).
func bundleDoc(t testing.TB, td string, seq uint64, hint time.Duration, cas ...*testCA) []byte {
	t.Helper()
	var certs []*x509.Certificate
	for _, c := range cas {
		certs = append(certs, c.Cert)
	}
	b := spiffebundle.FromX509Authorities(spiffeid.RequireTrustDomainFromString(td), certs)
	b.SetSequenceNumber(seq)
	if hint > 0 {
		b.SetRefreshHint(hint)
	}
	doc, err := b.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

// peer is a bundle endpoint under the test's control: its certificate and
// handler can be swapped at any time.
type peer struct {
	url      string
	cert     atomic.Pointer[tls.Certificate]
	handler  atomic.Pointer[http.HandlerFunc]
	requests atomic.Int64
}

func newPeer(t testing.TB, cert tls.Certificate, h http.HandlerFunc) *peer {
	t.Helper()
	p := &peer{}
	p.setCert(cert)
	p.set(h)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.requests.Add(1)
		(*p.handler.Load())(w, r)
	}))
	srv.Listener = tls.NewListener(srv.Listener, &tls.Config{
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return p.cert.Load(), nil },
	})
	srv.Config.ErrorLog = slog.NewLogLogger(slog.New(slog.NewTextHandler(io.Discard, nil)).Handler(), slog.LevelError)
	srv.Start()
	t.Cleanup(srv.Close)
	p.url = "https://" + srv.Listener.Addr().String() + "/"
	return p
}

func (p *peer) set(h http.HandlerFunc)    { p.handler.Store(&h) }
func (p *peer) setCert(c tls.Certificate) { p.cert.Store(&c) }
func (p *peer) serve(doc []byte)          { p.set(serveDoc(doc)) }
func serveDoc(doc []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(doc)
	}
}

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

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	testca.WaitFor(t, timeout, what, cond)
}
