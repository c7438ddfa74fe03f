package main

import (
	"io"

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
			return runAdmin(cmd, g, access{formats: []string{"pem", "spiffe"}}, ca.Admin.TrustBundle, printBundle)
		},
	})
	return cmd
}

func printBundle(w io.Writer, format string, tb ca.TrustBundle) error {
	if format == "pem" {
		_, err := w.Write(ca.EncodeCerts(tb.Roots))
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
	_, err = w.Write(append(doc, '\n'))
	return err
}
