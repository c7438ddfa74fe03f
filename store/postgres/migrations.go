package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshroot/meshroot/store/internal/timetext"
)

// migration is one step of the schema. Its version is its position in
// migrations plus one.
type migration struct {
	name string
	sql  string
}

// migrations is the schema history, oldest first. Append new steps; never
// edit or reorder released ones, databases in the field have run them.
//
// Times are TEXT in timetext.Layout (UTC, nine-digit fraction; "" for a
// zero time where a time is optional), not timestamptz, which keeps only
// microseconds: the audit chain hashes times at the nanosecond. Text
// columns that are sorted or compared are COLLATE "C" (byte order), so the
// order does not depend on the database's locale. ord columns keep
// insertion order among rows created at the same instant.
var migrations = []migration{
	{
		name: "initial schema",
		sql: `
CREATE TABLE roots (
	id               TEXT COLLATE "C" PRIMARY KEY,
	ord              BIGINT GENERATED ALWAYS AS IDENTITY,
	trust_domain     TEXT   NOT NULL,
	state            TEXT   NOT NULL,
	key_ref          TEXT   NOT NULL,
	chain_pem        BYTEA  NOT NULL,
	not_after        TEXT COLLATE "C" NOT NULL,
	created_at       TEXT COLLATE "C" NOT NULL,
	cross_pem        BYTEA  NOT NULL DEFAULT '',
	added_sequence   BIGINT NOT NULL DEFAULT 0,
	state_changed_at TEXT COLLATE "C" NOT NULL DEFAULT ''
);
CREATE INDEX roots_created_at ON roots (created_at, ord);

CREATE TABLE clusters (
	name                TEXT COLLATE "C" PRIMARY KEY,
	trust_domain        TEXT    NOT NULL,
	created_at          TEXT COLLATE "C" NOT NULL,
	k8s_issuer          TEXT    NOT NULL DEFAULT '',
	k8s_jwks            BYTEA   NOT NULL DEFAULT '',
	k8s_oidc_discovery  BOOLEAN NOT NULL DEFAULT false,
	k8s_ca              BYTEA   NOT NULL DEFAULT '',
	k8s_kubeconfig      BYTEA   NOT NULL DEFAULT '',
	service_accounts    TEXT[]  NOT NULL DEFAULT '{}',
	last_contact        TEXT COLLATE "C" NOT NULL DEFAULT '',
	bundle_sequence     BIGINT  NOT NULL DEFAULT 0,
	intermediate_serial TEXT    NOT NULL DEFAULT ''
);

-- cluster is not a foreign key: issued intermediates stay on record after
-- their cluster is deleted.
CREATE TABLE intermediates (
	serial        TEXT COLLATE "C" PRIMARY KEY,
	ord           BIGINT GENERATED ALWAYS AS IDENTITY,
	cluster       TEXT COLLATE "C" NOT NULL,
	root_id       TEXT COLLATE "C" NOT NULL REFERENCES roots (id),
	not_before    TEXT COLLATE "C" NOT NULL,
	not_after     TEXT COLLATE "C" NOT NULL,
	status        TEXT  NOT NULL,
	cert_pem      BYTEA NOT NULL,
	created_at    TEXT COLLATE "C" NOT NULL,
	superseded_at TEXT COLLATE "C" NOT NULL DEFAULT ''
);
CREATE INDEX intermediates_created_at ON intermediates (created_at, ord);
CREATE INDEX intermediates_cluster ON intermediates (cluster, created_at, ord);
CREATE INDEX intermediates_cluster_status ON intermediates (cluster, status);

CREATE TABLE audit_log (
	seq       BIGINT PRIMARY KEY,
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
	key   TEXT COLLATE "C" PRIMARY KEY,
	value TEXT NOT NULL
);

-- join_tokens.cluster is a foreign key so that no token names a cluster
-- that does not exist; DeleteCluster deletes a cluster's tokens first.
CREATE TABLE join_tokens (
	id          TEXT COLLATE "C" PRIMARY KEY,
	cluster     TEXT COLLATE "C" NOT NULL REFERENCES clusters (name),
	secret_hash BYTEA NOT NULL,
	created_at  TEXT COLLATE "C" NOT NULL,
	expires_at  TEXT COLLATE "C" NOT NULL,
	used_at     TEXT COLLATE "C" NOT NULL DEFAULT ''
);
CREATE INDEX join_tokens_expires_at ON join_tokens (expires_at);
CREATE INDEX join_tokens_cluster ON join_tokens (cluster);

-- bundle is NULL until the first bundle is stored.
CREATE TABLE federation_peers (
	trust_domain       TEXT COLLATE "C" PRIMARY KEY,
	url                TEXT   NOT NULL,
	profile            TEXT   NOT NULL,
	endpoint_spiffe_id TEXT   NOT NULL DEFAULT '',
	created_at         TEXT COLLATE "C" NOT NULL,
	bundle             BYTEA,
	sequence           BIGINT NOT NULL DEFAULT 0,
	bundle_updated_at  TEXT COLLATE "C" NOT NULL DEFAULT '',
	last_attempt       TEXT COLLATE "C" NOT NULL DEFAULT '',
	last_success       TEXT COLLATE "C" NOT NULL DEFAULT '',
	last_error         TEXT   NOT NULL DEFAULT '',
	next_attempt       TEXT COLLATE "C" NOT NULL DEFAULT ''
);

-- Never holds a row: every write transaction locks it first (see Update),
-- so that writers on every replica run one at a time.
CREATE TABLE write_lock (id BOOLEAN PRIMARY KEY);

-- A guard rail against accidental edits, not a security boundary: whoever
-- owns the table can drop the triggers. The hash chain detects that.
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	RAISE EXCEPTION 'audit_log is append-only: rows cannot be %', lower(TG_OP);
END
$$;
CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
	FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
	FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
`,
	},
	{
		name: "cluster permitted DNS domains and IP ranges",
		sql: `
ALTER TABLE clusters ADD COLUMN permit_dns TEXT[] NOT NULL DEFAULT '{}';
ALTER TABLE clusters ADD COLUMN permit_ips TEXT[] NOT NULL DEFAULT '{}';
`,
	},
	{
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
		name: "crls, revocations, quarantines",
		sql: `
CREATE TABLE crls (
	issuer      TEXT PRIMARY KEY,
	number      BIGINT NOT NULL,
	der         BYTEA NOT NULL,
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
		name: "cluster istiod confirmation and gate",
		sql: `
ALTER TABLE clusters ADD COLUMN istiod_status TEXT NOT NULL DEFAULT '';
ALTER TABLE clusters ADD COLUMN gate TEXT NOT NULL DEFAULT '';
`,
	},
	{
		// See changefeed.go and leader.go.
		name: "change notifications and replicas",
		sql: `
CREATE FUNCTION meshroot_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_notify('` + changeChannel + `', TG_TABLE_NAME);
	RETURN NULL;
END $$;
CREATE TRIGGER roots_notify AFTER INSERT OR UPDATE OR DELETE ON roots
	FOR EACH STATEMENT EXECUTE FUNCTION meshroot_notify_change();
CREATE TRIGGER intermediates_notify AFTER INSERT OR UPDATE OR DELETE ON intermediates
	FOR EACH STATEMENT EXECUTE FUNCTION meshroot_notify_change();
CREATE TRIGGER federation_peers_notify AFTER INSERT OR DELETE OR UPDATE OF url, profile, endpoint_spiffe_id, bundle, sequence ON federation_peers
	FOR EACH STATEMENT EXECUTE FUNCTION meshroot_notify_change();
CREATE TRIGGER crls_notify AFTER INSERT OR UPDATE OR DELETE ON crls
	FOR EACH STATEMENT EXECUTE FUNCTION meshroot_notify_change();
CREATE TRIGGER revocations_notify AFTER INSERT OR UPDATE OR DELETE ON revocations
	FOR EACH STATEMENT EXECUTE FUNCTION meshroot_notify_change();
CREATE TRIGGER meta_notify AFTER INSERT OR UPDATE ON meta
	FOR EACH ROW WHEN (NEW.key NOT IN ('` + keyAuditHeadSeq + `', '` + keyAuditHeadHash + `'))
	EXECUTE FUNCTION meshroot_notify_change();
CREATE TRIGGER meta_delete_notify AFTER DELETE ON meta
	FOR EACH STATEMENT EXECUTE FUNCTION meshroot_notify_change();

CREATE TABLE replicas (
	id           TEXT COLLATE "C" PRIMARY KEY,
	started_at   TIMESTAMPTZ NOT NULL,
	heartbeat_at TIMESTAMPTZ NOT NULL,
	leader       BOOLEAN NOT NULL DEFAULT false
);
`,
	},
	{
		// applied_crls: root ID -> CRL number in the cluster's ca-crl.pem
		// as JSON ('' never reported); crl_number: the first root CRL that
		// listed the revoked serial (0: none yet).
		name: "applied CRLs and listing CRL numbers",
		sql: `
ALTER TABLE clusters ADD COLUMN applied_crls TEXT NOT NULL DEFAULT '';
ALTER TABLE revocations ADD COLUMN crl_number BIGINT NOT NULL DEFAULT 0;
`,
	},
	{
		// A retried join (the first call timed out after the server
		// committed) is recognised by the key it spent the token with and
		// gets the intermediate recorded here.
		name: "join token key and issued serial",
		sql: `
ALTER TABLE join_tokens ADD COLUMN key_hash BYTEA NOT NULL DEFAULT ''::bytea;
ALTER TABLE join_tokens ADD COLUMN issued_serial TEXT NOT NULL DEFAULT '';
`,
	},
}

// migrationLockKey is the advisory lock (in the database's own lock space)
// held while migrating: "meshroot" in ASCII.
const migrationLockKey int64 = 0x6d657368726f6f74

// migrate brings the schema up to the last version in steps on a session
// of its own, holding migrationLockKey, so that replicas starting at once
// apply each step once (the others wait, then find nothing to do). Each
// step runs in its own transaction. It fails, changing nothing, when the
// database has a version newer than steps knows.
func migrate(ctx context.Context, cc *pgx.ConnConfig, steps []migration) error {
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	// Closing the session releases the advisory lock, whatever happened.
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, migrationLockKey); err != nil {
		return fmt.Errorf("take the migration lock: %w", markLost(err))
	}
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
	version    INTEGER PRIMARY KEY,
	name       TEXT NOT NULL,
	applied_at TEXT NOT NULL
)`); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	current, err := schemaVersion(ctx, conn)
	if err != nil {
		return err
	}
	if current > len(steps) {
		return fmt.Errorf("database schema version %d is newer than this meshroot supports (%d): upgrade meshroot", current, len(steps))
	}
	for v := current + 1; v <= len(steps); v++ {
		if err := applyMigration(ctx, conn, v, steps[v-1]); err != nil {
			return err
		}
	}
	return nil
}

// applyMigration runs step m as version in one transaction.
func applyMigration(ctx context.Context, conn *pgx.Conn, version int, m migration) error {
	err := pgx.BeginFunc(ctx, conn, func(t pgx.Tx) error {
		if _, err := t.Exec(ctx, m.sql); err != nil {
			return err
		}
		_, err := t.Exec(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)`,
			version, m.name, timetext.Format(time.Now()))
		return err
	})
	if err != nil {
		return fmt.Errorf("migrate to schema version %d (%s): %w", version, m.name, err)
	}
	return nil
}

// schemaVersion returns the highest version recorded in schema_migrations
// (0 for a new database).
func schemaVersion(ctx context.Context, q querier) (int, error) {
	var v *int
	if err := q.QueryRow(ctx, `SELECT MAX(version) FROM schema_migrations`).Scan(&v); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return 0, nil
		}
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	if v == nil {
		return 0, nil
	}
	return *v, nil
}
