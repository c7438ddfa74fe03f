package authn

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/store"
)

// Join token format: "mrt." + id + "." + secret, where id is 16 lower-case
// hex characters (8 random bytes, public: it names the token in the store,
// logs and audit) and secret is 32 random bytes in unpadded base64url (43
// characters). Only SHA-256 of the 32 secret bytes is stored.
const (
	joinTokenPrefix    = "mrt."
	joinTokenIDBytes   = 8
	joinTokenIDLen     = 2 * joinTokenIDBytes
	joinTokenSecretLen = 32
	// maxJoinTokenLen bounds what is parsed at all.
	maxJoinTokenLen = 128
)

// MinJoinTokenTTL and MaxJoinTokenTTL bound a join token's lifetime.
const (
	MinJoinTokenTTL = time.Minute
	MaxJoinTokenTTL = 24 * time.Hour
)

var secretEncoding = base64.RawURLEncoding.Strict()

// NewJoinToken creates a join token that lets cluster request its
// intermediate once, within ttl (between MinJoinTokenTTL and
// MaxJoinTokenTTL) of now. It returns the token, to hand to the cluster's
// agent and never to store, and the record to store with Tx.CreateJoinToken,
// which holds only a hash of the token's secret.
//
// A join token is spent by the first request that presents it for its
// cluster before it expires, with the public key of that request's CSR.
// Spending it first means that of any number of concurrent requests with
// the same token only those with that one key are ever authenticated. If
// the request's caller gives up (its deadline passed while the server
// worked), a retry with the same token and a CSR with the same key, before
// the token expires or within ca.JoinRetryGrace of its use, gets the
// intermediate issued for it, or one issued now if none was; any other
// request with a spent token is refused.
func NewJoinToken(cluster string, ttl time.Duration, now time.Time) (token string, rec store.JoinToken, err error) {
	if err := ca.ValidateClusterName(cluster); err != nil {
		return "", store.JoinToken{}, err
	}
	if ttl < MinJoinTokenTTL || ttl > MaxJoinTokenTTL {
		return "", store.JoinToken{}, fmt.Errorf("join token TTL %v is out of range: use %v to %v", ttl, MinJoinTokenTTL, MaxJoinTokenTTL)
	}
	var id [joinTokenIDBytes]byte
	var secret [joinTokenSecretLen]byte
	if _, err := rand.Read(id[:]); err != nil {
		return "", store.JoinToken{}, fmt.Errorf("generate join token: %w", err)
	}
	if _, err := rand.Read(secret[:]); err != nil {
		return "", store.JoinToken{}, fmt.Errorf("generate join token: %w", err)
	}
	idHex := hex.EncodeToString(id[:])
	hash := sha256.Sum256(secret[:])
	rec = store.JoinToken{
		ID:         idHex,
		Cluster:    cluster,
		SecretHash: hash[:],
		CreatedAt:  now,
		ExpiresAt:  now.Add(ttl),
	}
	return joinTokenPrefix + idHex + "." + secretEncoding.EncodeToString(secret[:]), rec, nil
}

// errMalformedJoinToken never quotes the token: part of it is the secret.
var errMalformedJoinToken = unauthenticated("join token is malformed: want mrt.<16 hex digits>.<43 base64url characters>")

// parseJoinToken splits a join token into its id and secret bytes.
func parseJoinToken(token string) (id string, secret []byte, err error) {
	if len(token) > maxJoinTokenLen {
		return "", nil, unauthenticated("join token is malformed: longer than %d bytes", maxJoinTokenLen)
	}
	rest, ok := strings.CutPrefix(token, joinTokenPrefix)
	if !ok {
		return "", nil, errMalformedJoinToken
	}
	id, enc, ok := strings.Cut(rest, ".")
	if !ok || len(id) != joinTokenIDLen || !isLowerHex(id) {
		return "", nil, errMalformedJoinToken
	}
	if len(enc) != secretEncoding.EncodedLen(joinTokenSecretLen) {
		return "", nil, errMalformedJoinToken
	}
	secret, err = secretEncoding.DecodeString(enc)
	if err != nil || len(secret) != joinTokenSecretLen {
		return "", nil, errMalformedJoinToken
	}
	return id, secret, nil
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// authenticateJoinToken checks token for cluster c and spends it.
//
// A spent token is accepted again only for a retry of the request that
// spent it: the same token and a CSR with the key it was spent with
// (keyHash, compared in constant time), before the token expires or within
// ca.JoinRetryGrace of its use, whichever is later. The issuance then
// hands back the intermediate issued for that request.
func (a *Authenticator) authenticateJoinToken(ctx context.Context, c store.Cluster, token string, keyHash []byte) (Identity, error) {
	id, secret, err := parseJoinToken(token)
	if err != nil {
		return Identity{}, err
	}
	rec, err := a.st.GetJoinToken(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return Identity{}, unauthenticated("unknown join token (id %s)", id)
	}
	if err != nil {
		return Identity{}, fmt.Errorf("look up join token %s: %w", id, err)
	}
	hash := sha256.Sum256(secret)
	if subtle.ConstantTimeCompare(hash[:], rec.SecretHash) != 1 {
		return Identity{}, unauthenticated("join token secret does not match (id %s)", id)
	}
	now := a.now()
	// A retry of the request that spent the token may come after the
	// token expired, within the grace.
	retry := !rec.UsedAt.IsZero() && isJoinRetry(rec, keyHash, now)
	if !retry && !now.Before(rec.ExpiresAt) {
		return Identity{}, unauthenticated("join token expired at %s (id %s)", fmtTime(rec.ExpiresAt), id)
	}
	if rec.Cluster != c.Name {
		return Identity{}, permissionDenied("join token is for cluster %s, not %s (id %s)", rec.Cluster, c.Name, id)
	}
	if retry {
		// The request that spent the token, again (its caller gave up
		// waiting): the issuance answers with what was issued for it.
		return Identity{Cluster: c.Name, Method: MethodJoinToken, Subject: id}, nil
	}
	if !rec.UsedAt.IsZero() {
		return Identity{}, unauthenticated("join token was already used at %s (id %s)", fmtTime(rec.UsedAt), id)
	}
	// The conditional update decides: of concurrent requests that all got
	// here, exactly one marks the token used.
	err = a.st.Update(ctx, func(tx store.Tx) error { return tx.UseJoinToken(ctx, id, now, keyHash) })
	switch {
	case errors.Is(err, store.ErrConflict):
		if again, gerr := a.st.GetJoinToken(ctx, id); gerr == nil && !again.UsedAt.IsZero() {
			if isJoinRetry(again, keyHash, now) {
				return Identity{Cluster: c.Name, Method: MethodJoinToken, Subject: id}, nil
			}
			return Identity{}, unauthenticated("join token was already used at %s (id %s)", fmtTime(again.UsedAt), id)
		}
		return Identity{}, unauthenticated("join token was already used (id %s)", id)
	case errors.Is(err, store.ErrNotFound):
		// Deleted (its cluster was removed) since we read it.
		return Identity{}, unauthenticated("unknown join token (id %s)", id)
	case err != nil:
		return Identity{}, fmt.Errorf("spend join token %s: %w", id, err)
	}
	return Identity{Cluster: c.Name, Method: MethodJoinToken, Subject: id}, nil
}

// isJoinRetry reports whether a request with keyHash at now is a retry of
// the one that spent rec.
func isJoinRetry(rec store.JoinToken, keyHash []byte, now time.Time) bool {
	if len(rec.KeyHash) == 0 || len(keyHash) == 0 || subtle.ConstantTimeCompare(rec.KeyHash, keyHash) != 1 {
		return false
	}
	return now.Before(ca.JoinRetryDeadline(rec))
}

func fmtTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }
