package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// migration is one step of the schema. Its version is its position in
// migrations plus one.
type migration struct {
	name string
	sql  string
}

// migrations is the schema history, oldest first. Append new steps; never
// edit or reorder released ones, databases in the field have run them.
var migrations = []migration{
	{
		name: "initial schema",
		sql: `
CREATE TABLE roots (
	id           TEXT PRIMARY KEY,
	trust_domain TEXT NOT NULL,
	state        TEXT NOT NULL,
	key_ref      TEXT NOT NULL,
	chain_pem    BLOB NOT NULL,
	not_after    TEXT NOT NULL,
	created_at   TEXT NOT NULL
);
CREATE INDEX roots_created_at ON roots (created_at);

CREATE TABLE clusters (
	name         TEXT PRIMARY KEY,
	trust_domain TEXT NOT NULL,
	created_at   TEXT NOT NULL
);

-- cluster is not a foreign key: issued intermediates stay on record after
-- their cluster is deleted.
CREATE TABLE intermediates (
	serial     TEXT PRIMARY KEY,
	cluster    TEXT NOT NULL,
	root_id    TEXT NOT NULL REFERENCES roots (id),
	not_before TEXT NOT NULL,
	not_after  TEXT NOT NULL,
	status     TEXT NOT NULL,
	cert_pem   BLOB NOT NULL,
	created_at TEXT NOT NULL
);
CREATE INDEX intermediates_cluster ON intermediates (cluster, created_at);

CREATE TABLE audit_log (
	seq       INTEGER PRIMARY KEY,
	time      TEXT NOT NULL,
	actor     TEXT NOT NULL,
	action    TEXT NOT NULL,
	target    TEXT NOT NULL,
	result    TEXT NOT NULL,
	details   TEXT NOT NULL,
	prev_hash TEXT NOT NULL,
	hash      TEXT NOT NULL
);

CREATE TABLE meta (
	key   TEXT PRIMARY KEY,
	value TEXT NOT NULL
);
`,
	},
	{
		// A guard rail against accidental edits (for example with the
		// sqlite3 shell), not a security boundary: whoever can write the
		// file can drop the triggers. The hash chain detects that.
		name: "append-only audit log",
		sql: `
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
	SELECT RAISE(ABORT, 'audit_log is append-only: rows cannot be updated');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
	SELECT RAISE(ABORT, 'audit_log is append-only: rows cannot be deleted');
END;
`,
	},
	{
		// Times added from here on are stored as "" when zero (see
		// formatOptTime). join_tokens.cluster is a foreign key so that no
		// token names a cluster that does not exist; DeleteCluster deletes
		// a cluster's tokens first, in the same transaction.
		name: "cluster auth and status, join tokens",
		sql: `
ALTER TABLE clusters ADD COLUMN k8s_issuer          TEXT    NOT NULL DEFAULT '';
ALTER TABLE clusters ADD COLUMN k8s_jwks            BLOB    NOT NULL DEFAULT x'';
ALTER TABLE clusters ADD COLUMN k8s_oidc_discovery  INTEGER NOT NULL DEFAULT 0;
ALTER TABLE clusters ADD COLUMN k8s_ca              BLOB    NOT NULL DEFAULT x'';
ALTER TABLE clusters ADD COLUMN k8s_kubeconfig      BLOB    NOT NULL DEFAULT x'';
ALTER TABLE clusters ADD COLUMN service_accounts    TEXT    NOT NULL DEFAULT '[]';
ALTER TABLE clusters ADD COLUMN last_contact        TEXT    NOT NULL DEFAULT '';
ALTER TABLE clusters ADD COLUMN bundle_sequence     INTEGER NOT NULL DEFAULT 0;
ALTER TABLE clusters ADD COLUMN intermediate_serial TEXT    NOT NULL DEFAULT '';

CREATE TABLE join_tokens (
	id          TEXT PRIMARY KEY,
	cluster     TEXT NOT NULL REFERENCES clusters (name),
	secret_hash BLOB NOT NULL,
	created_at  TEXT NOT NULL,
	expires_at  TEXT NOT NULL,
	used_at     TEXT NOT NULL DEFAULT ''
);
CREATE INDEX join_tokens_expires_at ON join_tokens (expires_at);
CREATE INDEX join_tokens_cluster ON join_tokens (cluster);

CREATE INDEX intermediates_cluster_status ON intermediates (cluster, status);
`,
	},
	{
		// bundle is NULL until the first bundle is stored (a bootstrap
		// bundle or the first good fetch); times are "" when zero.
		name: "federation peers",
		sql: `
CREATE TABLE federation_peers (
	trust_domain       TEXT    PRIMARY KEY,
	url                TEXT    NOT NULL,
	profile            TEXT    NOT NULL,
	endpoint_spiffe_id TEXT    NOT NULL DEFAULT '',
	created_at         TEXT    NOT NULL,
	bundle             BLOB,
	sequence           INTEGER NOT NULL DEFAULT 0,
	bundle_updated_at  TEXT    NOT NULL DEFAULT '',
	last_attempt       TEXT    NOT NULL DEFAULT '',
	last_success       TEXT    NOT NULL DEFAULT '',
	last_error         TEXT    NOT NULL DEFAULT '',
	next_attempt       TEXT    NOT NULL DEFAULT ''
);
`,
	},
	{
		name: "root rotation",
		sql: `
ALTER TABLE roots ADD COLUMN cross_pem        BLOB    NOT NULL DEFAULT x'';
ALTER TABLE roots ADD COLUMN added_sequence   INTEGER NOT NULL DEFAULT 0;
ALTER TABLE roots ADD COLUMN state_changed_at TEXT    NOT NULL DEFAULT '';
`,
	},
	{
		// superseded_at bounds how long a superseded intermediate may still
		// renew; "" (rows superseded before this step) means unknown, and
		// such an intermediate gets no grace period.
		name: "intermediate superseded_at",
		sql: `
ALTER TABLE intermediates ADD COLUMN superseded_at TEXT NOT NULL DEFAULT '';
`,
	},
	{
		// JSON arrays of strings, like service_accounts.
		name: "cluster name constraints",
		sql: `
ALTER TABLE clusters ADD COLUMN permit_dns TEXT NOT NULL DEFAULT '[]';
ALTER TABLE clusters ADD COLUMN permit_ips TEXT NOT NULL DEFAULT '[]';
`,
	},
	{
		// Client certificates of the admin CA (remote admin over mTLS).
		name: "admin client certificates",
		sql: `
CREATE TABLE admin_certs (
	serial     TEXT PRIMARY KEY,
	name       TEXT NOT NULL,
	role       TEXT NOT NULL,
	issued_at  TEXT NOT NULL,
	not_after  TEXT NOT NULL,
	revoked_at TEXT NOT NULL DEFAULT ''
);
`,
	},
	{
		// issue 12: CRLs per CA, revocation reasons, quarantined clusters.
		name: "crls, revocations, quarantines",
		sql: `
CREATE TABLE crls (
	issuer      TEXT PRIMARY KEY,
	number      INTEGER NOT NULL,
	der         BLOB NOT NULL,
	this_update TEXT NOT NULL,
	next_update TEXT NOT NULL
);
CREATE TABLE revocations (
	serial     TEXT PRIMARY KEY,
	reason     INTEGER NOT NULL,
	revoked_at TEXT NOT NULL
);
CREATE TABLE quarantines (
	cluster TEXT PRIMARY KEY,
	reason  TEXT NOT NULL,
	at      TEXT NOT NULL,
	actor   TEXT NOT NULL
);
`,
	},
	{
		// istiod_status: store.IstiodStatus as JSON ('' when never
		// reported); gate: the operator's rotation gate ('' = default).
		name: "cluster istiod confirmation and gate",
		sql: `
ALTER TABLE clusters ADD COLUMN istiod_status TEXT NOT NULL DEFAULT '';
ALTER TABLE clusters ADD COLUMN gate TEXT NOT NULL DEFAULT '';
`,
	},
	{
		// The bundle hub reads the active and the revoked intermediates
		// on every poll (ListIntermediatesByStatus): without this index
		// that read scanned every superseded one ever issued.
		name: "intermediates by status",
		sql: `
CREATE INDEX intermediates_status ON intermediates (status, created_at);
`,
	},
	{
		// applied_crls: root ID -> CRL number in the cluster's ca-crl.pem
		// as JSON ('' never reported); crl_number: the first root CRL that
		// listed the revoked serial (0: none yet).
		name: "applied CRLs and listing CRL numbers",
		sql: `
ALTER TABLE clusters ADD COLUMN applied_crls TEXT NOT NULL DEFAULT '';
ALTER TABLE revocations ADD COLUMN crl_number INTEGER NOT NULL DEFAULT 0;
`,
	},
	{
		// A retried join (the first call timed out after the server
		// committed) is recognised by the key it spent the token with and
		// gets the intermediate recorded here.
		name: "join token key and issued serial",
		sql: `
ALTER TABLE join_tokens ADD COLUMN key_hash BLOB NOT NULL DEFAULT x'';
ALTER TABLE join_tokens ADD COLUMN issued_serial TEXT NOT NULL DEFAULT '';
`,
	},
}

// migrate brings the schema of db up to the last version in steps (Open
// passes migrations; tests pass a prefix of it to build an older database),
// applying each missing step in its own transaction. It fails, changing
// nothing, when the database has a version newer than steps knows.
func migrate(ctx context.Context, db *sql.DB, steps []migration) error {
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
	version    INTEGER PRIMARY KEY,
	applied_at TEXT NOT NULL
)`); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	for i, m := range steps {
		if err := applyMigration(ctx, db, i+1, m, len(steps)); err != nil {
			return err
		}
	}
	// Catches a newer database even when every known step was skipped.
	v, err := schemaVersion(ctx, db)
	if err != nil {
		return err
	}
	return checkVersion(v, len(steps))
}

// applyMigration runs step m as version in one transaction, unless the
// database is already at version or later; latest is the last version
// known. The version is read inside the transaction, so two processes
// opening the same new database apply each step once.
func applyMigration(ctx context.Context, db *sql.DB, version int, m migration, latest int) (err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrate to schema version %d (%s): begin: %w", version, m.name, err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	current, err := schemaVersion(ctx, tx)
	if err != nil {
		return err
	}
	if err := checkVersion(current, latest); err != nil {
		return err
	}
	if current >= version {
		return tx.Rollback()
	}
	if current != version-1 {
		return fmt.Errorf("migrate to schema version %d (%s): database is at version %d, expected %d", version, m.name, current, version-1)
	}
	if _, err := tx.ExecContext(ctx, m.sql); err != nil {
		return fmt.Errorf("migrate to schema version %d (%s): %w", version, m.name, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`,
		version, formatTime(time.Now())); err != nil {
		return fmt.Errorf("migrate to schema version %d (%s): record version: %w", version, m.name, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migrate to schema version %d (%s): commit: %w", version, m.name, err)
	}
	return nil
}

// schemaVersion returns the highest version recorded in schema_migrations
// (0 for a new database).
func schemaVersion(ctx context.Context, q querier) (int, error) {
	var v sql.NullInt64
	if err := q.QueryRowContext(ctx, `SELECT MAX(version) FROM schema_migrations`).Scan(&v); err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	return int(v.Int64), nil
}

// checkVersion fails when version is newer than latest, the last known
// migration.
func checkVersion(version, latest int) error {
	if version > latest {
		return newerSchemaError(version, latest)
	}
	return nil
}

// newerSchemaError returns the error for a database at version, written by
// a newer meshroot that knows more than latest.
func newerSchemaError(version, latest int) error {
	return fmt.Errorf("database schema version %d is newer than this meshroot supports (%d): upgrade meshroot",
		version, latest)
}
