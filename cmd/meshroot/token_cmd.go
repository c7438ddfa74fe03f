package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
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
after --ttl (1m to 24h). Pass it to the agent with --join-token or
MESHROOT_JOIN_TOKEN; prefer service-account tokens for clusters that keep
running an agent.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			format, err := g.outputFormat("table", "json")
			if err != nil {
				return err
			}
			if cluster == "" {
				return usageError{fmt.Errorf("--cluster is required")}
			}
			b, err := g.backend(cmd, false, false)
			if err != nil {
				return err
			}
			defer b.Close()
			token, expires, err := b.CreateToken(cmd.Context(), cluster, ttl)
			if err != nil {
				return err
			}
			if format == "json" {
				return printJSON(cmd.OutOrStdout(), map[string]any{"token": token, "cluster": cluster, "expires_at": expires})
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), token)
			return err
		},
	}
	create.Flags().StringVar(&cluster, "cluster", "", "the cluster the token is for (required)")
	create.Flags().DurationVar(&ttl, "ttl", time.Hour, "how long the token is valid")
	cmd.AddCommand(create)
	return cmd
}
