package bundle

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// newCA makes a self-signed CA certificate; with td set it carries the URI
// SAN spiffe://td, as SPIRE's CA certificates do.
func newCA(t testing.TB, td string) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: "test CA " + td},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	if td != "" {
		tmpl.URIs = []*url.URL{{Scheme: "spiffe", Host: td}}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

// bundleDoc marshals a SPIFFE bundle for td (hint 0: none).
func bundleDoc(t testing.TB, td string, seq uint64, hint time.Duration, cas ...*x509.Certificate) []byte {
	t.Helper()
	b := spiffebundle.FromX509Authorities(spiffeid.RequireTrustDomainFromString(td), cas)
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

// pemOf encodes certs as PEM.
func pemOf(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// jwtOnly is a bundle document with a JWT authority and no X.509 one.
func jwtOnly(t testing.TB) []byte {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	b := spiffebundle.New(spiffeid.RequireTrustDomainFromString("peer.org"))
	if err := b.AddJWTAuthority("k1", key.Public()); err != nil {
		t.Fatal(err)
	}
	doc, err := b.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return doc
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
		b, err := Parse(td, c.doc, Options{})
		if got := ReasonOf(err); got != c.reason {
			t.Errorf("%s: reason %q (%v), want %q", c.name, got, err, c.reason)
			continue
		}
		if err == nil && (b.TrustDomain() != td || len(b.X509Authorities()) == 0) {
			t.Errorf("%s: parsed %v", c.name, b)
		}
	}
	if _, err := Parse(spiffeid.TrustDomain{}, []byte(good), Options{}); err == nil {
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
		b, err := Parse(td, doc, Options{})
		if err != nil {
			if ReasonOf(err) == "error" {
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
		b2, err := Parse(td, again, Options{})
		if err != nil || !b2.Equal(b) {
			t.Fatalf("re-marshalled bundle does not parse back: %v", err)
		}
	})
}

// TestParseOptions: PEM is taken only when asked for, and a PEM bootstrap
// bundle gets every check a fetched document gets (trust domain, emptiness,
// size).
func TestParseOptions(t *testing.T) {
	t.Parallel()
	td := spiffeid.RequireTrustDomainFromString("peer.org")
	peerCA, plainCA, evilCA := newCA(t, "peer.org"), newCA(t, ""), newCA(t, "evil.org")
	lenient := Options{AllowPEM: true}
	for _, c := range []struct {
		name   string
		data   []byte
		opts   Options
		reason string
		auths  int
	}{
		{"PEM when allowed", pemOf(peerCA, plainCA), lenient, "", 2},
		{"PEM with surrounding space", append([]byte("\n\n"), pemOf(peerCA)...), lenient, "", 1},
		{"document when PEM allowed", bundleDoc(t, "peer.org", 3, 0, peerCA), lenient, "", 1},
		{"PEM when not allowed", pemOf(peerCA), Options{}, ReasonParse, 0},
		{"PEM of another trust domain", pemOf(peerCA, evilCA), lenient, ReasonWrongTrustDomain, 0},
		{"PEM garbage", []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), lenient, ReasonParse, 0},
		{"PEM without a certificate", []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), lenient, ReasonEmpty, 0},
		{"neither", []byte("hello"), lenient, ReasonParse, 0},
		{"over MaxBytes", bundleDoc(t, "peer.org", 3, 0, peerCA), Options{MaxBytes: 100}, ReasonTooLarge, 0},
		{"over MaxSize", append(bundleDoc(t, "peer.org", 3, 0, peerCA), make([]byte, MaxSize)...), lenient, ReasonTooLarge, 0},
	} {
		b, err := Parse(td, c.data, c.opts)
		if got := ReasonOf(err); got != c.reason {
			t.Errorf("%s: reason %q (%v), want %q", c.name, got, err, c.reason)
			continue
		}
		if err == nil && len(b.X509Authorities()) != c.auths {
			t.Errorf("%s: %d authorities, want %d", c.name, len(b.X509Authorities()), c.auths)
		}
	}
}

// TestParseRootsOverMeshBudget: a bundle under the 1 MiB document cap whose
// roots would take more than MaxRootsPEM in a mesh's ConfigMaps is refused
// as too_large, as a document and as PEM.
func TestParseRootsOverMeshBudget(t *testing.T) {
	t.Parallel()
	td := spiffeid.RequireTrustDomainFromString("peer.org")
	var cas []*x509.Certificate
	for PEMSize(cas) <= MaxRootsPEM {
		cas = append(cas, newCA(t, "peer.org"))
	}
	doc := bundleDoc(t, "peer.org", 1, 0, cas...)
	if len(doc) > MaxSize {
		t.Fatalf("test document is %d bytes: over MaxSize, not testing the roots budget", len(doc))
	}
	for name, data := range map[string][]byte{"document": doc, "PEM": pemOf(cas...)} {
		_, err := Parse(td, data, Options{AllowPEM: true})
		if ReasonOf(err) != ReasonTooLarge || !strings.Contains(err.Error(), "PEM") {
			t.Errorf("%s with %d roots (%d bytes of PEM): %v, want too_large", name, len(cas), PEMSize(cas), err)
		}
	}
	if _, err := Parse(td, bundleDoc(t, "peer.org", 1, 0, cas[:len(cas)-1]...), Options{}); err != nil {
		t.Errorf("one root fewer (%d bytes of PEM) refused: %v", PEMSize(cas[:len(cas)-1]), err)
	}
	if got, want := PEMSize(cas[:1]), len(pemOf(cas[0])); got != want {
		t.Errorf("PEMSize = %d, want %d", got, want)
	}
}
