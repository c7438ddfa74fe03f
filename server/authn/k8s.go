package authn

import (
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/meshroot/meshroot/store"
)

const (
	// Audience is the audience a service-account token must be issued for:
	// project it with `audience: meshroot`.
	Audience = "meshroot"

	// maxBearerToken bounds a service-account token.
	maxBearerToken = 16 << 10
	// claimLeeway is the clock skew allowed for exp, nbf and iat.
	claimLeeway = 60 * time.Second
	// maxQuoted bounds a value from a token that is quoted in a reason.
	maxQuoted = 128
)

// allowedAlgs are the signature algorithms accepted for service-account
// tokens: asymmetric only (never "none" or an HMAC, whose key would be the
// public key), and those Kubernetes issuers use.
var allowedAlgs = []jose.SignatureAlgorithm{jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.ES256, jose.ES384}

// kubernetesClaims is the private "kubernetes.io" claim of a Kubernetes
// service-account token.
type kubernetesClaims struct {
	Kubernetes *struct {
		Namespace      string `json:"namespace"`
		ServiceAccount *struct {
			Name string `json:"name"`
		} `json:"serviceaccount"`
	} `json:"kubernetes.io"`
}

// authenticateServiceAccount authenticates a Kubernetes service-account
// token for cluster c, with the verification the cluster registered: its
// JWKS, its issuer's OIDC discovery, or TokenReview in the cluster.
func (a *Authenticator) authenticateServiceAccount(ctx context.Context, c store.Cluster, token string) (Identity, error) {
	auth := c.Auth
	useKeys := len(auth.JWKS) > 0 || auth.OIDCDiscovery
	if !useKeys && len(auth.Kubeconfig) == 0 {
		return Identity{}, permissionDenied("cluster %s has no service-account token verification configured: register its issuer's JWKS, OIDC discovery or a kubeconfig for TokenReview", c.Name)
	}
	if useKeys && auth.Issuer == "" {
		return Identity{}, permissionDenied("cluster %s has no service-account token issuer registered: register the issuer (the tokens' \"iss\") with its JWKS or OIDC discovery", c.Name)
	}
	if len(auth.ServiceAccounts) == 0 {
		return Identity{}, permissionDenied("cluster %s allows no service accounts: register the agent's service account as \"namespace/name\" for the cluster", c.Name)
	}
	if len(token) > maxBearerToken {
		return Identity{}, unauthenticated("service-account token is longer than %d bytes", maxBearerToken)
	}
	if !isCompactJWS(token) {
		return Identity{}, unauthenticated("service-account token is not a JWT in JWS compact serialization (header.payload.signature)")
	}
	var ns, name string
	if useKeys {
		var err error
		if ns, name, err = a.verifyJWT(ctx, c, token); err != nil {
			return Identity{}, err
		}
	} else {
		var err error
		if ns, name, err = a.tokenReview(ctx, c, token); err != nil {
			return Identity{}, err
		}
	}
	if !slices.Contains(auth.ServiceAccounts, ns+"/"+name) {
		return Identity{}, permissionDenied("service account %s/%s is not allowed for cluster %s", ns, name, c.Name)
	}
	return Identity{Cluster: c.Name, Method: MethodServiceAccount, Subject: serviceAccountUser(ns, name)}, nil
}

// verifyJWT verifies token with cluster c's keys and claims and returns its
// service account.
func (a *Authenticator) verifyJWT(ctx context.Context, c store.Cluster, token string) (ns, name string, err error) {
	alg, err := headerAlg(token)
	if err != nil {
		return "", "", err
	}
	if !slices.Contains(allowedAlgs, jose.SignatureAlgorithm(alg)) {
		return "", "", unauthenticated("service-account token is signed with algorithm %q: allowed are %s", quoteSafe(alg), algNames())
	}
	tok, err := jwt.ParseSigned(token, allowedAlgs)
	if err != nil {
		return "", "", unauthenticated("service-account token is malformed: %v", err)
	}
	if len(tok.Headers) != 1 {
		return "", "", unauthenticated("service-account token is malformed: want one signature, have %d", len(tok.Headers))
	}
	kid := tok.Headers[0].KeyID

	// Refuse a token from another issuer before looking for its key: this
	// reads the claims unverified, which is only ever used to refuse.
	var unverified jwt.Claims
	if err := tok.UnsafeClaimsWithoutVerification(&unverified); err != nil {
		return "", "", unauthenticated("service-account token claims are malformed: %v", err)
	}
	if unverified.Issuer != c.Auth.Issuer {
		return "", "", wrongIssuer(c, unverified.Issuer)
	}

	keys, err := a.clusterKeys(ctx, c, false)
	if err != nil {
		return "", "", err
	}
	candidates := keys.find(kid, alg)
	if len(candidates) == 0 && !keys.static {
		// An unknown key may be a new one: the issuer rotated its keys.
		if keys, err = a.clusterKeys(ctx, c, true); err != nil {
			return "", "", err
		}
		candidates = keys.find(kid, alg)
	}
	if len(candidates) == 0 {
		return "", "", unauthenticated("service-account token signature cannot be verified: no %s key with id %q in cluster %s's key set", alg, quoteSafe(kid), c.Name)
	}

	var claims jwt.Claims
	var kc kubernetesClaims
	verified := false
	for _, k := range candidates {
		if err := tok.Claims(k, &claims, &kc); err == nil {
			verified = true
			break
		}
	}
	if !verified {
		return "", "", unauthenticated("service-account token signature does not verify with cluster %s's key %q", c.Name, quoteSafe(kid))
	}
	if err := checkClaims(c, claims, a.now()); err != nil {
		return "", "", err
	}
	k := kc.Kubernetes
	if k == nil || k.Namespace == "" || k.ServiceAccount == nil || k.ServiceAccount.Name == "" {
		return "", "", unauthenticated("service-account token has no kubernetes.io namespace and service account: it is not a Kubernetes service-account token")
	}
	if err := checkServiceAccountName(k.Namespace, k.ServiceAccount.Name); err != nil {
		return "", "", err
	}
	if want := serviceAccountUser(k.Namespace, k.ServiceAccount.Name); claims.Subject != want {
		return "", "", unauthenticated("service-account token subject %q does not match its kubernetes.io claims (%s)", quoteSafe(claims.Subject), want)
	}
	return k.Namespace, k.ServiceAccount.Name, nil
}

// checkClaims checks the registered claims of a verified token at now.
func checkClaims(c store.Cluster, claims jwt.Claims, now time.Time) error {
	if claims.Issuer != c.Auth.Issuer {
		return wrongIssuer(c, claims.Issuer)
	}
	if !claims.Audience.Contains(Audience) {
		aud := make([]string, len(claims.Audience))
		for i, s := range claims.Audience {
			aud[i] = quoteSafe(s)
		}
		return unauthenticated("service-account token has the wrong audience %q: want %q (project the token with audience %s)", aud, Audience, Audience)
	}
	if claims.Expiry == nil {
		return unauthenticated("service-account token has no expiry (exp): use a projected service-account token")
	}
	if exp := claims.Expiry.Time(); now.After(exp.Add(claimLeeway)) {
		return unauthenticated("service-account token expired at %s", fmtTime(exp))
	}
	if claims.NotBefore != nil {
		if nbf := claims.NotBefore.Time(); now.Add(claimLeeway).Before(nbf) {
			return unauthenticated("service-account token is not valid before %s", fmtTime(nbf))
		}
	}
	if claims.IssuedAt != nil {
		if iat := claims.IssuedAt.Time(); now.Add(claimLeeway).Before(iat) {
			return unauthenticated("service-account token was issued in the future, at %s", fmtTime(iat))
		}
	}
	return nil
}

func wrongIssuer(c store.Cluster, iss string) error {
	return unauthenticated("service-account token has the wrong issuer %q: cluster %s's issuer is %q", quoteSafe(iss), c.Name, c.Auth.Issuer)
}

// isCompactJWS reports whether s has the shape of a JWS in compact
// serialization: three non-empty base64url parts separated by dots.
func isCompactJWS(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return false
	}
	for _, p := range parts {
		if p == "" {
			return false
		}
		for i := 0; i < len(p); i++ {
			c := p[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// headerAlg returns the "alg" of a compact JWS, to refuse a disallowed
// algorithm with a clear reason (jwt.ParseSigned refuses it too).
func headerAlg(token string) (string, error) {
	b64, _, _ := strings.Cut(token, ".")
	raw, err := base64.RawURLEncoding.DecodeString(b64)
	if err != nil {
		return "", unauthenticated("service-account token header is not base64url: %v", err)
	}
	var h struct {
		Alg string `json:"alg"`
	}
	if err := json.Unmarshal(raw, &h); err != nil {
		return "", unauthenticated("service-account token header is not a JSON object")
	}
	return h.Alg, nil
}

func algNames() string {
	names := make([]string, len(allowedAlgs))
	for i, a := range allowedAlgs {
		names[i] = string(a)
	}
	return strings.Join(names, ", ")
}

// keySet is a cluster's token signing keys.
type keySet struct {
	keys []jose.JSONWebKey
	// static is true for a JWKS registered with the cluster, which cannot be
	// refreshed.
	static bool
}

// find returns the public keys that may have signed a token with key id
// kid (any key when kid is empty) and algorithm alg.
func (s *keySet) find(kid, alg string) []any {
	var out []any
	for _, k := range s.keys {
		if kid != "" && k.KeyID != kid {
			continue
		}
		if k.Algorithm != "" && k.Algorithm != alg {
			continue
		}
		out = append(out, k.Key)
	}
	return out
}

// maxJWKS bounds a JWKS, registered or fetched.
const maxJWKS = 1 << 20

// parseJWKS parses a JSON Web Key Set and keeps its RSA and ECDSA signature
// keys, public halves only. Keys of other types, or for encryption, are
// skipped rather than failing the whole set; a set with no usable key is an
// error.
func parseJWKS(data []byte) ([]jose.JSONWebKey, error) {
	if len(data) > maxJWKS {
		return nil, fmt.Errorf("JWKS is larger than %d bytes", maxJWKS)
	}
	var raw struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("JWKS is not a JSON Web Key Set: %v", err)
	}
	var keys []jose.JSONWebKey
	for _, r := range raw.Keys {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(r); err != nil {
			continue
		}
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		pub := k.Public()
		switch pub.Key.(type) {
		case *rsa.PublicKey, *ecdsa.PublicKey:
			keys = append(keys, pub)
		}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("JWKS has no RSA or ECDSA signature key (%d keys in the set)", len(raw.Keys))
	}
	return keys, nil
}

// clusterKeys returns cluster c's signing keys: its registered JWKS, or
// the keys from its issuer's OIDC discovery (refreshed when refresh is set
// and the last fetch is old enough).
func (a *Authenticator) clusterKeys(ctx context.Context, c store.Cluster, refresh bool) (*keySet, error) {
	if len(c.Auth.JWKS) > 0 {
		keys, err := parseJWKS(c.Auth.JWKS)
		if err != nil {
			return nil, fmt.Errorf("cluster %s: registered %v", c.Name, err)
		}
		return &keySet{keys: keys, static: true}, nil
	}
	return a.oidcKeySet(ctx, c, refresh)
}

var (
	// dnsLabel is a Kubernetes namespace name.
	dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
	// dnsSubdomain is a Kubernetes service account name.
	dnsSubdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
)

// checkServiceAccountName refuses names Kubernetes would not allow, so
// that what ends up in reasons and identities is well-formed.
func checkServiceAccountName(ns, name string) error {
	if !dnsLabel.MatchString(ns) {
		return unauthenticated("service-account token names an invalid namespace %q", quoteSafe(ns))
	}
	if len(name) > 253 || !dnsSubdomain.MatchString(name) {
		return unauthenticated("service-account token names an invalid service account %q", quoteSafe(name))
	}
	return nil
}

const serviceAccountPrefix = "system:serviceaccount:"

func serviceAccountUser(ns, name string) string { return serviceAccountPrefix + ns + ":" + name }

// quoteSafe bounds a value taken from a token before it is quoted in a
// reason.
func quoteSafe(s string) string {
	if len(s) > maxQuoted {
		return s[:maxQuoted] + "..."
	}
	return s
}
