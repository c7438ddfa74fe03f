package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshroot/meshroot/ca"
)

func newTokenCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Create join tokens for cluster bootstrap"}
	var cluster string
	var ttl time.Duration
	create := &cobra.Command{
		Use:   "create --cluster NAME [--ttl 1h]",
		Short: "Print a single-use join token bound to one cluster",
		Long: `Print a single-use join token bound to one cluster. The server keeps only
its hash. It is spent by the first request that presents it, and it expires
after --ttl (1m to 24h). Only that request, retried with the same key (its
answer was lost), gets its intermediate again (docs/security.md). Pass it
to the agent with --join-token or MESHROOT_JOIN_TOKEN; prefer
service-account tokens for clusters that keep running an agent.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := g.outputFormat(tableJSON.formats...); err != nil {
				return err
			}
			if cluster == "" {
				return usageError{fmt.Errorf("--cluster is required")}
			}
			req := ca.JoinTokenRequest{Cluster: cluster, TTL: ttl}
			return runAdmin(cmd, g, tableJSON, func(a ca.Admin, ctx context.Context) (ca.JoinToken, error) {
				return a.CreateJoinToken(ctx, req)
			}, func(w io.Writer, format string, t ca.JoinToken) error {
				if format == "json" {
					return printJSON(w, t)
				}
				return printLine(w, format, t.Token)
			})
		},
	}
	create.Flags().StringVar(&cluster, "cluster", "", "the cluster the token is for (required)")
	create.Flags().DurationVar(&ttl, "ttl", time.Hour, "how long the token is valid")
	cmd.AddCommand(create)
	return cmd
}
