package spiffe

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshroot/meshroot/internal/testca"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/meshroot/meshroot/ca"
	mrfed "github.com/meshroot/meshroot/federation"
	"github.com/meshroot/meshroot/federation/bundle"
)

func writePair(t *testing.T, certFile, keyFile string, c tls.Certificate) {
	t.Helper()
	if certFile != "" {
		if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if keyFile != "" {
		der, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// startEndpoint runs ep until the test ends and checks it stops cleanly.
func startEndpoint(t *testing.T, ep *Endpoint) {
	t.Helper()
	testca.Run(t, ep.Run)
}

// fixedBundle returns the trust bundle of svc as a handler source.
func fixedBundle(t *testing.T, svc *ca.Service) (ca.TrustBundle, func() (ca.TrustBundle, bool)) {
	t.Helper()
	tb, err := svc.TrustBundle(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return tb, func() (ca.TrustBundle, bool) { return tb, true }
}

// serverSerial connects with a fresh handshake and returns the serial of
// the certificate the server presents.
func serverSerial(t *testing.T, addr string, pool *x509.CertPool) string {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: true}}
	resp, err := c.Get("https://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	return resp.TLS.PeerCertificates[0].SerialNumber.String()
}

func TestEndpointWebReload(t *testing.T) {
	t.Parallel()
	svc, _ := newService(t, "example.org")
	_, source := fixedBundle(t, svc)
	webCA := newCA(t, "")
	first, second := webCA.Leaf(t, testca.LeafOpts{IP: true}), webCA.Leaf(t, testca.LeafOpts{IP: true})
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	writePair(t, certFile, keyFile, first)

	ep, err := NewEndpoint(EndpointConfig{Listen: "127.0.0.1:0", Profile: ProfileWeb, CertFile: certFile, KeyFile: keyFile, Handler: NewHandler(source, 0, nil), Log: quietLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	startEndpoint(t, ep)
	pool := webCA.Pool()
	if got := serverSerial(t, ep.Addr(), pool); got != first.Leaf.SerialNumber.String() {
		t.Fatalf("serves serial %s, want the first certificate's", got)
	}

	// Half-written pair (new certificate, old key): the last good pair stays.
	writePair(t, certFile, "", second)
	time.Sleep(1100 * time.Millisecond)
	if got := serverSerial(t, ep.Addr(), pool); got != first.Leaf.SerialNumber.String() {
		t.Fatalf("after a mismatched pair: serves serial %s, want the last good one", got)
	}
	// The key follows: the new pair is served, without a restart.
	writePair(t, "", keyFile, second)
	waitFor(t, 3*time.Second, "the reloaded certificate", func() bool {
		return serverSerial(t, ep.Addr(), pool) == second.Leaf.SerialNumber.String()
	})
	// Garbage and removed files keep the pair in use.
	if err := os.WriteFile(certFile, []byte("not PEM"), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)
	if got := serverSerial(t, ep.Addr(), pool); got != second.Leaf.SerialNumber.String() {
		t.Fatalf("after a garbage file: serves serial %s, want the last good one", got)
	}
}

func TestEndpointSPIFFE(t *testing.T) {
	t.Parallel()
	svc, _ := newService(t, "example.org")
	tb, source := fixedBundle(t, svc)
	svids := NewSVIDSource(svc, "example.org", 0, quietLog(t))
	ep, err := NewEndpoint(EndpointConfig{Listen: "127.0.0.1:0", Profile: ProfileSPIFFE, SVIDs: svids, Handler: NewHandler(source, time.Minute, nil), Log: quietLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	startEndpoint(t, ep)
	td := spiffeid.RequireTrustDomainFromString("example.org")
	id := spiffeid.RequireFromString("spiffe://example.org/meshroot/bundle-endpoint")
	trust := x509bundle.FromX509Authorities(td, tb.Roots)
	url := "https://" + ep.Addr() + "/"

	// A go-spiffe TLS client that expects the endpoint's ID accepts it.
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsconfig.TLSClientConfig(trust, tlsconfig.AuthorizeID(id))}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	doc, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if got := resp.TLS.PeerCertificates[0].URIs; len(got) != 1 || got[0].String() != id.String() {
		t.Fatalf("endpoint presents %v, want %s", got, id)
	}
	if _, err := spiffebundle.Parse(td, doc); err != nil {
		t.Fatal(err)
	}
	// ... and one that expects another ID refuses it.
	other := spiffeid.RequireFromString("spiffe://example.org/something-else")
	c = &http.Client{Transport: &http.Transport{TLSClientConfig: tlsconfig.TLSClientConfig(trust, tlsconfig.AuthorizeID(other))}}
	if _, err := c.Get(url); err == nil {
		t.Fatal("a client expecting another SPIFFE ID accepted the endpoint")
	}

	// go-spiffe's federation client fetches it.
	ctx := context.Background()
	got, err := federation.FetchBundle(ctx, td, url, federation.WithSPIFFEAuth(trust, id))
	if err != nil {
		t.Fatal(err)
	}
	if seq, _ := got.SequenceNumber(); seq != tb.Sequence || !got.X509Bundle().Equal(trust) {
		t.Fatalf("go-spiffe fetched sequence %d, authorities %v", seq, got.X509Authorities())
	}
	// So does ours.
	ours, raw, err := mrfed.FetchBundle(ctx, td, url, mrfed.SPIFFEAuth(trust, id), 0)
	if err != nil {
		t.Fatal(err)
	}
	if !ours.Equal(got) || len(raw) == 0 {
		t.Fatal("FetchBundle and go-spiffe disagree")
	}
	if _, _, err := mrfed.FetchBundle(ctx, td, url, mrfed.SPIFFEAuth(trust, other), 0); bundle.ReasonOf(err) != bundle.ReasonTLS {
		t.Fatalf("wrong expected ID: %v (reason %q), want tls", err, bundle.ReasonOf(err))
	}
}

func TestEndpointWebInterop(t *testing.T) {
	t.Parallel()
	svc, _ := newService(t, "example.org")
	tb, source := fixedBundle(t, svc)
	webCA := newCA(t, "")
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	writePair(t, certFile, keyFile, webCA.Leaf(t, testca.LeafOpts{IP: true}))
	ep, err := NewEndpoint(EndpointConfig{Listen: "127.0.0.1:0", Profile: ProfileWeb, CertFile: certFile, KeyFile: keyFile, Handler: NewHandler(source, 0, nil), Log: quietLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	startEndpoint(t, ep)
	td := spiffeid.RequireTrustDomainFromString("example.org")
	url := "https://" + ep.Addr() + "/"
	got, err := federation.FetchBundle(context.Background(), td, url, federation.WithWebPKIRoots(webCA.Pool()))
	if err != nil {
		t.Fatal(err)
	}
	if seq, _ := got.SequenceNumber(); seq != tb.Sequence || len(got.X509Authorities()) != len(tb.Roots) {
		t.Fatalf("go-spiffe fetched sequence %d with %d authorities", seq, len(got.X509Authorities()))
	}
	if _, _, err := mrfed.FetchBundle(context.Background(), td, url, mrfed.WebPKIAuth(webCA.Pool()), 0); err != nil {
		t.Fatal(err)
	}
	if _, _, err := mrfed.FetchBundle(context.Background(), td, url, mrfed.WebPKIAuth(newCA(t, "").Pool()), 0); bundle.ReasonOf(err) != bundle.ReasonTLS {
		t.Fatalf("unknown CA: %v (reason %q), want tls", err, bundle.ReasonOf(err))
	}
}

func TestEndpointSlowLoris(t *testing.T) {
	t.Parallel()
	svc, _ := newService(t, "example.org")
	_, source := fixedBundle(t, svc)
	webCA := newCA(t, "")
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	writePair(t, certFile, keyFile, webCA.Leaf(t, testca.LeafOpts{IP: true}))
	ep, err := NewEndpoint(EndpointConfig{Listen: "127.0.0.1:0", Profile: ProfileWeb, CertFile: certFile, KeyFile: keyFile, Handler: NewHandler(source, 0, nil), Log: quietLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	s := ep.srv
	if s.ReadHeaderTimeout != endpointReadHeaderTimeout || s.ReadTimeout == 0 || s.WriteTimeout == 0 || s.IdleTimeout == 0 || s.MaxHeaderBytes != endpointMaxHeaderBytes {
		t.Fatalf("server limits not set: %+v", s)
	}
	// Shorter limits so that the test is quick; the mechanism is the same.
	s.ReadHeaderTimeout, s.ReadTimeout = time.Second, 2*time.Second
	startEndpoint(t, ep)

	// closedWithin reports how long the server took to close conn.
	closedAfter := func(conn net.Conn) <-chan time.Duration {
		out := make(chan time.Duration, 1)
		start := time.Now()
		go func() {
			buf := make([]byte, 512)
			for {
				if _, err := conn.Read(buf); err != nil {
					out <- time.Since(start)
					return
				}
			}
		}()
		return out
	}
	// 1: headers, one byte a second.
	headers, err := tls.Dial("tcp", ep.Addr(), &tls.Config{RootCAs: webCA.Pool()})
	if err != nil {
		t.Fatal(err)
	}
	defer headers.Close()
	headersClosed := closedAfter(headers)
	go func() {
		if _, err := headers.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n")); err != nil {
			return
		}
		for {
			if _, err := headers.Write([]byte("X")); err != nil {
				return
			}
			time.Sleep(time.Second)
		}
	}()
	// 2: a TCP connection that never starts its TLS handshake.
	raw, err := net.Dial("tcp", ep.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	rawClosed := closedAfter(raw)

	// A normal client is served meanwhile.
	if got := serverSerial(t, ep.Addr(), webCA.Pool()); got == "" {
		t.Fatal("no answer")
	}
	for name, ch := range map[string]<-chan time.Duration{"trickled headers": headersClosed, "silent handshake": rawClosed} {
		select {
		case d := <-ch:
			t.Logf("%s: cut off after %s", name, d.Round(time.Millisecond))
		case <-time.After(5 * time.Second):
			t.Errorf("%s: the connection is still open after 5s", name)
		}
	}
	if got := serverSerial(t, ep.Addr(), webCA.Pool()); got == "" {
		t.Fatal("no answer after the slow clients")
	}
}

func TestNewEndpointRefuses(t *testing.T) {
	t.Parallel()
	h := NewHandler(func() (ca.TrustBundle, bool) { return ca.TrustBundle{}, false }, 0, nil)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	webCA := newCA(t, "")
	writePair(t, certFile, keyFile, webCA.Leaf(t, testca.LeafOpts{IP: true}))
	garbage := filepath.Join(dir, "garbage")
	_ = os.WriteFile(garbage, []byte("nope"), 0o600)
	svids := NewSVIDSource(nil, "example.org", 0, nil)
	for name, cfg := range map[string]EndpointConfig{
		"no handler":          {Listen: "127.0.0.1:0", Profile: ProfileWeb, CertFile: certFile, KeyFile: keyFile},
		"unknown profile":     {Listen: "127.0.0.1:0", Profile: "http", Handler: h},
		"web without files":   {Listen: "127.0.0.1:0", Profile: ProfileWeb, Handler: h},
		"web with SVIDs":      {Listen: "127.0.0.1:0", Profile: ProfileWeb, CertFile: certFile, KeyFile: keyFile, SVIDs: svids, Handler: h},
		"web missing file":    {Listen: "127.0.0.1:0", Profile: ProfileWeb, CertFile: certFile, KeyFile: filepath.Join(dir, "missing"), Handler: h},
		"web garbage file":    {Listen: "127.0.0.1:0", Profile: ProfileWeb, CertFile: garbage, KeyFile: keyFile, Handler: h},
		"spiffe without SVID": {Listen: "127.0.0.1:0", Profile: ProfileSPIFFE, Handler: h},
		"spiffe with files":   {Listen: "127.0.0.1:0", Profile: ProfileSPIFFE, SVIDs: svids, CertFile: certFile, KeyFile: keyFile, Handler: h},
		"bad address":         {Listen: "127.0.0.1:99999", Profile: ProfileSPIFFE, SVIDs: svids, Handler: h},
	} {
		if ep, err := NewEndpoint(cfg); err == nil {
			ep.ln.Close()
			t.Errorf("%s: accepted", name)
		}
	}
	// The listener is bound by NewEndpoint: a second one on the same
	// address fails at once.
	ep, err := NewEndpoint(EndpointConfig{Listen: "127.0.0.1:0", Profile: ProfileWeb, CertFile: certFile, KeyFile: keyFile, Handler: h})
	if err != nil {
		t.Fatal(err)
	}
	defer ep.ln.Close()
	if _, err := NewEndpoint(EndpointConfig{Listen: ep.Addr(), Profile: ProfileWeb, CertFile: certFile, KeyFile: keyFile, Handler: h}); err == nil {
		t.Fatal("a second endpoint bound the same address")
	}
}
