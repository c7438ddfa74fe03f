package authn

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/meshroot/meshroot/ca"
)

// TestJoinTokenRetrySameKey: a spent token is accepted again only with the
// key it was spent with, within its validity or ca.JoinRetryGrace of its
// use, whichever is later.
func TestJoinTokenRetrySameKey(t *testing.T) {
	st, a, clk := joinSetup(t)
	ctx := context.Background()
	token, rec := newStoredToken(t, st, "east", 2*time.Minute)
	key, other := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)

	clk.Advance(time.Minute)
	id, err := a.Authenticate(ctx, "east", Credential{JoinToken: token, CSRKeyHash: key})
	want := Identity{Cluster: "east", Method: MethodJoinToken, Subject: rec.ID}
	wantIdentity(t, id, err, want)
	if got, err := st.GetJoinToken(ctx, rec.ID); err != nil || !bytes.Equal(got.KeyHash, key) {
		t.Fatalf("after the spend, GetJoinToken = %+v, %v; want KeyHash %x", got, err, key)
	}

	// The retry: same key, accepted (the issuance answers it).
	id, err = a.Authenticate(ctx, "east", Credential{JoinToken: token, CSRKeyHash: key})
	wantIdentity(t, id, err, want)
	// Another key, or none: refused as before.
	_, err = a.Authenticate(ctx, "east", Credential{JoinToken: token, CSRKeyHash: other})
	wantRefusal(t, err, Unauthenticated, "join token was already used", rec.ID)
	_, err = a.Authenticate(ctx, "east", Credential{JoinToken: token})
	wantRefusal(t, err, Unauthenticated, "join token was already used", rec.ID)
	// The right key for the wrong cluster.
	_, err = a.Authenticate(ctx, "west", Credential{JoinToken: token, CSRKeyHash: key})
	wantRefusal(t, err, PermissionDenied, "join token is for cluster east, not west", rec.ID)

	// Past expiry (t0+2m) but within the grace after use (t0+1m+grace).
	clk.Advance(ca.JoinRetryGrace - time.Second)
	id, err = a.Authenticate(ctx, "east", Credential{JoinToken: token, CSRKeyHash: key})
	wantIdentity(t, id, err, want)
	// Past both.
	clk.Advance(time.Second)
	_, err = a.Authenticate(ctx, "east", Credential{JoinToken: token, CSRKeyHash: key})
	wantRefusal(t, err, Unauthenticated, "join token expired", rec.ID)
}

// TestJoinTokenRetryUnparsableCSR: a token spent with no key (the CSR was
// not one) is never accepted again.
func TestJoinTokenRetryUnparsableCSR(t *testing.T) {
	st, a, _ := joinSetup(t)
	ctx := context.Background()
	token, rec := newStoredToken(t, st, "east", 15*time.Minute)
	if _, err := a.Authenticate(ctx, "east", Credential{JoinToken: token}); err != nil {
		t.Fatal(err)
	}
	_, err := a.Authenticate(ctx, "east", Credential{JoinToken: token})
	wantRefusal(t, err, Unauthenticated, "join token was already used", rec.ID)
}
