package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func newVersionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			format, err := g.outputFormat("table", "json")
			if err != nil {
				return err
			}
			commit := "unknown"
			if bi, ok := debug.ReadBuildInfo(); ok {
				for _, s := range bi.Settings {
					if s.Key == "vcs.revision" {
						commit = s.Value
					}
				}
			}
			if format == "json" {
				return printJSON(cmd.OutOrStdout(), map[string]string{"version": version, "commit": commit, "go": runtime.Version()})
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "meshroot %s (commit %s, %s)\n", version, commit, runtime.Version())
			return err
		},
	}
}
