package ca_test

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/store"
)

// spendToken stores join token id for cluster east, spent with csr's key,
// as server/authn does before the issuance.
func spendToken(t *testing.T, st store.Store, id string, csr *x509.CertificateRequest) {
	t.Helper()
	now := time.Now()
	h := sha256.Sum256([]byte(id))
	err := st.Update(context.Background(), func(tx store.Tx) error {
		if err := tx.CreateJoinToken(context.Background(), store.JoinToken{ID: id, Cluster: "east", SecretHash: h[:], CreatedAt: now, ExpiresAt: now.Add(time.Hour)}); err != nil {
			return err
		}
		return tx.UseJoinToken(context.Background(), id, now, ca.KeyHash(csr))
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestJoinRetryGetsTheSameIntermediate: the request that spent a join
// token is answered again, with the intermediate issued for it, when its
// caller retries with the same key; a request with another key is refused
// and audited.
func TestJoinRetryGetsTheSameIntermediate(t *testing.T) {
	ctx := ca.WithActor(context.Background(), actor)
	svc, st := newServiceWithCluster(t, "east")
	csr, _ := csrFor(t)
	spendToken(t, st, "0123456789abcdef", csr)

	first, err := svc.IssueIntermediate(ctx, ca.IssueRequest{Cluster: "east", CSRData: csr.Raw, JoinToken: "0123456789abcdef"})
	if err != nil {
		t.Fatalf("first issuance: %v", err)
	}
	serial := ca.SerialHex(first.Cert.SerialNumber)
	if tok, err := st.GetJoinToken(ctx, "0123456789abcdef"); err != nil || tok.IssuedSerial != serial {
		t.Fatalf("token after issuance = %+v, %v; want IssuedSerial %s", tok, err, serial)
	}

	// The retry, with the same CSR.
	again, err := svc.IssueIntermediate(ctx, ca.IssueRequest{Cluster: "east", CSRData: csr.Raw, JoinToken: "0123456789abcdef"})
	if err != nil {
		t.Fatalf("retry: %v", err)
	}
	if !again.Cert.Equal(first.Cert) || ca.SerialHex(again.Cert.SerialNumber) != serial {
		t.Errorf("retry got serial %s, want the same certificate (serial %s)", ca.SerialHex(again.Cert.SerialNumber), serial)
	}
	if len(again.Chain) != len(first.Chain) || !again.Chain[1].Equal(first.Chain[1]) || again.RootID != first.RootID {
		t.Errorf("retry chain/root = %d/%s, want %d/%s", len(again.Chain), again.RootID, len(first.Chain), first.RootID)
	}
	list, err := svc.ListIntermediates(ctx, "east")
	if err != nil || len(list) != 1 || list[0].Status != store.IntermediateActive {
		t.Fatalf("intermediates after the retry = %+v, %v; want the one, active", list, err)
	}

	// Another key with the spent token: refused, audited, nothing issued.
	otherCSR, _ := csrFor(t)
	_, err = svc.IssueIntermediate(ctx, ca.IssueRequest{Cluster: "east", CSRData: otherCSR.Raw, JoinToken: "0123456789abcdef"})
	var pe *ca.PolicyError
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), "spent with another key") {
		t.Fatalf("another key: %v, want a refusal naming the other key", err)
	}
	if list, _ := svc.ListIntermediates(ctx, "east"); len(list) != 1 {
		t.Errorf("%d intermediates after the refused key, want 1", len(list))
	}

	entries, err := st.ListAudit(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var ok, retried, denied int
	for _, e := range entries {
		if e.Action != "intermediate.issue" {
			continue
		}
		switch {
		case e.Result == "ok" && strings.Contains(e.Details, `"join_retry":true`):
			retried++
		case e.Result == "ok":
			ok++
		case e.Result == "denied" && strings.Contains(e.Details, "spent with another key"):
			denied++
		}
	}
	if ok != 1 || retried != 1 || denied != 1 {
		t.Errorf("audit: %d issued, %d retries answered, %d refused; want 1 each", ok, retried, denied)
	}
	if err := st.VerifyAudit(ctx); err != nil {
		t.Errorf("audit chain: %v", err)
	}

	// After the retry window (the token's expiry, an hour; the grace after
	// use is shorter): refused, even with the right key.
	svc.SetClock(func() time.Time { return time.Now().Add(time.Hour + time.Minute) })
	_, err = svc.IssueIntermediate(ctx, ca.IssueRequest{Cluster: "east", CSRData: csr.Raw, JoinToken: "0123456789abcdef"})
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), "retry window closed") {
		t.Errorf("retry after the window: %v, want a refusal", err)
	}
	svc.SetClock(time.Now)

	// The intermediate is superseded (a renewal): the token's answer is
	// gone, and a retry is refused rather than handed a dead certificate.
	if _, err := svc.IssueIntermediate(ctx, ca.IssueRequest{Cluster: "east", CSR: csr}); err != nil {
		t.Fatal(err)
	}
	_, err = svc.IssueIntermediate(ctx, ca.IssueRequest{Cluster: "east", CSRData: csr.Raw, JoinToken: "0123456789abcdef"})
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), "superseded") {
		t.Errorf("retry after supersession: %v, want a refusal", err)
	}
}

// TestJoinRetryConcurrent: of concurrent requests with the token and its
// key, every one gets the same intermediate and only one is recorded.
func TestJoinRetryConcurrent(t *testing.T) {
	ctx := ca.WithActor(context.Background(), actor)
	svc, st := newServiceWithCluster(t, "east")
	csr, _ := csrFor(t)
	spendToken(t, st, "fedcba9876543210", csr)
	const n = 4
	serials := make([]string, n)
	errs := make([]error, n)
	done := make(chan int)
	for i := range n {
		go func() {
			out, err := svc.IssueIntermediate(ctx, ca.IssueRequest{Cluster: "east", CSRData: csr.Raw, JoinToken: "fedcba9876543210"})
			if err == nil {
				serials[i] = ca.SerialHex(out.Cert.SerialNumber)
			}
			errs[i] = err
			done <- i
		}()
	}
	for range n {
		<-done
	}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("request %d: %v", i, errs[i])
		}
		if serials[i] != serials[0] {
			t.Errorf("request %d got serial %s, request 0 %s", i, serials[i], serials[0])
		}
	}
	if list, err := svc.ListIntermediates(ctx, "east"); err != nil || len(list) != 1 {
		t.Errorf("%d intermediates recorded (%v), want 1", len(list), err)
	}
}
