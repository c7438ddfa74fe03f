package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/meshroot/meshroot/store"
	"github.com/meshroot/meshroot/store/internal/timetext"
)

// CopiedTables are the tables a copy writes and counts, referenced tables
// first; the SQLite store has the same.
var CopiedTables = []string{"roots", "clusters", "intermediates", "join_tokens", "federation_peers", "admin_certs", "crls", "revocations", "quarantines", "meta", "audit_log"}

// Source is a store that can be copied whole: the SQLite store (as
// sqlite.OpenForCopy hands it out). It lists the reads a copy makes.
type Source interface {
	ListRoots(ctx context.Context) ([]store.Root, error)
	ListClusters(ctx context.Context) ([]store.Cluster, error)
	ListIntermediates(ctx context.Context, cluster string) ([]store.Intermediate, error)
	ListFederationPeers(ctx context.Context) ([]store.FederationPeer, error)
	ListAudit(ctx context.Context, afterSeq int64, limit int) ([]store.AuditEntry, error)
	ListJoinTokens(ctx context.Context) ([]store.JoinToken, error)
	ListAdminCerts(ctx context.Context) ([]store.AdminCert, error)
	ListMeta(ctx context.Context) (map[string]string, error)
	TableCounts(ctx context.Context) (map[string]int64, error)
	VerifyAuditRows(ctx context.Context) (int64, error)
}

// auditPage is how many audit rows a copy holds in memory at once.
const auditPage = 1000

// CopyFrom copies everything src holds into s, which must be empty, in one
// transaction: audit rows as they are (same seq, hashes and head), the
// store's own meta keys included. Before committing it checks that every
// table of CopiedTables has as many rows as in src and that the copied
// audit chain verifies against its head; then, when entry has an Action,
// it appends entry (its Details, a JSON object, gaining "rows": the counts) to
// the copied log. On any failure nothing lands. It returns the counts.
//
// src must not change during the copy (stop the servers using it): a row
// written meanwhile makes the counts differ and the copy fail.
func (s *Store) CopyFrom(ctx context.Context, src Source, entry store.AuditEntry) (map[string]int64, error) {
	want, err := src.TableCounts(ctx)
	if err != nil {
		return nil, fmt.Errorf("copy: count the source's rows: %w", err)
	}
	if n, err := src.VerifyAuditRows(ctx); err != nil {
		return nil, fmt.Errorf("copy: the source's audit log does not verify, refusing to copy it: %w", err)
	} else if n != want["audit_log"] {
		return nil, fmt.Errorf("copy: the source's audit log verified %d rows but holds %d: is a server still writing to it?", n, want["audit_log"])
	}
	err = s.update(ctx, func(t *tx) error {
		got, err := t.counts(ctx)
		if err != nil {
			return err
		}
		for _, table := range CopiedTables {
			if got[table] != 0 {
				return fmt.Errorf("copy: the destination database is not empty (%s has %d rows): copy into a new, empty database", table, got[table])
			}
		}
		if err := copyRecords(ctx, t, src); err != nil {
			return fmt.Errorf("copy: %w", err)
		}
		if err := copyAudit(ctx, t, src); err != nil {
			return fmt.Errorf("copy: %w", err)
		}
		if got, err = t.counts(ctx); err != nil {
			return err
		}
		if !maps.Equal(got, want) {
			return fmt.Errorf("copy: row counts differ after the copy (source %v, destination %v): is a server still writing to the source?", want, got)
		}
		if n, err := verifyAudit(ctx, t.q); err != nil {
			return fmt.Errorf("copy: the copied audit log does not verify: %w", err)
		} else if n != want["audit_log"] {
			return fmt.Errorf("copy: the copied audit log verified %d rows, want %d", n, want["audit_log"])
		}
		if entry.Action == "" {
			return nil
		}
		if entry.Details, err = withCounts(entry.Details, want); err != nil {
			return err
		}
		_, err = t.AppendAudit(ctx, entry)
		return err
	})
	if err != nil {
		return nil, err
	}
	return want, nil
}

// copyRecords copies every record but the audit rows, through the Tx
// methods so that each is checked as any write is.
func copyRecords(ctx context.Context, t *tx, src Source) error {
	roots, err := src.ListRoots(ctx)
	if err != nil {
		return err
	}
	for _, r := range roots {
		if err := t.CreateRoot(ctx, r); err != nil {
			return err
		}
	}
	clusters, err := src.ListClusters(ctx)
	if err != nil {
		return err
	}
	for _, c := range clusters {
		if err := t.CreateCluster(ctx, c); err != nil {
			return err
		}
	}
	inters, err := src.ListIntermediates(ctx, "")
	if err != nil {
		return err
	}
	for _, in := range inters {
		if err := t.CreateIntermediate(ctx, in); err != nil {
			return err
		}
	}
	tokens, err := src.ListJoinTokens(ctx)
	if err != nil {
		return err
	}
	for _, jt := range tokens {
		if err := t.CreateJoinToken(ctx, jt); err != nil {
			return err
		}
	}
	admins, err := src.ListAdminCerts(ctx)
	if err != nil {
		return err
	}
	for _, c := range admins {
		if err := t.CreateAdminCert(ctx, c); err != nil {
			return err
		}
	}
	peers, err := src.ListFederationPeers(ctx)
	if err != nil {
		return err
	}
	for _, p := range peers {
		if err := t.CreateFederationPeer(ctx, p); err != nil {
			return err
		}
	}
	if err := copyRevocations(ctx, t, src); err != nil {
		return err
	}
	meta, err := src.ListMeta(ctx)
	if err != nil {
		return err
	}
	for _, k := range slices.Sorted(maps.Keys(meta)) {
		if err := setMeta(ctx, t.q, k, meta[k]); err != nil { // store.* keys too
			return fmt.Errorf("meta %q: %w", k, err)
		}
	}
	return nil
}

// copyRevocations copies the CRLs, revocation records and quarantines of a
// source that has them (every SQLite store does; Source stays small).
func copyRevocations(ctx context.Context, t *tx, src Source) error {
	rr, ok := src.(store.RevocationReader)
	if !ok {
		return errors.New("the source store cannot list its CRLs, revocations and quarantines")
	}
	crls, err := rr.ListCRLs(ctx)
	if err != nil {
		return err
	}
	for _, c := range crls {
		if err := t.PutCRL(ctx, c); err != nil {
			return err
		}
	}
	revs, err := rr.ListRevocations(ctx)
	if err != nil {
		return err
	}
	for _, r := range revs {
		if err := t.RecordRevocation(ctx, r); err != nil {
			return err
		}
	}
	qs, err := rr.ListQuarantines(ctx)
	if err != nil {
		return err
	}
	for _, q := range qs {
		if err := t.SetQuarantine(ctx, q); err != nil {
			return err
		}
	}
	return nil
}

// copyAudit copies the audit rows as they are, a page at a time.
func copyAudit(ctx context.Context, t *tx, src Source) error {
	conn, ok := t.q.(*pgx.Conn)
	if !ok {
		return errors.New("internal error: copy outside a transaction")
	}
	var after int64
	for {
		page, err := src.ListAudit(ctx, after, auditPage)
		if err != nil {
			return err
		}
		if len(page) == 0 {
			return nil
		}
		_, err = conn.CopyFrom(ctx, pgx.Identifier{"audit_log"}, strings.Split(strings.ReplaceAll(auditColumns, " ", ""), ","),
			pgx.CopyFromSlice(len(page), func(i int) ([]any, error) {
				e := page[i]
				return []any{e.Seq, timetext.Format(e.Time), e.Actor, e.Action, e.Target, e.Result, e.Details, e.PrevHash, e.Hash}, nil
			}))
		if err != nil {
			return fmt.Errorf("audit rows after seq %d: %w", after, err)
		}
		after = page[len(page)-1].Seq
	}
}

// counts returns the number of rows of each of CopiedTables.
func (t *tx) counts(ctx context.Context) (map[string]int64, error) {
	return tableCounts(ctx, t.q)
}

// TableCounts returns the number of rows of each of CopiedTables.
func (s *Store) TableCounts(ctx context.Context) (map[string]int64, error) {
	return tableCounts(ctx, s.q)
}

func tableCounts(ctx context.Context, q querier) (map[string]int64, error) {
	counts := make(map[string]int64, len(CopiedTables))
	for _, table := range CopiedTables {
		var n int64
		// table is one of CopiedTables, never input.
		if err := q.QueryRow(ctx, `SELECT count(*) FROM `+table).Scan(&n); err != nil {
			return nil, fmt.Errorf("count rows of %s: %w", table, err)
		}
		counts[table] = n
	}
	return counts, nil
}

// withCounts returns details, a JSON object ("" for none), with "rows" set
// to counts.
func withCounts(details string, counts map[string]int64) (string, error) {
	obj := map[string]any{}
	if details != "" {
		if err := json.Unmarshal([]byte(details), &obj); err != nil {
			return "", fmt.Errorf("audit details are not a JSON object: %w", err)
		}
	}
	obj["rows"] = counts
	b, err := json.Marshal(obj)
	return string(b), err
}
