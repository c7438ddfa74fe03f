package ca

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/meshroot/meshroot/store"
)

// command is a root lifecycle command; its name is also its audit action.
type command string

// The root lifecycle commands.
const (
	cmdInit     command = "root.init"
	cmdImport   command = "root.import"
	cmdPrepare  command = "root.prepare"
	cmdActivate command = "root.activate"
	cmdRetire   command = "root.retire"
	cmdRollback command = "root.rollback"
	cmdRevoke   command = "root.revoke"
)

// created is the "from" state of a root that a command creates.
const created store.RootState = ""

// transition is one row of the root lifecycle: command moves a root from
// one state to the next when gate holds.
type transition struct {
	command  command
	from, to store.RootState
	gate     string
}

// Gates shared by several rows.
const (
	gateFirstRoot = "no root is active or prepared, and the store belongs to no other trust domain"
	gateActivate  = "exactly one root is active, and every registered cluster has applied the trust bundle that added the prepared root (unless forced)"
	gateRevoke    = "confirmed as an emergency, and the root is in the trust bundle"
	gateCross     = "a root being revoked was cross-signed by this one: its key with the public cross certificate would still chain here"
)

// transitions is every root state change meshroot makes. Each command
// computes its plan (which rows apply to which roots, and its gate) from
// what it reads INSIDE the transaction that changes the states, and each
// change is a store update conditional on the row's from state, so two
// commands racing on a state read earlier cannot both act on it: one wins,
// the other is refused (or finds nothing left to do). apply refuses any
// change that is not a row of this table.
var transitions = []transition{
	{cmdInit, created, store.RootActive, gateFirstRoot},
	{cmdImport, created, store.RootActive, gateFirstRoot},
	{cmdPrepare, created, store.RootPrepared, "exactly one root is active and none is prepared (with cross-signing: the same active root that signed the cross certificate)"},
	{cmdActivate, store.RootPrepared, store.RootActive, gateActivate},
	{cmdActivate, store.RootActive, store.RootRetiring, gateActivate},
	{cmdRetire, store.RootRetiring, store.RootRetired, "exactly one root is active, every cluster's intermediate chains to it, and the workload certificate lifetime has passed since the last cluster switched (unless forced)"},
	{cmdRollback, store.RootPrepared, store.RootRetired, "a root is prepared"},
	{cmdRevoke, store.RootPrepared, store.RootRevoked, gateRevoke},
	{cmdRevoke, store.RootActive, store.RootRevoked, gateRevoke + "; or " + gateCross},
	{cmdRevoke, store.RootRetiring, store.RootRevoked, gateRevoke + "; or " + gateCross},
	{cmdRevoke, created, store.RootActive, "a root being revoked was active: its replacement (made before the transaction; unused if the plan changed)"},
}

// allowed reports whether the table has the row (cmd, from, to).
func allowed(cmd command, from, to store.RootState) bool {
	return slices.ContainsFunc(transitions, func(t transition) bool {
		return t.command == cmd && t.from == from && t.to == to
	})
}

// move is one root changing state.
type move struct {
	id       string
	from, to store.RootState
}

// plan is what a command does, computed from one consistent read of the
// store: inside the transaction that applies it, or, for a dry run, from
// the store itself.
type plan struct {
	res PhaseResult
	// moves are the state changes, applied in order.
	moves []move
	// create is the state of a root the command creates ("" for none);
	// the root itself is made before the transaction (its key may take
	// long to create in an HSM) and handed to apply.
	create store.RootState
	// revoke lists intermediates to revoke.
	revoke []string
	// bump adds one to the bundle sequence (the bundle's roots change).
	bump bool
	// gated commands record whether they were forced, and their blockers.
	gated   bool
	target  string
	details map[string]any
	// noop: nothing to change; res says why.
	noop bool
}

// rotationReader is what the root lifecycle's plans read: the roots, the
// clusters and their intermediates, this trust domain and the federation
// peers (never to become this trust domain). A plan reads it twice: from
// the store before the transaction (dry runs, early refusals) and from the
// transaction, where its gate is checked again.
type rotationReader interface {
	GetRoot(ctx context.Context, id string) (store.Root, error)
	ListRoots(ctx context.Context) ([]store.Root, error)
	ListClusters(ctx context.Context) ([]store.Cluster, error)
	GetIntermediate(ctx context.Context, serial string) (store.Intermediate, error)
	ListIntermediates(ctx context.Context, cluster string) ([]store.Intermediate, error)
	Meta(ctx context.Context, key string) (string, error)
	GetFederationPeer(ctx context.Context, trustDomain string) (store.FederationPeer, error)
}

// rotationWriter is what a root lifecycle command changes, in its
// transaction: root states, a new root and the trust domain, the bundle
// sequence, revoked intermediates and the audit row.
type rotationWriter interface {
	CreateRoot(ctx context.Context, r store.Root) error
	UpdateRootState(ctx context.Context, id string, from, to store.RootState, at time.Time) error
	IncrementBundleSequence(ctx context.Context) (uint64, error)
	UpdateIntermediateStatus(ctx context.Context, serial string, status store.IntermediateStatus) error
	SetMeta(ctx context.Context, key, value string) error
	AppendAudit(ctx context.Context, e store.AuditEntry) (store.AuditEntry, error)
}

// planFunc computes a command's plan from r.
type planFunc func(ctx context.Context, r rotationReader) (*plan, error)

// errRootsChanged is returned when the plan computed inside the
// transaction no longer matches the work done before it.
func errRootsChanged(cmd command, why string) error {
	return &PolicyError{Err: fmt.Errorf("%s: the roots changed while the command ran (%s); nothing was changed: check the rotation status and run it again: %w",
		cmd, why, store.ErrConflict)}
}

// dryRun computes the plan of a command from the store and changes nothing.
func (s *Service) dryRun(ctx context.Context, phase string, fn planFunc) (PhaseResult, error) {
	p, err := fn(ctx, s.store)
	if p == nil {
		return PhaseResult{Phase: phase, DryRun: true}, err
	}
	p.res.DryRun = true
	return p.res, err
}

// apply runs fn inside one transaction and, when its gate passes (or is
// forced), makes the plan's changes in that same transaction: every state
// change conditional on the state fn read, the bundle sequence, the root
// made beforehand (made, when the plan creates one), revoked
// intermediates and the audit row. Nothing changes when it fails.
func (s *Service) apply(ctx context.Context, actor Actor, cmd command, fn planFunc, force bool, made *store.Root) (PhaseResult, error) {
	var res PhaseResult
	err := s.store.Update(ctx, func(tx store.Tx) error {
		err := s.applyTx(ctx, tx, actor, cmd, fn, force, made, &res)
		if err != nil && made != nil {
			err = fmt.Errorf("%w; the key %s made for root %s is unused and may be deleted", err, made.KeyRef, made.ID)
		}
		return err
	})
	res.Done = err == nil
	return res, err
}

// applyTx is apply's transaction; res is what the command did or would do.
func (s *Service) applyTx(ctx context.Context, tx store.Tx, actor Actor, cmd command, fn planFunc, force bool, made *store.Root, res *PhaseResult) error {
	p, err := fn(ctx, tx)
	if p == nil {
		return err
	}
	defer func() { *res = p.res }()
	if err != nil {
		return err
	}
	if err := gate(strings.TrimPrefix(string(cmd), "root."), &p.res, PhaseRequest{Force: force}); err != nil {
		return err
	}
	switch {
	case p.noop && made == nil:
		return nil
	case p.noop:
		return errRootsChanged(cmd, "there is nothing left to do")
	case p.create != created && made == nil:
		return errRootsChanged(cmd, "a new root is needed now")
	case p.create == created && made != nil:
		return errRootsChanged(cmd, "no new root is needed any more")
	case made != nil && made.State != p.create:
		return errRootsChanged(cmd, fmt.Sprintf("the new root would be %s, not %s", p.create, made.State))
	}
	return s.applyPlan(ctx, tx, actor, cmd, p, made)
}

// applyPlan makes p's changes in tx.
func (s *Service) applyPlan(ctx context.Context, tx rotationWriter, actor Actor, cmd command, p *plan, made *store.Root) error {
	now := s.now().UTC()
	for _, m := range p.moves {
		if !allowed(cmd, m.from, m.to) {
			return fmt.Errorf("%s: root %s %s -> %s is not a transition of the root lifecycle", cmd, m.id, m.from, m.to)
		}
		if err := tx.UpdateRootState(ctx, m.id, m.from, m.to, now); err != nil {
			if errors.Is(err, store.ErrConflict) {
				return errRootsChanged(cmd, err.Error())
			}
			return err
		}
	}
	for _, serial := range p.revoke {
		if err := tx.UpdateIntermediateStatus(ctx, serial, store.IntermediateRevoked); err != nil {
			return err
		}
	}
	details := map[string]any{}
	for k, v := range p.details {
		details[k] = v
	}
	if p.bump {
		seq, err := tx.IncrementBundleSequence(ctx)
		if err != nil {
			return err
		}
		details["bundle_sequence"] = seq
		if made != nil {
			made.AddedSequence = seq
		}
	}
	if made != nil {
		if !allowed(cmd, created, made.State) {
			return fmt.Errorf("%s: creating a %s root is not a transition of the root lifecycle", cmd, made.State)
		}
		made.StateChangedAt = made.CreatedAt
		if err := tx.CreateRoot(ctx, *made); err != nil {
			return err
		}
		if err := tx.SetMeta(ctx, MetaTrustDomain, made.TrustDomain); err != nil {
			return err
		}
		if p.target == "" {
			p.target = made.ID
		}
	}
	if p.gated {
		details["forced"], details["blockers"] = p.res.Forced, p.res.Blockers
	}
	return s.audit(ctx, tx, actor, string(cmd), p.target, "ok", details)
}

// gate turns blockers into a refusal unless forced or a dry run.
func gate(phase string, res *PhaseResult, req PhaseRequest) error {
	if len(res.Blockers) == 0 || req.DryRun {
		return nil
	}
	if req.Force {
		res.Forced = true
		return nil
	}
	var b strings.Builder
	for _, bl := range res.Blockers {
		if bl.Cluster != "" {
			fmt.Fprintf(&b, "; %s: %s", bl.Cluster, bl.Reason)
		} else {
			fmt.Fprintf(&b, "; %s", bl.Reason)
		}
	}
	return refusef("%s refused, %d blocker(s)%s (see `meshroot root status`; --force overrides and is audited)", phase, len(res.Blockers), b.String())
}

// rootsByState returns the roots in state st, in the order given.
func rootsByState(roots []store.Root, st store.RootState) []store.Root {
	var out []store.Root
	for _, r := range roots {
		if r.State == st {
			out = append(out, r)
		}
	}
	return out
}

// oneActive returns the active root, or says the store is inconsistent.
func oneActive(roots []store.Root) (store.Root, error) {
	active := rootsByState(roots, store.RootActive)
	if len(active) != 1 {
		return store.Root{}, fmt.Errorf("expected one active root, found %d: the store is inconsistent", len(active))
	}
	return active[0], nil
}
