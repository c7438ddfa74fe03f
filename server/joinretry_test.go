package server_test

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshroot/meshroot/agent"
	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/store"
)

// holdAfterJoinIssue is the real store with one twist: the first
// transaction that records a join token's issuance commits, and then its
// caller is held until the request's context ends, as on a loaded server
// that finishes an issuance after the agent stopped waiting.
type holdAfterJoinIssue struct {
	store.Updater
	held      atomic.Bool
	committed chan string // the serial, once committed
}

type spyJoinTokens struct {
	store.JoinTokenWriter
	serial *string
}

func (s spyJoinTokens) RecordJoinTokenIssue(ctx context.Context, id string, keyHash []byte, serial string) error {
	err := s.JoinTokenWriter.RecordJoinTokenIssue(ctx, id, keyHash, serial)
	if err == nil {
		*s.serial = serial
	}
	return err
}

func (h *holdAfterJoinIssue) Update(ctx context.Context, fn func(tx store.Tx) error) error {
	var serial string
	err := h.Updater.Update(ctx, func(tx store.Tx) error {
		serial = ""
		tx.JoinTokenWriter = spyJoinTokens{tx.JoinTokenWriter, &serial}
		return fn(tx)
	})
	if err == nil && serial != "" && h.held.CompareAndSwap(false, true) {
		h.committed <- serial
		<-ctx.Done()
	}
	return err
}

// TestAgentJoinRetryAfterLostAnswer: the first join's answer is lost (the
// agent's deadline passes after the server committed the issuance and
// spent the token); the agent's next attempt, with the same token and
// key, gets the intermediate issued then, and nothing else is issued.
func TestAgentJoinRetryAfterLostAnswer(t *testing.T) {
	hold := &holdAfterJoinIssue{committed: make(chan string, 1)}
	ts := startServerWrapped(t, func(st store.Store) store.Store {
		hold.Updater = st.Updater
		st.Updater = hold
		return st
	})
	roots := ts.bootstrap(t)
	tok := ts.token(t, "east")

	kube, err := agent.NewFolder(t.TempDir(), agent.DefaultSecret)
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(agent.Config{
		Server: ts.srv.Addr(), ServerCA: ca.EncodeCerts(roots), Cluster: "east", JoinToken: tok, Kube: kube,
		Restart: agent.RestartNever, Log: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })

	// First attempt: its deadline passes while the server holds the
	// committed answer.
	first, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	_, err = a.Reconcile(first)
	cancel()
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("first join: %v, want DeadlineExceeded (the answer lost)", err)
	}
	var serial string
	select {
	case serial = <-hold.committed:
	default:
		t.Fatal("the server did not commit the first issuance")
	}
	tokID := strings.Split(tok, ".")[1] // mrt.<id>.<secret>
	if jt, err := ts.st.GetJoinToken(t.Context(), tokID); err != nil || jt.UsedAt.IsZero() || jt.IssuedSerial != serial {
		t.Fatalf("join token after the lost answer = %+v, %v; want spent, serial %s", jt, err, serial)
	}

	// The agent's next attempt.
	if _, err := a.Reconcile(t.Context()); err != nil {
		t.Fatalf("retried join: %v", err)
	}
	cur, err := agent.ReadSecret(t.Context(), kube, agent.DefaultSecret)
	if err != nil || cur.CACerts == nil {
		t.Fatalf("cacerts after the retry: %+v, %v", cur, err)
	}
	if got := ca.SerialHex(cur.CACerts.Cert.SerialNumber); got != serial {
		t.Errorf("cacerts holds serial %s, want %s (issued for the lost answer)", got, serial)
	}
	if err := cur.CACerts.Verify(time.Now()); err != nil {
		t.Errorf("cacerts (the key kept across attempts with the stored certificate) does not verify: %v", err)
	}
	list, err := ts.st.ListIntermediates(t.Context(), "east")
	if err != nil || len(list) != 1 {
		t.Errorf("intermediates of east: %d (%v), want the one", len(list), err)
	}
}
