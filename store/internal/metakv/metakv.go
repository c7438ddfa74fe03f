// Package metakv holds what the stores keep in their meta table for
// themselves (the bundle sequence and the audit head) and the rules for it,
// written once over a two-method key-value view of a store's meta table, so
// SQLite and PostgreSQL read and write them the same way.
package metakv

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/meshroot/meshroot/store"
)

// Keys the stores keep for themselves. Callers cannot set keys with
// InternalPrefix (CheckSetKey).
const (
	InternalPrefix    = "store."
	KeyBundleSequence = InternalPrefix + "bundle_sequence"
	KeyAuditHeadSeq   = InternalPrefix + "audit_head_seq"
	KeyAuditHeadHash  = InternalPrefix + "audit_head_hash"
)

// KV is a store's meta table, in a transaction or not: Get returns "" and
// no error for an unset key.
type KV interface {
	Get(ctx context.Context, key string) (string, error)
	Set(ctx context.Context, key, value string) error
}

// CheckSetKey refuses an empty key and the keys reserved for the store.
func CheckSetKey(key string) error {
	if key == "" {
		return errors.New("set meta: empty key")
	}
	if strings.HasPrefix(key, InternalPrefix) {
		return fmt.Errorf("set meta %q: keys starting with %q are reserved for the store: choose another key", key, InternalPrefix)
	}
	return nil
}

// BundleSequence reads the bundle sequence (0 before the first change).
func BundleSequence(ctx context.Context, kv KV) (uint64, error) {
	v, err := kv.Get(ctx, KeyBundleSequence)
	if err != nil || v == "" {
		return 0, err
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stored bundle sequence %q is not a number: %w", v, err)
	}
	return n, nil
}

// IncrementBundleSequence adds one to the bundle sequence and returns it.
func IncrementBundleSequence(ctx context.Context, kv KV) (uint64, error) {
	n, err := BundleSequence(ctx, kv)
	if err != nil {
		return 0, fmt.Errorf("increment bundle sequence: %w", err)
	}
	n++
	if err := kv.Set(ctx, KeyBundleSequence, strconv.FormatUint(n, 10)); err != nil {
		return 0, fmt.Errorf("increment bundle sequence: %w", err)
	}
	return n, nil
}

// AuditHead reads the audit head (zero Seq and empty Hash before the
// first entry).
func AuditHead(ctx context.Context, kv KV) (*store.AuditHead, error) {
	seq, err := kv.Get(ctx, KeyAuditHeadSeq)
	if err != nil {
		return nil, err
	}
	hash, err := kv.Get(ctx, KeyAuditHeadHash)
	if err != nil {
		return nil, err
	}
	head := &store.AuditHead{Hash: hash}
	if seq != "" {
		if head.Seq, err = strconv.ParseInt(seq, 10, 64); err != nil {
			return nil, fmt.Errorf("stored audit head seq %q is not a number: %w", seq, err)
		}
	}
	return head, nil
}
