package ca

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshroot/meshroot/keys"
	"github.com/meshroot/meshroot/store"
)

// Actor names who performs an action, for the audit log: "cli:uid=1000",
// "cluster:east", "admin:CN=alice".
type Actor string

// Service is the stateful authority: it keeps roots, clusters and issued
// intermediates in a store, takes signing keys from a key manager, and
// writes every change and every refusal to the audit log.
type Service struct {
	store  store.Store
	keys   keys.KeyManager
	policy Policy
	now    func() time.Time

	// authorities caches loaded signing authorities by root id, so that a
	// key is loaded (and, on disk, decrypted) once, not on every request.
	mu          sync.Mutex
	authorities map[string]*Authority
	// bundle caches the parsed trust bundle of one bundle sequence.
	bundle *TrustBundle
	// upstreams opens upstream signing authorities; leafAuth caches the
	// authorities for meshroot's own TLS certificates under them; server
	// CAs by root id, made for serverNames.
	upstreams   UpstreamOpener
	leafAuth    map[string]*Authority
	serverNames ServerNames
	// minter makes join tokens; refresher reaches the federation watchers
	// (nil outside the server).
	minter    JoinTokenMinter
	refresher FederationRefresher
	// mayResignCRL, when set, says whether this process may sign root
	// CRLs (see SetCRLSigning).
	mayResignCRL func() bool
	// fleetInters keeps FleetCRLs' parsed active intermediates by serial
	// (a serial's stored certificate never changes).
	fleetInters interCache
	// seqSeen is the highest bundle sequence read from the store. The
	// sequence only grows, so a status report at or below it is not
	// ahead of the server's without another read (Report).
	seqSeen atomic.Uint64
}

// NewService returns a Service over st and km that issues under policy.
func NewService(st store.Store, km keys.KeyManager, policy Policy) (*Service, error) {
	if err := policy.Validate(); err != nil {
		return nil, err
	}
	return &Service{store: st, keys: km, policy: policy, now: time.Now, authorities: map[string]*Authority{}, leafAuth: map[string]*Authority{}}, nil
}

// SetClock replaces the service's clock (for tests).
func (s *Service) SetClock(now func() time.Time) { s.now = now }

// Store returns the service's store, for read-only queries.
func (s *Service) Store() store.Reader { return s.store.Reader }

// audit appends one audit row inside tx.
func (s *Service) audit(ctx context.Context, tx store.AuditWriter, actor Actor, action, target, result string, details map[string]any) error {
	if actor == "" {
		return errNoActor
	}
	d := "{}"
	if len(details) > 0 {
		b, err := json.Marshal(details)
		if err != nil {
			return fmt.Errorf("audit details: %w", err)
		}
		d = string(b)
	}
	_, err := tx.AppendAudit(ctx, store.AuditEntry{
		Time: s.now().UTC(), Actor: string(actor), Action: action, Target: target, Result: result, Details: d,
	})
	return err
}

// errNoActor refuses a change nobody would be accountable for: the caller
// forgot to say who acts.
var errNoActor = errors.New("internal error: no actor for the audit log (the caller must set one with ca.WithActor)")

// auditRefusal records a refused or failed action in its own transaction
// and returns cause unchanged (joined with an audit failure, if any).
func (s *Service) auditRefusal(ctx context.Context, actor Actor, action, target string, cause error) error {
	result := "denied"
	var pe *PolicyError
	if !errors.As(cause, &pe) {
		result = "error"
	}
	if aerr := s.AuditResult(ctx, actor, action, target, result, cause.Error()); aerr != nil {
		return errors.Join(cause, fmt.Errorf("audit log: %w", aerr))
	}
	return cause
}

// AuditRefusal records an action refused before it reached the service (for
// example by authentication) with its reason.
func (s *Service) AuditRefusal(ctx context.Context, actor Actor, action, target, reason string) error {
	return s.AuditResult(ctx, actor, action, target, "denied", reason)
}

// AuditResult records an action that did not happen, with its result
// ("denied" or "error") and reason. A refusal can be caused by anyone, so
// the target and reason are escaped and cut to MaxAuditTarget and
// MaxAuditReason bytes (see BoundAuditText); the actor, action and result
// are meshroot's own words.
func (s *Service) AuditResult(ctx context.Context, actor Actor, action, target, result, reason string) error {
	target = BoundAuditText(target, MaxAuditTarget)
	reason = BoundAuditText(reason, MaxAuditReason)
	return s.store.Update(ctx, func(tx store.Tx) error {
		return s.audit(ctx, tx, actor, action, target, result, map[string]any{"reason": reason})
	})
}

// PolicyError is a request refused by policy or validation (as opposed to
// an internal failure). Callers map it to "invalid argument" or "denied".
type PolicyError struct{ Err error }

func (e *PolicyError) Error() string { return e.Err.Error() }
func (e *PolicyError) Unwrap() error { return e.Err }

func refuse(err error) error {
	if err == nil {
		return nil
	}
	return &PolicyError{Err: err}
}

func refusef(format string, args ...any) error { return &PolicyError{Err: fmt.Errorf(format, args...)} }
