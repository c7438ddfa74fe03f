package authn

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/meshroot/meshroot/store"
)

func TestAuthenticateCluster(t *testing.T) {
	st, a, _ := joinSetup(t)
	token, _ := newStoredToken(t, st, "east", time.Hour)
	ctx := context.Background()
	for _, tc := range []struct {
		cluster string
		want    string
	}{
		{"nowhere", "cluster nowhere is not registered"},
		{"East", `cluster name "East" is invalid`},
		{"", `cluster name "" is invalid`},
		{"east/../west", "is invalid"},
		{strings.Repeat("a", 64), "cluster name is invalid: longer than 63 characters"},
		{strings.Repeat("a", 10000), "cluster name is invalid: longer than 63 characters"},
	} {
		_, err := a.Authenticate(ctx, tc.cluster, Credential{JoinToken: token})
		wantRefusal(t, err, PermissionDenied, tc.want)
	}
	// The token was not spent on the refused requests.
	if _, err := a.Authenticate(ctx, "east", Credential{JoinToken: token}); err != nil {
		t.Fatal(err)
	}
}

func TestAuthenticateNoCredential(t *testing.T) {
	_, a, _ := joinSetup(t)
	_, err := a.Authenticate(context.Background(), "east", Credential{})
	wantRefusal(t, err, Unauthenticated, "no credential: send a join token, a service-account token or the cluster's intermediate as client certificate")
}

// TestAuthenticateOrder: the first credential present decides, and the
// others are not tried (nor, for a join token, spent).
func TestAuthenticateOrder(t *testing.T) {
	f := newMTLSFixture(t)
	ctx := context.Background()
	token, rec := newStoredToken(t, f.st, "east", time.Hour)

	// A client certificate that fails is not rescued by a good join token.
	_, err := f.a.Authenticate(ctx, "east", Credential{PeerChain: f.chain(f.revoked), JoinToken: token})
	wantRefusal(t, err, Unauthenticated, "is revoked")
	if got, err := f.st.GetJoinToken(ctx, rec.ID); err != nil || !got.UsedAt.IsZero() {
		t.Fatalf("join token after a refused mTLS request: %+v, %v; want unused", got, err)
	}
	// A good client certificate wins over a join token.
	id, err := f.a.Authenticate(ctx, "east", Credential{PeerChain: f.chain(f.active), JoinToken: token})
	if err != nil || id.Method != MethodMTLS {
		t.Fatalf("Authenticate = %+v, %v; want mTLS", id, err)
	}
	// A join token wins over a bearer token (which this cluster could not
	// even verify).
	id, err = f.a.Authenticate(ctx, "east", Credential{JoinToken: token, BearerToken: "a.b.c"})
	wantIdentity(t, id, err, Identity{Cluster: "east", Method: MethodJoinToken, Subject: rec.ID})
}

// TestCredentialForOtherCluster: a credential for cluster east never
// yields west, whatever the method.
func TestCredentialForOtherCluster(t *testing.T) {
	ctx := context.Background()
	t.Run("join token", func(t *testing.T) {
		st, a, _ := joinSetup(t)
		token, _ := newStoredToken(t, st, "east", time.Hour)
		_, err := a.Authenticate(ctx, "west", Credential{JoinToken: token})
		wantRefusal(t, err, PermissionDenied, "join token is for cluster east, not west")
	})
	t.Run("intermediate", func(t *testing.T) {
		f := newMTLSFixture(t)
		_, err := f.a.Authenticate(ctx, "west", Credential{PeerChain: f.chain(f.active)})
		wantRefusal(t, err, PermissionDenied, "is for cluster east, not west")
	})
	t.Run("service-account token", func(t *testing.T) {
		f := newJWKSFixture(t)
		token := sign(t, f.eastEC, goodClaims(eastIssuer, t0))
		// West has its own issuer: the token is no credential there.
		_, err := f.a.Authenticate(ctx, "west", Credential{BearerToken: token})
		wantRefusal(t, err, Unauthenticated, "wrong issuer")
		// East-twin shares east's issuer, but not its service accounts.
		_, err = f.a.Authenticate(ctx, "east-twin", Credential{BearerToken: token})
		wantRefusal(t, err, PermissionDenied, "is not allowed for cluster east-twin")
	})
}

func TestAuthenticateStoreFailure(t *testing.T) {
	st := newStore(t)
	addCluster(t, st, store.Cluster{Name: "east"})
	a := New(st, Options{})
	st.Close()
	_, err := a.Authenticate(context.Background(), "east", Credential{JoinToken: "x"})
	wantInternal(t, err, "authenticate for cluster east:")
}

func TestOptionsDefaults(t *testing.T) {
	a := New(newStore(t), Options{})
	if a.httpTimeout != 10*time.Second || a.jwksTTL != 5*time.Minute || a.now == nil {
		t.Errorf("defaults: timeout %v, TTL %v, clock set %t", a.httpTimeout, a.jwksTTL, a.now != nil)
	}
}
