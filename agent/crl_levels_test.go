package agent

import (
	"bytes"
	"crypto/x509"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/meshroot/meshroot/ca"
)

// TestNoteCRLPlanLevels: CAs without a CRL are an error (ca-crl.pem
// published) or a warning (not yet written), except while every one of
// them is an intermediate issued within newIntermediateGrace: then the
// same message says the agent waits for them, at info.
func TestNoteCRLPlanLevels(t *testing.T) {
	now := time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)
	root := &x509.Certificate{RawSubject: []byte("root"), RawIssuer: []byte("root"), NotBefore: now.Add(-ca.DefaultBackdate)}
	fresh := &x509.Certificate{RawSubject: []byte("new"), RawIssuer: []byte("root"), NotBefore: now.Add(-ca.DefaultBackdate - 30*time.Second)}
	old := &x509.Certificate{RawSubject: []byte("old"), RawIssuer: []byte("root"), NotBefore: now.Add(-ca.DefaultBackdate - 2*newIntermediateGrace)}
	for _, tc := range []struct {
		name      string
		cas       []*x509.Certificate
		published bool
		level     slog.Level
		msg       string
	}{
		{"new intermediate, published", []*x509.Certificate{fresh}, true, slog.LevelInfo, "ca-crl.pem is incomplete: waiting"},
		{"new intermediate, not written", []*x509.Certificate{fresh}, false, slog.LevelInfo, "not writing ca-crl.pem: waiting"},
		{"old intermediate, published", []*x509.Certificate{fresh, old}, true, slog.LevelError, "ca-crl.pem is incomplete: istiod"},
		{"old intermediate, not written", []*x509.Certificate{old}, false, slog.LevelWarn, "not writing ca-crl.pem: a CA"},
		{"a new root", []*x509.Certificate{root}, true, slog.LevelError, "ca-crl.pem is incomplete: istiod"},
	} {
		var buf bytes.Buffer
		a := &Agent{log: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))}
		var plan CRLPlan
		plan.setMissing(crlCAs(tc.cas))
		a.noteCRLPlan(plan, tc.published, nil, now)
		out := buf.String()
		if !strings.Contains(out, "level="+tc.level.String()) || !strings.Contains(out, tc.msg) {
			t.Errorf("%s: logged %q, want %s with %q", tc.name, out, tc.level, tc.msg)
		}
	}
}
