package ca

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/meshroot/meshroot/keys"
	"github.com/meshroot/meshroot/store"
)

// RevokeRequest is the emergency path for a compromised root.
type RevokeRequest struct {
	RootID string
	// Emergency must be set: revocation breaks trust at once.
	Emergency bool
	KeyType   keys.KeyType
	DryRun    bool
}

// RevokeRoot is the emergency path: the root leaves the bundle at once and
// every intermediate issued under it is revoked. Revoking the active root
// creates a new active root in the same transaction, so issuance goes on;
// every cluster must then re-request, with a service-account or join token
// (its intermediate no longer renews). Until they do, mTLS between
// workloads whose chains differ in root fails: that is the blast radius.
//
// A root that was cross-signed (its key certified by an older root) takes
// the roots that certified it out of the bundle too, in the same
// transaction, with their intermediates: the cross certificate is public,
// so whoever holds the revoked key could otherwise still chain to them.
// The dry run lists them.
func (s *Service) RevokeRoot(ctx context.Context, req RevokeRequest) (PhaseResult, error) {
	actor := ActorFrom(ctx)
	res, err := s.revoke(ctx, actor, req)
	if err != nil {
		return res, s.auditRefusal(ctx, actor, string(cmdRevoke), req.RootID, err)
	}
	return res, nil
}

func (s *Service) revoke(ctx context.Context, actor Actor, req RevokeRequest) (PhaseResult, error) {
	if !req.Emergency {
		return PhaseResult{Phase: "revoke", DryRun: req.DryRun}, refusef("revoking a root breaks trust at once: pass --emergency to confirm (for a planned change use prepare, activate, retire)")
	}
	pre, err := s.planRevoke(ctx, s.store, req.RootID)
	if err != nil || req.DryRun {
		pre.res.DryRun = req.DryRun
		return pre.res, err
	}
	// The replacement's key is made outside the transaction (an HSM may be
	// slow); the transaction checks that the plan it reads still needs it.
	var made *store.Root
	if pre.create != created {
		kt := req.KeyType
		if kt == "" {
			kt = keys.DefaultKeyType
		}
		nr, _, err := s.newRootKey(ctx, kt, pre.trustDomain, 0, pre.create)
		if err != nil {
			return pre.res, fmt.Errorf("replacement root: %w", err)
		}
		made = &nr
	}
	return s.apply(ctx, actor, cmdRevoke, func(ctx context.Context, r rotationReader) (*plan, error) {
		p, err := s.planRevoke(ctx, r, req.RootID)
		switch {
		case err != nil:
			return p.plan, err
		case !slices.Equal(p.moves, pre.moves):
			return p.plan, errRootsChanged(cmdRevoke, fmt.Sprintf("planned %s, now %s", describeMoves(pre.moves), describeMoves(p.moves)))
		}
		if made != nil {
			p.details["replacement_root"] = made.ID
		}
		return p.plan, nil
	}, false, made)
}

// revokePlan is a revocation's plan and the trust domain of its
// replacement root.
type revokePlan struct {
	*plan
	trustDomain string
}

// planRevoke is the revocation of root id and of every root that
// certified it through a cross certificate, read from r.
func (s *Service) planRevoke(ctx context.Context, r rotationReader, id string) (revokePlan, error) {
	p := revokePlan{plan: &plan{res: PhaseResult{Phase: "revoke"}, bump: true, target: id}}
	target, err := r.GetRoot(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return p, refusef("no root %s: see `meshroot root list`", id)
	}
	if err != nil {
		return p, err
	}
	if !target.State.InBundle() {
		return p, refusef("root %s is already %s", target.ID, target.State)
	}
	roots, err := r.ListRoots(ctx)
	if err != nil {
		return p, err
	}
	revoked, via := crossClosure(roots, target)
	inters, err := r.ListIntermediates(ctx, "")
	if err != nil {
		return p, err
	}
	ids := map[string]bool{}
	for _, rr := range revoked {
		ids[rr.ID] = true
	}
	var affected []string
	seen := map[string]bool{}
	for _, in := range inters {
		if ids[in.RootID] && in.Status != store.IntermediateRevoked {
			p.revoke = append(p.revoke, in.Serial)
			if in.Status == store.IntermediateActive && !seen[in.Cluster] {
				seen[in.Cluster] = true
				affected = append(affected, in.Cluster)
			}
		}
	}
	sort.Strings(affected)
	p.res.LosingTrust = affected
	var cross []string
	for _, rr := range revoked {
		p.moves = append(p.moves, move{rr.ID, rr.State, store.RootRevoked})
		if rr.ID == target.ID {
			p.res.Changes = append(p.res.Changes, fmt.Sprintf("root %s: %s -> revoked (leaves the trust bundle now)", rr.ID, rr.State))
		} else {
			cross = append(cross, rr.ID)
			p.res.Changes = append(p.res.Changes, fmt.Sprintf(
				"root %s: %s -> revoked (leaves the trust bundle now): it cross-signed root %s, so the revoked key with that public cross certificate would still chain to it",
				rr.ID, rr.State, via[rr.ID]))
		}
		if rr.State == store.RootActive {
			p.create, p.trustDomain = store.RootActive, rr.TrustDomain
		}
	}
	p.res.Changes = append(p.res.Changes,
		fmt.Sprintf("%d intermediate(s) issued under %s revoked; clusters that must re-issue: %v", len(p.revoke), plural(len(revoked), "it", "them"), affected),
		"trust bundle sequence +1")
	if p.create != created {
		p.res.Changes = append(p.res.Changes, "a new root is created and made active at once")
	}
	p.details = map[string]any{"revoked_intermediates": len(p.revoke), "clusters": affected}
	if len(cross) > 0 {
		p.details["revoked_cross_signers"] = cross
	}
	return p, nil
}

// crossClosure returns target and every root in the bundle that certified
// one of them through a cross certificate, transitively (target first),
// with, for each cross-signer, the root whose key it certified. A cross
// certificate is public: whoever holds a certified key can present it, so
// trust in its signer must end with the key's.
func crossClosure(roots []store.Root, target store.Root) ([]store.Root, map[string]string) {
	out := []store.Root{target}
	via := map[string]string{}
	in := map[string]bool{target.ID: true}
	for i := 0; i < len(out); i++ {
		if len(out[i].CrossPEM) == 0 {
			continue
		}
		cross, err := ParseCerts(out[i].CrossPEM)
		if err != nil || len(cross) == 0 {
			continue
		}
		for _, o := range roots {
			if in[o.ID] || !o.State.InBundle() {
				continue
			}
			oc, err := ParseCerts(o.ChainPEM)
			if err != nil || len(oc) == 0 {
				continue
			}
			// Expiry does not matter: a verifier with a wrong clock, or one
			// that ignores expiry, would still take the path.
			if cross[0].CheckSignatureFrom(oc[0]) == nil {
				in[o.ID], via[o.ID] = true, out[i].ID
				out = append(out, o)
			}
		}
	}
	return out, via
}

func describeMoves(ms []move) string {
	var parts []string
	for _, m := range ms {
		parts = append(parts, fmt.Sprintf("%s %s -> %s", short(m.id), m.from, m.to))
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
