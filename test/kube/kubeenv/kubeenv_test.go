package kubeenv_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/go-logr/logr"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/meshroot/meshroot/test/kube/kubeenv"
)

func TestMain(m *testing.M) {
	ctrllog.SetLogger(logr.Discard())
	os.Exit(kubeenv.Main(m))
}

// k8sClaims are the claims of a service-account token.
type k8sClaims struct {
	jwt.Claims
	Kubernetes struct {
		Namespace      string `json:"namespace"`
		ServiceAccount struct {
			Name string `json:"name"`
			UID  string `json:"uid"`
		} `json:"serviceaccount"`
	} `json:"kubernetes.io"`
}

var algs = []jose.SignatureAlgorithm{jose.ES256, jose.RS256}

func TestTwoClusters(t *testing.T) {
	east := kubeenv.Start(t, "east")
	west := kubeenv.Start(t, "west")
	if east.Issuer == west.Issuer {
		t.Fatalf("both clusters have issuer %s", east.Issuer)
	}

	const ns, sa = "istio-system", "meshroot-agent"
	tok := east.ServiceAccountToken(t, ns, sa, "meshroot", time.Hour)

	t.Run("token claims", func(t *testing.T) {
		parsed, err := jwt.ParseSigned(tok, algs)
		if err != nil {
			t.Fatalf("token is not a JWS-signed JWT: %v", err)
		}
		var c k8sClaims
		if err := parsed.UnsafeClaimsWithoutVerification(&c); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal([]string(c.Audience), []string{"meshroot"}) {
			t.Errorf("aud = %v, want [meshroot]", c.Audience)
		}
		if c.Issuer != east.Issuer {
			t.Errorf("iss = %q, want %q", c.Issuer, east.Issuer)
		}
		if want := "system:serviceaccount:" + ns + ":" + sa; c.Subject != want {
			t.Errorf("sub = %q, want %q", c.Subject, want)
		}
		if c.Kubernetes.Namespace != ns || c.Kubernetes.ServiceAccount.Name != sa {
			t.Errorf("kubernetes.io = %+v, want namespace %s, serviceaccount %s", c.Kubernetes, ns, sa)
		}
		got, err := east.Client.CoreV1().ServiceAccounts(ns).Get(context.Background(), sa, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if c.Kubernetes.ServiceAccount.UID != string(got.UID) {
			t.Errorf("serviceaccount uid = %q, want %q", c.Kubernetes.ServiceAccount.UID, got.UID)
		}
		if life := c.Expiry.Time().Sub(c.IssuedAt.Time()); life != time.Hour {
			t.Errorf("exp - iat = %s, want 1h", life)
		}
	})

	t.Run("OIDC discovery and JWKS, anonymous, on loopback", func(t *testing.T) {
		for _, c := range []*kubeenv.Cluster{east, west} {
			jwksURL := discover(t, c)
			keys := fetchJWKS(t, c, jwksURL)
			if len(keys.Keys) == 0 {
				t.Fatalf("%s: empty JWKS", c.Name)
			}
			var viaMethod jose.JSONWebKeySet
			if err := json.Unmarshal(c.JWKS(t), &viaMethod); err != nil {
				t.Fatalf("%s: JWKS(): %v", c.Name, err)
			}
			if len(viaMethod.Keys) != len(keys.Keys) || viaMethod.Keys[0].KeyID != keys.Keys[0].KeyID {
				t.Errorf("%s: JWKS() differs from jwks_uri", c.Name)
			}
		}
		// The anonymous client really is anonymous: the API itself is closed to it.
		resp, err := east.HTTPClient().Get(east.Config.Host + "api/v1/namespaces")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden && resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("anonymous list namespaces: %s, want 401 or 403", resp.Status)
		}
		// And the harness's binding is what opens discovery to it: without
		// the binding, Kubernetes refuses anonymous discovery.
		ctx := context.Background()
		crbs := west.Client.RbacV1().ClusterRoleBindings()
		crb, err := crbs.Get(ctx, kubeenv.DiscoveryBindingName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := crbs.Delete(ctx, crb.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		if code := waitAnonStatus(t, west, http.StatusForbidden); code != http.StatusForbidden {
			t.Errorf("anonymous discovery without the binding: %d, want 403", code)
		}
		crb.ResourceVersion = ""
		if _, err := crbs.Create(ctx, crb, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if code := waitAnonStatus(t, west, http.StatusOK); code != http.StatusOK {
			t.Errorf("anonymous discovery with the binding restored: %d, want 200", code)
		}
	})

	t.Run("token signature verifies with its cluster's JWKS only", func(t *testing.T) {
		c := verify(t, tok, fetchJWKS(t, east, discover(t, east)))
		if err := c.ValidateWithLeeway(jwt.Expected{Issuer: east.Issuer, AnyAudience: jwt.Audience{"meshroot"}, Time: time.Now()}, 0); err != nil {
			t.Errorf("claims: %v", err)
		}
		if _, err := verifyErr(tok, fetchJWKS(t, west, discover(t, west))); err == nil {
			t.Error("east's token verified with west's JWKS")
		}
	})

	t.Run("TokenReview", func(t *testing.T) {
		ok := review(t, east.Client, tok, "meshroot")
		if !ok.Authenticated {
			t.Fatalf("TokenReview with audience meshroot: not authenticated: %s", ok.Error)
		}
		if want := "system:serviceaccount:" + ns + ":" + sa; ok.User.Username != want {
			t.Errorf("username = %q, want %q", ok.User.Username, want)
		}
		if !slices.Equal(ok.Audiences, []string{"meshroot"}) {
			t.Errorf("audiences = %v, want [meshroot]", ok.Audiences)
		}
		if wrong := review(t, east.Client, tok, "not-meshroot"); wrong.Authenticated {
			t.Errorf("TokenReview with a wrong audience authenticated %q", wrong.User.Username)
		}
		if other := review(t, west.Client, tok, "meshroot"); other.Authenticated {
			t.Errorf("west authenticated east's token as %q", other.User.Username)
		}
	})

	t.Run("kubeconfigs", func(t *testing.T) {
		if fi, err := os.Stat(east.KubeconfigPath); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("admin kubeconfig %s: %v %v, want mode 0600", east.KubeconfigPath, fi, err)
		}
		admin := clientFrom(t, east.KubeconfigPath)
		if _, err := admin.CoreV1().Secrets("kube-system").List(context.Background(), metav1.ListOptions{}); err != nil {
			t.Errorf("admin kubeconfig cannot list secrets: %v", err)
		}

		path := east.KubeconfigFor(t, "tenant", "reader")
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("service-account kubeconfig %s: %v %v, want mode 0600", path, fi, err)
		}
		cs := clientFrom(t, path)
		who, err := cs.AuthenticationV1().SelfSubjectReviews().Create(context.Background(), &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := who.Status.UserInfo.Username; got != "system:serviceaccount:tenant:reader" {
			t.Errorf("kubeconfig authenticates as %q", got)
		}
		_, err = cs.CoreV1().Secrets("tenant").List(context.Background(), metav1.ListOptions{})
		if !apierrors.IsForbidden(err) {
			t.Errorf("unbound service account listing secrets: %v, want Forbidden", err)
		}
	})

	t.Run("apiserver restart keeps data and keys", func(t *testing.T) {
		ctx := context.Background()
		east.EnsureNamespace(t, "restart")
		cm := &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: "survivor", Namespace: "restart"},
			Data:       map[string]string{"k": "v"},
		}
		if _, err := east.Client.CoreV1().ConfigMaps("restart").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		jwksBefore := east.JWKS(t)

		east.StopAPIServer(t)
		short, cancel := context.WithTimeout(ctx, 3*time.Second)
		_, err := east.Client.CoreV1().ConfigMaps("restart").Get(short, "survivor", metav1.GetOptions{})
		cancel()
		if err == nil {
			t.Fatal("apiserver answered while stopped")
		}
		// The other cluster is untouched.
		if _, err := west.Client.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{}); err != nil {
			t.Errorf("west during east's outage: %v", err)
		}
		east.StartAPIServer(t)

		got, err := east.Client.CoreV1().ConfigMaps("restart").Get(ctx, "survivor", metav1.GetOptions{})
		if err != nil {
			t.Fatalf("ConfigMap after restart: %v", err)
		}
		if got.Data["k"] != "v" {
			t.Errorf("ConfigMap data after restart = %v", got.Data)
		}
		if string(east.JWKS(t)) != string(jwksBefore) {
			t.Error("JWKS changed across the restart")
		}
		if r := review(t, east.Client, tok, "meshroot"); !r.Authenticated {
			t.Errorf("token from before the restart: %s", r.Error)
		}
	})
}

// TestRSAAndTrailingSlashIssuer covers the other shapes a real cluster can
// have: RS256 tokens and an issuer ending in "/".
func TestRSAAndTrailingSlashIssuer(t *testing.T) {
	c := kubeenv.Start(t, "rsa", kubeenv.WithRSAServiceAccountKey(), kubeenv.WithIssuerTrailingSlash())
	if !strings.HasSuffix(c.Issuer, "/") {
		t.Fatalf("issuer %q has no trailing slash", c.Issuer)
	}
	tok := c.ServiceAccountToken(t, "istio-system", "agent", "meshroot", 20*time.Minute)
	parsed, err := jwt.ParseSigned(tok, algs)
	if err != nil {
		t.Fatal(err)
	}
	if alg := parsed.Headers[0].Algorithm; alg != string(jose.RS256) {
		t.Errorf("alg = %s, want RS256", alg)
	}
	claims := verify(t, tok, fetchJWKS(t, c, discover(t, c)))
	if err := claims.ValidateWithLeeway(jwt.Expected{Issuer: c.Issuer, AnyAudience: jwt.Audience{"meshroot"}, Time: time.Now()}, 0); err != nil {
		t.Error(err)
	}
}

// discover fetches the cluster's discovery document anonymously from
// Issuer + "/.well-known/openid-configuration", checks it, and returns its
// jwks_uri (on 127.0.0.1: the test never follows a URL off loopback).
func discover(t *testing.T, c *kubeenv.Cluster) string {
	t.Helper()
	doc := getAnon(t, c, strings.TrimSuffix(c.Issuer, "/")+"/.well-known/openid-configuration")
	var d struct {
		Issuer  string   `json:"issuer"`
		JWKSURI string   `json:"jwks_uri"`
		Algs    []string `json:"id_token_signing_alg_values_supported"`
	}
	if err := json.Unmarshal(doc, &d); err != nil {
		t.Fatalf("%s: discovery document: %v\n%s", c.Name, err, doc)
	}
	if d.Issuer != c.Issuer {
		t.Errorf("%s: discovery issuer %q, want %q", c.Name, d.Issuer, c.Issuer)
	}
	u, err := url.Parse(d.JWKSURI)
	if err != nil || u.Scheme != "https" || u.Hostname() != "127.0.0.1" {
		t.Fatalf("%s: jwks_uri %q is not https on 127.0.0.1", c.Name, d.JWKSURI)
	}
	if len(d.Algs) == 0 {
		t.Errorf("%s: no signing algorithms in discovery document", c.Name)
	}
	return d.JWKSURI
}

// waitAnonStatus polls the anonymous discovery document until it answers
// want (RBAC changes reach the authorizer through an informer) or 10 s pass,
// and returns the last status.
func waitAnonStatus(t *testing.T, c *kubeenv.Cluster, want int) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := c.HTTPClient().Get(strings.TrimSuffix(c.Issuer, "/") + "/.well-known/openid-configuration")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == want || time.Now().After(deadline) {
			return resp.StatusCode
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func fetchJWKS(t *testing.T, c *kubeenv.Cluster, uri string) jose.JSONWebKeySet {
	t.Helper()
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(getAnon(t, c, uri), &set); err != nil {
		t.Fatalf("%s: JWKS: %v", c.Name, err)
	}
	return set
}

func getAnon(t *testing.T, c *kubeenv.Cluster, u string) []byte {
	t.Helper()
	resp, err := c.HTTPClient().Get(u)
	if err != nil {
		t.Fatalf("%s: anonymous GET %s: %v", c.Name, u, err)
	}
	defer resp.Body.Close()
	var body json.RawMessage
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: anonymous GET %s: %s", c.Name, u, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("%s: anonymous GET %s: %v", c.Name, u, err)
	}
	return body
}

func verify(t *testing.T, tok string, set jose.JSONWebKeySet) k8sClaims {
	t.Helper()
	c, err := verifyErr(tok, set)
	if err != nil {
		t.Fatalf("token signature: %v", err)
	}
	return c
}

func verifyErr(tok string, set jose.JSONWebKeySet) (k8sClaims, error) {
	var c k8sClaims
	parsed, err := jwt.ParseSigned(tok, algs)
	if err != nil {
		return c, err
	}
	keys := set.Key(parsed.Headers[0].KeyID)
	if len(keys) == 0 {
		return c, jose.ErrJWKSKidNotFound
	}
	return c, parsed.Claims(keys[0], &c)
}

func review(t *testing.T, cs kubernetes.Interface, tok, audience string) authenticationv1.TokenReviewStatus {
	t.Helper()
	tr, err := cs.AuthenticationV1().TokenReviews().Create(context.Background(), &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: tok, Audiences: []string{audience}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenReview: %v", err)
	}
	return tr.Status
}

func clientFrom(t *testing.T, kubeconfig string) kubernetes.Interface {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatalf("kubeconfig %s: %v", kubeconfig, err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}
