package ca_test

import (
	"strings"
	"testing"

	"github.com/meshroot/meshroot/ca"
)

func TestBoundAuditText(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"east", "east"},
		{`cluster name "x" is invalid`, `cluster name "x" is invalid`},
		{"a\nb\x00c\\d\u200be", `a\nb\x00c\\d\u200be`},
		{"bad\xffutf8", `bad\xffutf8`},
		{strings.Repeat("a", 100), strings.Repeat("a", 48) + "...[100 bytes]"},
		// A cut never leaves half an escape.
		{strings.Repeat("a", 46) + "\n" + strings.Repeat("a", 60), strings.Repeat("a", 46) + "...[107 bytes]"},
	} {
		got := ca.BoundAuditText(tc.in, 62)
		if got != tc.want {
			t.Errorf("BoundAuditText(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if len(got) > 62 {
			t.Errorf("BoundAuditText(%q) is %d bytes, over 62", tc.in, len(got))
		}
	}
	big := ca.BoundAuditText(strings.Repeat("\x01", 64<<10), ca.MaxAuditReason)
	if len(big) > ca.MaxAuditReason || !strings.HasSuffix(big, "...[65536 bytes]") {
		t.Errorf("64 KiB of control bytes: %d bytes, ends %q", len(big), big[len(big)-20:])
	}
}

// TestAuditResultIsBounded: a refusal naming a 64 KiB target with a reason
// quoting it writes a row of bounded size. Before the fix, the row held
// the target twice, raw.
func TestAuditResultIsBounded(t *testing.T) {
	svc, st := newService(t)
	ctx := t.Context()
	name := strings.Repeat("A", 64<<10)
	if err := svc.AuditResult(ctx, "requester:unauthenticated", "intermediate.issue", name, "denied", "cluster name "+name+" is invalid"); err != nil {
		t.Fatal(err)
	}
	entries, err := st.ListAudit(ctx, 0, 0)
	if err != nil || len(entries) == 0 {
		t.Fatalf("ListAudit: %d entries, %v", len(entries), err)
	}
	e := entries[len(entries)-1]
	if len(e.Target) > ca.MaxAuditTarget || len(e.Details) > ca.MaxAuditReason+64 {
		t.Errorf("row holds a %d byte target and %d bytes of details", len(e.Target), len(e.Details))
	}
	if !strings.Contains(e.Target, "[65536 bytes]") {
		t.Errorf("target %q does not say how long the name was", e.Target)
	}
}
