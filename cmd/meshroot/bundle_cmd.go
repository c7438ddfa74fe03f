package main

import (
	"github.com/spf13/cobra"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/spiffe"
)

func newBundleCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "bundle", Short: "Show the trust bundle"}
	cmd.AddCommand(&cobra.Command{
		Use:   "show [-o pem|spiffe]",
		Short: "Print the trust bundle: every root in state prepared, active or retiring",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			format, err := g.outputFormat("pem", "spiffe")
			if err != nil {
				return err
			}
			b, err := g.backend(cmd, false, false)
			if err != nil {
				return err
			}
			defer b.Close()
			tb, err := b.TrustBundle(cmd.Context())
			if err != nil {
				return err
			}
			if format == "pem" {
				_, err = cmd.OutOrStdout().Write(ca.EncodeCerts(tb.Roots))
				return err
			}
			if tb.RefreshHint == 0 {
				// Offline (--data-dir): advertise the server's default, so
				// that a peer bootstrapped from this document polls often.
				tb.RefreshHint = spiffe.DefaultRefreshHint
			}
			doc, err := spiffe.MarshalBundle(tb)
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(append(doc, '\n'))
			return err
		},
	})
	return cmd
}
