package ca_test

import (
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/store"
)

// storeLookup finds audit entries in st.
func storeLookup(st store.AuditReader) func(int64) (store.AuditEntry, bool, error) {
	return func(seq int64) (store.AuditEntry, bool, error) {
		es, err := st.ListAudit(context.Background(), seq-1, 1)
		if err != nil || len(es) == 0 || es[0].Seq != seq {
			return store.AuditEntry{}, false, err
		}
		return es[0], true, nil
	}
}

func TestAuditAnchor(t *testing.T) {
	ctx := context.Background()
	svc, st := newService(t)
	if _, err := svc.AnchorAudit(ca.WithActor(ctx, actor)); err == nil || !strings.Contains(err.Error(), "root") {
		t.Fatalf("anchor before root init: %v, want a refusal", err)
	}
	if _, err := svc.InitRoot(ca.WithActor(ctx, actor), ca.InitRootRequest{TrustDomain: "example.org"}); err != nil {
		t.Fatal(err)
	}
	raw, err := svc.AnchorAudit(ca.WithActor(ctx, actor))
	if err != nil {
		t.Fatal(err)
	}
	a, err := ca.ParseAuditAnchor(raw)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := st.ListAudit(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	head := entries[len(entries)-1]
	if head.Action != "audit.anchor" || a.Seq != head.Seq || a.Hash != head.Hash || a.TrustDomain != "example.org" {
		t.Fatalf("anchor names %d %s, head is %d %s (%s)", a.Seq, a.Hash, head.Seq, head.Hash, head.Action)
	}
	tb, err := svc.TrustBundle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.VerifyAuditAnchor(a, tb.Roots, storeLookup(st)); err != nil {
		t.Fatalf("fresh anchor: %v", err)
	}

	var ae *ca.AnchorError
	// The log lost the anchored entry (rolled back).
	err = ca.VerifyAuditAnchor(a, tb.Roots, func(int64) (store.AuditEntry, bool, error) { return store.AuditEntry{}, false, nil })
	if !errors.As(err, &ae) || !strings.Contains(err.Error(), "audit log rolled back") {
		t.Errorf("log without the anchored entry: %v, want an AnchorError naming the rollback", err)
	}
	// The entry is there with another hash (rewritten).
	err = ca.VerifyAuditAnchor(a, tb.Roots, func(int64) (store.AuditEntry, bool, error) {
		return store.AuditEntry{Seq: a.Seq, Hash: "00"}, true, nil
	})
	if !errors.As(err, &ae) || !strings.Contains(err.Error(), "audit log rewritten") {
		t.Errorf("rewritten entry: %v, want an AnchorError", err)
	}
	// An edited statement no longer matches its signature.
	blk, rest := pem.Decode(raw)
	blk.Bytes = bytes.Replace(blk.Bytes, []byte(fmt.Sprintf("seq: %d\n", a.Seq)), []byte(fmt.Sprintf("seq: %d\n", a.Seq-1)), 1)
	edited, err := ca.ParseAuditAnchor(append(pem.EncodeToMemory(blk), rest...))
	if err != nil || edited.Seq != a.Seq-1 {
		t.Fatalf("edited anchor: seq %d, %v", edited.Seq, err)
	}
	if err := ca.VerifyAuditAnchor(edited, tb.Roots, storeLookup(st)); !errors.As(err, &ae) || !strings.Contains(err.Error(), "the signature does not verify") {
		t.Errorf("edited anchor: %v, want an AnchorError for its signature", err)
	}
	// A root outside the bundle cannot vouch for an anchor.
	other, _ := newService(t)
	if _, err := other.InitRoot(ca.WithActor(ctx, actor), ca.InitRootRequest{TrustDomain: "example.org"}); err != nil {
		t.Fatal(err)
	}
	otb, err := other.TrustBundle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.VerifyAuditAnchor(a, otb.Roots, storeLookup(st)); err == nil || !strings.Contains(err.Error(), "not in the trust bundle") {
		t.Errorf("anchor under a root not in the bundle: %v", err)
	}
}
