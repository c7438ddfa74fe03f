package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/meshroot/meshroot/store"
	"github.com/meshroot/meshroot/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := Open(t.Context(), filepath.Join(t.TempDir(), "meshroot.db"))
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

// openTest opens the store at path and closes it at the end of the test.
func openTest(t *testing.T, path string) *Store {
	t.Helper()
	s, err := open(t.Context(), path)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// rawDB opens path directly, bypassing the store, as someone tampering with
// the file would.
func rawDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open(driverName, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// appendN appends n audit entries to s, one transaction each.
func appendN(t *testing.T, s *Store, n int) {
	t.Helper()
	for i := range n {
		err := s.Update(t.Context(), func(tx store.Tx) error {
			_, err := tx.AppendAudit(t.Context(), store.AuditEntry{
				Time: time.Now(), Actor: "test", Action: "test.append", Target: fmt.Sprint(i), Result: "ok", Details: "{}",
			})
			return err
		})
		if err != nil {
			t.Fatalf("AppendAudit %d: %v", i, err)
		}
	}
}

// rehashSeq3 forges seq 3 the way a careful attacker would: edit it and
// recompute its hash. The chain then breaks at seq 4, whose PrevHash still
// holds the original hash.
func rehashSeq3(t *testing.T, db *sql.DB) {
	e, err := scanAudit(db.QueryRow(`SELECT ` + auditColumns + ` FROM audit_log WHERE seq = 3`))
	if err != nil {
		t.Fatal(err)
	}
	e.Actor = "someone-else"
	if _, err := db.Exec(`UPDATE audit_log SET actor = ?, hash = ? WHERE seq = 3`, e.Actor, store.ChainHash(e.PrevHash, e)); err != nil {
		t.Fatal(err)
	}
}

// execTamper returns a tamper function running query.
func execTamper(query string) func(t *testing.T, db *sql.DB) {
	return func(t *testing.T, db *sql.DB) {
		if _, err := db.Exec(query); err != nil {
			t.Fatalf("%s: %v", query, err)
		}
	}
}

func TestTamperDetection(t *testing.T) {
	for _, tc := range []struct {
		name       string
		tamper     func(t *testing.T, db *sql.DB)
		wantSeq    int64
		wantReason string
	}{
		{"EditedRow", execTamper(`UPDATE audit_log SET details = '{"forged":true}' WHERE seq = 7`), 7, "row was edited (hash mismatch)"},
		{"DeletedMiddleRow", execTamper(`DELETE FROM audit_log WHERE seq = 5`), 5, "row(s) missing before seq 6"},
		{"DeletedLastRow", execTamper(`DELETE FROM audit_log WHERE seq = 10`), 10, "log ends at seq 9 but head records seq 10: rows were deleted"},
		{"EditedRowAndRehashed", rehashSeq3, 4, "previous hash does not match the hash of seq 3"},
		{"HeadRewound", execTamper(`UPDATE meta SET value = '8' WHERE key = '` + keyAuditHeadSeq + `'`), 9, "log ends at seq 10 but head records seq 8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "meshroot.db")
			s := openTest(t, path)
			appendN(t, s, 10)
			if err := s.VerifyAudit(t.Context()); err != nil {
				t.Fatalf("VerifyAudit before tampering: %v", err)
			}

			db := rawDB(t, path)
			// The triggers stop accidental edits...
			for _, q := range []string{`UPDATE audit_log SET details = '' WHERE seq = 1`, `DELETE FROM audit_log WHERE seq = 1`} {
				if _, err := db.Exec(q); err == nil || !strings.Contains(err.Error(), "append-only") {
					t.Fatalf("%s with the triggers in place: got %v, want an append-only error", q, err)
				}
			}
			// ...but not someone who drops them.
			for _, q := range []string{`DROP TRIGGER audit_log_no_update`, `DROP TRIGGER audit_log_no_delete`} {
				if _, err := db.Exec(q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			tc.tamper(t, db)

			err := s.VerifyAudit(t.Context())
			var ce *store.ChainError
			if !errors.As(err, &ce) {
				t.Fatalf("VerifyAudit after tampering: got %v, want a *store.ChainError", err)
			}
			if ce.Seq != tc.wantSeq || !strings.Contains(ce.Reason, tc.wantReason) {
				t.Errorf("VerifyAudit: got seq %d %q, want seq %d containing %q", ce.Seq, ce.Reason, tc.wantSeq, tc.wantReason)
			}
			if want := fmt.Sprintf("audit log broken at seq %d: ", tc.wantSeq); !strings.HasPrefix(err.Error(), want) {
				t.Errorf("error %q does not start with %q", err, want)
			}
			t.Logf("VerifyAudit: %v", err)

			// Appending more does not paper over the damage.
			if tc.name == "HeadRewound" {
				return // the next append collides with seq 9; see TestAppendAfterHeadRewound
			}
			appendN(t, s, 2)
			if err := s.VerifyAudit(t.Context()); !errors.As(err, &ce) || ce.Seq != tc.wantSeq {
				t.Errorf("VerifyAudit after further appends: %v, want the break at seq %d still reported", err, tc.wantSeq)
			}
		})
	}
}

// TestAppendAfterHeadRewound checks that AppendAudit refuses to overwrite
// rows when the head was moved back.
func TestAppendAfterHeadRewound(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meshroot.db")
	s := openTest(t, path)
	appendN(t, s, 3)
	execTamper(`UPDATE meta SET value = '1' WHERE key = '`+keyAuditHeadSeq+`'`)(t, rawDB(t, path))
	err := s.Update(t.Context(), func(tx store.Tx) error {
		_, err := tx.AppendAudit(t.Context(), store.AuditEntry{Actor: "test", Action: "x", Result: "ok"})
		return err
	})
	if !errors.Is(err, store.ErrAlreadyExists) || !strings.Contains(err.Error(), "seq 2") {
		t.Errorf("AppendAudit after the head was rewound: %v, want ErrAlreadyExists naming seq 2", err)
	}
}

func TestAuditHead(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "meshroot.db"))
	head, err := s.AuditHead(t.Context())
	if err != nil || *head != (store.AuditHead{}) {
		t.Fatalf("AuditHead of a new store = %+v, %v; want zero", head, err)
	}
	appendN(t, s, 3)
	list, err := s.ListAudit(t.Context(), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	head, err = s.AuditHead(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if head.Seq != 3 || head.Hash != list[2].Hash {
		t.Errorf("AuditHead = %+v, want seq 3 hash %s", head, list[2].Hash)
	}
}

func TestFileModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state", "meshroot")
	path := filepath.Join(dir, "meshroot.db")
	s := openTest(t, path)
	appendN(t, s, 1) // makes sure -wal and -shm exist

	wantMode(t, dir, fs.ModeDir|0o700)
	wantMode(t, path, 0o600)
	// WAL mode: both exist while the store is open.
	for _, suffix := range []string{"-wal", "-shm"} {
		wantMode(t, path+suffix, 0o600)
	}
}

func TestOpenRestrictsExistingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meshroot.db")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	openTest(t, path)
	wantMode(t, path, 0o600)
}

func wantMode(t *testing.T, path string, want fs.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode() & (fs.ModeDir | fs.ModePerm); got != want {
		t.Errorf("%s: mode %v, want %v", path, got, want)
	}
}

// appliedMigrations returns schema_migrations as "version@applied_at" lines.
func appliedMigrations(t *testing.T, q querier) []string {
	t.Helper()
	rows, err := q.QueryContext(t.Context(), `SELECT version, applied_at FROM schema_migrations ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var (
			v  int
			at string
		)
		if err := rows.Scan(&v, &at); err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%d@%s", v, at))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestReopenKeepsStateAndSchema(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "meshroot.db")
	s, err := open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	created := time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC)
	err = s.Update(ctx, func(tx store.Tx) error {
		if err := tx.CreateRoot(ctx, store.Root{ID: "r1", TrustDomain: "example.org", State: store.RootActive, KeyRef: "k", ChainPEM: []byte("pem"), NotAfter: created.Add(time.Hour), CreatedAt: created}); err != nil {
			return err
		}
		if err := tx.CreateCluster(ctx, store.Cluster{Name: "east", TrustDomain: "example.org", CreatedAt: created}); err != nil {
			return err
		}
		if _, err := tx.IncrementBundleSequence(ctx); err != nil {
			return err
		}
		return tx.SetMeta(ctx, "k", "v")
	})
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, s, 3)
	before := appliedMigrations(t, s.r)
	if len(before) != len(migrations) {
		t.Fatalf("schema_migrations has %d rows, want %d", len(before), len(migrations))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openTest(t, path)
	if after := appliedMigrations(t, s.r); strings.Join(after, " ") != strings.Join(before, " ") {
		t.Errorf("schema_migrations changed on reopen:\nbefore %v\n after %v", before, after)
	}
	root, err := s.GetRoot(ctx, "r1")
	if err != nil || !root.CreatedAt.Equal(created) || string(root.ChainPEM) != "pem" {
		t.Errorf("GetRoot after reopen = %+v, %v", root, err)
	}
	if _, err := s.GetCluster(ctx, "east"); err != nil {
		t.Errorf("GetCluster after reopen: %v", err)
	}
	if n, err := s.BundleSequence(ctx); err != nil || n != 1 {
		t.Errorf("BundleSequence after reopen = %d, %v; want 1", n, err)
	}
	if v, err := s.Meta(ctx, "k"); err != nil || v != "v" {
		t.Errorf("Meta after reopen = %q, %v; want v", v, err)
	}
	if err := s.VerifyAudit(ctx); err != nil {
		t.Errorf("VerifyAudit after reopen: %v", err)
	}
	appendN(t, s, 1)
	if list, err := s.ListAudit(ctx, 3, 0); err != nil || len(list) != 1 || list[0].Seq != 4 {
		t.Errorf("append after reopen = %+v, %v; want seq 4", list, err)
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meshroot.db")
	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	db := rawDB(t, path)
	if _, err := db.Exec(`INSERT INTO schema_migrations (version, applied_at) VALUES (999, 'later')`); err != nil {
		t.Fatal(err)
	}
	db.Close()

	s, err = Open(t.Context(), path)
	if err == nil {
		s.Close()
		t.Fatal("Open succeeded on a database with schema version 999")
	}
	want := fmt.Sprintf("database schema version 999 is newer than this meshroot supports (%d): upgrade meshroot", len(migrations))
	if !strings.Contains(err.Error(), want) {
		t.Errorf("Open error = %q, want it to contain %q", err, want)
	}
}

func TestCreateIntermediateUnknownRoot(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "meshroot.db"))
	err := s.Update(t.Context(), func(tx store.Tx) error {
		return tx.CreateIntermediate(t.Context(), store.Intermediate{Serial: "0a", Cluster: "east", RootID: "nope", Status: store.IntermediateActive})
	})
	if !errors.Is(err, store.ErrNotFound) || !strings.Contains(err.Error(), `root "nope"`) {
		t.Errorf("CreateIntermediate with an unknown root: %v, want ErrNotFound naming the root", err)
	}
}

func TestSetMetaReservedKey(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "meshroot.db"))
	err := s.Update(t.Context(), func(tx store.Tx) error { return tx.SetMeta(t.Context(), keyAuditHeadSeq, "0") })
	if err == nil || !strings.Contains(err.Error(), "reserved") {
		t.Errorf("SetMeta(%q) = %v, want a reserved-key error", keyAuditHeadSeq, err)
	}
}

func TestOpenEmptyPath(t *testing.T) {
	if _, err := Open(t.Context(), ""); err == nil {
		t.Error("Open(\"\") succeeded")
	}
}

// TestReadsDoNotWaitForWrites checks the concurrency design: a read through
// the Store completes while an Update holds the writer connection.
func TestReadsDoNotWaitForWrites(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "meshroot.db"))
	inside, release := make(chan struct{}), make(chan struct{})
	updateDone := make(chan error, 1)
	go func() {
		updateDone <- s.Update(t.Context(), func(tx store.Tx) error {
			if _, err := tx.IncrementBundleSequence(t.Context()); err != nil {
				return err
			}
			close(inside)
			<-release
			return nil
		})
	}()
	<-inside
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	n, err := s.BundleSequence(ctx)
	cancel()
	close(release)
	if err != nil || n != 0 {
		t.Errorf("BundleSequence during an Update = %d, %v; want 0 (the last committed value)", n, err)
	}
	if err := <-updateDone; err != nil {
		t.Fatal(err)
	}
	if n, err := s.BundleSequence(t.Context()); err != nil || n != 1 {
		t.Errorf("BundleSequence after the Update = %d, %v; want 1", n, err)
	}
}

// TestUpgradeFromVersion2 checks that Open upgrades a database created at
// schema version 2 (before cluster auth, status and join tokens), keeping
// its clusters and giving them zero values for the new fields.
func TestUpgradeFromVersion2(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "meshroot.db")
	abs, err := prepareFiles(path)
	if err != nil {
		t.Fatal(err)
	}
	db, err := openPool(ctx, abs, writerParams, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := migrate(ctx, db, migrations[:2]); err != nil {
		t.Fatalf("migrate to version 2: %v", err)
	}
	created := time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC)
	for _, name := range []string{"east", "west"} {
		if _, err := db.ExecContext(ctx, `INSERT INTO clusters (name, trust_domain, created_at) VALUES (?, ?, ?)`,
			name, name+".example.org", formatTime(created)); err != nil {
			t.Fatal(err)
		}
	}
	before := appliedMigrations(t, db)
	if len(before) != 2 {
		t.Fatalf("schema_migrations at version 2 has %d rows, want 2", len(before))
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s := openTest(t, path)
	after := appliedMigrations(t, s.r)
	if len(after) != len(migrations) || len(migrations) < 3 || strings.Join(after[:2], " ") != strings.Join(before, " ") {
		t.Fatalf("schema_migrations after the upgrade = %v, want %v followed by versions 3..%d", after, before, len(migrations))
	}
	list, err := s.ListClusters(ctx)
	if err != nil {
		t.Fatalf("ListClusters after the upgrade: %v", err)
	}
	if len(list) != 2 {
		t.Fatalf("ListClusters after the upgrade returned %d clusters, want 2", len(list))
	}
	for i, name := range []string{"east", "west"} {
		c := list[i]
		if c.Name != name || c.TrustDomain != name+".example.org" || !c.CreatedAt.Equal(created) {
			t.Errorf("cluster %d after the upgrade = %q %q %v, want %q kept", i, c.Name, c.TrustDomain, c.CreatedAt, name)
		}
		if c.Auth.Issuer != "" || len(c.Auth.JWKS) != 0 || c.Auth.OIDCDiscovery || len(c.Auth.Kubeconfig) != 0 ||
			c.Auth.ServiceAccounts != nil || !reflect.DeepEqual(c.Status, store.ClusterStatus{}) {
			t.Errorf("cluster %q after the upgrade: Auth %+v Status %+v, want zero values", name, c.Auth, c.Status)
		}
	}

	// The new columns and table work on the upgraded database.
	err = s.Update(ctx, func(tx store.Tx) error {
		if err := tx.UpdateClusterStatus(ctx, "east", store.ClusterStatus{LastContact: created, BundleSequence: 7}); err != nil {
			return err
		}
		if err := tx.CreateJoinToken(ctx, store.JoinToken{ID: "t1", Cluster: "east", SecretHash: []byte{1}, CreatedAt: created, ExpiresAt: created.Add(time.Hour)}); err != nil {
			return err
		}
		return tx.UseJoinToken(ctx, "t1", created.Add(time.Minute), nil)
	})
	if err != nil {
		t.Fatalf("writing new fields after the upgrade: %v", err)
	}
	if c, err := s.GetCluster(ctx, "east"); err != nil || c.Status.BundleSequence != 7 || !c.Status.LastContact.Equal(created) {
		t.Errorf("GetCluster after UpdateClusterStatus = %+v, %v", c.Status, err)
	}
}

// TestZeroTimesStoredEmpty checks the column format: zero times of the
// columns added in schema version 3 are stored as "".
func TestZeroTimesStoredEmpty(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "meshroot.db")
	s := openTest(t, path)
	err := s.Update(ctx, func(tx store.Tx) error {
		if err := tx.CreateCluster(ctx, store.Cluster{Name: "east", TrustDomain: "example.org", CreatedAt: time.Now()}); err != nil {
			return err
		}
		return tx.CreateJoinToken(ctx, store.JoinToken{ID: "t1", Cluster: "east"})
	})
	if err != nil {
		t.Fatal(err)
	}
	db := rawDB(t, path)
	var lastContact, accounts, createdAt, expiresAt, usedAt string
	if err := db.QueryRow(`SELECT last_contact, service_accounts FROM clusters WHERE name = 'east'`).Scan(&lastContact, &accounts); err != nil {
		t.Fatal(err)
	}
	if lastContact != "" || accounts != "[]" {
		t.Errorf("clusters row: last_contact %q service_accounts %q, want \"\" and \"[]\"", lastContact, accounts)
	}
	if err := db.QueryRow(`SELECT created_at, expires_at, used_at FROM join_tokens WHERE id = 't1'`).Scan(&createdAt, &expiresAt, &usedAt); err != nil {
		t.Fatal(err)
	}
	if createdAt != "" || expiresAt != "" || usedAt != "" {
		t.Errorf("join_tokens row: created_at %q expires_at %q used_at %q, want all \"\"", createdAt, expiresAt, usedAt)
	}
}

func TestCreateJoinTokenUnknownCluster(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "meshroot.db"))
	err := s.Update(t.Context(), func(tx store.Tx) error {
		return tx.CreateJoinToken(t.Context(), store.JoinToken{ID: "t1", Cluster: "nope", ExpiresAt: time.Now().Add(time.Hour)})
	})
	if !errors.Is(err, store.ErrNotFound) || !strings.Contains(err.Error(), `cluster "nope"`) {
		t.Errorf("CreateJoinToken with an unknown cluster: %v, want ErrNotFound naming the cluster", err)
	}
}

func TestUseJoinTokenZeroTime(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "meshroot.db"))
	err := s.Update(t.Context(), func(tx store.Tx) error {
		if err := tx.CreateCluster(t.Context(), store.Cluster{Name: "east", TrustDomain: "example.org", CreatedAt: time.Now()}); err != nil {
			return err
		}
		if err := tx.CreateJoinToken(t.Context(), store.JoinToken{ID: "t1", Cluster: "east", ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
			return err
		}
		return tx.UseJoinToken(t.Context(), "t1", time.Time{}, nil)
	})
	if err == nil || !strings.Contains(err.Error(), `join token "t1": zero time`) {
		t.Errorf("UseJoinToken with the zero time: %v, want a zero time error naming the token", err)
	}
}

func TestBundleSequenceTooLarge(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "meshroot.db"))
	const tooLarge = uint64(1) << 63
	err := s.Update(t.Context(), func(tx store.Tx) error {
		return tx.CreateCluster(t.Context(), store.Cluster{Name: "east", TrustDomain: "example.org", CreatedAt: time.Now(),
			Status: store.ClusterStatus{BundleSequence: tooLarge}})
	})
	if err == nil || !strings.Contains(err.Error(), `cluster "east"`) || !strings.Contains(err.Error(), "largest storable") {
		t.Errorf("CreateCluster with bundle sequence 2^63: %v, want an error naming the cluster", err)
	}
	err = s.Update(t.Context(), func(tx store.Tx) error {
		if err := tx.CreateCluster(t.Context(), store.Cluster{Name: "east", TrustDomain: "example.org", CreatedAt: time.Now()}); err != nil {
			return err
		}
		return tx.UpdateClusterStatus(t.Context(), "east", store.ClusterStatus{BundleSequence: tooLarge})
	})
	if err == nil || !strings.Contains(err.Error(), `cluster "east"`) || !strings.Contains(err.Error(), "largest storable") {
		t.Errorf("UpdateClusterStatus with bundle sequence 2^63: %v, want an error naming the cluster", err)
	}
}

// TestUpgradeFromVersion3 checks that Open upgrades a database created at
// schema version 3 (before federation peers), keeping its data, and that
// the new table works afterwards.
func TestUpgradeFromVersion3(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "meshroot.db")
	abs, err := prepareFiles(path)
	if err != nil {
		t.Fatal(err)
	}
	db, err := openPool(ctx, abs, writerParams, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := migrate(ctx, db, migrations[:3]); err != nil {
		t.Fatalf("migrate to version 3: %v", err)
	}
	created := time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC)
	for _, q := range []struct {
		query string
		args  []any
	}{
		{`INSERT INTO roots (id, trust_domain, state, key_ref, chain_pem, not_after, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
			[]any{"r1", "example.org", "active", "k1", []byte("pem"), formatTime(created.Add(time.Hour)), formatTime(created)}},
		{`INSERT INTO clusters (name, trust_domain, created_at, k8s_issuer, k8s_jwks, service_accounts, last_contact, bundle_sequence, intermediate_serial)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			[]any{"east", "example.org", formatTime(created), "https://issuer", []byte(`{"keys":[]}`), `["ns/sa"]`, formatTime(created), 5, "0a"}},
		{`INSERT INTO intermediates (serial, cluster, root_id, not_before, not_after, status, cert_pem, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
			[]any{"0a", "east", "r1", formatTime(created), formatTime(created.Add(time.Hour)), "active", []byte("cert"), formatTime(created)}},
		{`INSERT INTO join_tokens (id, cluster, secret_hash, created_at, expires_at, used_at) VALUES (?, ?, ?, ?, ?, ?)`,
			[]any{"t1", "east", []byte{1, 2}, formatTime(created), formatTime(created.Add(time.Hour)), formatTime(created.Add(time.Minute))}},
		{`INSERT INTO meta (key, value) VALUES (?, ?)`, []any{"k", "v"}},
	} {
		if _, err := db.ExecContext(ctx, q.query, q.args...); err != nil {
			t.Fatalf("%s: %v", q.query, err)
		}
	}
	var tables int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM sqlite_master WHERE name = 'federation_peers'`).Scan(&tables); err != nil || tables != 0 {
		t.Fatalf("federation_peers at version 3: %d tables, %v; want none", tables, err)
	}
	before := appliedMigrations(t, db)
	if len(before) != 3 {
		t.Fatalf("schema_migrations at version 3 has %d rows, want 3", len(before))
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s := openTest(t, path)
	after := appliedMigrations(t, s.r)
	if len(after) != len(migrations) || len(migrations) < 4 || strings.Join(after[:3], " ") != strings.Join(before, " ") {
		t.Fatalf("schema_migrations after the upgrade = %v, want %v followed by versions 4..%d", after, before, len(migrations))
	}
	if r, err := s.GetRoot(ctx, "r1"); err != nil || r.KeyRef != "k1" || string(r.ChainPEM) != "pem" || !r.CreatedAt.Equal(created) {
		t.Errorf("GetRoot after the upgrade = %+v, %v", r, err)
	}
	c, err := s.GetCluster(ctx, "east")
	if err != nil {
		t.Fatalf("GetCluster after the upgrade: %v", err)
	}
	if c.Auth.Issuer != "https://issuer" || string(c.Auth.JWKS) != `{"keys":[]}` || len(c.Auth.ServiceAccounts) != 1 || c.Auth.ServiceAccounts[0] != "ns/sa" ||
		!c.Status.LastContact.Equal(created) || c.Status.BundleSequence != 5 || c.Status.IntermediateSerial != "0a" {
		t.Errorf("cluster after the upgrade: Auth %+v Status %+v, want the version 3 values kept", c.Auth, c.Status)
	}
	if in, err := s.GetIntermediate(ctx, "0a"); err != nil || in.Cluster != "east" || string(in.CertPEM) != "cert" {
		t.Errorf("GetIntermediate after the upgrade = %+v, %v", in, err)
	}
	if jt, err := s.GetJoinToken(ctx, "t1"); err != nil || !jt.UsedAt.Equal(created.Add(time.Minute)) || string(jt.SecretHash) != "\x01\x02" {
		t.Errorf("GetJoinToken after the upgrade = %+v, %v", jt, err)
	}
	if v, err := s.Meta(ctx, "k"); err != nil || v != "v" {
		t.Errorf("Meta after the upgrade = %q, %v; want v", v, err)
	}
	if list, err := s.ListFederationPeers(ctx); err != nil || len(list) != 0 {
		t.Errorf("ListFederationPeers after the upgrade = %v, %v; want none", list, err)
	}

	// The new table works on the upgraded database.
	err = s.Update(ctx, func(tx store.Tx) error {
		if err := tx.CreateFederationPeer(ctx, store.FederationPeer{TrustDomain: "partner.example", URL: "https://partner.example/bundle",
			Profile: store.ProfileHTTPSWeb, CreatedAt: created}); err != nil {
			return err
		}
		if err := tx.SetFederatedBundle(ctx, "partner.example", []byte(`{"keys":[]}`), 3, created.Add(time.Minute)); err != nil {
			return err
		}
		return tx.UpdateFederationStatus(ctx, "partner.example", store.FederationStatus{LastAttempt: created.Add(time.Minute), LastSuccess: created.Add(time.Minute)})
	})
	if err != nil {
		t.Fatalf("writing federation peers after the upgrade: %v", err)
	}
	if p, err := s.GetFederationPeer(ctx, "partner.example"); err != nil || p.Sequence != 3 || string(p.Bundle) != `{"keys":[]}` ||
		!p.Status.LastSuccess.Equal(created.Add(time.Minute)) || !p.CreatedAt.Equal(created) {
		t.Errorf("GetFederationPeer after the upgrade = %+v, %v", p, err)
	}
}

// TestFederationPeerColumns checks the column format: a peer without a
// bundle, at creation or after SetFederatedBundle, has a NULL bundle, zero
// times are stored as "", and an empty blob written outside the store reads
// back as a nil Bundle.
func TestFederationPeerColumns(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "meshroot.db")
	s := openTest(t, path)
	err := s.Update(ctx, func(tx store.Tx) error {
		if err := tx.CreateFederationPeer(ctx, store.FederationPeer{TrustDomain: "nil.example", URL: "https://nil.example", Profile: store.ProfileHTTPSWeb}); err != nil {
			return err
		}
		if err := tx.CreateFederationPeer(ctx, store.FederationPeer{TrustDomain: "empty.example", URL: "https://empty.example", Profile: store.ProfileHTTPSWeb, Bundle: []byte{}}); err != nil {
			return err
		}
		for _, td := range []string{"set.example", "cleared.example"} {
			if err := tx.CreateFederationPeer(ctx, store.FederationPeer{TrustDomain: td, URL: "https://" + td, Profile: store.ProfileHTTPSWeb, Bundle: []byte("{}")}); err != nil {
				return err
			}
		}
		return tx.SetFederatedBundle(ctx, "cleared.example", []byte{}, 0, time.Time{})
	})
	if err != nil {
		t.Fatal(err)
	}
	db := rawDB(t, path)
	rows, err := db.Query(`SELECT trust_domain, bundle IS NULL, created_at || bundle_updated_at || last_attempt || last_success || last_error || next_attempt
		FROM federation_peers ORDER BY trust_domain`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var (
			td, times string
			null      bool
		)
		if err := rows.Scan(&td, &null, &times); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s null=%v times=%q", td, null, times))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want := `cleared.example null=true times=""|empty.example null=true times=""|nil.example null=true times=""|set.example null=false times=""`
	if strings.Join(got, "|") != want {
		t.Errorf("federation_peers rows:\n got %s\nwant %s", strings.Join(got, "|"), want)
	}

	if _, err := db.Exec(`UPDATE federation_peers SET bundle = x'' WHERE trust_domain = 'set.example'`); err != nil {
		t.Fatal(err)
	}
	if p, err := s.GetFederationPeer(ctx, "set.example"); err != nil || p.Bundle != nil {
		t.Errorf("GetFederationPeer of a peer with an empty bundle blob: Bundle %#v, %v; want nil", p.Bundle, err)
	}
}

func TestFederatedSequenceTooLarge(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "meshroot.db"))
	const tooLarge = uint64(1) << 63
	peer := store.FederationPeer{TrustDomain: "partner.example", URL: "https://partner.example", Profile: store.ProfileHTTPSWeb}
	err := s.Update(t.Context(), func(tx store.Tx) error {
		p := peer
		p.Bundle, p.Sequence = []byte("{}"), tooLarge
		return tx.CreateFederationPeer(t.Context(), p)
	})
	if err == nil || !strings.Contains(err.Error(), `"partner.example"`) || !strings.Contains(err.Error(), "largest storable") {
		t.Errorf("CreateFederationPeer with sequence 2^63: %v, want an error naming the peer", err)
	}
	err = s.Update(t.Context(), func(tx store.Tx) error {
		if err := tx.CreateFederationPeer(t.Context(), peer); err != nil {
			return err
		}
		return tx.SetFederatedBundle(t.Context(), "partner.example", []byte("{}"), tooLarge, time.Now())
	})
	if err == nil || !strings.Contains(err.Error(), `"partner.example"`) || !strings.Contains(err.Error(), "largest storable") {
		t.Errorf("SetFederatedBundle with sequence 2^63: %v, want an error naming the peer", err)
	}
}

func TestCreateFederationPeerEmptyTrustDomain(t *testing.T) {
	s := openTest(t, filepath.Join(t.TempDir(), "meshroot.db"))
	err := s.Update(t.Context(), func(tx store.Tx) error {
		return tx.CreateFederationPeer(t.Context(), store.FederationPeer{URL: "https://x.example", Profile: store.ProfileHTTPSWeb})
	})
	if err == nil || !strings.Contains(err.Error(), "empty trust domain") {
		t.Errorf("CreateFederationPeer with an empty trust domain: %v, want an error", err)
	}
}
