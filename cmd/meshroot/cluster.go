package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshroot/meshroot/plugins/store"
)

func newClusterCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "cluster", Short: "Register and list clusters"}
	cmd.AddCommand(newClusterAddCmd(g), newClusterListCmd(g))
	return cmd
}

type clusterView struct {
	Name        string    `json:"name"`
	TrustDomain string    `json:"trust_domain"`
	CreatedAt   time.Time `json:"created_at"`
}

func printClusters(cmd *cobra.Command, g *globals, cs []store.Cluster) error {
	format, err := g.outputFormat("table", "json")
	if err != nil {
		return err
	}
	views := make([]clusterView, len(cs))
	rows := make([][]string, len(cs))
	for i, c := range cs {
		views[i] = clusterView{Name: c.Name, TrustDomain: c.TrustDomain, CreatedAt: c.CreatedAt}
		rows[i] = []string{c.Name, c.TrustDomain, fmtTime(c.CreatedAt)}
	}
	if format == "json" {
		return printJSON(cmd.OutOrStdout(), views)
	}
	return printTable(cmd.OutOrStdout(), []string{"NAME", "TRUST DOMAIN", "CREATED"}, rows)
}

func newClusterAddCmd(g *globals) *cobra.Command {
	var td string
	cmd := &cobra.Command{
		Use:   "add NAME",
		Short: "Register a cluster that may request intermediates",
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			svc, closeFn, err := g.openService(cmd.Context(), false, true)
			if err != nil {
				return err
			}
			defer closeFn()
			c, err := svc.AddCluster(cmd.Context(), localActor(), args[0], td)
			if err != nil {
				return err
			}
			return printClusters(cmd, g, []store.Cluster{c})
		},
	}
	cmd.Flags().StringVar(&td, "trust-domain", "", "the cluster's trust domain (default: the root's)")
	return cmd
}

func newClusterListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List registered clusters",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := g.outputFormat("table", "json"); err != nil {
				return err
			}
			svc, closeFn, err := g.openService(cmd.Context(), false, false)
			if err != nil {
				return err
			}
			defer closeFn()
			cs, err := svc.ListClusters(cmd.Context())
			if err != nil {
				return err
			}
			return printClusters(cmd, g, cs)
		},
	}
}

// exactArgs is cobra.ExactArgs with a usage error that names the argument.
func exactArgs(n int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageError{errorf("%s takes %s (got %d arguments)", cmd.CommandPath(), names, len(args))}
		}
		return nil
	}
}

// noArgs refuses positional arguments with a usage error.
var noArgs = exactArgs(0, "no arguments")

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }
