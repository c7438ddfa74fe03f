package federation

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
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
	cert := webCA.leaf(t, leafOpts{ip: true})
	good := bundleDoc(t, "peer.org", 5, 0, newCA(t, "peer.org"))
	auth := WebPKIAuth(webCA.pool())

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
		{name: "http URL", url: "http://127.0.0.1:1/", reason: ReasonConfig},
		{name: "no host", url: "https:///x", reason: ReasonConfig},
		{name: "HTTP 500", h: func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "boom", 500) }, reason: ReasonHTTPStatus, msg: "500"},
		{name: "HTTP 404", h: http.NotFound, reason: ReasonHTTPStatus},
		{name: "redirect", h: func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "http://127.0.0.1:1/", http.StatusFound)
		}, reason: ReasonHTTPStatus, msg: "not followed"},
		{name: "10 MiB declared", h: bigBody(10<<20, true), reason: ReasonTooLarge, msg: "bundle over 1 MiB"},
		{name: "10 MiB chunked", h: bigBody(10<<20, false), reason: ReasonTooLarge, msg: "bundle over 1 MiB"},
		{name: "1 MiB + 1", h: bigBody(1<<20+1, false), reason: ReasonTooLarge, msg: "bundle over 1 MiB"},
		{name: "custom cap", h: serveDoc(good), max: 100, reason: ReasonTooLarge, msg: "bundle over 100 bytes"},
		{name: "garbage", h: serveDoc([]byte("<html>hello</html>")), reason: ReasonParse},
		{name: "truncated", h: serveDoc(good[:len(good)/2]), reason: ReasonParse},
		{name: "no keys member", h: serveDoc([]byte(`{"spiffe_sequence":1}`)), reason: ReasonParse},
		{name: "empty keys", h: serveDoc([]byte(`{"keys":[],"spiffe_sequence":9}`)), reason: ReasonEmpty},
		{name: "JWT only", h: serveDoc(jwtOnly(t)), reason: ReasonEmpty},
		{name: "authority of another trust domain", h: serveDoc(bundleDoc(t, "peer.org", 6, 0, newCA(t, "evil.org"))), reason: ReasonWrongTrustDomain, msg: "evil.org"},
		{name: "trust_domain member", h: serveDoc([]byte(strings.Replace(string(good), "{", `{"trust_domain":"evil.org",`, 1))), reason: ReasonWrongTrustDomain},
		{name: "slow body", h: trickle, timeout: 500 * time.Millisecond, reason: ReasonTimeout},
		{name: "slow headers", h: func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		}, timeout: 300 * time.Millisecond, reason: ReasonTimeout},
		{name: "unknown CA", h: serveDoc(good), auth: ptr(WebPKIAuth(newCA(t, "").pool())), reason: ReasonTLS},
		{name: "system roots", h: serveDoc(good), auth: ptr(FetchAuth{}), reason: ReasonTLS},
		{name: "SPIFFE auth without a bundle", h: serveDoc(good), auth: ptr(SPIFFEAuth(nil, spiffeid.RequireFromString("spiffe://peer.org/x"))), reason: ReasonNoBundle},
		{name: "closed port", url: closed, reason: ReasonNetwork},
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
			if got := ErrorReason(err); got != c.reason {
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
	p := newPeer(t, webCA.leaf(t, leafOpts{ip: true}), trickle)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	_, _, err := FetchBundle(ctx, spiffeid.RequireTrustDomainFromString("peer.org"), p.url, WebPKIAuth(webCA.pool()), 0)
	if ErrorReason(err) != ReasonCanceled {
		t.Fatalf("reason %q (%v), want canceled", ErrorReason(err), err)
	}
}

func TestParseBundle(t *testing.T) {
	t.Parallel()
	td := spiffeid.RequireTrustDomainFromString("peer.org")
	peerCA := newCA(t, "peer.org")
	plainCA := newCA(t, "")
	good := string(bundleDoc(t, "peer.org", 5, time.Minute, peerCA, plainCA))
	with := func(member string) []byte { return []byte(strings.Replace(good, "{", "{"+member+",", 1)) }
	for _, c := range []struct {
		name   string
		doc    []byte
		reason string
	}{
		{"good", []byte(good), ""},
		{"good with whitespace", []byte("\n  " + good + "\n"), ""},
		{"trust_domain member naming it", with(`"trust_domain":"peer.org"`), ""},
		{"spiffe_trust_domain as an ID", with(`"spiffe_trust_domain":"spiffe://peer.org"`), ""},
		{"no sequence", []byte(string(bundleDoc(t, "peer.org", 0, 0, peerCA))), ""},
		{"empty", nil, ReasonParse},
		{"array", []byte(`[` + good + `]`), ReasonParse},
		{"two objects", []byte(good + good), ReasonParse},
		{"null", []byte(`null`), ReasonParse},
		{"negative sequence", []byte(`{"keys":[],"spiffe_sequence":-1}`), ReasonParse},
		{"fractional sequence", []byte(`{"keys":[],"spiffe_sequence":1.5}`), ReasonParse},
		{"sequence over int64", []byte(fmt.Sprintf(`{"keys":[],"spiffe_sequence":%d}`, uint64(1)<<63)), ReasonParse},
		{"huge refresh hint", []byte(`{"keys":[],"spiffe_refresh_hint":9223372037}`), ReasonParse},
		{"negative refresh hint", []byte(`{"keys":[],"spiffe_refresh_hint":-5}`), ReasonParse},
		{"two certificates in a key", []byte(strings.Replace(good, `"x5c":[`, `"x5c":["AAAA",`, 1)), ReasonParse},
		{"bad certificate", []byte(`{"keys":[{"use":"x509-svid","kty":"EC","x5c":["AAAA"]}]}`), ReasonParse},
		{"empty keys", []byte(`{"keys":[]}`), ReasonEmpty},
		{"JWT only", jwtOnly(t), ReasonEmpty},
		{"unknown uses only", []byte(`{"keys":[{"use":"other","kty":"oct","k":"AAAA"}]}`), ReasonEmpty},
		{"other trust_domain", with(`"trust_domain":"evil.org"`), ReasonWrongTrustDomain},
		{"other spiffe_trust_domain", with(`"spiffe_trust_domain":"spiffe://evil.org"`), ReasonWrongTrustDomain},
		{"authority of evil.org", bundleDoc(t, "peer.org", 1, 0, plainCA, newCA(t, "evil.org")), ReasonWrongTrustDomain},
	} {
		b, err := ParseBundle(td, c.doc)
		if got := ErrorReason(err); got != c.reason {
			t.Errorf("%s: reason %q (%v), want %q", c.name, got, err, c.reason)
			continue
		}
		if err == nil && (b.TrustDomain() != td || len(b.X509Authorities()) == 0) {
			t.Errorf("%s: parsed %v", c.name, b)
		}
	}
	if _, err := ParseBundle(spiffeid.TrustDomain{}, []byte(good)); err == nil {
		t.Error("parsed for the zero trust domain")
	}
}

func FuzzParseBundle(f *testing.F) {
	peerCA := newCA(f, "peer.org")
	good := bundleDoc(f, "peer.org", 5, time.Minute, peerCA)
	for _, seed := range [][]byte{
		good,
		bundleDoc(f, "peer.org", 0, 0, newCA(f, "evil.org")),
		[]byte(`{"keys":[]}`),
		[]byte(`{"keys":[{"use":"x509-svid","x5c":["AAAA"]}],"spiffe_sequence":18446744073709551615}`),
		[]byte(`{"keys":[{"use":"jwt-svid","kty":"EC","kid":"k","crv":"P-256","x":"AAAA","y":"AAAA"}],"spiffe_refresh_hint":9223372036854775807}`),
		[]byte(`{"trust_domain":7,"keys":null}`),
		jwtOnly(f),
		[]byte(`[]`),
		[]byte(""),
	} {
		f.Add(seed)
	}
	td := spiffeid.RequireTrustDomainFromString("peer.org")
	f.Fuzz(func(t *testing.T, doc []byte) {
		b, err := ParseBundle(td, doc)
		if err != nil {
			if ErrorReason(err) == "error" {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if len(b.X509Authorities()) == 0 {
			t.Fatal("accepted a bundle without X.509 authorities")
		}
		if hint, ok := b.RefreshHint(); ok && hint < 0 {
			t.Fatalf("accepted a negative refresh hint %s", hint)
		}
		// What is accepted re-marshals and parses back to the same bundle.
		again, err := b.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		b2, err := ParseBundle(td, again)
		if err != nil || !b2.Equal(b) {
			t.Fatalf("re-marshalled bundle does not parse back: %v", err)
		}
	})
}
