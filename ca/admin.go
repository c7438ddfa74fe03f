package ca

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/meshroot/meshroot/store"
)

// Admin is the authority's administrative surface: everything an operator
// does to it, one interface per concern (a struct, so that no interface
// grows past ten methods). *Service implements every concern (the CLI's
// local mode, on a data dir: Service.Admin), and so does the admin API
// client in api/adminclient (the CLI's default, through the running
// server's admin socket: Client.Admin), so a command is written once
// against Admin. The acting party travels in the context (WithActor); over
// the admin API the server decides it from the caller's credentials.
//
// Adding a verb: a method on its concern's interface here and on *Service,
// an rpc with its server method and client method (see api/adminclient),
// and the CLI command.
type Admin struct {
	RootAdmin
	ClusterAdmin
	AuditAdmin
	FederationAdmin
	PolicyAdmin
	AdminCertAdmin
	QuarantineAdmin
}

// Admin returns s as the administrative surface.
func (s *Service) Admin() Admin {
	return Admin{RootAdmin: s, ClusterAdmin: s, AuditAdmin: s, FederationAdmin: s, PolicyAdmin: s, AdminCertAdmin: s, QuarantineAdmin: s}
}

// RootAdmin creates roots and moves them through rotation.
type RootAdmin interface {
	InitRoot(ctx context.Context, req InitRootRequest) (store.Root, error)
	PrepareRoot(ctx context.Context, req PrepareRootRequest) (store.Root, error)
	ActivateRoot(ctx context.Context, req PhaseRequest) (PhaseResult, error)
	RetireRoot(ctx context.Context, req PhaseRequest) (PhaseResult, error)
	RollbackPrepared(ctx context.Context, req PhaseRequest) (PhaseResult, error)
	RevokeRoot(ctx context.Context, req RevokeRequest) (PhaseResult, error)
	RotationStatus(ctx context.Context, workloadCertTTL time.Duration) (RotationStatus, error)
	ListRoots(ctx context.Context) ([]store.Root, error)
	TrustBundle(ctx context.Context) (TrustBundle, error)
}

// ClusterAdmin registers clusters and issues and revokes their
// intermediates.
type ClusterAdmin interface {
	AddCluster(ctx context.Context, req AddClusterRequest) (store.Cluster, error)
	RemoveCluster(ctx context.Context, name string) error
	ListClusters(ctx context.Context) ([]store.Cluster, error)
	ShowCluster(ctx context.Context, name string) (ClusterDetail, error)
	CreateJoinToken(ctx context.Context, req JoinTokenRequest) (JoinToken, error)
	IssueIntermediate(ctx context.Context, req IssueRequest) (Issued, error)
	ListIntermediates(ctx context.Context, cluster string) ([]store.Intermediate, error)
	RevokeIntermediate(ctx context.Context, serial, reason string) (store.Intermediate, error)
	// SetClusterGate marks what makes a cluster ready for a rotation
	// phase: secret, istiod, or "" for the default.
	SetClusterGate(ctx context.Context, name, gate string) error
}

// AuditAdmin reads and verifies the audit log.
type AuditAdmin interface {
	ListAudit(ctx context.Context, afterSeq int64, limit int) ([]store.AuditEntry, error)
	VerifyAudit(ctx context.Context) (entries int, err error)
	// AnchorAudit appends an audit.anchor row and returns a statement of
	// the log's head signed with the active root's key (PEM).
	AnchorAudit(ctx context.Context) ([]byte, error)
}

// PolicyAdmin reads and replaces the intermediate policy kept in the store.
type PolicyAdmin interface {
	// Policy returns the policy in force; stored is false when none is
	// stored and the service's own default applies.
	Policy(ctx context.Context) (p Policy, stored bool, err error)
	// SetPolicy stores p and reports whether it changed.
	SetPolicy(ctx context.Context, p Policy) (stored Policy, changed bool, err error)
}

// FederationAdmin manages the foreign trust domains meshroot federates with.
type FederationAdmin interface {
	AddFederation(ctx context.Context, req AddFederationRequest) (store.FederationPeer, error)
	RemoveFederation(ctx context.Context, trustDomain string) error
	ListFederation(ctx context.Context) ([]store.FederationPeer, error)
	RefreshFederation(ctx context.Context, trustDomain string) (store.FederationPeer, error)
}

// ListAudit returns up to limit audit entries after afterSeq, oldest first
// (limit <= 0: all).
func (s *Service) ListAudit(ctx context.Context, afterSeq int64, limit int) ([]store.AuditEntry, error) {
	return s.store.ListAudit(ctx, afterSeq, limit)
}

// VerifyAudit checks the audit log's hash chain and returns how many entries
// it holds. A broken chain is a *store.ChainError.
func (s *Service) VerifyAudit(ctx context.Context) (int, error) {
	n, err := store.VerifyAuditLog(ctx, s.store)
	return int(n), err
}

// JoinTokenRequest asks for a single-use join token for a registered cluster.
type JoinTokenRequest struct {
	Cluster string
	TTL     time.Duration
}

// JoinToken is a join token just made: Token is the secret, shown once and
// stored only as a hash.
type JoinToken struct {
	Cluster   string    `json:"cluster"`
	ExpiresAt time.Time `json:"expires_at"`
	Token     string    `json:"token"`
}

// JoinTokenMinter makes a join token for cluster valid for ttl from now: the
// secret to hand out and the record to store (which holds only its hash).
// The token's format belongs to whoever verifies it (server/authn).
type JoinTokenMinter func(cluster string, ttl time.Duration, now time.Time) (token string, rec store.JoinToken, err error)

// SetJoinTokenMinter sets how CreateJoinToken makes tokens.
func (s *Service) SetJoinTokenMinter(m JoinTokenMinter) { s.minter = m }

// CreateJoinToken makes a single-use join token for a registered cluster,
// stores its hash and audits it without the secret.
func (s *Service) CreateJoinToken(ctx context.Context, req JoinTokenRequest) (JoinToken, error) {
	actor := ActorFrom(ctx)
	if s.minter == nil {
		return JoinToken{}, errors.New("internal error: this authority has no join token minter (SetJoinTokenMinter)")
	}
	reg, err := s.cluster(ctx, req.Cluster)
	if err != nil {
		return JoinToken{}, s.auditRefusal(ctx, actor, "token.create", req.Cluster, err)
	}
	token, t, err := s.minter(req.Cluster, req.TTL, s.now())
	if err != nil {
		return JoinToken{}, s.auditRefusal(ctx, actor, "token.create", req.Cluster, refuse(err))
	}
	if t.Cluster != reg.Name {
		return JoinToken{}, fmt.Errorf("internal error: the join token minter made a token for cluster %q, asked for %q", t.Cluster, reg.Name)
	}
	err = s.store.Update(ctx, func(tx store.Tx) error {
		// The token is for the registration it was asked for: not for
		// one made after that was removed (which deleted its tokens).
		if cur, err := tx.GetCluster(ctx, reg.Name); errors.Is(err, store.ErrNotFound) {
			return refusef("cluster %s was removed meanwhile: no join token made", reg.Name)
		} else if err != nil {
			return err
		} else if !cur.CreatedAt.Equal(reg.CreatedAt) {
			return refusef("cluster %s was removed and registered again meanwhile: ask for a join token again", reg.Name)
		}
		if err := tx.CreateJoinToken(ctx, t); err != nil {
			return err
		}
		return s.audit(ctx, tx, actor, "token.create", t.Cluster, "ok", map[string]any{"token_id": t.ID, "expires_at": t.ExpiresAt})
	})
	if err != nil {
		return JoinToken{}, s.auditRefusal(ctx, actor, "token.create", reg.Name, err)
	}
	return JoinToken{Token: token, Cluster: t.Cluster, ExpiresAt: t.ExpiresAt}, nil
}

// ClusterDetail is one cluster with what meshroot knows of it: its
// registration, what its agent last reported (Cluster.Status) and its
// current intermediate.
type ClusterDetail struct {
	// Cluster is the registration. Its TokenReview kubeconfig is a
	// credential and is left out; TokenReview says whether one is set.
	Cluster     store.Cluster
	TokenReview bool
	// Current is the cluster's active intermediate (the newest one issued,
	// neither superseded nor revoked); nil when it has none.
	Current *store.Intermediate
	// Quarantine is set while the cluster is quarantined.
	Quarantine *store.Quarantine
}

// ShowCluster returns one registered cluster with its current intermediate.
func (s *Service) ShowCluster(ctx context.Context, name string) (ClusterDetail, error) {
	c, err := s.cluster(ctx, name)
	if err != nil {
		return ClusterDetail{}, err
	}
	d := ClusterDetail{Cluster: c, TokenReview: len(c.Auth.Kubeconfig) > 0}
	d.Cluster.Auth.Kubeconfig = nil
	list, err := s.store.ListIntermediates(ctx, name)
	if err != nil {
		return ClusterDetail{}, err
	}
	for i := range list {
		in := list[i]
		if in.Status == store.IntermediateActive && (d.Current == nil || in.NotBefore.After(d.Current.NotBefore)) {
			d.Current = &in
		}
	}
	if q, err := s.store.GetQuarantine(ctx, name); err == nil {
		d.Quarantine = &q
	} else if !errors.Is(err, store.ErrNotFound) {
		return ClusterDetail{}, err
	}
	return d, nil
}

// FederationRefresher fetches a federation peer's bundle now: the running
// server's federation watchers.
type FederationRefresher interface {
	Refresh(trustDomain string)
}

// SetFederationRefresher lets RefreshFederation reach the federation
// watchers of this process.
func (s *Service) SetFederationRefresher(r FederationRefresher) { s.refresher = r }

// ErrNoFederationWatchers is returned by RefreshFederation in a process that
// runs no federation watchers (they run in the server).
var ErrNoFederationWatchers = errors.New("federation watchers are not running in this process: a refresh asks the running server")

// RefreshFederation asks the federation watcher of a registered peer to
// fetch its bundle now, and returns the peer as held before the fetch.
func (s *Service) RefreshFederation(ctx context.Context, trustDomain string) (store.FederationPeer, error) {
	if s.refresher == nil {
		return store.FederationPeer{}, ErrNoFederationWatchers
	}
	p, err := s.store.GetFederationPeer(ctx, trustDomain)
	if err != nil {
		return p, err
	}
	if f, ok := s.refresher.(LeaderOnly); ok && !f.Leading() {
		return p, refusef("this server is not the leader: only the leader runs the federation watchers; send the refresh to the leader (`meshroot root status` names it), or wait for its next fetch")
	}
	s.refresher.Refresh(p.TrustDomain)
	return p, nil
}

// LeaderOnly is optional for a FederationRefresher whose watchers run only
// while this server leads the servers sharing the store.
type LeaderOnly interface {
	Leading() bool
}
