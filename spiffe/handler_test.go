package spiffe

import (
	"crypto/x509"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/keys"
)

func testRoot(t testing.TB, td string) *x509.Certificate {
	t.Helper()
	k, err := keys.ECP256.Generate()
	if err != nil {
		t.Fatal(err)
	}
	r, err := ca.NewRoot(k, ca.RootOptions{TrustDomain: td})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// bundleVar is a swappable bundle source.
type bundleVar struct {
	mu sync.Mutex
	tb ca.TrustBundle
	ok bool
}

func (v *bundleVar) set(tb ca.TrustBundle) { v.mu.Lock(); v.tb, v.ok = tb, true; v.mu.Unlock() }
func (v *bundleVar) get() (ca.TrustBundle, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.tb, v.ok
}

func do(t *testing.T, h http.Handler, method, path string, hdr map[string]string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func body(t *testing.T, r *http.Response) []byte {
	t.Helper()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestHandler(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	root1, root2 := testRoot(t, "example.org"), testRoot(t, "example.org")
	var src bundleVar
	h := NewHandler(src.get, 90*time.Second, quietLog(t))

	t.Run("no bundle yet", func(t *testing.T) {
		r := do(t, h, "GET", "/", nil)
		if r.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body(t, r)), "no trust bundle yet") {
			t.Fatalf("status %d, want 503 with a clear body", r.StatusCode)
		}
	})

	src.set(ca.TrustBundle{TrustDomain: "example.org", Roots: []*x509.Certificate{root1}, Sequence: 3})
	var etag1 string
	t.Run("GET", func(t *testing.T) {
		r := do(t, h, "GET", "/", nil)
		doc := body(t, r)
		if r.StatusCode != 200 {
			t.Fatalf("status %d", r.StatusCode)
		}
		if ct := r.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type %q", ct)
		}
		if cc := r.Header.Get("Cache-Control"); cc != "max-age=90" {
			t.Errorf("Cache-Control %q, want max-age=90", cc)
		}
		etag1 = r.Header.Get("ETag")
		if !strings.HasPrefix(etag1, `"`) || !strings.HasSuffix(etag1, `"`) || len(etag1) < 10 {
			t.Errorf("ETag %q is not a strong entity tag", etag1)
		}
		b, err := spiffebundle.Parse(td, doc)
		if err != nil {
			t.Fatal(err)
		}
		if seq, ok := b.SequenceNumber(); !ok || seq != 3 {
			t.Errorf("sequence %d %v", seq, ok)
		}
		if hint, ok := b.RefreshHint(); !ok || hint != 90*time.Second {
			t.Errorf("refresh hint %s %v", hint, ok)
		}
		if a := b.X509Authorities(); len(a) != 1 || !a[0].Equal(root1) {
			t.Errorf("authorities %v", a)
		}
		if !strings.Contains(string(doc), `"use":"x509-svid"`) {
			t.Errorf("document lacks use x509-svid: %s", doc)
		}
	})
	t.Run("HEAD", func(t *testing.T) {
		r := do(t, h, "HEAD", "/", nil)
		if r.StatusCode != 200 || r.Header.Get("ETag") != etag1 || r.Header.Get("Content-Type") != "application/json" || r.Header.Get("Content-Length") == "" {
			t.Fatalf("HEAD: status %d headers %v", r.StatusCode, r.Header)
		}
		if b := body(t, r); len(b) != 0 {
			t.Fatalf("HEAD returned a body of %d bytes", len(b))
		}
	})
	t.Run("If-None-Match", func(t *testing.T) {
		for _, inm := range []string{etag1, `"x", ` + etag1, "W/" + etag1, "*"} {
			r := do(t, h, "GET", "/", map[string]string{"If-None-Match": inm})
			if r.StatusCode != http.StatusNotModified || len(body(t, r)) != 0 || r.Header.Get("ETag") != etag1 {
				t.Errorf("If-None-Match %s: status %d, want 304 with the ETag and no body", inm, r.StatusCode)
			}
		}
		if r := do(t, h, "GET", "/", map[string]string{"If-None-Match": `"other"`}); r.StatusCode != 200 {
			t.Errorf("stale If-None-Match: status %d, want 200", r.StatusCode)
		}
	})
	t.Run("methods", func(t *testing.T) {
		for _, m := range []string{"POST", "PUT", "DELETE", "PATCH", "OPTIONS"} {
			r := do(t, h, m, "/", nil)
			if r.StatusCode != http.StatusMethodNotAllowed || r.Header.Get("Allow") != "GET, HEAD" {
				t.Errorf("%s: status %d Allow %q, want 405 with Allow: GET, HEAD", m, r.StatusCode, r.Header.Get("Allow"))
			}
		}
	})
	t.Run("paths", func(t *testing.T) {
		for _, p := range []string{"/other", "/bundle", "/index.html", "//"} {
			if r := do(t, h, "GET", p, nil); r.StatusCode != http.StatusNotFound {
				t.Errorf("GET %s: status %d, want 404", p, r.StatusCode)
			}
		}
		if r := do(t, h, "GET", "/?x=1", nil); r.StatusCode != 200 {
			t.Errorf("GET /?x=1: status %d", r.StatusCode)
		}
	})
	t.Run("bundle change", func(t *testing.T) {
		before := h.(*handler).marshals.Load()
		for range 50 {
			do(t, h, "GET", "/", nil)
		}
		if n := h.(*handler).marshals.Load(); n != before {
			t.Fatalf("the same bundle was marshalled %d more times", n-before)
		}
		src.set(ca.TrustBundle{TrustDomain: "example.org", Roots: []*x509.Certificate{root1, root2}, Sequence: 4})
		r := do(t, h, "GET", "/", map[string]string{"If-None-Match": etag1})
		if r.StatusCode != 200 {
			t.Fatalf("old ETag after a bundle change: status %d, want 200", r.StatusCode)
		}
		if r.Header.Get("ETag") == etag1 {
			t.Fatal("ETag did not change with the bundle")
		}
		b, err := spiffebundle.Parse(td, body(t, r))
		if err != nil {
			t.Fatal(err)
		}
		if seq, _ := b.SequenceNumber(); seq != 4 || len(b.X509Authorities()) != 2 {
			t.Fatalf("after the change: sequence %d, %d authorities", seq, len(b.X509Authorities()))
		}
		if n := h.(*handler).marshals.Load(); n != before+1 {
			t.Fatalf("marshalled %d times for one new sequence", n-before)
		}
	})
}

func TestHandlerRefreshHintFallback(t *testing.T) {
	root := testRoot(t, "example.org")
	for _, c := range []struct {
		handler, bundle time.Duration
		want            string
	}{
		{0, 0, "max-age=300"},
		{0, 42 * time.Second, "max-age=42"},
		{10 * time.Second, 42 * time.Second, "max-age=10"},
		{1500 * time.Millisecond, 0, "max-age=2"},
	} {
		h := NewHandler(func() (ca.TrustBundle, bool) {
			return ca.TrustBundle{TrustDomain: "example.org", Roots: []*x509.Certificate{root}, Sequence: 1, RefreshHint: c.bundle}, true
		}, c.handler, nil)
		r := do(t, h, "GET", "/", nil)
		if got := r.Header.Get("Cache-Control"); got != c.want {
			t.Errorf("handler %s bundle %s: Cache-Control %q, want %q", c.handler, c.bundle, got, c.want)
		}
	}
}

func TestHandlerConcurrentSequenceChanges(t *testing.T) {
	root := testRoot(t, "example.org")
	var seq atomic.Uint64
	h := NewHandler(func() (ca.TrustBundle, bool) {
		return ca.TrustBundle{TrustDomain: "example.org", Roots: []*x509.Certificate{root}, Sequence: seq.Load()}, true
	}, time.Minute, nil)
	td := spiffeid.RequireTrustDomainFromString("example.org")
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				seq.Add(1)
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
				if _, err := spiffebundle.Parse(td, rec.Body.Bytes()); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func BenchmarkHandler(b *testing.B) {
	root := testRoot(b, "example.org")
	tb := ca.TrustBundle{TrustDomain: "example.org", Roots: []*x509.Certificate{root}, Sequence: 1}
	h := NewHandler(func() (ca.TrustBundle, bool) { return tb, true }, time.Minute, nil)
	req := httptest.NewRequest("GET", "/", nil)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		w := &discardWriter{h: http.Header{}}
		for pb.Next() {
			clear(w.h)
			h.ServeHTTP(w, req)
		}
	})
}

type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(int)             {}
