package ca

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"github.com/meshroot/meshroot/store"
)

// MetaPolicy is the store meta key that holds the intermediate policy as a
// JSON object of Policy's fields (durations in nanoseconds). The store is
// the policy's one source of truth: the server, the data-dir CLI and the
// Admin API all issue under it.
const MetaPolicy = "ca.policy"

// maxStoredPolicy bounds the stored policy document.
const maxStoredPolicy = 64 << 10

// LoadPolicy returns the policy stored in r, with every zero field set to
// its default, and whether one was stored (the defaults when not).
func LoadPolicy(ctx context.Context, r store.MetaReader) (Policy, bool, error) {
	p, raw, err := loadPolicy(ctx, r)
	return p, raw != "", err
}

// loadPolicy is LoadPolicy with the stored text the policy came from (""
// when none is stored).
func loadPolicy(ctx context.Context, r store.MetaReader) (Policy, string, error) {
	raw, err := r.Meta(ctx, MetaPolicy)
	if err != nil {
		return Policy{}, "", fmt.Errorf("load intermediate policy: %w", err)
	}
	if raw == "" {
		return Policy{}.withDefaults(), "", nil
	}
	p, err := decodePolicy(raw)
	if err != nil {
		return Policy{}, "", err
	}
	return p.withDefaults(), raw, nil
}

func decodePolicy(raw string) (Policy, error) {
	p, err := ParsePolicyJSON([]byte(raw))
	if err != nil {
		return Policy{}, fmt.Errorf("stored intermediate policy (meta %s): %w; set it again", MetaPolicy, err)
	}
	return p, nil
}

// ParsePolicyJSON reads a policy in the form the store keeps (a JSON object
// of Policy's fields, durations in nanoseconds) and validates it. Unknown
// fields are refused rather than dropped: a policy written by a newer
// meshroot may constrain more than this one knows.
func ParsePolicyJSON(b []byte) (Policy, error) {
	if len(b) > maxStoredPolicy {
		return Policy{}, fmt.Errorf("intermediate policy is %d bytes: at most %d", len(b), maxStoredPolicy)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var p Policy
	if err := dec.Decode(&p); err != nil {
		return Policy{}, fmt.Errorf("intermediate policy is not valid: %w", err)
	}
	if err := p.Validate(); err != nil {
		return Policy{}, err
	}
	return p, nil
}

// PolicyJSON returns p in the form the store keeps.
func PolicyJSON(p Policy) ([]byte, error) {
	b, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("encode intermediate policy: %w", err)
	}
	return b, nil
}

// Policy returns the policy the service issues under: the stored one, or,
// when none is stored, the one the service was made with; every zero field
// set to its default. stored says whether it came from the store.
func (s *Service) Policy(ctx context.Context) (p Policy, stored bool, err error) {
	p, raw, err := s.policyRead(ctx)
	return p, raw != "", err
}

// policyRead is Policy with the stored text it came from ("" when none is
// stored), which an issuing transaction compares with the stored text
// when it commits.
func (s *Service) policyRead(ctx context.Context) (Policy, string, error) {
	p, raw, err := loadPolicy(ctx, s.store)
	if err == nil && raw == "" {
		p = s.policy.withDefaults()
	}
	return p, raw, err
}

// SetPolicy validates p and stores it (zero fields as their defaults) as the
// policy every issuing path uses, auditing the change with the previous
// policy. Storing the policy that is already stored changes nothing and
// writes no audit row; changed says which happened.
func (s *Service) SetPolicy(ctx context.Context, p Policy) (stored Policy, changed bool, err error) {
	actor := ActorFrom(ctx)
	if err := p.Validate(); err != nil {
		return Policy{}, false, s.auditRefusal(ctx, actor, "policy.set", MetaPolicy, refuse(err))
	}
	p = p.withDefaults()
	b, err := PolicyJSON(p)
	if err != nil {
		return Policy{}, false, err
	}
	err = s.store.Update(ctx, func(tx store.Tx) error {
		old, err := tx.Meta(ctx, MetaPolicy)
		if err != nil {
			return err
		}
		if old == string(b) {
			return nil
		}
		if err := tx.SetMeta(ctx, MetaPolicy, string(b)); err != nil {
			return err
		}
		changed = true
		details := map[string]any{"policy": json.RawMessage(b)}
		if old != "" && json.Valid([]byte(old)) {
			details["previous"] = json.RawMessage(old)
		}
		return s.audit(ctx, tx, actor, "policy.set", MetaPolicy, "ok", details)
	})
	if err != nil {
		return Policy{}, false, err
	}
	return p, changed, nil
}

// withPolicy returns a copy of a that signs under p (the cached authority
// keeps the policy it was loaded with).
func (a *Authority) withPolicy(p Policy) *Authority {
	c := *a
	c.policy = p.withDefaults()
	return &c
}
