package authn

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/meshroot/meshroot/store"
)

// issuerServer is an OIDC issuer on 127.0.0.1 that serves a discovery
// document and a JWKS, and counts what it serves.
type issuerServer struct {
	srv *httptest.Server

	mu         sync.Mutex
	issuer     string // "issuer" of the discovery document; srv.URL unless set
	jwksURI    string // "jwks_uri"; srv.URL+"/keys" unless set
	jwks       []byte
	redirect   string        // when set, the discovery document redirects here
	delay      time.Duration // how long the discovery document takes
	discovered int           // discovery documents served
	keysServed int           // JWKS served
}

func newIssuerServer(t testing.TB, keys ...signingKey) *issuerServer {
	t.Helper()
	s := &issuerServer{jwks: jwks(t, keys...)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.discovered++
		delay := s.delay
		s.mu.Unlock()
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
		s.mu.Lock()
		if s.redirect != "" {
			to := s.redirect
			s.mu.Unlock()
			http.Redirect(w, r, to, http.StatusFound)
			return
		}
		doc := map[string]any{"issuer": s.srv.URL, "jwks_uri": s.srv.URL + "/keys", "id_token_signing_alg_values_supported": []string{"ES256", "RS256"}}
		if s.issuer != "" {
			doc["issuer"] = s.issuer
		}
		if s.jwksURI != "" {
			doc["jwks_uri"] = s.jwksURI
		}
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(doc)
	})
	mux.HandleFunc("GET /keys", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.keysServed++
		body := s.jwks
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.Write(body)
	})
	s.srv = httptest.NewUnstartedServer(mux)
	// Tests that make the client refuse the server's certificate would
	// otherwise log the handshake error.
	s.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.srv.StartTLS()
	t.Cleanup(s.srv.Close)
	return s
}

// caPEM is the PEM of the server's certificate, which is its own CA.
func (s *issuerServer) caPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.srv.Certificate().Raw})
}

func (s *issuerServer) set(fn func(s *issuerServer)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fn(s)
}

// counts returns how many discovery documents and JWKS were served.
func (s *issuerServer) counts() (discovered, keys int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.discovered, s.keysServed
}

func wantCounts(t testing.TB, s *issuerServer, discovered, keys int) {
	t.Helper()
	if d, k := s.counts(); d != discovered || k != keys {
		t.Fatalf("served %d discovery documents and %d key sets, want %d and %d", d, k, discovered, keys)
	}
}

// oidcSetup registers cluster east with OIDC discovery against s.
func oidcSetup(t testing.TB, s *issuerServer) (*Authenticator, *clock) {
	t.Helper()
	st := newStore(t)
	addCluster(t, st, store.Cluster{Name: "east", Auth: store.ClusterAuth{
		Issuer: s.srv.URL, OIDCDiscovery: true, CAPEM: s.caPEM(), ServiceAccounts: []string{agentSA},
	}})
	clk := newClock()
	return New(st, Options{Now: clk.Now, HTTPClientTimeout: 5 * time.Second}), clk
}

func authBearer(a *Authenticator, token string) (Identity, error) {
	return a.Authenticate(context.Background(), "east", Credential{BearerToken: token})
}

func TestOIDCDiscovery(t *testing.T) {
	k1 := signingKey{"k1", jose.ES256, ecKey(t)}
	rsa := signingKey{"rsa", jose.RS256, rsaKey()}
	s := newIssuerServer(t, k1, rsa)
	a, clk := oidcSetup(t, s)
	want := Identity{Cluster: "east", Method: MethodServiceAccount, Subject: agentUser}

	for _, k := range []signingKey{k1, rsa, k1} {
		id, err := authBearer(a, sign(t, k, goodClaims(s.srv.URL, clk.Now())))
		wantIdentity(t, id, err, want)
	}
	wantCounts(t, s, 1, 1) // cached

	// A token for another issuer is refused before any fetch.
	_, err := authBearer(a, sign(t, k1, goodClaims("https://elsewhere.example", clk.Now())))
	wantRefusal(t, err, Unauthenticated, "wrong issuer")
	wantCounts(t, s, 1, 1)

	// Past the cache TTL the keys are fetched again.
	clk.Advance(5*time.Minute + time.Second)
	id, err := authBearer(a, sign(t, k1, goodClaims(s.srv.URL, clk.Now())))
	wantIdentity(t, id, err, want)
	wantCounts(t, s, 2, 2)
}

func TestOIDCKeyRotation(t *testing.T) {
	k1 := signingKey{"k1", jose.ES256, ecKey(t)}
	k2 := signingKey{"k2", jose.ES256, ecKey(t)}
	s := newIssuerServer(t, k1)
	a, clk := oidcSetup(t, s)

	if _, err := authBearer(a, sign(t, k1, goodClaims(s.srv.URL, clk.Now()))); err != nil {
		t.Fatal(err)
	}
	wantCounts(t, s, 1, 1)

	// The issuer rotates to k2. A k2 token within 10 s of the last fetch
	// finds no key and may not trigger a fetch.
	s.set(func(s *issuerServer) { s.jwks = jwks(t, k2) })
	clk.Advance(5 * time.Second)
	_, err := authBearer(a, sign(t, k2, goodClaims(s.srv.URL, clk.Now())))
	wantRefusal(t, err, Unauthenticated, `no ES256 key with id "k2" in cluster east's key set`)
	wantCounts(t, s, 1, 1)

	// Later, the unknown key id makes it fetch the keys again, well within
	// the cache TTL.
	clk.Advance(6 * time.Second)
	id, err := authBearer(a, sign(t, k2, goodClaims(s.srv.URL, clk.Now())))
	wantIdentity(t, id, err, Identity{Cluster: "east", Method: MethodServiceAccount, Subject: agentUser})
	wantCounts(t, s, 2, 2)

	// The old key is gone.
	_, err = authBearer(a, sign(t, k1, goodClaims(s.srv.URL, clk.Now())))
	wantRefusal(t, err, Unauthenticated, `no ES256 key with id "k1"`)
	// An unknown key id right after a fetch does not fetch again.
	_, err = authBearer(a, sign(t, signingKey{"k3", jose.ES256, k2.key}, goodClaims(s.srv.URL, clk.Now())))
	wantRefusal(t, err, Unauthenticated, `no ES256 key with id "k3"`)
	wantCounts(t, s, 2, 2)
}

func TestOIDCRefusals(t *testing.T) {
	k1 := signingKey{"k1", jose.ES256, ecKey(t)}
	t.Run("discovery names another issuer", func(t *testing.T) {
		s := newIssuerServer(t, k1)
		s.set(func(s *issuerServer) { s.issuer = "https://evil.example.org" })
		a, clk := oidcSetup(t, s)
		token := sign(t, k1, goodClaims(s.srv.URL, clk.Now()))
		_, err := authBearer(a, token)
		wantInternal(t, err, "cluster east: fetch service-account token keys: discovery document "+s.srv.URL+"/.well-known/openid-configuration names issuer \"https://evil.example.org\", not the registered \""+s.srv.URL+"\"")
		wantCounts(t, s, 1, 0)
		// A failed fetch is not retried for 10 s, then it is.
		clk.Advance(9 * time.Second)
		_, err = authBearer(a, token)
		wantInternal(t, err, "names issuer")
		wantCounts(t, s, 1, 0)
		s.set(func(s *issuerServer) { s.issuer = "" })
		clk.Advance(2 * time.Second)
		if _, err := authBearer(a, token); err != nil {
			t.Fatalf("after the issuer was fixed: %v", err)
		}
		wantCounts(t, s, 2, 1)
	})
	t.Run("http jwks_uri", func(t *testing.T) {
		s := newIssuerServer(t, k1)
		s.set(func(s *issuerServer) { s.jwksURI = "http://" + strings.TrimPrefix(s.srv.URL, "https://") + "/keys" })
		a, clk := oidcSetup(t, s)
		_, err := authBearer(a, sign(t, k1, goodClaims(s.srv.URL, clk.Now())))
		wantInternal(t, err, "jwks_uri \"http://", "is not an https:// URL")
		wantCounts(t, s, 1, 0)
	})
	t.Run("redirect to http", func(t *testing.T) {
		s := newIssuerServer(t, k1)
		s.set(func(s *issuerServer) {
			s.redirect = "http://" + strings.TrimPrefix(s.srv.URL, "https://") + "/elsewhere"
		})
		a, clk := oidcSetup(t, s)
		_, err := authBearer(a, sign(t, k1, goodClaims(s.srv.URL, clk.Now())))
		wantInternal(t, err, "redirect to http://", "is not HTTPS")
		wantCounts(t, s, 1, 0)
	})
	t.Run("discovery not found", func(t *testing.T) {
		s := newIssuerServer(t, k1)
		a, clk := oidcSetup(t, s)
		st := a.st
		update(t, st, func(ctx context.Context, tx store.Tx) error {
			if err := tx.DeleteCluster(ctx, "east"); err != nil {
				return err
			}
			return tx.CreateCluster(ctx, store.Cluster{Name: "east", TrustDomain: "example.org", CreatedAt: t0, Auth: store.ClusterAuth{
				Issuer: s.srv.URL + "/sub", OIDCDiscovery: true, CAPEM: s.caPEM(), ServiceAccounts: []string{agentSA},
			}})
		})
		_, err := authBearer(a, sign(t, k1, goodClaims(s.srv.URL+"/sub", clk.Now())))
		wantInternal(t, err, "GET "+s.srv.URL+"/sub/.well-known/openid-configuration: 404 Not Found")
	})
	t.Run("JWKS over 1 MiB", func(t *testing.T) {
		s := newIssuerServer(t, k1)
		s.set(func(s *issuerServer) {
			// Valid JSON, padded past the limit.
			s.jwks = []byte(`{"keys":[],"pad":"` + strings.Repeat("x", 1<<20) + `"}`)
		})
		a, clk := oidcSetup(t, s)
		_, err := authBearer(a, sign(t, k1, goodClaims(s.srv.URL, clk.Now())))
		wantInternal(t, err, s.srv.URL+"/keys: response is larger than 1048576 bytes (1 MiB)")
		wantCounts(t, s, 1, 1)
	})
	t.Run("issuer not https", func(t *testing.T) {
		st := newStore(t)
		addCluster(t, st, store.Cluster{Name: "east", Auth: store.ClusterAuth{
			Issuer: "http://127.0.0.1:1", OIDCDiscovery: true, ServiceAccounts: []string{agentSA},
		}})
		a := New(st, Options{Now: newClock().Now})
		_, err := authBearer(a, sign(t, k1, goodClaims("http://127.0.0.1:1", t0)))
		wantInternal(t, err, `issuer "http://127.0.0.1:1" is not an https:// URL`)
	})
	t.Run("untrusted server certificate", func(t *testing.T) {
		s := newIssuerServer(t, k1)
		st := newStore(t)
		addCluster(t, st, store.Cluster{Name: "east", Auth: store.ClusterAuth{
			Issuer: s.srv.URL, OIDCDiscovery: true, ServiceAccounts: []string{agentSA}, // no CAPEM: system roots
		}})
		a := New(st, Options{Now: newClock().Now})
		_, err := authBearer(a, sign(t, k1, goodClaims(s.srv.URL, t0)))
		wantInternal(t, err, "certificate signed by unknown authority")
	})
	t.Run("CA bundle without certificates", func(t *testing.T) {
		s := newIssuerServer(t, k1)
		st := newStore(t)
		addCluster(t, st, store.Cluster{Name: "east", Auth: store.ClusterAuth{
			Issuer: s.srv.URL, OIDCDiscovery: true, CAPEM: []byte("not PEM"), ServiceAccounts: []string{agentSA},
		}})
		a := New(st, Options{Now: newClock().Now})
		_, err := authBearer(a, sign(t, k1, goodClaims(s.srv.URL, t0)))
		wantInternal(t, err, "cluster east: OIDC discovery: the registered CA bundle holds no PEM certificate")
	})
}

// TestOIDCRegistrationChange: a changed registration (here the issuer's CA
// bundle) does not keep using keys cached for the old one.
func TestOIDCRegistrationChange(t *testing.T) {
	k1 := signingKey{"k1", jose.ES256, ecKey(t)}
	s := newIssuerServer(t, k1)
	a, clk := oidcSetup(t, s)
	token := sign(t, k1, goodClaims(s.srv.URL, clk.Now()))
	if _, err := authBearer(a, token); err != nil {
		t.Fatal(err)
	}
	// Re-register east with no CA bundle: the cached keys must not be used.
	update(t, a.st, func(ctx context.Context, tx store.Tx) error {
		if err := tx.DeleteCluster(ctx, "east"); err != nil {
			return err
		}
		return tx.CreateCluster(ctx, store.Cluster{Name: "east", TrustDomain: "example.org", CreatedAt: t0, Auth: store.ClusterAuth{
			Issuer: s.srv.URL, OIDCDiscovery: true, ServiceAccounts: []string{agentSA},
		}})
	})
	_, err := authBearer(a, token)
	wantInternal(t, err, "certificate signed by unknown authority")
}

// TestOIDCFetchDetachedFromCaller: a caller with a 1 ms deadline fails while
// the issuer is slow, but neither cancels the shared fetch nor leaves its
// context error for the next caller, who gets the keys from that same fetch.
func TestOIDCFetchDetachedFromCaller(t *testing.T) {
	k1 := signingKey{"k1", jose.ES256, ecKey(t)}
	s := newIssuerServer(t, k1)
	s.set(func(s *issuerServer) { s.delay = 300 * time.Millisecond })
	a, clk := oidcSetup(t, s)
	token := sign(t, k1, goodClaims(s.srv.URL, clk.Now()))

	hurried, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	_, err := a.Authenticate(hurried, "east", Credential{BearerToken: token})
	wantInternal(t, err, "context deadline exceeded")

	patient, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	id, err := a.Authenticate(patient, "east", Credential{BearerToken: token})
	wantIdentity(t, id, err, Identity{Cluster: "east", Method: MethodServiceAccount, Subject: "system:serviceaccount:" + strings.Replace(agentSA, "/", ":", 1)})
	// Both callers were served by one fetch.
	wantCounts(t, s, 1, 1)
}
