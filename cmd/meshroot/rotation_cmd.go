package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/keys"
)

var phaseHelp = map[string][2]string{
	"activate": {"Rotation, phase 2: the prepared root starts signing; the old one keeps being trusted",
		`Refuses, naming the clusters, until every registered cluster has reported a
trust bundle that contains the prepared root. Then new intermediates come
from the new root and agents re-request at once; the old root is retiring.`},
	"retire": {"Rotation, phase 3: the old root leaves the trust bundle",
		`Refuses, naming the clusters, until every cluster's intermediate chains to
the active root and --workload-cert-ttl has passed since the last one
switched (workloads may hold certificates signed under the old root until
then). Then the old root leaves the bundle (sequence +1).`},
	"rollback": {"Undo `root prepare`: the prepared root leaves the trust bundle",
		`Before activate only: the prepared root never signed anything, so removing
it from the bundle is safe.`},
}

func newRootPhaseCmd(g *globals, phase string) *cobra.Command {
	var req ca.PhaseRequest
	cmd := &cobra.Command{
		Use:   phase + " [--dry-run] [--force]",
		Short: phaseHelp[phase][0],
		Long:  phaseHelp[phase][1],
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			do := map[string]func(ca.Admin, context.Context, ca.PhaseRequest) (ca.PhaseResult, error){
				"activate": ca.Admin.ActivateRoot, "retire": ca.Admin.RetireRoot, "rollback": ca.Admin.RollbackPrepared,
			}[phase]
			return runAdmin(cmd, g, tableJSON, func(a ca.Admin, ctx context.Context) (ca.PhaseResult, error) {
				return do(a, ctx, req)
			}, printPhase)
		},
	}
	fl := cmd.Flags()
	fl.BoolVar(&req.DryRun, "dry-run", false, "print what would change and which clusters would lose trust, change nothing")
	if phase != "rollback" {
		fl.BoolVar(&req.Force, "force", false, "proceed despite blockers (audited, with the blockers)")
	}
	if phase == "retire" {
		fl.DurationVar(&req.WorkloadCertTTL, "workload-cert-ttl", ca.DefaultWorkloadCertTTL, "how long workload certificates signed under the old root may live")
	}
	return cmd
}

func newRootRevokeCmd(g *globals) *cobra.Command {
	var req ca.RevokeRequest
	var keyType string
	cmd := &cobra.Command{
		Use:   "revoke ROOT_ID --emergency [--dry-run]",
		Short: "Emergency: a compromised root leaves the bundle now; its intermediates are revoked",
		Long: `The compromise path. The root leaves the trust bundle at once and every
intermediate issued under it is revoked. If it is the active root, a new
root is created and made active in the same step. Blast radius: every
cluster must get a new intermediate (agents do so at once, with a
service-account or join token, since their intermediate no longer renews);
until a cluster has, mTLS between its workloads and those of clusters that
already switched fails. Use --dry-run to see the clusters affected.`,
		Args: exactArgs(1, "ROOT_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := g.outputFormat(tableJSON.formats...); err != nil {
				return err
			}
			kt, err := keys.ParseKeyType(keyType)
			if err != nil {
				return usageError{err}
			}
			req.RootID, req.KeyType = args[0], kt
			return runAdmin(cmd, g, access{formats: tableJSON.formats, keys: true}, func(a ca.Admin, ctx context.Context) (ca.PhaseResult, error) {
				return a.RevokeRoot(ctx, req)
			}, printPhase)
		},
	}
	cmd.Flags().BoolVar(&req.Emergency, "emergency", false, "confirm: trust in the root ends now")
	cmd.Flags().BoolVar(&req.DryRun, "dry-run", false, "print what would change, change nothing")
	cmd.Flags().StringVar(&keyType, "key-type", string(keys.DefaultKeyType), "key type of the replacement root")
	return cmd
}

func printPhase(w io.Writer, format string, res ca.PhaseResult) error {
	if format == "json" {
		return printJSON(w, res)
	}
	verb := "done"
	switch {
	case res.DryRun:
		verb = "dry run: would do"
	case res.Forced:
		verb = "done (FORCED past blockers)"
	}
	fmt.Fprintf(w, "%s %s:\n", res.Phase, verb)
	for _, c := range res.Changes {
		fmt.Fprintf(w, "  - %s\n", c)
	}
	if len(res.Blockers) > 0 {
		fmt.Fprintln(w, "blockers:")
		for _, b := range res.Blockers {
			who := b.Cluster
			if who == "" {
				who = "(trust domain)"
			}
			fmt.Fprintf(w, "  - %s: %s\n", who, b.Reason)
		}
	}
	if len(res.LosingTrust) > 0 {
		fmt.Fprintf(w, "clusters that would lose trust: %s\n", strings.Join(res.LosingTrust, ", "))
	}
	return nil
}

func newRootStatusCmd(g *globals) *cobra.Command {
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Per cluster: bundle applied, root of its intermediate, expiry, last contact, what blocks the next phase",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runAdmin(cmd, g, tableJSON, func(a ca.Admin, ctx context.Context) (ca.RotationStatus, error) {
				return a.RotationStatus(ctx, ttl)
			}, printRotationStatus)
		},
	}
	cmd.Flags().DurationVar(&ttl, "workload-cert-ttl", ca.DefaultWorkloadCertTTL, "for the retire gate")
	return cmd
}

func printRotationStatus(w io.Writer, format string, st ca.RotationStatus) error {
	if format == "json" {
		roots := make([]rootView, len(st.Roots))
		for i, r := range st.Roots {
			roots[i] = viewRoot(r)
		}
		type quarantined struct {
			Cluster string `json:"cluster"`
			quarantineView
		}
		qs := make([]quarantined, len(st.Quarantines))
		for i, q := range st.Quarantines {
			qs[i] = quarantined{q.Cluster, viewQuarantineStatus(q)}
		}
		return printJSON(w, struct {
			ca.RotationStatus
			Roots       []rootView    `json:"roots"`
			Quarantines []quarantined `json:"quarantines"`
		}{st, roots, qs})
	}
	fmt.Fprintf(w, "trust bundle sequence %d; next phase: %s\n\n", st.BundleSequence, st.NextPhase)
	var rows [][]string
	for _, r := range st.Roots {
		rows = append(rows, []string{r.ID, string(r.State), fmt.Sprint(r.AddedSequence), fmtTime(r.NotAfter), fmt.Sprint(len(r.CrossPEM) > 0)})
	}
	if err := printTable(w, []string{"ROOT", "STATE", "ADDED AT SEQ", "NOT AFTER", "CROSS-SIGNED"}, rows); err != nil {
		return err
	}
	fmt.Fprintln(w)
	rows = nil
	for _, c := range st.Clusters {
		blk := "-"
		if len(c.Blockers) > 0 {
			blk = strings.Join(c.Blockers, "; ")
		}
		ist := c.Istiod.State
		if ist == "" {
			ist = "unconfirmed"
		}
		if c.Istiod.BundleSequence != 0 {
			ist += fmt.Sprintf(" (bundle %d, %s)", c.Istiod.BundleSequence, short12(c.Istiod.Serial))
		}
		rows = append(rows, []string{c.Cluster, fmt.Sprint(c.BundleSequence), short12(c.IntermediateRoot), fmtTime(c.IntermediateNotAfter), fmtTime(c.LastContact),
			c.Gate, ist, fmtTime(c.Istiod.Since), fmtTime(c.Istiod.StaleSince), blk})
	}
	if err := printTable(w, []string{"CLUSTER", "BUNDLE APPLIED", "INTERMEDIATE ROOT", "INTERMEDIATE NOT AFTER", "LAST CONTACT",
		"GATE", "ISTIOD", "ISTIOD SINCE", "STALE SINCE", "BLOCKS NEXT PHASE"}, rows); err != nil {
		return err
	}
	for _, bl := range st.Blockers {
		fmt.Fprintf(w, "\nblocker: %s\n", bl.Reason)
	}
	printQuarantineStatuses(w, st.Quarantines, time.Now())
	return printReplicas(w, st.Replicas)
}

func short12(s string) string {
	if s == "" {
		return "-"
	}
	if len(s) > 12 {
		return s[:12]
	}
	return s
}
