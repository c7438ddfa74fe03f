package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/store"
)

// quarantineView is how the CLI prints a quarantine.
type quarantineView struct {
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
	Actor  string    `json:"actor"`
	// Enforcement is which other clusters applied the CRLs listing it
	// (cluster list and root status).
	Enforcement *enforcementView `json:"enforcement,omitempty"`
}

func viewQuarantine(q store.Quarantine) quarantineView {
	return quarantineView{Reason: q.Reason, At: q.At, Actor: q.Actor}
}

// describe is the quarantine in one table cell ("-" when there is none).
func (q *quarantineView) describe() string {
	if q == nil {
		return "-"
	}
	s := fmt.Sprintf("since %s: %s", fmtTime(q.At), q.Reason)
	if q.Enforcement != nil {
		s += "; " + q.Enforcement.describe(time.Now())
	}
	return s
}

// clusterList is what `cluster list` prints: the clusters and which are
// quarantined.
type clusterList struct {
	clusters    []store.Cluster
	quarantined map[string]quarantineView
}

func listClusters(a ca.Admin, ctx context.Context) (clusterList, error) {
	cs, err := a.ListClusters(ctx)
	if err != nil {
		return clusterList{}, err
	}
	qs, err := a.ListQuarantines(ctx)
	if err != nil {
		return clusterList{}, err
	}
	l := clusterList{clusters: cs, quarantined: map[string]quarantineView{}}
	for _, q := range qs {
		l.quarantined[q.Cluster] = viewQuarantineStatus(q)
	}
	return l, nil
}

func newClusterQuarantineCmd(g *globals) *cobra.Command {
	var reason string
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "quarantine NAME --reason TEXT [--dry-run]",
		Short: "Cut a cluster out of the trust domain: revoke all its intermediates, refuse all issuance for it",
		Long: `Quarantine a cluster: every intermediate it holds is revoked (the roots'
CRLs list them, reason cACompromise), and every request for a new one is
refused, whatever the credential (join token, service-account token, mTLS),
with the reason shown to its agent, until ` + "`meshroot cluster release NAME`" + `.
The other clusters' agents write the new CRLs into their cacerts
(ca-crl.pem) and their meshes then refuse the quarantined cluster's
workloads. See docs/quarantine.md.`,
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if reason == "" {
				return usageError{errorf("--reason is required: say why, it is audited and shown to the cluster's agent")}
			}
			return runAdmin(cmd, g, tableJSON, func(a ca.Admin, ctx context.Context) (ca.QuarantineResult, error) {
				return a.QuarantineCluster(ctx, ca.QuarantineRequest{Cluster: args[0], Reason: reason, DryRun: dryRun})
			}, printQuarantine)
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (required): audited and shown to the cluster's agent")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "list what would be revoked, change nothing")
	return cmd
}

func printQuarantine(w io.Writer, format string, r ca.QuarantineResult) error {
	if format == "json" {
		return printJSON(w, struct {
			Cluster    string         `json:"cluster"`
			Quarantine quarantineView `json:"quarantine"`
			Revoked    []string       `json:"revoked"`
			DryRun     bool           `json:"dry_run"`
		}{r.Quarantine.Cluster, viewQuarantine(r.Quarantine), append([]string{}, r.Revoked...), r.DryRun})
	}
	verb := "quarantined"
	if r.DryRun {
		verb = "would be quarantined (dry run)"
	}
	_, err := fmt.Fprintf(w, "cluster %s %s; intermediates revoked: %d\n%s", r.Quarantine.Cluster, verb, len(r.Revoked), lines(r.Revoked))
	return err
}

func lines(ss []string) string {
	if len(ss) == 0 {
		return ""
	}
	return "  " + strings.Join(ss, "\n  ") + "\n"
}

func newClusterReleaseCmd(g *globals) *cobra.Command {
	return actionCmd(g, "release NAME", "Lift a cluster's quarantine: it then needs a fresh join token or service-account login",
		func(ctx context.Context, a ca.Admin, name string) (string, error) {
			_, err := a.ReleaseCluster(ctx, name)
			return "cluster " + name + " released: issue a join token (meshroot token create) or let its agent log in with its service-account token", err
		})
}
