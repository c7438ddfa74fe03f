package postgres

import (
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/meshroot/meshroot/store"
	"github.com/meshroot/meshroot/store/postgres/pgtest"
	"github.com/meshroot/meshroot/store/sqlite"
)

// fillSource writes one of every kind of record, and more audit rows than
// one copy page, to a new SQLite store.
func fillSource(t *testing.T, path string) *sqlite.Store {
	t.Helper()
	src, err := sqlite.OpenForCopy(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	ctx := t.Context()
	at := time.Date(2031, 3, 4, 5, 6, 7, 123456789, time.UTC)
	err = src.Update(ctx, func(tx store.Tx) error {
		for i, id := range []string{"r1", "r2"} {
			if err := tx.CreateRoot(ctx, store.Root{ID: id, TrustDomain: "example.org", State: store.RootActive, KeyRef: "k" + id,
				ChainPEM: []byte("chain " + id), NotAfter: at.Add(time.Hour), CreatedAt: at, CrossPEM: []byte(strings.Repeat("x", i)), AddedSequence: uint64(i)}); err != nil {
				return err
			}
		}
		if err := tx.CreateCluster(ctx, store.Cluster{Name: "east", TrustDomain: "example.org", CreatedAt: at,
			Auth:      store.ClusterAuth{Issuer: "https://k8s", JWKS: []byte(`{"keys":[]}`), ServiceAccounts: []string{"istio-system/meshroot-agent"}},
			Status:    store.ClusterStatus{LastContact: at, BundleSequence: 3, IntermediateSerial: "0b"},
			PermitDNS: []string{"east.svc.example.org"}, PermitIPs: []string{"10.1.0.0/16"}}); err != nil {
			return err
		}
		if err := tx.CreateCluster(ctx, store.Cluster{Name: "west", TrustDomain: "example.org", CreatedAt: at.Add(time.Second)}); err != nil {
			return err
		}
		for i, serial := range []string{"0a", "0b"} {
			if _, err := tx.SupersedeIntermediates(ctx, "east", at.Add(time.Duration(i)*time.Minute)); err != nil {
				return err
			}
			if err := tx.CreateIntermediate(ctx, store.Intermediate{Serial: serial, Cluster: "east", RootID: "r1", NotBefore: at, NotAfter: at.Add(time.Hour),
				Status: store.IntermediateActive, CertPEM: []byte("cert " + serial), CreatedAt: at}); err != nil {
				return err
			}
		}
		for i, id := range []string{"t1", "t2"} {
			jt := store.JoinToken{ID: id, Cluster: "west", SecretHash: []byte{byte(i)}, CreatedAt: at, ExpiresAt: at.Add(time.Hour)}
			if i == 1 {
				jt.UsedAt = at
			}
			if err := tx.CreateJoinToken(ctx, jt); err != nil {
				return err
			}
		}
		if err := tx.PutCRL(ctx, store.CRL{Issuer: "root:r1", Number: 3, DER: []byte{1, 2}, ThisUpdate: at, NextUpdate: at.Add(time.Hour)}); err != nil {
			return err
		}
		if err := tx.RecordRevocation(ctx, store.Revocation{Serial: "0b", Reason: 1, RevokedAt: at}); err != nil {
			return err
		}
		if err := tx.SetQuarantine(ctx, store.Quarantine{Cluster: "west", Reason: "test", At: at, Actor: "cli:test"}); err != nil {
			return err
		}
		if err := tx.CreateAdminCert(ctx, store.AdminCert{Serial: "0a", Name: "alice", Role: "operator", IssuedAt: at, NotAfter: at.Add(8 * time.Hour), RevokedAt: at.Add(time.Hour)}); err != nil {
			return err
		}
		if err := tx.CreateFederationPeer(ctx, store.FederationPeer{TrustDomain: "partner.example", URL: "https://partner", Profile: store.ProfileHTTPSWeb,
			CreatedAt: at, Bundle: []byte(`{"keys":[]}`), Sequence: 9, BundleUpdatedAt: at, Status: store.FederationStatus{LastError: "x", NextAttempt: at}}); err != nil {
			return err
		}
		if _, err := tx.IncrementBundleSequence(ctx); err != nil {
			return err
		}
		if err := tx.SetMeta(ctx, "policy", `{"maxTTL":"24h"}`); err != nil {
			return err
		}
		for i := range auditPage*2 + 17 {
			if _, err := tx.AppendAudit(ctx, store.AuditEntry{Time: at.Add(time.Duration(i)), Actor: "test", Action: "test.fill", Target: fmt.Sprint(i), Result: "ok", Details: "{}"}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// allReader is every reader of package store, as both stores implement
// them.
type allReader interface {
	store.RootReader
	store.ClusterReader
	store.JoinTokenReader
	store.IntermediateReader
	store.FederationReader
	store.AuditReader
	store.MetaReader
	store.AdminCertReader
	store.RevocationReader
}

// readAll renders everything a reader returns, for comparison.
func readAll(t *testing.T, r allReader, tokens []string) string {
	t.Helper()
	ctx := t.Context()
	var b strings.Builder
	for _, f := range []func() (any, error){
		func() (any, error) { return r.ListRoots(ctx) },
		func() (any, error) { return r.ListClusters(ctx) },
		func() (any, error) { return r.ListIntermediates(ctx, "") },
		func() (any, error) { return r.ListFederationPeers(ctx) },
		func() (any, error) { return r.ListAdminCerts(ctx) },
		func() (any, error) { return r.ListCRLs(ctx) },
		func() (any, error) { return r.ListRevocations(ctx) },
		func() (any, error) { return r.ListQuarantines(ctx) },
		func() (any, error) { return r.BundleSequence(ctx) },
		func() (any, error) { return r.Meta(ctx, "policy") },
		func() (any, error) { return r.ListAudit(ctx, 0, auditPage*2+17) },
	} {
		v, err := f()
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%+v\n", v)
	}
	for _, id := range tokens {
		jt, err := r.GetJoinToken(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%+v\n", jt)
	}
	return b.String()
}

func TestCopyFromSQLite(t *testing.T) {
	src := fillSource(t, filepath.Join(t.TempDir(), "meshroot.db"))
	dst := openTest(t, pgtest.NewDatabase(t))
	ctx := t.Context()
	counts, err := dst.CopyFrom(ctx, src, store.AuditEntry{Actor: "cli:test", Action: "store.migrate", Target: "postgres://x", Result: "ok"})
	if err != nil {
		t.Fatalf("CopyFrom: %v", err)
	}
	want := map[string]int64{"roots": 2, "clusters": 2, "intermediates": 2, "join_tokens": 2, "federation_peers": 1, "admin_certs": 1, "crls": 1, "revocations": 1, "quarantines": 1, "meta": 4, "audit_log": auditPage*2 + 17}
	if fmt.Sprint(counts) != fmt.Sprint(want) {
		t.Errorf("CopyFrom counts = %v, want %v", counts, want)
	}
	tokens := []string{"t1", "t2"}
	if got, want := readAll(t, dst, tokens), readAll(t, src, tokens); got != want {
		t.Errorf("the copy differs from the source:\n got %s\nwant %s", got, want)
	}
	n, err := dst.VerifyAuditRows(ctx)
	if err != nil || n != want["audit_log"]+1 {
		t.Fatalf("VerifyAuditRows on the copy = %d, %v; want %d rows (the source's and store.migrate)", n, err, want["audit_log"]+1)
	}
	last, err := dst.ListAudit(ctx, want["audit_log"], 0)
	if err != nil || len(last) != 1 || last[0].Action != "store.migrate" || !strings.Contains(last[0].Details, `"audit_log":2017`) {
		t.Fatalf("last entry of the copy = %+v, %v; want the store.migrate entry with the counts", last, err)
	}
	// A second copy into the now non-empty database is refused and
	// changes nothing.
	if _, err := dst.CopyFrom(ctx, src, store.AuditEntry{Actor: "cli:test", Action: "store.migrate", Result: "ok"}); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("CopyFrom into a non-empty database = %v, want a refusal", err)
	}
	if n2, _ := dst.VerifyAuditRows(ctx); n2 != n {
		t.Errorf("refused copy changed the audit log: %d rows, was %d", n2, n)
	}
}

// A source whose audit chain is broken is not copied.
func TestCopyRefusesBrokenSource(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meshroot.db")
	src := fillSource(t, path)
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`DROP TRIGGER audit_log_no_update; UPDATE audit_log SET actor = 'forged' WHERE seq = 42`); err != nil {
		t.Fatal(err)
	}
	dst := openTest(t, pgtest.NewDatabase(t))
	var ce *store.ChainError
	if _, err := dst.CopyFrom(t.Context(), src, store.AuditEntry{}); !errors.As(err, &ce) || ce.Seq != 42 {
		t.Fatalf("CopyFrom a tampered source = %v, want a chain error at seq 42", err)
	}
	if counts, err := dst.TableCounts(t.Context()); err != nil || counts["audit_log"] != 0 || counts["roots"] != 0 {
		t.Fatalf("destination after a refused copy: %v, %v; want empty", counts, err)
	}
}
