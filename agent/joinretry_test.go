package agent

import (
	"bytes"
	"context"
	"testing"
	"time"
)

// TestJoinRetryKeepsKey: a join whose answer was lost is retried with the
// same key (the server answers only that key with what it issued); once an
// intermediate is received, the next issuance has a new key.
func TestJoinRetryKeepsKey(t *testing.T) {
	stub, addr, rootPEM := startStub(t, time.Hour, false)
	a, _ := newTestAgent(t, addr, rootPEM)
	stub.signFail.Store(2)
	ctx := context.Background()
	for i := range 2 {
		if _, _, err := a.issue(ctx, &Current{}, time.Now()); err == nil || isPermanent(err) {
			t.Fatalf("attempt %d: %v, want a transient failure", i, err)
		}
	}
	issued, key, err := a.issue(ctx, &Current{}, time.Now())
	if err != nil {
		t.Fatalf("third attempt: %v", err)
	}
	a.creds.used = false // a second token, say: what matters is the key
	if _, _, err := a.issue(ctx, &Current{}, time.Now()); err != nil {
		t.Fatalf("fourth attempt: %v", err)
	}
	k := stub.signKeys
	if len(k) != 4 || !bytes.Equal(k[0], k[1]) || !bytes.Equal(k[1], k[2]) {
		t.Fatalf("CSR keys of the attempts: %d, first three equal %v %v; want 4, the first three one key", len(k), len(k) > 1 && bytes.Equal(k[0], k[1]), len(k) > 2 && bytes.Equal(k[1], k[2]))
	}
	if !bytes.Equal(issued.Cert.RawSubjectPublicKeyInfo, k[0]) || key == nil {
		t.Error("the intermediate received is not for the key kept across the attempts")
	}
	if bytes.Equal(k[3], k[2]) {
		t.Error("the issuance after a received intermediate reused the old key")
	}
}
