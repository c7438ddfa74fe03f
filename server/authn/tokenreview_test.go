package authn

// These tests run TokenReview against an httptest TLS server on 127.0.0.1
// that stands in for a Kubernetes API server: it implements only
// POST /apis/authentication.k8s.io/v1/tokenreviews, with canned answers.
// It checks the client side (request, kubeconfig, status handling); that a
// real API server authenticates projected tokens this way is tested against
// a real cluster in test/kube.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	authnv1 "k8s.io/api/authentication/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/meshroot/meshroot/store"
)

// reviewerCredential is the token in the kubeconfig that meshroot uses to
// call the stand-in API server.
const reviewerCredential = "meshroot-reviewer-credential"

// fakeTokenReviewServer answers TokenReviews from statuses, by token.
type fakeTokenReviewServer struct {
	srv *httptest.Server

	mu       sync.Mutex
	statuses map[string]authnv1.TokenReviewStatus
	reviews  int
	errs     []string // what the server found wrong with requests
}

func newFakeTokenReviewServer(t testing.TB, statuses map[string]authnv1.TokenReviewStatus) *fakeTokenReviewServer {
	t.Helper()
	f := &fakeTokenReviewServer{statuses: statuses}
	f.srv = httptest.NewTLSServer(http.HandlerFunc(f.serve))
	t.Cleanup(func() {
		f.srv.Close()
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, e := range f.errs {
			t.Errorf("stand-in API server: %s", e)
		}
	})
	return f
}

func (f *fakeTokenReviewServer) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.Method != http.MethodPost || r.URL.Path != "/apis/authentication.k8s.io/v1/tokenreviews" {
		f.errs = append(f.errs, fmt.Sprintf("unexpected request %s %s", r.Method, r.URL.Path))
		http.NotFound(w, r)
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+reviewerCredential {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}`)
		return
	}
	// client-go sends protobuf or JSON; the universal deserializer reads
	// both.
	body, err := io.ReadAll(r.Body)
	var review *authnv1.TokenReview
	if err == nil {
		var obj runtime.Object
		if obj, _, err = scheme.Codecs.UniversalDeserializer().Decode(body, nil, nil); err == nil {
			var ok bool
			if review, ok = obj.(*authnv1.TokenReview); !ok {
				err = fmt.Errorf("request is a %T, not a TokenReview", obj)
			}
		}
	}
	if err != nil {
		f.errs = append(f.errs, fmt.Sprintf("request body (Content-Type %s): %v", r.Header.Get("Content-Type"), err))
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if accept := r.Header.Get("Accept"); !strings.Contains(accept, "application/json") {
		f.errs = append(f.errs, fmt.Sprintf("Accept %q does not take JSON, the only answer this stand-in gives", accept))
	}
	f.reviews++
	if !slices.Equal(review.Spec.Audiences, []string{"meshroot"}) {
		f.errs = append(f.errs, fmt.Sprintf("spec.audiences = %q, want [meshroot]", review.Spec.Audiences))
	}
	if review.Spec.Token == "forbidden.forbidden.forbidden" {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"tokenreviews.authentication.k8s.io is forbidden: User \"system:serviceaccount:kube-system:meshroot\" cannot create resource \"tokenreviews\"","reason":"Forbidden","code":403}`)
		return
	}
	review.APIVersion, review.Kind = "authentication.k8s.io/v1", "TokenReview"
	review.Status = f.statuses[review.Spec.Token]
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(review)
}

func (f *fakeTokenReviewServer) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reviews
}

// kubeconfig returns a kubeconfig for the server, with user as its users
// entry (YAML, indented under "user:").
func (f *fakeTokenReviewServer) kubeconfig(user string) []byte {
	caData := base64.StdEncoding.EncodeToString((&issuerServer{srv: f.srv}).caPEM())
	return fmt.Appendf(nil, `apiVersion: v1
kind: Config
clusters:
- name: east
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: meshroot
  user:
%s
contexts:
- name: east
  context:
    cluster: east
    user: meshroot
current-context: east
`, f.srv.URL, caData, user)
}

const tokenUser = "    token: " + reviewerCredential

// Tokens the stand-in server knows. They need only look like JWTs: the
// server, not meshroot, verifies them.
const (
	trAgent       = "agent.agent.agent"
	trOther       = "other.other.other"
	trExpired     = "expired.expired.expired"
	trWrongAud    = "wrongaud.wrongaud.wrongaud"
	trNoAud       = "noaud.noaud.noaud"
	trUser        = "user.user.user"
	trForbidden   = "forbidden.forbidden.forbidden"
	trUnknownUser = "weird.weird.weird"
)

func tokenReviewStatuses() map[string]authnv1.TokenReviewStatus {
	sa := func(user string, aud ...string) authnv1.TokenReviewStatus {
		return authnv1.TokenReviewStatus{Authenticated: true, Audiences: aud, User: authnv1.UserInfo{Username: user}}
	}
	return map[string]authnv1.TokenReviewStatus{
		trAgent:       sa(agentUser, "meshroot"),
		trOther:       sa("system:serviceaccount:default:default", "meshroot"),
		trWrongAud:    sa(agentUser, "https://kubernetes.default.svc"),
		trNoAud:       sa(agentUser),
		trUser:        sa("alice", "meshroot"),
		trUnknownUser: sa("system:serviceaccount:Bad:name:x", "meshroot"),
		trExpired:     {Authenticated: false, Error: "[invalid bearer token, service account token has expired]"},
	}
}

func tokenReviewSetup(t testing.TB) (*Authenticator, *fakeTokenReviewServer, store.Store) {
	t.Helper()
	f := newFakeTokenReviewServer(t, tokenReviewStatuses())
	st := newStore(t)
	addCluster(t, st, store.Cluster{Name: "east", Auth: store.ClusterAuth{Kubeconfig: f.kubeconfig(tokenUser), ServiceAccounts: []string{agentSA}}})
	return New(st, Options{Now: newClock().Now}), f, st
}

func TestTokenReview(t *testing.T) {
	a, f, _ := tokenReviewSetup(t)
	for range 2 {
		id, err := authBearer(a, trAgent)
		wantIdentity(t, id, err, Identity{Cluster: "east", Method: MethodServiceAccount, Subject: agentUser})
	}
	if n := f.count(); n != 2 {
		t.Errorf("%d TokenReviews, want 2 (one per request)", n)
	}
	a.mu.Lock()
	n := len(a.reviewer)
	a.mu.Unlock()
	if n != 1 {
		t.Errorf("%d cached TokenReview clients, want 1", n)
	}
}

func TestTokenReviewRefusals(t *testing.T) {
	a, _, _ := tokenReviewSetup(t)
	for _, tc := range []struct {
		name, token string
		code        Code
		want        string
	}{
		{"not authenticated", trExpired, Unauthenticated,
			"service-account token was not authenticated by cluster east's TokenReview: [invalid bearer token, service account token has expired]"},
		{"unknown to the server", "unknown.unknown.unknown", Unauthenticated,
			"was not authenticated by cluster east's TokenReview: no reason given"},
		{"wrong audience", trWrongAud, Unauthenticated,
			`service-account token has the wrong audience: cluster east's TokenReview found ["https://kubernetes.default.svc"], want "meshroot"`},
		{"no audience", trNoAud, Unauthenticated, "wrong audience: cluster east's TokenReview found []"},
		{"not a service account", trUser, Unauthenticated, `token is for user "alice", not a service account`},
		{"invalid service account", trUnknownUser, Unauthenticated, `token is for user "system:serviceaccount:Bad:name:x", not a valid service account`},
		{"service account not allowed", trOther, PermissionDenied, "service account default/default is not allowed for cluster east"},
		{"not a JWT", "opaque-token", Unauthenticated, "service-account token is not a JWT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := authBearer(a, tc.token)
			wantRefusal(t, err, tc.code, tc.want)
		})
	}
}

func TestTokenReviewServerErrors(t *testing.T) {
	a, f, st := tokenReviewSetup(t)
	_, err := authBearer(a, trForbidden)
	wantInternal(t, err, "cluster east: TokenReview:", "cannot create resource \"tokenreviews\"")
	if strings.Contains(err.Error(), trForbidden) {
		t.Errorf("error %q quotes the token", err)
	}

	for name, kc := range map[string][]byte{
		"wrongcred": f.kubeconfig("    token: wrong"),
		"exec": f.kubeconfig(`    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: /bin/sh
      args: ["-c", "touch /tmp/pwned"]`),
		"garbage": []byte("{{{"),
	} {
		addCluster(t, st, store.Cluster{Name: name, Auth: store.ClusterAuth{Kubeconfig: kc, ServiceAccounts: []string{agentSA}}})
	}
	for cluster, want := range map[string]string{
		"wrongcred": "cluster wrongcred: TokenReview: Unauthorized",
		"exec":      `cluster exec: TokenReview: registered kubeconfig: the kubeconfig names files or programs (users["meshroot"].user.exec)`,
		"garbage":   "cluster garbage: TokenReview: registered kubeconfig:",
	} {
		_, err := a.Authenticate(context.Background(), cluster, Credential{BearerToken: trAgent})
		wantInternal(t, err, want)
	}
}

// TestTokenReviewRefusesFileReferences: a stored kubeconfig that names a
// file is refused when used, before any request: the server must not read
// its own files (here a token file the stand-in API server would accept)
// and send them to whatever server the kubeconfig names.
func TestTokenReviewRefusesFileReferences(t *testing.T) {
	a, f, st := tokenReviewSetup(t)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(reviewerCredential), 0o600); err != nil {
		t.Fatal(err)
	}
	good := f.kubeconfig(tokenUser)
	caData := good[bytes.Index(good, []byte("certificate-authority-data: ")):]
	caData = caData[:bytes.IndexByte(caData, '\n')]
	for name, kc := range map[string][]byte{
		"tokenfile":      f.kubeconfig("    tokenFile: " + tokenFile),
		"tokenfile-case": f.kubeconfig("    TokenFile: " + tokenFile),
		"certfile":       f.kubeconfig(tokenUser + "\n    client-certificate: " + filepath.Join(dir, "crt") + "\n    client-key: " + filepath.Join(dir, "key")),
		"cafile":         bytes.Replace(good, caData, []byte("certificate-authority: "+filepath.Join(dir, "ca.pem")), 1),
	} {
		addCluster(t, st, store.Cluster{Name: name, Auth: store.ClusterAuth{Kubeconfig: kc, ServiceAccounts: []string{agentSA}}})
	}
	for cluster, want := range map[string]string{
		"tokenfile":      `(users["meshroot"].user.tokenFile)`,
		"tokenfile-case": `(users["meshroot"].user.TokenFile)`,
		"certfile":       `(users["meshroot"].user.client-certificate, users["meshroot"].user.client-key)`,
		"cafile":         `(clusters["east"].cluster.certificate-authority)`,
	} {
		_, err := a.Authenticate(context.Background(), cluster, Credential{BearerToken: trAgent})
		wantInternal(t, err, "cluster "+cluster+": TokenReview: registered kubeconfig: the kubeconfig names files or programs "+want, "use token, not tokenFile")
	}
	if n := f.count(); n != 0 {
		t.Errorf("the API server named by the kubeconfigs got %d TokenReviews, want none", n)
	}
}
