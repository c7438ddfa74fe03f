package authn

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshroot/meshroot/store"
)

var tokenPattern = regexp.MustCompile(`^mrt\.[0-9a-f]{16}\.[A-Za-z0-9_-]{43}$`)

func TestNewJoinToken(t *testing.T) {
	token, rec, err := NewJoinToken("east", 15*time.Minute, t0)
	if err != nil {
		t.Fatal(err)
	}
	if !tokenPattern.MatchString(token) {
		t.Fatalf("token %q does not have the form mrt.<16 hex>.<43 base64url>", token)
	}
	parts := strings.Split(token, ".")
	secret, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || len(secret) != 32 {
		t.Fatalf("secret part decodes to %d bytes (%v), want 32", len(secret), err)
	}
	hash := sha256.Sum256(secret)
	want := store.JoinToken{ID: parts[1], Cluster: "east", SecretHash: hash[:], CreatedAt: t0, ExpiresAt: t0.Add(15 * time.Minute)}
	if rec.ID != want.ID || rec.Cluster != want.Cluster || !bytes.Equal(rec.SecretHash, want.SecretHash) ||
		!rec.CreatedAt.Equal(want.CreatedAt) || !rec.ExpiresAt.Equal(want.ExpiresAt) || !rec.UsedAt.IsZero() {
		t.Errorf("record = %+v, want %+v", rec, want)
	}
	if s := fmt.Sprintf("%v %x %s", rec, rec.SecretHash, rec.SecretHash); strings.Contains(s, parts[2]) || bytes.Contains(rec.SecretHash, secret) {
		t.Error("the record holds the secret")
	}
	other, _, err := NewJoinToken("east", 15*time.Minute, t0)
	if err != nil {
		t.Fatal(err)
	}
	if other == token {
		t.Error("two tokens are equal")
	}
}

func TestNewJoinTokenRefuses(t *testing.T) {
	for _, tc := range []struct {
		cluster string
		ttl     time.Duration
		want    string
	}{
		{"east", 59 * time.Second, "TTL 59s is out of range: use 1m0s to 24h0m0s"},
		{"east", 24*time.Hour + time.Second, "out of range"},
		{"east", 0, "out of range"},
		{"east", -time.Hour, "out of range"},
		{"East", time.Hour, "cluster name \"East\" is invalid"},
		{"", time.Hour, "is invalid"},
	} {
		_, _, err := NewJoinToken(tc.cluster, tc.ttl, t0)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewJoinToken(%q, %v) error = %v, want %q", tc.cluster, tc.ttl, err, tc.want)
		}
	}
	for _, ttl := range []time.Duration{time.Minute, 24 * time.Hour} {
		if _, _, err := NewJoinToken("east", ttl, t0); err != nil {
			t.Errorf("NewJoinToken(east, %v): %v", ttl, err)
		}
	}
}

// joinSetup registers clusters east and west and returns an Authenticator
// on a settable clock.
func joinSetup(t *testing.T) (store.Store, *Authenticator, *clock) {
	t.Helper()
	st := newStore(t)
	addCluster(t, st, store.Cluster{Name: "east"})
	addCluster(t, st, store.Cluster{Name: "west"})
	clk := newClock()
	return st, New(st, Options{Now: clk.Now}), clk
}

// newStoredToken creates a join token for cluster and stores its record.
func newStoredToken(t *testing.T, st store.Store, cluster string, ttl time.Duration) (string, store.JoinToken) {
	t.Helper()
	token, rec, err := NewJoinToken(cluster, ttl, t0)
	if err != nil {
		t.Fatal(err)
	}
	update(t, st, func(ctx context.Context, tx store.Tx) error { return tx.CreateJoinToken(ctx, rec) })
	return token, rec
}

func TestJoinToken(t *testing.T) {
	st, a, clk := joinSetup(t)
	ctx := context.Background()
	token, rec := newStoredToken(t, st, "east", 15*time.Minute)
	clk.Advance(14 * time.Minute)

	id, err := a.Authenticate(ctx, "east", Credential{JoinToken: token})
	wantIdentity(t, id, err, Identity{Cluster: "east", Method: MethodJoinToken, Subject: rec.ID})
	got, err := st.GetJoinToken(ctx, rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !got.UsedAt.Equal(clk.Now()) {
		t.Errorf("UsedAt = %v, want %v", got.UsedAt, clk.Now())
	}

	// Single use.
	_, err = a.Authenticate(ctx, "east", Credential{JoinToken: token})
	wantRefusal(t, err, Unauthenticated, "join token was already used at 2026-03-01T12:14:00Z", rec.ID)
}

func TestJoinTokenRefusals(t *testing.T) {
	st, a, clk := joinSetup(t)
	ctx := context.Background()
	token, rec := newStoredToken(t, st, "east", 15*time.Minute)
	_, secret, _ := strings.Cut(strings.TrimPrefix(token, "mrt."), ".")
	otherID := strings.Repeat("0", 16)

	malformed := map[string]string{
		"no prefix":       strings.TrimPrefix(token, "mrt."),
		"other prefix":    "mrx." + strings.TrimPrefix(token, "mrt."),
		"upper-case id":   "mrt." + strings.ToUpper(rec.ID) + "." + secret,
		"short id":        "mrt." + rec.ID[:15] + "." + secret,
		"long id":         "mrt." + rec.ID + "0." + secret,
		"non-hex id":      "mrt." + "g" + rec.ID[1:] + "." + secret,
		"padded secret":   token + "=",
		"short secret":    token[:len(token)-1],
		"long secret":     token + "A",
		"std base64":      "mrt." + rec.ID + "." + strings.NewReplacer("-", "+", "_", "/").Replace(secret),
		"no secret":       "mrt." + rec.ID,
		"empty secret":    "mrt." + rec.ID + ".",
		"extra part":      token + ".x",
		"whitespace":      " " + token,
		"non-canonical":   "mrt." + rec.ID + "." + secret[:42] + "B", // "B" sets a bit past the 32 bytes: never canonical
		"only the prefix": "mrt.",
	}
	if !strings.ContainsAny(secret, "-_") {
		delete(malformed, "std base64")
	}
	for name, bad := range malformed {
		t.Run(name, func(t *testing.T) {
			_, err := a.Authenticate(ctx, "east", Credential{JoinToken: bad})
			wantRefusal(t, err, Unauthenticated, "join token is malformed: want mrt.<16 hex digits>.<43 base64url characters>")
			if strings.Contains(err.Error(), secret) {
				t.Error("the reason quotes the secret")
			}
		})
	}
	t.Run("too long", func(t *testing.T) {
		_, err := a.Authenticate(ctx, "east", Credential{JoinToken: token + strings.Repeat("A", 100)})
		wantRefusal(t, err, Unauthenticated, "join token is malformed: longer than 128 bytes")
	})
	t.Run("unknown", func(t *testing.T) {
		_, err := a.Authenticate(ctx, "east", Credential{JoinToken: "mrt." + otherID + "." + secret})
		wantRefusal(t, err, Unauthenticated, "unknown join token (id "+otherID+")")
	})
	t.Run("wrong secret", func(t *testing.T) {
		other, _, err := NewJoinToken("east", time.Hour, t0)
		if err != nil {
			t.Fatal(err)
		}
		_, otherSecret, _ := strings.Cut(strings.TrimPrefix(other, "mrt."), ".")
		_, err = a.Authenticate(ctx, "east", Credential{JoinToken: "mrt." + rec.ID + "." + otherSecret})
		wantRefusal(t, err, Unauthenticated, "join token secret does not match (id "+rec.ID+")")
		if strings.Contains(err.Error(), otherSecret) {
			t.Error("the reason quotes the secret")
		}
	})
	t.Run("other cluster", func(t *testing.T) {
		_, err := a.Authenticate(ctx, "west", Credential{JoinToken: token})
		wantRefusal(t, err, PermissionDenied, "join token is for cluster east, not west (id "+rec.ID+")")
	})
	// None of the refusals above spent the token.
	if got, err := st.GetJoinToken(ctx, rec.ID); err != nil || !got.UsedAt.IsZero() {
		t.Fatalf("token after refusals: %+v, %v; want unused", got, err)
	}
	t.Run("expired", func(t *testing.T) {
		clk.Advance(15 * time.Minute) // exactly ExpiresAt
		_, err := a.Authenticate(ctx, "east", Credential{JoinToken: token})
		wantRefusal(t, err, Unauthenticated, "join token expired at 2026-03-01T12:15:00Z (id "+rec.ID+")")
	})
}

func TestJoinTokenRace(t *testing.T) {
	st, a, _ := joinSetup(t)
	token, rec := newStoredToken(t, st, "east", 15*time.Minute)

	const n = 8
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		ids   = make([]Identity, n)
		errs  = make([]error, n)
	)
	for i := range n {
		wg.Go(func() {
			<-start
			ids[i], errs[i] = a.Authenticate(context.Background(), "east", Credential{JoinToken: token})
		})
	}
	close(start)
	wg.Wait()

	ok := 0
	for i := range n {
		if errs[i] == nil {
			ok++
			if ids[i].Subject != rec.ID {
				t.Errorf("identity %+v", ids[i])
			}
			continue
		}
		wantRefusal(t, errs[i], Unauthenticated, "join token was already used")
	}
	if ok != 1 {
		t.Fatalf("%d of %d concurrent requests succeeded, want exactly 1", ok, n)
	}
}

func TestJoinTokenClusterDeleted(t *testing.T) {
	st, a, _ := joinSetup(t)
	token, _ := newStoredToken(t, st, "east", 15*time.Minute)
	update(t, st, func(ctx context.Context, tx store.Tx) error { return tx.DeleteCluster(ctx, "east") })
	_, err := a.Authenticate(context.Background(), "east", Credential{JoinToken: token})
	wantRefusal(t, err, PermissionDenied, "cluster east is not registered")
}
