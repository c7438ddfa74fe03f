// Package authn authenticates the cluster agents that ask meshroot for an
// intermediate, and decides whether they may have the one they ask for.
//
// An agent proves who it is with one of three credentials:
//
//   - a join token (MethodJoinToken): single-use, bound to one cluster,
//     short-lived, stored only as a hash (see NewJoinToken);
//   - a Kubernetes service-account token (MethodServiceAccount), projected
//     with audience "meshroot", verified against the cluster's registered
//     JWKS, its issuer's OIDC discovery document, or a TokenReview in the
//     cluster; its namespace and service account must be registered for the
//     cluster;
//   - for renewal, the cluster's current, unrevoked intermediate, presented
//     as TLS client certificate (MethodMTLS).
//
// A credential that is good for cluster A never yields cluster B.
//
// The package knows nothing of gRPC: the transport extracts the credentials
// (metadata, TLS peer) into a Credential and maps the result. An *Error is a
// refusal of the requester (Code says which kind) whose Reason may be logged,
// audited and returned to the requester: it never contains a secret. Any
// other error is a failure on meshroot's side (the store, a cluster
// registration that cannot be used, the cluster's key endpoint or API server
// unreachable); its message holds no secret either, but it says nothing about
// whether the credential was good, and the transport should report it as an
// internal or unavailable error.
package authn

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/store"
)

// Method is how a requester authenticated.
type Method string

// Authentication methods.
const (
	MethodJoinToken      Method = "join-token"
	MethodServiceAccount Method = "k8s-service-account"
	MethodMTLS           Method = "mtls"
)

// Credential is what a requester presented. The transport fills in what it
// found; Authenticate uses the first of PeerChain, JoinToken and
// BearerToken that is set and ignores the others.
type Credential struct {
	// JoinToken is a join token ("mrt.<id>.<secret>").
	JoinToken string
	// BearerToken is a Kubernetes service-account token (a JWT).
	BearerToken string
	// PeerChain is the TLS client certificate chain as presented, leaf
	// (the cluster's intermediate) first. The TLS handshake must already
	// have proved possession of the leaf's private key.
	PeerChain []*x509.Certificate
	// CSRKeyHash is ca.KeyHash of the CSR the request carries (nil when
	// none, or not a CSR). A join token is spent with it, and a retry of
	// the request that spent a token is recognised by it.
	CSRKeyHash []byte
}

// Identity is an authenticated requester.
type Identity struct {
	// Cluster is the cluster the requester may act for: always the one it
	// asked for.
	Cluster string
	Method  Method
	// Subject names the credential, never its secret: the join token's id,
	// "system:serviceaccount:NAMESPACE:NAME", or the serial (lower-case hex)
	// of the intermediate presented for renewal.
	Subject string
	// Registration is the registration of Cluster that authentication
	// found: the credential belongs to it.
	Registration store.Registration
	// Record is the cluster's record as authentication read it; nil when
	// it was not read (AuthenticateReport by client certificate).
	Record *store.Cluster
	// Intermediate is, for MethodMTLS, the presented intermediate's record
	// as authentication read it (a status report checks it again without
	// another read); nil for the other methods.
	Intermediate *store.Intermediate
}

// Code is the kind of refusal.
type Code string

// Refusal codes.
const (
	// Unauthenticated: the credential is missing, malformed, unknown,
	// expired, used, revoked or does not verify.
	Unauthenticated Code = "unauthenticated"
	// PermissionDenied: the cluster is not registered, is not set up for
	// the credential's method, or the credential belongs to another cluster
	// or to a service account the cluster does not allow.
	PermissionDenied Code = "permission-denied"
)

// Error is a refusal. Reason says what was wrong; it never contains a
// token or other secret, so it can be logged, audited and returned.
type Error struct {
	Code   Code
	Reason string
}

// Error returns the reason.
func (e *Error) Error() string { return e.Reason }

func unauthenticated(format string, args ...any) *Error {
	return &Error{Code: Unauthenticated, Reason: fmt.Sprintf(format, args...)}
}

func permissionDenied(format string, args ...any) *Error {
	return &Error{Code: PermissionDenied, Reason: fmt.Sprintf(format, args...)}
}

// Options configures an Authenticator. The zero value of every field has a
// usable default except Roots, without which mTLS renewal fails.
type Options struct {
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Roots returns the roots of the current trust bundle, which verify the
	// intermediates presented for renewal.
	Roots func(ctx context.Context) ([]*x509.Certificate, error)
	// HTTPClientTimeout bounds each request to a cluster's OIDC issuer and
	// each TokenReview (default 10 s).
	HTTPClientTimeout time.Duration
	// JWKSCacheTTL is how long keys fetched by OIDC discovery are used
	// before they are fetched again (default 5 min).
	JWKSCacheTTL time.Duration
}

// Defaults for Options.
const (
	defaultHTTPClientTimeout = 10 * time.Second
	defaultJWKSCacheTTL      = 5 * time.Minute
)

// Store is what authentication reads and writes in meshroot's state: the
// registered clusters, the join tokens (used once, in a transaction) and
// the issued intermediates that mTLS requesters present.
type Store interface {
	GetCluster(ctx context.Context, name string) (store.Cluster, error)
	GetJoinToken(ctx context.Context, id string) (store.JoinToken, error)
	GetIntermediate(ctx context.Context, serial string) (store.Intermediate, error)
	GetRegisteredIntermediate(ctx context.Context, serial string) (store.RegisteredIntermediate, error)
	// Meta reads the stored policy (the superseded-renewal grace).
	Meta(ctx context.Context, key string) (string, error)
	// Update runs UseJoinToken in a transaction.
	Update(ctx context.Context, fn func(tx store.Tx) error) error
}

// Authenticator authenticates requesters against the clusters registered in
// a store. It is safe for concurrent use.
type Authenticator struct {
	st    Store
	now   func() time.Time
	roots func(ctx context.Context) ([]*x509.Certificate, error)

	httpTimeout time.Duration
	jwksTTL     time.Duration

	mu       sync.Mutex
	oidc     map[string]*oidcKeys       // by cluster name
	reviewer map[string]*tokenReviewer  // by cluster name
	verified map[[32]byte]verifiedChain // chains verified, with their paths' roots
	// verifications counts the chains verified afresh (tests).
	verifications int
}

// New returns an Authenticator over the clusters, join tokens and
// intermediates in st.
func New(st Store, opts Options) *Authenticator {
	a := &Authenticator{
		st:          st,
		now:         opts.Now,
		roots:       opts.Roots,
		httpTimeout: opts.HTTPClientTimeout,
		jwksTTL:     opts.JWKSCacheTTL,
		oidc:        map[string]*oidcKeys{},
		reviewer:    map[string]*tokenReviewer{},
	}
	if a.now == nil {
		a.now = time.Now
	}
	if a.httpTimeout <= 0 {
		a.httpTimeout = defaultHTTPClientTimeout
	}
	if a.jwksTTL <= 0 {
		a.jwksTTL = defaultJWKSCacheTTL
	}
	return a
}

// maxClusterName bounds a requested cluster name quoted into a reason.
const maxClusterName = 63

// Authenticate authenticates a requester that asks to act for cluster, and
// returns its Identity when cred is good for that cluster.
//
// The cluster must be registered. The first credential present decides,
// in this order: PeerChain (renewal with the cluster's intermediate), then
// JoinToken, then BearerToken; the others are not tried. A join token is
// spent by the first request that gets past its checks (see NewJoinToken).
//
// A refusal is an *Error; any other error is a failure on meshroot's side
// (see the package documentation).
func (a *Authenticator) Authenticate(ctx context.Context, cluster string, cred Credential) (Identity, error) {
	if err := checkClusterName(cluster); err != nil {
		return Identity{}, err
	}
	return a.authenticate(ctx, cluster, cred)
}

// AuthenticateReport is Authenticate for a status report, which needs the
// cluster's registration but not its record. By client certificate, the
// presented intermediate and its cluster's registration are read together
// and the Identity's Record is nil: one read instead of two, for the
// report every cluster sends after every change of the fleet. Its
// outcome, refusals included, is Authenticate's.
func (a *Authenticator) AuthenticateReport(ctx context.Context, cluster string, cred Credential) (Identity, error) {
	if err := checkClusterName(cluster); err != nil {
		return Identity{}, err
	}
	if len(cred.PeerChain) > 0 && len(cred.PeerChain) <= maxPeerChain && cred.PeerChain[0] != nil && cred.PeerChain[0].SerialNumber != nil {
		ri, err := a.st.GetRegisteredIntermediate(ctx, ca.SerialHex(cred.PeerChain[0].SerialNumber))
		switch {
		case err == nil && ri.Intermediate.Cluster == cluster:
			id, err := a.authenticateMTLS(ctx, ri.Registration, cred.PeerChain, &ri.Intermediate)
			if err != nil {
				return Identity{}, err
			}
			id.Registration = ri.Registration
			return id, nil
		case err != nil && !errors.Is(err, store.ErrNotFound):
			return Identity{}, fmt.Errorf("authenticate for cluster %s: %w", cluster, err)
		}
		// Not this cluster's, not ours, or the cluster is not registered:
		// Authenticate's reads say which.
	}
	return a.authenticate(ctx, cluster, cred)
}

// checkClusterName refuses a requested cluster name that no cluster can
// have.
func checkClusterName(cluster string) error {
	if len(cluster) > maxClusterName {
		return permissionDenied("cluster name is invalid: longer than %d characters", maxClusterName)
	}
	if err := ca.ValidateClusterName(cluster); err != nil {
		return permissionDenied("%v", err)
	}
	return nil
}

// authenticate is Authenticate for a valid cluster name.
func (a *Authenticator) authenticate(ctx context.Context, cluster string, cred Credential) (Identity, error) {
	c, err := a.st.GetCluster(ctx, cluster)
	if errors.Is(err, store.ErrNotFound) {
		return Identity{}, permissionDenied("cluster %s is not registered", cluster)
	}
	if err != nil {
		return Identity{}, fmt.Errorf("authenticate for cluster %s: %w", cluster, err)
	}
	var id Identity
	switch {
	case len(cred.PeerChain) > 0:
		id, err = a.authenticateMTLS(ctx, c.Registration(), cred.PeerChain, nil)
	case cred.JoinToken != "":
		id, err = a.authenticateJoinToken(ctx, c, cred.JoinToken, cred.CSRKeyHash)
	case cred.BearerToken != "":
		id, err = a.authenticateServiceAccount(ctx, c, cred.BearerToken)
	default:
		return Identity{}, unauthenticated("no credential: send a join token, a service-account token or the cluster's intermediate as client certificate")
	}
	if err != nil {
		return Identity{}, err
	}
	id.Registration, id.Record = c.Registration(), &c
	return id, nil
}
