package authn

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/meshroot/meshroot/store"
)

// rsaKey is generated once: RSA key generation is slow.
var rsaKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

func ecKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// signingKey is a private key with its JWK key id and algorithm.
type signingKey struct {
	kid string
	alg jose.SignatureAlgorithm
	key crypto.Signer
}

// jwks returns the JSON Web Key Set of keys' public halves.
func jwks(t testing.TB, keys ...signingKey) []byte {
	t.Helper()
	var set jose.JSONWebKeySet
	for _, k := range keys {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.key.Public(), KeyID: k.kid, Algorithm: string(k.alg), Use: "sig"})
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// saClaims are the claims of a service-account token.
type saClaims struct {
	jwt.Claims
	Kubernetes any `json:"kubernetes.io,omitempty"`
}

// k8sClaim is the "kubernetes.io" claim for namespace ns and service
// account name.
func k8sClaim(ns, name string) map[string]any {
	return map[string]any{
		"namespace":      ns,
		"serviceaccount": map[string]any{"name": name, "uid": "6d7b4d9c-0000-4000-8000-000000000001"},
		"pod":            map[string]any{"name": "meshroot-agent-0", "uid": "6d7b4d9c-0000-4000-8000-000000000002"},
	}
}

// goodClaims are the claims of a valid token from issuer for the agent
// service account istio-system/meshroot-agent, issued at now.
func goodClaims(issuer string, now time.Time) saClaims {
	return saClaims{
		Claims: jwt.Claims{
			Issuer:    issuer,
			Subject:   "system:serviceaccount:istio-system:meshroot-agent",
			Audience:  jwt.Audience{"meshroot"},
			Expiry:    jwt.NewNumericDate(now.Add(time.Hour)),
			NotBefore: jwt.NewNumericDate(now),
			IssuedAt:  jwt.NewNumericDate(now),
		},
		Kubernetes: k8sClaim("istio-system", "meshroot-agent"),
	}
}

// sign makes a compact JWS token of claims signed by k.
func sign(t testing.TB, k signingKey, claims any) string {
	t.Helper()
	jwk := jose.JSONWebKey{Key: k.key, KeyID: k.kid}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: k.alg, Key: jwk}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// rawJWS assembles a token from a header and claims with signature sig,
// for tokens go-jose would not make.
func rawJWS(t testing.TB, header map[string]any, claims any, sig []byte) string {
	t.Helper()
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	c, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding
	return enc.EncodeToString(h) + "." + enc.EncodeToString(c) + "." + enc.EncodeToString(sig)
}

const (
	eastIssuer = "https://east.example.org/issuer"
	westIssuer = "https://west.example.org"
	agentSA    = "istio-system/meshroot-agent"
	agentUser  = "system:serviceaccount:istio-system:meshroot-agent"
)

// jwksFixture is a store with clusters whose tokens are verified by
// registered JWKS, and their keys.
type jwksFixture struct {
	st       store.Store
	a        *Authenticator
	clk      *clock
	eastEC   signingKey
	eastRSA  signingKey
	westEC   signingKey
	stranger signingKey // in no key set
}

// newJWKSFixture registers:
//   - east: issuer eastIssuer, JWKS with an ES256 and an RS256 key, allows
//     the agent service account;
//   - west: issuer westIssuer, its own ES256 key, allows the agent;
//   - east-twin: east's issuer and JWKS, but allows only other/agent;
//   - plain: no token verification;
//   - noaccounts: east's JWKS, no service accounts;
//   - noissuer: east's JWKS, no issuer.
func newJWKSFixture(t testing.TB) *jwksFixture {
	t.Helper()
	f := &jwksFixture{
		st:       newStore(t),
		clk:      newClock(),
		eastEC:   signingKey{"east-ec", jose.ES256, ecKey(t)},
		eastRSA:  signingKey{"east-rsa", jose.RS256, rsaKey()},
		westEC:   signingKey{"west-ec", jose.ES256, ecKey(t)},
		stranger: signingKey{"east-ec", jose.ES256, ecKey(t)}, // reuses east's key id
	}
	eastJWKS := jwks(t, f.eastEC, f.eastRSA)
	allowed := []string{"other/thing", agentSA}
	for _, c := range []store.Cluster{
		{Name: "east", Auth: store.ClusterAuth{Issuer: eastIssuer, JWKS: eastJWKS, ServiceAccounts: allowed}},
		{Name: "west", Auth: store.ClusterAuth{Issuer: westIssuer, JWKS: jwks(t, f.westEC), ServiceAccounts: allowed}},
		{Name: "east-twin", Auth: store.ClusterAuth{Issuer: eastIssuer, JWKS: eastJWKS, ServiceAccounts: []string{"other/agent"}}},
		{Name: "plain"},
		{Name: "noaccounts", Auth: store.ClusterAuth{Issuer: eastIssuer, JWKS: eastJWKS}},
		{Name: "noissuer", Auth: store.ClusterAuth{JWKS: eastJWKS, ServiceAccounts: allowed}},
	} {
		addCluster(t, f.st, c)
	}
	f.a = New(f.st, Options{Now: f.clk.Now})
	return f
}

func (f *jwksFixture) auth(t testing.TB, cluster, token string) (Identity, error) {
	t.Helper()
	return f.a.Authenticate(context.Background(), cluster, Credential{BearerToken: token})
}

func TestServiceAccountJWKS(t *testing.T) {
	f := newJWKSFixture(t)
	want := Identity{Cluster: "east", Method: MethodServiceAccount, Subject: agentUser}
	for _, k := range []signingKey{f.eastEC, f.eastRSA} {
		t.Run(string(k.alg), func(t *testing.T) {
			id, err := f.auth(t, "east", sign(t, k, goodClaims(eastIssuer, t0)))
			wantIdentity(t, id, err, want)
		})
	}
	t.Run("no kid", func(t *testing.T) {
		id, err := f.auth(t, "east", sign(t, signingKey{"", jose.ES256, f.eastEC.key}, goodClaims(eastIssuer, t0)))
		wantIdentity(t, id, err, want)
	})
	t.Run("audience list", func(t *testing.T) {
		c := goodClaims(eastIssuer, t0)
		c.Audience = jwt.Audience{"https://kubernetes.default.svc", "meshroot"}
		id, err := f.auth(t, "east", sign(t, f.eastEC, c))
		wantIdentity(t, id, err, want)
	})
	t.Run("expired within leeway", func(t *testing.T) {
		c := goodClaims(eastIssuer, t0.Add(-2*time.Hour))
		c.Expiry = jwt.NewNumericDate(t0.Add(-59 * time.Second))
		id, err := f.auth(t, "east", sign(t, f.eastEC, c))
		wantIdentity(t, id, err, want)
	})
	t.Run("not yet valid within leeway", func(t *testing.T) {
		c := goodClaims(eastIssuer, t0.Add(59*time.Second))
		id, err := f.auth(t, "east", sign(t, f.eastEC, c))
		wantIdentity(t, id, err, want)
	})
}

func TestServiceAccountRefusals(t *testing.T) {
	f := newJWKSFixture(t)
	good := goodClaims(eastIssuer, t0)
	with := func(edit func(c *saClaims)) saClaims {
		c := goodClaims(eastIssuer, t0)
		edit(&c)
		return c
	}
	hmacSigner, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: publicKeyPEM(t, f.eastRSA.key)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	hs256, err := jwt.Signed(hmacSigner).Claims(good).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	noneHeader := map[string]any{"alg": "none", "kid": f.eastEC.kid}
	// goodRest is the claims and signature of a good token.
	goodRest := strings.SplitN(sign(t, f.eastEC, good), ".", 2)[1]

	for _, tc := range []struct {
		name    string
		cluster string
		token   string
		code    Code
		want    []string
	}{
		{"no verification configured", "plain", sign(t, f.eastEC, good), PermissionDenied,
			[]string{"cluster plain has no service-account token verification configured: register its issuer's JWKS, OIDC discovery or a kubeconfig for TokenReview"}},
		{"no issuer registered", "noissuer", sign(t, f.eastEC, good), PermissionDenied,
			[]string{"cluster noissuer has no service-account token issuer registered"}},
		{"no service accounts", "noaccounts", sign(t, f.eastEC, good), PermissionDenied,
			[]string{"cluster noaccounts allows no service accounts: register the agent's service account as \"namespace/name\""}},
		{"too long", "east", strings.Repeat("a", 16<<10+1), Unauthenticated,
			[]string{"service-account token is longer than 16384 bytes"}},
		{"not a JWT", "east", "not-a-token", Unauthenticated,
			[]string{"service-account token is not a JWT in JWS compact serialization"}},
		{"JWE", "east", "a.b.c.d.e", Unauthenticated, []string{"not a JWT in JWS compact serialization"}},
		{"JSON serialization", "east", `{"payload":"e30","signatures":[]}`, Unauthenticated, []string{"not a JWT in JWS compact serialization"}},
		{"alg none, empty signature", "east", rawJWS(t, noneHeader, good, nil), Unauthenticated,
			[]string{"not a JWT in JWS compact serialization"}},
		{"alg none", "east", rawJWS(t, noneHeader, good, []byte("x")), Unauthenticated,
			[]string{`service-account token is signed with algorithm "none": allowed are RS256, RS384, RS512, PS256, ES256, ES384`}},
		{"HS256 with the RSA public key as secret", "east", hs256, Unauthenticated,
			[]string{`signed with algorithm "HS256"`}},
		{"ES512", "east", rawJWS(t, map[string]any{"alg": "ES512"}, good, []byte("x")), Unauthenticated,
			[]string{`signed with algorithm "ES512"`}},
		{"header not base64", "east", "A." + goodRest, Unauthenticated,
			[]string{"service-account token header is not base64url"}},
		{"header not JSON", "east", "bm90IGpzb24." + goodRest, Unauthenticated,
			[]string{"service-account token header is not a JSON object"}},
		{"wrong issuer", "east", sign(t, f.eastEC, with(func(c *saClaims) { c.Issuer = westIssuer })), Unauthenticated,
			[]string{`service-account token has the wrong issuer "https://west.example.org": cluster east's issuer is "https://east.example.org/issuer"`}},
		{"unknown key", "east", sign(t, signingKey{"nope", jose.ES256, f.eastEC.key}, good), Unauthenticated,
			[]string{`no ES256 key with id "nope" in cluster east's key set`}},
		{"algorithm of another key", "east", sign(t, signingKey{"east-rsa", jose.PS256, f.eastRSA.key}, good), Unauthenticated,
			[]string{`no PS256 key with id "east-rsa"`}},
		{"signature", "east", sign(t, f.stranger, good), Unauthenticated,
			[]string{`service-account token signature does not verify with cluster east's key "east-ec"`}},
		{"tampered claims", "east", tamper(t, sign(t, f.eastEC, good)), Unauthenticated,
			[]string{"signature does not verify"}},
		{"wrong audience", "east", sign(t, f.eastEC, with(func(c *saClaims) { c.Audience = jwt.Audience{"https://kubernetes.default.svc"} })), Unauthenticated,
			[]string{`service-account token has the wrong audience ["https://kubernetes.default.svc"]: want "meshroot"`}},
		{"no audience", "east", sign(t, f.eastEC, with(func(c *saClaims) { c.Audience = nil })), Unauthenticated,
			[]string{"wrong audience []"}},
		{"no expiry", "east", sign(t, f.eastEC, with(func(c *saClaims) { c.Expiry = nil })), Unauthenticated,
			[]string{"service-account token has no expiry (exp): use a projected service-account token"}},
		{"expired", "east", sign(t, f.eastEC, with(func(c *saClaims) { c.Expiry = jwt.NewNumericDate(t0.Add(-61 * time.Second)) })), Unauthenticated,
			[]string{"service-account token expired at 2026-03-01T11:58:59Z"}},
		{"not yet valid", "east", sign(t, f.eastEC, with(func(c *saClaims) { c.NotBefore = jwt.NewNumericDate(t0.Add(2 * time.Minute)) })), Unauthenticated,
			[]string{"service-account token is not valid before 2026-03-01T12:02:00Z"}},
		{"issued in the future", "east", sign(t, f.eastEC, with(func(c *saClaims) { c.IssuedAt = jwt.NewNumericDate(t0.Add(2 * time.Minute)) })), Unauthenticated,
			[]string{"service-account token was issued in the future, at 2026-03-01T12:02:00Z"}},
		{"no kubernetes.io claim", "east", sign(t, f.eastEC, with(func(c *saClaims) { c.Kubernetes = nil })), Unauthenticated,
			[]string{"service-account token has no kubernetes.io namespace and service account"}},
		{"no service account in claim", "east", sign(t, f.eastEC, with(func(c *saClaims) { c.Kubernetes = map[string]any{"namespace": "istio-system"} })), Unauthenticated,
			[]string{"has no kubernetes.io namespace and service account"}},
		{"invalid namespace", "east", sign(t, f.eastEC, with(func(c *saClaims) { c.Kubernetes = k8sClaim("Istio_System", "meshroot-agent") })), Unauthenticated,
			[]string{`service-account token names an invalid namespace "Istio_System"`}},
		{"invalid service account", "east", sign(t, f.eastEC, with(func(c *saClaims) { c.Kubernetes = k8sClaim("istio-system", "a/b") })), Unauthenticated,
			[]string{`service-account token names an invalid service account "a/b"`}},
		{"subject mismatch", "east", sign(t, f.eastEC, with(func(c *saClaims) { c.Subject = "system:serviceaccount:kube-system:default" })), Unauthenticated,
			[]string{`service-account token subject "system:serviceaccount:kube-system:default" does not match its kubernetes.io claims (system:serviceaccount:istio-system:meshroot-agent)`}},
		{"service account not allowed", "east", sign(t, f.eastEC, with(func(c *saClaims) {
			c.Subject = "system:serviceaccount:default:default"
			c.Kubernetes = k8sClaim("default", "default")
		})), PermissionDenied,
			[]string{"service account default/default is not allowed for cluster east"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.auth(t, tc.cluster, tc.token)
			wantRefusal(t, err, tc.code, tc.want...)
			if len(tc.token) > 32 && strings.Contains(err.Error(), tc.token) {
				t.Error("the reason quotes the token")
			}
		})
	}
}

// publicKeyPEM returns k's public key as PEM, the bytes an attacker uses
// as HMAC secret in the algorithm confusion attack.
func publicKeyPEM(t testing.TB, k crypto.Signer) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// tamper changes the claims of a signed token, keeping its signature.
func tamper(t testing.TB, token string) string {
	t.Helper()
	parts := strings.Split(token, ".")
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(raw, &claims); err != nil {
		t.Fatal(err)
	}
	claims["exp"] = float64(t0.Add(24 * time.Hour).Unix())
	raw, err = json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	parts[1] = base64.RawURLEncoding.EncodeToString(raw)
	return strings.Join(parts, ".")
}

// TestServiceAccountOtherCluster: a token of cluster east is refused for
// west (another issuer: not a credential there at all) and for east-twin
// (same issuer and keys, but the service account is not registered there).
func TestServiceAccountOtherCluster(t *testing.T) {
	f := newJWKSFixture(t)
	token := sign(t, f.eastEC, goodClaims(eastIssuer, t0))
	if _, err := f.auth(t, "east", token); err != nil {
		t.Fatalf("the token does not work for east: %v", err)
	}
	_, err := f.auth(t, "west", token)
	wantRefusal(t, err, Unauthenticated, "wrong issuer", "cluster west's issuer")
	_, err = f.auth(t, "east-twin", token)
	wantRefusal(t, err, PermissionDenied, "service account istio-system/meshroot-agent is not allowed for cluster east-twin")
}

func TestServiceAccountBrokenJWKS(t *testing.T) {
	st := newStore(t)
	for name, set := range map[string]string{
		"garbage":  "{",
		"empty":    `{"keys":[]}`,
		"HMAC key": `{"keys":[{"kty":"oct","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0","kid":"east-ec","alg":"HS256"}]}`,
	} {
		addCluster(t, st, store.Cluster{Name: "c-" + strings.ReplaceAll(strings.ToLower(name), " ", "-"), Auth: store.ClusterAuth{Issuer: eastIssuer, JWKS: []byte(set), ServiceAccounts: []string{agentSA}}})
	}
	a := New(st, Options{Now: newClock().Now})
	token := sign(t, signingKey{"east-ec", jose.ES256, ecKey(t)}, goodClaims(eastIssuer, t0))
	for cluster, want := range map[string]string{
		"c-garbage":  "cluster c-garbage: registered JWKS is not a JSON Web Key Set",
		"c-empty":    "cluster c-empty: registered JWKS has no RSA or ECDSA signature key (0 keys in the set)",
		"c-hmac-key": "registered JWKS has no RSA or ECDSA signature key (1 keys in the set)",
	} {
		_, err := a.Authenticate(context.Background(), cluster, Credential{BearerToken: token})
		wantInternal(t, err, want)
	}
}
