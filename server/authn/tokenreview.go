package authn

import (
	"context"
	"crypto/sha256"
	"fmt"
	"slices"
	"strings"

	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/internal/kubeclient"
	"github.com/meshroot/meshroot/store"
)

// tokenReviewer is a cached TokenReview client for one cluster.
type tokenReviewer struct {
	// fingerprint is the SHA-256 of the kubeconfig the client was made
	// from; a changed registration gets a new client.
	fingerprint [sha256.Size]byte
	reviews     kubeclient.TokenReviewInterface
}

// reviewerFor returns the TokenReview client for cluster c's kubeconfig.
func (a *Authenticator) reviewerFor(c store.Cluster) (*tokenReviewer, error) {
	fp := sha256.Sum256(c.Auth.Kubeconfig)
	a.mu.Lock()
	defer a.mu.Unlock()
	if r := a.reviewer[c.Name]; r != nil && r.fingerprint == fp {
		return r, nil
	}
	reviews, err := a.newTokenReviews(c.Auth.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("cluster %s: TokenReview: %w", c.Name, err)
	}
	r := &tokenReviewer{fingerprint: fp, reviews: reviews}
	a.reviewer[c.Name] = r
	return r, nil
}

// newTokenReviews makes a TokenReview client from kubeconfig. A kubeconfig
// that names a file (tokenFile, client certificate or key, CA file) or a
// program (exec plugin, auth provider) is refused, as it is at
// registration: the kubeconfig is read from the store, and a store write
// must become neither a file the server reads and sends to the kubeconfig's
// server nor a command the server runs.
func (a *Authenticator) newTokenReviews(kubeconfig []byte) (kubeclient.TokenReviewInterface, error) {
	if err := ca.CheckKubeconfigFileRefs(kubeconfig); err != nil {
		return nil, fmt.Errorf("registered kubeconfig: %w", err)
	}
	raw, err := clientcmd.Load(kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("registered kubeconfig: %w", err)
	}
	for name, u := range raw.AuthInfos {
		if u != nil && (u.Exec != nil || u.AuthProvider != nil || u.TokenFile != "" || u.ClientCertificate != "" || u.ClientKey != "") {
			return nil, fmt.Errorf("registered kubeconfig: user %q names a file, an exec plugin or an auth provider, which meshroot does not read or run: register a kubeconfig with the token and client certificate embedded", name)
		}
	}
	for name, c := range raw.Clusters {
		if c != nil && c.CertificateAuthority != "" {
			return nil, fmt.Errorf("registered kubeconfig: cluster %q names a CA file, which meshroot does not read: register a kubeconfig with certificate-authority-data", name)
		}
	}
	cfg, err := clientcmd.RESTConfigFromKubeConfig(kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("registered kubeconfig: %w", err)
	}
	cfg.Timeout = a.httpTimeout
	cfg.UserAgent = "meshroot"
	client, err := kubeclient.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("registered kubeconfig: %w", err)
	}
	return client.TokenReviews(), nil
}

// tokenReview has cluster c's API server verify token and returns its
// service account. Only the API server verifies the token here; this
// checks what it says about it.
func (a *Authenticator) tokenReview(ctx context.Context, c store.Cluster, token string) (ns, name string, err error) {
	r, err := a.reviewerFor(c)
	if err != nil {
		return "", "", err
	}
	review, err := r.reviews.Create(ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: token, Audiences: []string{Audience}},
	}, metav1.CreateOptions{})
	if err != nil {
		// The API server's error should not echo the token, but make sure.
		msg := strings.ReplaceAll(err.Error(), token, "[token]")
		return "", "", fmt.Errorf("cluster %s: TokenReview: %s", c.Name, msg)
	}
	st := review.Status
	if !st.Authenticated {
		why := st.Error
		if why == "" {
			why = "no reason given"
		}
		why = strings.ReplaceAll(why, token, "[token]")
		return "", "", unauthenticated("service-account token was not authenticated by cluster %s's TokenReview: %s", c.Name, quoteSafe(why))
	}
	if !slices.Contains(st.Audiences, Audience) {
		aud := make([]string, len(st.Audiences))
		for i, s := range st.Audiences {
			aud[i] = quoteSafe(s)
		}
		return "", "", unauthenticated("service-account token has the wrong audience: cluster %s's TokenReview found %q, want %q (project the token with audience %s)", c.Name, aud, Audience, Audience)
	}
	ns, name, err = parseServiceAccountUser(st.User.Username)
	if err != nil {
		return "", "", err
	}
	return ns, name, nil
}

// parseServiceAccountUser splits "system:serviceaccount:NS:NAME".
func parseServiceAccountUser(user string) (ns, name string, err error) {
	rest, ok := strings.CutPrefix(user, serviceAccountPrefix)
	if ok {
		ns, name, ok = strings.Cut(rest, ":")
	}
	if !ok {
		return "", "", unauthenticated("token is for user %q, not a service account", quoteSafe(user))
	}
	if checkServiceAccountName(ns, name) != nil {
		return "", "", unauthenticated("token is for user %q, not a valid service account", quoteSafe(user))
	}
	return ns, name, nil
}
