package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/store"
)

func newAuditCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "Read and verify the audit log"}
	cmd.AddCommand(newAuditListCmd(g), newAuditVerifyCmd(g), newAuditAnchorCmd(g))
	return cmd
}

type auditView struct {
	Seq     int64     `json:"seq"`
	Time    time.Time `json:"time"`
	Actor   string    `json:"actor"`
	Action  string    `json:"action"`
	Target  string    `json:"target"`
	Result  string    `json:"result"`
	Details string    `json:"details"`
	Hash    string    `json:"hash"`
}

func newAuditListCmd(g *globals) *cobra.Command {
	var after int64
	var limit int
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List audit log entries, oldest first",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runAdmin(cmd, g, tableJSON, func(a ca.Admin, ctx context.Context) ([]store.AuditEntry, error) {
				return listAuditPages(ctx, a, after, limit)
			}, printAudit)
		},
	}
	cmd.Flags().Int64Var(&after, "after", 0, "only entries with a sequence number above this")
	cmd.Flags().IntVar(&limit, "limit", 0, "at most this many entries (0: all)")
	return cmd
}

func printAudit(w io.Writer, format string, entries []store.AuditEntry) error {
	views := make([]auditView, len(entries))
	rows := make([][]string, len(entries))
	for i, e := range entries {
		views[i] = auditView{e.Seq, e.Time, e.Actor, e.Action, e.Target, e.Result, e.Details, e.Hash}
		rows[i] = []string{strconv.FormatInt(e.Seq, 10), fmtTime(e.Time), e.Actor, e.Action, e.Target, e.Result, e.Details}
	}
	if format == "json" {
		return printJSON(w, views)
	}
	return printTable(w, []string{"SEQ", "TIME", "ACTOR", "ACTION", "TARGET", "RESULT", "DETAILS"}, rows)
}

func newAuditVerifyCmd(g *globals) *cobra.Command {
	var anchorFile string
	cmd := &cobra.Command{
		Use:   "verify [--anchor FILE]",
		Short: "Check the audit log's hash chain (and an anchor); exit 4 if a row was edited or deleted, or the log rolled back",
		Long: `Check the audit log's hash chain; exit 4 if a row was edited or deleted.

With --anchor FILE (made by ` + "`meshroot audit anchor`" + `), also check that the
anchor's signature verifies under a root of the trust bundle and that the log
still holds the anchored entry with the anchored hash: a database file
restored from an older copy is a consistent chain, but it lacks the entries
anchored after that copy was made, and exits 4 naming the rollback.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var anchor ca.AuditAnchor
			if anchorFile != "" {
				data, err := readBounded(anchorFile, ca.MaxAnchorSize)
				if err != nil {
					return usageError{fmt.Errorf("--anchor: %w", err)}
				}
				if anchor, err = ca.ParseAuditAnchor(data); err != nil {
					return usageError{fmt.Errorf("--anchor %s: %w", anchorFile, err)}
				}
			}
			return runAdmin(cmd, g, access{}, func(a ca.Admin, ctx context.Context) (int, error) {
				n, err := a.VerifyAudit(ctx)
				if err != nil || anchorFile == "" {
					return n, err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "audit log intact: %d entries, hash chain verified\n", n)
				if err := checkAnchor(ctx, a, anchor); err != nil {
					var ae *ca.AnchorError
					if errors.As(err, &ae) {
						return n, tamperError{fmt.Errorf("%w; the log now holds %d entries", err, n)}
					}
					return n, err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "anchor verified: entry %d with hash %s (anchored %s) is in the log\n", anchor.Seq, anchor.Hash, fmtTime(anchor.Time))
				return -1, nil
			}, func(w io.Writer, _ string, n int) error {
				if n < 0 { // printed with the anchor's verification
					return nil
				}
				_, err := fmt.Fprintf(w, "audit log intact: %d entries, hash chain verified\n", n)
				return err
			})
		},
	}
	cmd.Flags().StringVar(&anchorFile, "anchor", "", "an anchor file from `meshroot audit anchor` to check the log against")
	return cmd
}

// checkAnchor checks anchor against the trust bundle and the audit log.
func checkAnchor(ctx context.Context, b ca.Admin, anchor ca.AuditAnchor) error {
	tb, err := b.TrustBundle(ctx)
	if err != nil {
		return err
	}
	return ca.VerifyAuditAnchor(anchor, tb.Roots, func(seq int64) (store.AuditEntry, bool, error) {
		es, err := b.ListAudit(ctx, seq-1, 1)
		if err != nil || len(es) == 0 || es[0].Seq != seq {
			return store.AuditEntry{}, false, err
		}
		return es[0], true, nil
	})
}

func newAuditAnchorCmd(g *globals) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "anchor [--out FILE]",
		Short: "Print a statement of the audit log's head (sequence and hash) signed with the active root's key",
		Long: `Append an audit.anchor row and print a statement of it (its sequence number
and hash, the time and the root) signed with the active root's key, as PEM.
Keep anchors away from the database (another machine, a ticket, a commit):
` + "`meshroot audit verify --anchor FILE`" + ` then detects a database that was rolled
back to a copy older than the anchor. Take a new anchor after each root
rotation: an anchor is checked against the roots in the trust bundle.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runAdmin(cmd, g, access{keys: true}, ca.Admin.AnchorAudit, func(w io.Writer, _ string, anchor []byte) error {
				if out == "" {
					_, err := w.Write(anchor)
					return err
				}
				return os.WriteFile(out, anchor, 0o644)
			})
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "write the anchor to this file instead of standard output")
	return cmd
}

// auditPage is how many entries the CLI asks for at a time; the server may
// answer with fewer to keep a page under its size limit.
const auditPage = 1000

// auditLister is the one admin call listAuditPages needs.
type auditLister interface {
	ListAudit(ctx context.Context, afterSeq int64, limit int) ([]store.AuditEntry, error)
}

// listAuditPages reads the audit log after seq after page by page until it
// has limit entries (limit <= 0: all) or a page comes back empty.
func listAuditPages(ctx context.Context, b auditLister, after int64, limit int) ([]store.AuditEntry, error) {
	var out []store.AuditEntry
	for limit <= 0 || len(out) < limit {
		want := auditPage
		if limit > 0 {
			want = min(want, limit-len(out))
		}
		page, err := b.ListAudit(ctx, after, want)
		if err != nil {
			return nil, err
		}
		if len(page) == 0 {
			break
		}
		out = append(out, page...)
		after = page[len(page)-1].Seq
	}
	return out, nil
}
