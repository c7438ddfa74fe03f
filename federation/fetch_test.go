package federation

import (
	"bytes"
	"context"
	"github.com/meshroot/meshroot/internal/testca"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshroot/meshroot/federation/bundle"
)

// bigBody writes n bytes of JSON-looking data, declaring its length or not.
func bigBody(n int, declare bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if declare {
			w.Header().Set("Content-Length", strconv.Itoa(n))
		}
		chunk := bytes.Repeat([]byte(" "), 64<<10)
		_, _ = w.Write([]byte("{"))
		for written := 1; written < n; written += len(chunk) {
			if _, err := w.Write(chunk[:min(len(chunk), n-written)]); err != nil {
				return
			}
			if f, ok := w.(http.Flusher); ok && !declare {
				f.Flush()
			}
		}
	}
}

// trickle sends a response header, then one byte of body every 100 ms.
func trickle(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", "100000")
	w.WriteHeader(200)
	for {
		if _, err := w.Write([]byte(" ")); err != nil {
			return
		}
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func TestFetchBundleReasons(t *testing.T) {
	t.Parallel()
	td := spiffeid.RequireTrustDomainFromString("peer.org")
	webCA := newCA(t, "")
	cert := webCA.Leaf(t, testca.LeafOpts{IP: true})
	good := bundleDoc(t, "peer.org", 5, 0, newCA(t, "peer.org"))
	auth := WebPKIAuth(webCA.Pool())

	// A closed port, for "network".
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := "https://" + ln.Addr().String() + "/"
	ln.Close()

	cases := []struct {
		name    string
		h       http.HandlerFunc
		url     string // instead of the peer's
		auth    *FetchAuth
		max     int64
		timeout time.Duration
		reason  string
		msg     string
	}{
		{name: "ok", h: serveDoc(good)},
		{name: "http URL", url: "http://127.0.0.1:1/", reason: bundle.ReasonConfig},
		{name: "no host", url: "https:///x", reason: bundle.ReasonConfig},
		{name: "HTTP 500", h: func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "boom", 500) }, reason: bundle.ReasonHTTPStatus, msg: "500"},
		{name: "HTTP 404", h: http.NotFound, reason: bundle.ReasonHTTPStatus},
		{name: "redirect", h: func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "http://127.0.0.1:1/", http.StatusFound)
		}, reason: bundle.ReasonHTTPStatus, msg: "not followed"},
		{name: "10 MiB declared", h: bigBody(10<<20, true), reason: bundle.ReasonTooLarge, msg: "bundle over 1 MiB"},
		{name: "10 MiB chunked", h: bigBody(10<<20, false), reason: bundle.ReasonTooLarge, msg: "bundle over 1 MiB"},
		{name: "1 MiB + 1", h: bigBody(1<<20+1, false), reason: bundle.ReasonTooLarge, msg: "bundle over 1 MiB"},
		{name: "custom cap", h: serveDoc(good), max: 100, reason: bundle.ReasonTooLarge, msg: "bundle over 100 bytes"},
		{name: "garbage", h: serveDoc([]byte("<html>hello</html>")), reason: bundle.ReasonParse},
		{name: "truncated", h: serveDoc(good[:len(good)/2]), reason: bundle.ReasonParse},
		{name: "no keys member", h: serveDoc([]byte(`{"spiffe_sequence":1}`)), reason: bundle.ReasonParse},
		{name: "empty keys", h: serveDoc([]byte(`{"keys":[],"spiffe_sequence":9}`)), reason: bundle.ReasonEmpty},
		{name: "JWT only", h: serveDoc(jwtOnly(t)), reason: bundle.ReasonEmpty},
		{name: "authority of another trust domain", h: serveDoc(bundleDoc(t, "peer.org", 6, 0, newCA(t, "evil.org"))), reason: bundle.ReasonWrongTrustDomain, msg: "evil.org"},
		{name: "trust_domain member", h: serveDoc([]byte(strings.Replace(string(good), "{", `{"trust_domain":"evil.org",`, 1))), reason: bundle.ReasonWrongTrustDomain},
		{name: "slow body", h: trickle, timeout: 500 * time.Millisecond, reason: bundle.ReasonTimeout},
		{name: "slow headers", h: func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		}, timeout: 300 * time.Millisecond, reason: bundle.ReasonTimeout},
		{name: "unknown CA", h: serveDoc(good), auth: ptr(WebPKIAuth(newCA(t, "").Pool())), reason: bundle.ReasonTLS},
		{name: "system roots", h: serveDoc(good), auth: ptr(FetchAuth{}), reason: bundle.ReasonTLS},
		{name: "SPIFFE auth without a bundle", h: serveDoc(good), auth: ptr(SPIFFEAuth(nil, spiffeid.RequireFromString("spiffe://peer.org/x"))), reason: bundle.ReasonNoBundle},
		{name: "closed port", url: closed, reason: bundle.ReasonNetwork},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			url := c.url
			if url == "" {
				url = newPeer(t, cert, c.h).url
			}
			a := auth
			if c.auth != nil {
				a = *c.auth
			}
			ctx := context.Background()
			if c.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, c.timeout)
				defer cancel()
			}
			b, raw, err := FetchBundle(ctx, td, url, a, c.max)
			if got := bundle.ReasonOf(err); got != c.reason {
				t.Fatalf("reason %q (%v), want %q", got, err, c.reason)
			}
			if err == nil {
				if seq, _ := b.SequenceNumber(); seq != 5 || !bytes.Equal(raw, good) {
					t.Fatalf("fetched sequence %d", seq)
				}
				return
			}
			if !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("error %q does not say %q", err, c.msg)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// jwtOnly is a bundle document with a JWT authority and no X.509 one.
func jwtOnly(t testing.TB) []byte {
	b := spiffebundle.New(spiffeid.RequireTrustDomainFromString("peer.org"))
	if err := b.AddJWTAuthority("k1", p256Key(t).Public()); err != nil {
		t.Fatal(err)
	}
	doc, err := b.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

func TestFetchBundleCanceled(t *testing.T) {
	t.Parallel()
	webCA := newCA(t, "")
	p := newPeer(t, webCA.Leaf(t, testca.LeafOpts{IP: true}), trickle)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	_, _, err := FetchBundle(ctx, spiffeid.RequireTrustDomainFromString("peer.org"), p.url, WebPKIAuth(webCA.Pool()), 0)
	if bundle.ReasonOf(err) != bundle.ReasonCanceled {
		t.Fatalf("reason %q (%v), want canceled", bundle.ReasonOf(err), err)
	}
}
