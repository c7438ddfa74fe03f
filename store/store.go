// Package store defines meshroot's persistent state: roots, clusters,
// intermediates, bundle sequence and the hash-chained audit log.
//
// Implementations live in sub-packages (sqlite is the embedded default).
// Every implementation must pass the conformance suite in storetest.
package store

import (
	"context"
	"errors"
	"io"
	"time"
)

// ErrNotFound is returned (wrapped) when a looked-up record does not exist.
var ErrNotFound = errors.New("not found")

// ErrAlreadyExists is returned (wrapped) when a record with the same key exists.
var ErrAlreadyExists = errors.New("already exists")

// ErrConflict is returned (wrapped) when a conditional update finds the
// record in another state, for example a join token that was already used.
var ErrConflict = errors.New("conflict")

// ErrRetryable is returned (wrapped) when an operation did not take effect
// because the store could not finish it: the connection to the database was
// lost, the database is restarting, or a transaction kept failing on
// conflicts with concurrent writers. Nothing of the operation landed; the
// caller may run it again.
var ErrRetryable = errors.New("retryable: the operation did not take effect")

// RootState is the lifecycle state of a root of trust.
type RootState string

// Root states. Roots in StatePrepared, StateActive and StateRetiring are in the
// trust bundle; exactly one root per trust domain is StateActive and signs.
const (
	RootPrepared RootState = "prepared"
	RootActive   RootState = "active"
	RootRetiring RootState = "retiring"
	RootRetired  RootState = "retired"
	RootRevoked  RootState = "revoked"
)

// InBundle reports whether a root in state s belongs in the trust bundle.
func (s RootState) InBundle() bool {
	return s == RootPrepared || s == RootActive || s == RootRetiring
}

// Root is a root of trust together with the signing authority under it.
type Root struct {
	// ID identifies the trust anchor: the first 16 bytes of the SHA-256 of
	// the self-signed root certificate's DER, hex encoded.
	ID          string
	TrustDomain string
	State       RootState
	// KeyRef is the key manager reference of the signing authority's key.
	KeyRef string
	// ChainPEM is the signing authority's certificate first, then every CA
	// above it, ending with the self-signed root (a single certificate when
	// the root signs itself).
	ChainPEM  []byte
	NotAfter  time.Time // NotAfter of the signing authority
	CreatedAt time.Time
	// CrossPEM, when set, is this root's key certified by the root that was
	// active when it was prepared, so that peers still trusting only the
	// old root accept chains from the new one.
	CrossPEM []byte
	// AddedSequence is the bundle sequence at which the root joined the
	// trust bundle.
	AddedSequence uint64
	// StateChangedAt is when State last changed (CreatedAt until then).
	StateChangedAt time.Time
}

// Cluster is a registered Kubernetes cluster that may request intermediates.
type Cluster struct {
	Name        string
	TrustDomain string
	CreatedAt   time.Time
	// Auth says how the cluster's service-account tokens are verified.
	Auth ClusterAuth
	// Status is what the cluster's agent last reported.
	Status ClusterStatus
	// PermitDNS are DNS domains the cluster's intermediates may certify
	// besides the policy's (istio-system.svc by default).
	PermitDNS []string
	// PermitIPs are IP ranges (CIDR) the cluster's intermediates may
	// certify; without any they may certify no IP address.
	PermitIPs []string
}

// ClusterAuth holds what verifies a cluster's Kubernetes service-account
// tokens. All fields are optional; a cluster without any can still use
// join tokens.
type ClusterAuth struct {
	// Issuer is the cluster's service-account token issuer (the "iss" claim).
	Issuer string
	// JWKS is the issuer's JSON Web Key Set, registered by the operator.
	JWKS []byte
	// OIDCDiscovery, when set, fetches the JWKS through the issuer's OIDC
	// discovery document instead.
	OIDCDiscovery bool
	// CAPEM is the CA bundle that verifies the issuer's HTTPS endpoints for
	// OIDC discovery (system roots when empty).
	CAPEM []byte
	// Kubeconfig, when set, verifies tokens by TokenReview against the
	// cluster. It is a credential: stored, never printed.
	Kubeconfig []byte
	// ServiceAccounts lists the "namespace/name" service accounts whose
	// tokens may request this cluster's intermediate. An empty list reads
	// back as nil.
	ServiceAccounts []string
}

// ClusterStatus is what a cluster's agent last reported, and when.
type ClusterStatus struct {
	LastContact time.Time
	// BundleSequence is the trust bundle sequence the cluster has applied.
	BundleSequence uint64
	// IntermediateSerial is the serial of the intermediate it runs with.
	IntermediateSerial string
	// Istiod is what the agent last confirmed istiod serves; zero when
	// the agent never reported it (an agent without the confirmation).
	Istiod IstiodStatus
	// Gate is the operator's choice of what makes the cluster ready for
	// a rotation phase: GateSecret, GateIstiod, or "" (the default: istiod
	// when the agent reports confirmation, else secret). The agent never
	// sets it; RecordContact keeps it.
	Gate string
	// AppliedCRLs maps a root ID to the CRL number of that root's CRL in
	// the cluster's ca-crl.pem, as its agent last reported; empty when it
	// wrote no ca-crl.pem, nil when the agent never reported it.
	AppliedCRLs map[string]uint64
}

// Rotation gates a cluster can be marked with (ClusterStatus.Gate).
const (
	// GateSecret: the cacerts Secret applied is enough.
	GateSecret = "secret"
	// GateIstiod: istiod must have confirmed what the Secret holds.
	GateIstiod = "istiod"
)

// Istiod confirmation states an agent reports (IstiodStatus.State).
const (
	// IstiodLoaded: istiod serves the roots (and, probed, the
	// intermediate) of the cacerts Secret.
	IstiodLoaded = "loaded"
	// IstiodPending: the Secret changed and istiod has not caught up
	// yet, within the agent's bound.
	IstiodPending = "pending"
	// IstiodStale: istiod still served something else after the bound.
	IstiodStale = "stale"
	// IstiodUnconfirmed: the agent cannot tell (no istio-ca-root-cert).
	IstiodUnconfirmed = "unconfirmed"
)

// IstiodStatus is what an agent saw istiod serve, compared with the
// cacerts Secret it applied.
type IstiodStatus struct {
	// State is IstiodLoaded, IstiodPending, IstiodStale or
	// IstiodUnconfirmed; "" when never reported.
	State string `json:"state,omitempty"`
	// BundleSequence and Serial are the Secret's trust bundle sequence
	// and intermediate serial istiod was confirmed to serve (State
	// loaded), or last served before (other states).
	BundleSequence uint64 `json:"bundle_sequence,omitempty"`
	Serial         string `json:"serial,omitempty"`
	// Probed says the serial was confirmed by a probe CSR to istiod, not
	// only the roots by istio-ca-root-cert.
	Probed bool `json:"probed,omitempty"`
	// Roots are the IDs of the roots istiod publishes.
	Roots []string `json:"roots,omitempty"`
	// Since is when istiod was first seen in State for this Secret
	// content; StaleSince when it became stale (zero unless stale).
	Since      time.Time `json:"since,omitempty"`
	StaleSince time.Time `json:"stale_since,omitempty"`
	// Detail says what the agent saw, for an operator.
	Detail string `json:"detail,omitempty"`
}

// IntermediateStatus is the status of an issued cluster intermediate.
type IntermediateStatus string

// Intermediate statuses.
const (
	IntermediateActive     IntermediateStatus = "active"
	IntermediateSuperseded IntermediateStatus = "superseded"
	IntermediateRevoked    IntermediateStatus = "revoked"
)

// Intermediate is a cluster intermediate CA certificate that was issued.
type Intermediate struct {
	Serial    string // lower-case hex, no separators
	Cluster   string
	RootID    string
	NotBefore time.Time
	NotAfter  time.Time
	Status    IntermediateStatus
	CertPEM   []byte
	CreatedAt time.Time
	// SupersededAt is when a successor superseded it (zero while it is
	// active, and for intermediates superseded before this was recorded).
	SupersededAt time.Time
}

// Registration is one registration of a cluster: its name and when it was
// registered. A cluster removed and registered again under the same name
// is another registration, and what was issued to the earlier one is not
// the new one's.
type Registration struct {
	Name      string
	CreatedAt time.Time
}

// Registration returns c's registration.
func (c Cluster) Registration() Registration {
	return Registration{Name: c.Name, CreatedAt: c.CreatedAt}
}

// RegisteredIntermediate is an intermediate and the current registration
// of its cluster, read together (GetRegisteredIntermediate).
type RegisteredIntermediate struct {
	Intermediate Intermediate
	// Registration is the current registration of Intermediate.Cluster: a
	// later one than the intermediate was issued to when the cluster was
	// removed and registered again since.
	Registration Registration
}

// AuditEntry is one row of the append-only audit log. Seq, PrevHash and Hash
// are assigned by AppendAudit.
type AuditEntry struct {
	Seq     int64
	Time    time.Time
	Actor   string // who: "cli:uid=1000", "cluster:east", ...
	Action  string // what: "root.init", "intermediate.issue", ...
	Target  string // on what: a root id, cluster name, serial
	Result  string // "ok", "denied" or "error"
	Details string // free-form JSON object, no secrets
	// PrevHash is the Hash of the row before (empty for the first row).
	PrevHash string
	// Hash is ChainHash(PrevHash, entry), hex encoded.
	Hash string
}

// FederationProfile is how a foreign bundle endpoint is authenticated.
type FederationProfile string

// Bundle endpoint profiles (SPIFFE Trust Domain and Bundle specification).
const (
	ProfileHTTPSWeb    FederationProfile = "https_web"
	ProfileHTTPSSPIFFE FederationProfile = "https_spiffe"
)

// FederationPeer is a foreign trust domain whose bundle meshroot fetches.
type FederationPeer struct {
	TrustDomain string
	URL         string
	Profile     FederationProfile
	// EndpointSPIFFEID is the SPIFFE ID the https_spiffe endpoint presents.
	EndpointSPIFFEID string
	CreatedAt        time.Time
	// Bundle is the last good bundle (SPIFFE bundle JSON); nil before the
	// first successful fetch unless a bootstrap bundle was given.
	Bundle []byte
	// Sequence is Bundle's spiffe_sequence (0 when absent).
	Sequence uint64
	// BundleUpdatedAt is when Bundle last changed.
	BundleUpdatedAt time.Time
	// Status is the watcher's last outcome.
	Status FederationStatus
}

// FederationStatus is what the federation watcher last saw of a peer.
type FederationStatus struct {
	LastAttempt time.Time
	LastSuccess time.Time
	// LastError is the reason of the last failed fetch ("" after a success).
	LastError string
	// NextAttempt is when the watcher will fetch again.
	NextAttempt time.Time
}

// The store's surface is split by concern into small interfaces, one
// reader and one writer per concern, so that each consumer declares (in its
// own package) only the methods it uses. Reader, Tx and Store below are
// structs, not interfaces: they gather one implementation of every concern
// and are what an implementation hands out (see Store).

// RootReader reads the roots of trust and the trust bundle's sequence.
type RootReader interface {
	GetRoot(ctx context.Context, id string) (Root, error)
	// ListRoots returns all roots, oldest first.
	ListRoots(ctx context.Context) ([]Root, error)
	// BundleSequence returns the trust bundle's sequence number (0 before
	// the first change).
	BundleSequence(ctx context.Context) (uint64, error)
}

// RootWriter changes the roots of trust and the trust bundle's sequence
// (root creation and rotation).
type RootWriter interface {
	CreateRoot(ctx context.Context, r Root) error
	// UpdateRootState moves the root with id from state from to state to
	// and sets StateChangedAt to at, in one conditional update. It fails
	// with ErrNotFound when there is no such root and with ErrConflict when
	// the root is not in state from (another writer changed it first).
	UpdateRootState(ctx context.Context, id string, from, to RootState, at time.Time) error
	// IncrementBundleSequence adds one to the bundle sequence and returns it.
	IncrementBundleSequence(ctx context.Context) (uint64, error)
}

// ClusterReader reads the registered clusters.
type ClusterReader interface {
	GetCluster(ctx context.Context, name string) (Cluster, error)
	// ListClusters returns all clusters ordered by name.
	ListClusters(ctx context.Context) ([]Cluster, error)
}

// ClusterWriter registers, removes and updates clusters.
type ClusterWriter interface {
	CreateCluster(ctx context.Context, c Cluster) error
	DeleteCluster(ctx context.Context, name string) error
	// UpdateClusterStatus records what a cluster's agent reported.
	UpdateClusterStatus(ctx context.Context, name string, st ClusterStatus) error
	// RecordContact merges an agent's report into the status of the
	// cluster called name, in one conditional update, while its
	// registration is the one created at createdAt: LastContact is set
	// from st; BundleSequence (when not zero), IntermediateSerial (when
	// set), Istiod (when its State is set) and AppliedCRLs (when not nil)
	// replace the recorded ones; the rest, Gate included, is kept. It
	// fails with ErrNotFound when no cluster called name was created at
	// createdAt (it was removed, perhaps registered again since).
	RecordContact(ctx context.Context, name string, createdAt time.Time, st ClusterStatus) error
}

// JoinTokenReader reads the clusters' join tokens.
type JoinTokenReader interface {
	GetJoinToken(ctx context.Context, id string) (JoinToken, error)
}

// JoinTokenWriter creates, uses and expires the clusters' join tokens.
type JoinTokenWriter interface {
	// CreateJoinToken stores t; ErrNotFound when its cluster is unknown.
	CreateJoinToken(ctx context.Context, t JoinToken) error
	// UseJoinToken marks the token used at at. It fails with ErrNotFound
	// when there is no such token and ErrConflict when it was used before.
	// It does not check expiry: the caller does. It records keyHash.
	UseJoinToken(ctx context.Context, id string, at time.Time, keyHash []byte) error
	// RecordJoinTokenIssue sets IssuedSerial of the used token id spent
	// with keyHash (not empty): ErrNotFound when there is no such token,
	// ErrConflict when unused, spent with another key or already set.
	RecordJoinTokenIssue(ctx context.Context, id string, keyHash []byte, serial string) error
	// DeleteExpiredJoinTokens removes tokens that expired before now and
	// returns how many.
	DeleteExpiredJoinTokens(ctx context.Context, now time.Time) (int, error)
}

// IntermediateReader reads the issued cluster intermediates.
type IntermediateReader interface {
	GetIntermediate(ctx context.Context, serial string) (Intermediate, error)
	// GetRegisteredIntermediate returns the intermediate with serial and
	// the current registration of its cluster, in one read (a status
	// report authenticated by the intermediate needs both, and every
	// cluster reports after every change of the fleet). It fails with
	// ErrNotFound when there is no such intermediate or its cluster is
	// not registered now.
	GetRegisteredIntermediate(ctx context.Context, serial string) (RegisteredIntermediate, error)
	// ListIntermediates returns the intermediates of cluster (all clusters
	// when cluster is empty), oldest first.
	ListIntermediates(ctx context.Context, cluster string) ([]Intermediate, error)
	// ListIntermediatesByStatus returns the intermediates of every cluster
	// in status, oldest first: the active or revoked few, without reading
	// the superseded history that grows with every renewal.
	ListIntermediatesByStatus(ctx context.Context, status IntermediateStatus) ([]Intermediate, error)
}

// IntermediateWriter records issued intermediates and their status.
type IntermediateWriter interface {
	CreateIntermediate(ctx context.Context, in Intermediate) error
	UpdateIntermediateStatus(ctx context.Context, serial string, status IntermediateStatus) error
	// SupersedeIntermediates marks every active intermediate of cluster
	// superseded at at (SupersededAt) and returns how many there were.
	SupersedeIntermediates(ctx context.Context, cluster string, at time.Time) (int, error)
	// RevokeClusterIntermediates marks every intermediate of cluster that is
	// not revoked yet revoked, and returns their serials, oldest first.
	RevokeClusterIntermediates(ctx context.Context, cluster string) ([]string, error)
}

// FederationReader reads the federation peers and their held bundles.
type FederationReader interface {
	GetFederationPeer(ctx context.Context, trustDomain string) (FederationPeer, error)
	// ListFederationPeers returns every peer ordered by trust domain.
	ListFederationPeers(ctx context.Context) ([]FederationPeer, error)
}

// FederationWriter adds and removes federation peers and records what
// their watchers fetched.
type FederationWriter interface {
	// CreateFederationPeer adds p (with its bootstrap bundle, if any).
	CreateFederationPeer(ctx context.Context, p FederationPeer) error
	DeleteFederationPeer(ctx context.Context, trustDomain string) error
	// SetFederatedBundle stores a peer's new bundle and its sequence.
	SetFederatedBundle(ctx context.Context, trustDomain string, bundle []byte, sequence uint64, at time.Time) error
	// UpdateFederationStatus records the watcher's last outcome.
	UpdateFederationStatus(ctx context.Context, trustDomain string, st FederationStatus) error
}

// AuditReader reads the audit log.
type AuditReader interface {
	// ListAudit returns up to limit entries with Seq > afterSeq in Seq order
	// (limit <= 0: all).
	ListAudit(ctx context.Context, afterSeq int64, limit int) ([]AuditEntry, error)
}

// AuditWriter appends to the audit log.
type AuditWriter interface {
	// AppendAudit assigns Seq, PrevHash and Hash and appends e.
	AppendAudit(ctx context.Context, e AuditEntry) (AuditEntry, error)
}

// MetaReader reads small named settings.
type MetaReader interface {
	// Meta returns a small named setting ("" and no error when unset).
	Meta(ctx context.Context, key string) (string, error)
}

// MetaWriter sets small named settings.
type MetaWriter interface {
	SetMeta(ctx context.Context, key, value string) error
}

// AdminCert records a client certificate of the admin CA (remote admin
// over mTLS): who it names, the role it grants and until when. The
// certificate itself is not kept; its serial finds the record.
type AdminCert struct {
	// Serial is the certificate's serial number, lower-case hex.
	Serial    string
	Name      string
	Role      string
	IssuedAt  time.Time
	NotAfter  time.Time
	RevokedAt time.Time // zero while not revoked
}

// AdminCertReader reads the admin client certificates issued.
type AdminCertReader interface {
	// GetAdminCert returns the record of serial, or ErrNotFound.
	GetAdminCert(ctx context.Context, serial string) (AdminCert, error)
	// ListAdminCerts returns every record, oldest issued first.
	ListAdminCerts(ctx context.Context) ([]AdminCert, error)
}

// AdminCertWriter records admin client certificates and revokes them.
type AdminCertWriter interface {
	// CreateAdminCert adds c; ErrAlreadyExists when its serial exists.
	CreateAdminCert(ctx context.Context, c AdminCert) error
	// RevokeAdminCert marks serial revoked at at: ErrNotFound when there
	// is no such record, ErrConflict when it is already revoked.
	RevokeAdminCert(ctx context.Context, serial string, at time.Time) error
}

// Updater runs read-write transactions.
type Updater interface {
	// Update runs fn in one transaction: either all its writes land or,
	// when fn or the commit fails, none do.
	Update(ctx context.Context, fn func(tx Tx) error) error
}

// Reader holds every read-only query, one interface per concern. Its
// methods are promoted, so a Reader satisfies any interface made of reader
// methods. An implementation sets every field (usually to one value).
type Reader struct {
	RootReader
	ClusterReader
	JoinTokenReader
	IntermediateReader
	FederationReader
	AuditReader
	MetaReader
	AdminCertReader
	RevocationReader
}

// Tx is a read-write transaction, handed to the fn of Update: the reads
// (which see the transaction's own writes) and one writer per concern. Its
// methods are promoted, so a Tx satisfies any interface made of store
// methods; pass it on as the narrowest one that works.
type Tx struct {
	Reader
	RootWriter
	ClusterWriter
	JoinTokenWriter
	IntermediateWriter
	FederationWriter
	AuditWriter
	MetaWriter
	AdminCertWriter
	RevocationWriter
}

// Store is an open store, as an implementation hands it out (sqlite.Open):
// reads outside any transaction, Update, audit verification and Close.
// Every field must be set; the conformance suite in storetest checks it.
// Consumers that need only some of it declare their own small interface,
// which a Store satisfies.
type Store struct {
	Reader
	Updater
	AuditVerifier
	io.Closer
}

// AuditVerifier checks a store's audit chain.
type AuditVerifier interface {
	// VerifyAudit checks the whole audit log with VerifyChain against the
	// head the store recorded, returning a *ChainError when it is broken.
	VerifyAudit(ctx context.Context) error
	// VerifyAuditRows checks the audit log like VerifyAudit, in constant
	// memory, and returns the number of intact rows.
	VerifyAuditRows(ctx context.Context) (int64, error)
}
