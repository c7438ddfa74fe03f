package ca

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/meshroot/meshroot/keys"
	"github.com/meshroot/meshroot/store"
)

// MetaTrustDomain is the store setting that holds the authority's trust domain.
const MetaTrustDomain = "trust_domain"

// InitRootRequest asks for a new self-signed root.
type InitRootRequest struct {
	TrustDomain string
	KeyType     keys.KeyType
	TTL         time.Duration
}

// InitRoot creates the first root of a trust domain: a new key in the key
// manager and a self-signed certificate, stored as the active root. It
// refuses when an active root exists (rotation is a separate procedure).
func (s *Service) InitRoot(ctx context.Context, req InitRootRequest) (store.Root, error) {
	actor := ActorFrom(ctx)
	r, err := s.initRoot(ctx, actor, req)
	if err != nil {
		return store.Root{}, s.auditRefusal(ctx, actor, "root.init", req.TrustDomain, err)
	}
	return r, nil
}

func (s *Service) initRoot(ctx context.Context, actor Actor, req InitRootRequest) (store.Root, error) {
	if _, err := ParseTrustDomain(req.TrustDomain); err != nil {
		return store.Root{}, refuse(err)
	}
	kt := req.KeyType
	if kt == "" {
		kt = keys.DefaultKeyType
	}
	if _, err := keys.ParseKeyType(string(kt)); err != nil {
		return store.Root{}, refuse(err)
	}
	if err := s.refuseSecondRoot(ctx, req.TrustDomain); err != nil {
		return store.Root{}, err
	}
	root, cert, err := s.newRootKey(ctx, kt, req.TrustDomain, req.TTL, store.RootActive)
	if err != nil {
		return store.Root{}, err
	}
	err = s.saveRoot(ctx, actor, "root.init", &root, map[string]any{"key_ref": root.KeyRef, "key_type": string(kt), "not_after": cert.NotAfter})
	return root, err
}

// PrepareRootRequest asks for the next root of the trust domain.
type PrepareRootRequest struct {
	KeyType keys.KeyType
	TTL     time.Duration
	// CrossSign has the active root certify the new root's key too, so
	// that peers still trusting only the old root accept new chains.
	CrossSign bool
	// DryRun reports what would change and changes nothing.
	DryRun bool
}

// PrepareRoot is the first phase of a rotation: a new root is created in
// the key manager in state prepared and joins the trust bundle (sequence
// +1), so that every mesh trusts it before anything is signed by it. The
// active root keeps signing. It refuses while another root is prepared.
func (s *Service) PrepareRoot(ctx context.Context, req PrepareRootRequest) (store.Root, error) {
	actor := ActorFrom(ctx)
	r, err := s.prepareRoot(ctx, actor, req)
	if err != nil {
		return store.Root{}, s.auditRefusal(ctx, actor, "root.prepare", "", err)
	}
	return r, nil
}

func (s *Service) prepareRoot(ctx context.Context, actor Actor, req PrepareRootRequest) (store.Root, error) {
	kt := req.KeyType
	if kt == "" {
		kt = keys.DefaultKeyType
	}
	if _, err := keys.ParseKeyType(string(kt)); err != nil {
		return store.Root{}, refuse(err)
	}
	if _, err := planPrepare(ctx, s.store, "", nil); err != nil {
		return store.Root{}, err
	}
	active, err := s.ActiveRoot(ctx)
	if err != nil {
		return store.Root{}, err
	}
	if req.DryRun {
		return store.Root{TrustDomain: active.TrustDomain, State: store.RootPrepared}, nil
	}
	root, cert, err := s.newRootKey(ctx, kt, active.TrustDomain, req.TTL, store.RootPrepared)
	if err != nil {
		return store.Root{}, err
	}
	if req.CrossSign {
		auth, err := s.Authority(ctx, active)
		if err != nil {
			return store.Root{}, err
		}
		cross, err := auth.CrossSign(cert)
		if err != nil {
			return store.Root{}, err
		}
		root.CrossPEM = EncodeCerts([]*x509.Certificate{cross})
	}
	details := map[string]any{"key_ref": root.KeyRef, "key_type": string(kt), "not_after": cert.NotAfter, "active_root": active.ID, "cross_signed": req.CrossSign}
	_, err = s.apply(ctx, actor, cmdPrepare, func(ctx context.Context, r rotationReader) (*plan, error) {
		return planPrepare(ctx, r, active.ID, details)
	}, false, &root)
	return root, err
}

// planPrepare checks, in r, that exactly one root is active (activeID,
// when given: the one that certified the new root) and none is prepared.
func planPrepare(ctx context.Context, r rotationReader, activeID string, details map[string]any) (*plan, error) {
	roots, err := r.ListRoots(ctx)
	if err != nil {
		return nil, err
	}
	if p := rootsByState(roots, store.RootPrepared); len(p) > 0 {
		return nil, refusef("root %s is already prepared: activate it, or roll it back, before preparing another", p[0].ID)
	}
	active := rootsByState(roots, store.RootActive)
	if len(active) == 0 {
		return nil, errNoActiveRoot
	}
	a, err := oneActive(roots)
	if err != nil {
		return nil, err
	}
	if activeID != "" && a.ID != activeID {
		return nil, errRootsChanged(cmdPrepare, fmt.Sprintf("the active root is now %s, not %s", a.ID, activeID))
	}
	return &plan{create: store.RootPrepared, bump: true, details: details}, nil
}

// newRootKey creates a key in the key manager and its self-signed root
// certificate, as a root record in state (not yet stored).
func (s *Service) newRootKey(ctx context.Context, kt keys.KeyType, td string, ttl time.Duration, state store.RootState) (store.Root, *x509.Certificate, error) {
	key, err := s.keys.CreateKey(ctx, newKeyName("root", s.now()), kt)
	if err != nil {
		return store.Root{}, nil, fmt.Errorf("create root key: %w", err)
	}
	signer, err := s.keys.Signer(ctx, key.Ref)
	if err != nil {
		return store.Root{}, nil, fmt.Errorf("load new root key %s: %w", key.Ref, err)
	}
	cert, err := NewRoot(signer, RootOptions{TrustDomain: td, TTL: ttl, Now: s.now()})
	if err != nil {
		return store.Root{}, nil, refuse(err)
	}
	return store.Root{
		ID: RootID(cert), TrustDomain: td, State: state, KeyRef: key.Ref,
		ChainPEM: EncodeCerts([]*x509.Certificate{cert}), NotAfter: cert.NotAfter, CreatedAt: s.now().UTC(),
	}, cert, nil
}

// ImportRootRequest brings an existing CA in as the signing authority.
type ImportRootRequest struct {
	TrustDomain string
	// ChainPEM is the signing CA certificate first, then every CA above it,
	// ending with the self-signed root.
	ChainPEM []byte
	// Key is the signing CA's private key; it is stored in the key manager.
	Key crypto.Signer
}

// ImportRoot stores an existing CA (a root, or an intermediate under an
// offline root with its chain) and its key as the active signing authority.
func (s *Service) ImportRoot(ctx context.Context, req ImportRootRequest) (store.Root, error) {
	actor := ActorFrom(ctx)
	r, err := s.importRoot(ctx, actor, req)
	if err != nil {
		return store.Root{}, s.auditRefusal(ctx, actor, "root.import", req.TrustDomain, err)
	}
	return r, nil
}

func (s *Service) importRoot(ctx context.Context, actor Actor, req ImportRootRequest) (store.Root, error) {
	if _, err := ParseTrustDomain(req.TrustDomain); err != nil {
		return store.Root{}, refuse(err)
	}
	chain, err := ParseCerts(req.ChainPEM)
	if err != nil {
		return store.Root{}, refusef("certificate chain: %w", err)
	}
	auth, err := NewAuthority(chain, req.Key, s.policy)
	if err != nil {
		return store.Root{}, refuse(err)
	}
	if _, err := keys.KeyTypeOf(req.Key.Public()); err != nil {
		return store.Root{}, refuse(err)
	}
	if err := s.refuseSecondRoot(ctx, req.TrustDomain); err != nil {
		return store.Root{}, err
	}
	imp, ok := s.keys.(keys.Importer)
	if !ok {
		return store.Root{}, refusef("the configured key manager cannot import keys: create the key in the backend and reference it instead")
	}
	key, err := imp.ImportKey(ctx, newKeyName("import", s.now()), req.Key)
	if err != nil {
		return store.Root{}, fmt.Errorf("store imported key: %w", err)
	}
	root := store.Root{
		ID: RootID(auth.Root()), TrustDomain: req.TrustDomain, State: store.RootActive, KeyRef: key.Ref,
		ChainPEM: EncodeCerts(chain), NotAfter: auth.Certificate().NotAfter, CreatedAt: s.now().UTC(),
	}
	err = s.saveRoot(ctx, actor, "root.import", &root, map[string]any{"key_ref": key.Ref, "chain_length": len(chain), "signing_subject": auth.Certificate().Subject.String()})
	return root, err
}

// refuseSecondRoot refuses to create a first root while a root is active
// or prepared, or when the store belongs to another trust domain.
func (s *Service) refuseSecondRoot(ctx context.Context, td string) error {
	return checkFirstRoot(ctx, s.store, td)
}

// checkFirstRoot is refuseSecondRoot on r (the store, or the transaction
// that creates the root).
func checkFirstRoot(ctx context.Context, r rotationReader, td string) error {
	roots, err := r.ListRoots(ctx)
	if err != nil {
		return err
	}
	for _, rr := range roots {
		if rr.State == store.RootActive || rr.State == store.RootPrepared {
			return refusef("root %s of trust domain %s is already %s: rotate it instead of creating another root", rr.ID, rr.TrustDomain, rr.State)
		}
	}
	if cur, err := r.Meta(ctx, MetaTrustDomain); err != nil {
		return err
	} else if cur != "" && cur != td {
		return refusef("this data dir belongs to trust domain %s, not %s", cur, td)
	}
	return refuseFederatedTrustDomain(ctx, r, td)
}

// saveRoot stores a new first root (active), bumps the bundle sequence and
// audits, in one transaction that re-checks checkFirstRoot.
func (s *Service) saveRoot(ctx context.Context, actor Actor, action string, root *store.Root, details map[string]any) error {
	_, err := s.apply(ctx, actor, command(action), func(ctx context.Context, r rotationReader) (*plan, error) {
		if err := checkFirstRoot(ctx, r, root.TrustDomain); err != nil {
			return nil, err
		}
		return &plan{create: root.State, bump: true, details: details}, nil
	}, false, root)
	return err
}

// ListRoots returns every root, oldest first.
func (s *Service) ListRoots(ctx context.Context) ([]store.Root, error) { return s.store.ListRoots(ctx) }

// ActiveRoot returns the root that signs new intermediates.
func (s *Service) ActiveRoot(ctx context.Context) (store.Root, error) {
	roots, err := s.store.ListRoots(ctx)
	if err != nil {
		return store.Root{}, err
	}
	for _, r := range roots {
		if r.State == store.RootActive {
			return r, nil
		}
	}
	return store.Root{}, errNoActiveRoot
}

// errNoActiveRoot says that the authority has no root yet.
var errNoActiveRoot = refuse(fmt.Errorf("%w: run `meshroot root init --trust-domain TD` first", ErrNoActiveRoot))

// Authority returns the signing authority of root r, loading its key from
// the key manager the first time and caching it after. A root prepared
// with --cross-sign signs through its cross certificate while the root
// that cross-signed it is still in the bundle.
func (s *Service) Authority(ctx context.Context, r store.Root) (*Authority, error) {
	// A root without a cross certificate signs with its own stored chain:
	// an authority cached for that chain is returned without parsing it
	// again (every issuance asks).
	ownKey := r.ID + "|" + r.KeyRef + "|own|" + string(r.ChainPEM)
	if len(r.CrossPEM) == 0 {
		s.mu.Lock()
		a, ok := s.authorities[ownKey]
		s.mu.Unlock()
		if ok {
			return a, nil
		}
	}
	chain, mode, err := s.signingChain(ctx, r)
	if err != nil {
		return nil, err
	}
	cacheKey := r.ID + "|" + r.KeyRef + "|" + mode
	if mode == "own" {
		cacheKey = ownKey
	}
	s.mu.Lock()
	a, ok := s.authorities[cacheKey]
	s.mu.Unlock()
	if ok {
		return a, nil
	}
	signer, err := s.keys.Signer(ctx, r.KeyRef)
	if err != nil {
		return nil, fmt.Errorf("root %s: %w", r.ID, err)
	}
	a, err = NewAuthority(chain, signer, s.policy)
	if err != nil {
		return nil, fmt.Errorf("root %s: %w", r.ID, err)
	}
	a.SetClock(s.now)
	s.mu.Lock()
	s.authorities[cacheKey] = a
	s.mu.Unlock()
	return a, nil
}

// signingChain is r's own chain, or its cross certificate followed by the
// chain of the root that cross-signed it while that root is in the bundle.
func (s *Service) signingChain(ctx context.Context, r store.Root) ([]*x509.Certificate, string, error) {
	own, err := ParseCerts(r.ChainPEM)
	if err != nil {
		return nil, "", fmt.Errorf("root %s: stored chain: %w", r.ID, err)
	}
	if len(r.CrossPEM) == 0 {
		return own, "own", nil
	}
	cross, err := ParseCerts(r.CrossPEM)
	if err != nil {
		return nil, "", fmt.Errorf("root %s: stored cross certificate: %w", r.ID, err)
	}
	roots, err := s.store.ListRoots(ctx)
	if err != nil {
		return nil, "", err
	}
	for _, o := range roots {
		if o.ID == r.ID || !o.State.InBundle() {
			continue
		}
		oc, err := ParseCerts(o.ChainPEM)
		if err != nil {
			continue
		}
		if cross[0].CheckSignatureFrom(oc[0]) == nil && s.now().Before(cross[0].NotAfter) {
			return append(cross[:1:1], oc...), "cross:" + o.ID, nil
		}
	}
	return own, "own", nil
}

// ActiveAuthority returns the active root and its signing authority. Under
// an upstream it is the server CA (ServerAuthority), which signs meshroot's
// own TLS certificates only.
func (s *Service) ActiveAuthority(ctx context.Context) (store.Root, *Authority, error) {
	root, err := s.ActiveRoot(ctx)
	if err != nil {
		return store.Root{}, nil, err
	}
	if isUpstream(root) {
		return s.ServerAuthority(ctx)
	}
	a, err := s.Authority(ctx, root)
	return root, a, err
}

// TrustBundle returns the roots in the bundle (prepared, active, retiring)
// and the bundle sequence.
func (s *Service) TrustBundle(ctx context.Context) (TrustBundle, error) {
	// Every change of the bundle's roots bumps the sequence, so a bundle
	// parsed for this sequence is still right.
	seq, err := s.store.BundleSequence(ctx)
	if err != nil {
		return TrustBundle{}, err
	}
	s.mu.Lock()
	cached := s.bundle
	s.mu.Unlock()
	if cached != nil && cached.Sequence == seq {
		return *cached, nil
	}
	roots, err := s.store.ListRoots(ctx)
	if err != nil {
		return TrustBundle{}, err
	}
	td, err := s.store.Meta(ctx, MetaTrustDomain)
	if err != nil {
		return TrustBundle{}, err
	}
	b := TrustBundle{TrustDomain: td, Sequence: seq}
	for _, r := range roots {
		if !r.State.InBundle() {
			continue
		}
		chain, err := ParseCerts(r.ChainPEM)
		if err != nil {
			return TrustBundle{}, fmt.Errorf("root %s: stored chain: %w", r.ID, err)
		}
		b.Roots = append(b.Roots, chain[len(chain)-1])
	}
	if len(b.Roots) == 0 {
		return TrustBundle{}, refusef("the trust bundle is empty: run `meshroot root init --trust-domain TD` first")
	}
	s.mu.Lock()
	s.bundle = &b
	s.mu.Unlock()
	return b, nil
}

// newKeyName makes a unique, sortable key name such as root-20261126-031500-1a2b3c.
func newKeyName(prefix string, now time.Time) string {
	var r [3]byte
	_, _ = rand.Read(r[:])
	return fmt.Sprintf("%s-%s-%s", prefix, now.UTC().Format("20060102-150405"), hex.EncodeToString(r[:]))
}
