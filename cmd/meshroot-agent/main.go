// Command meshroot-agent is meshroot's in-cluster agent on its own: the
// same flags and behaviour as `meshroot agent`, in a binary that links none
// of the CA's key backends, stores, Vault client or cloud SDKs (see
// deps_test.go), so that it is smaller and holds less memory.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/cmd/internal/agentcmd"
	_ "github.com/meshroot/meshroot/cmd/internal/pprofdebug" // net/http/pprof in -tags pprof builds only
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// Exit codes, as meshroot's: 2 bad flags, 3 refused by policy, 1 the rest.
func main() {
	cmd := agentcmd.New("meshroot-agent")
	cmd.Version = version
	cmd.PersistentPreRunE = func(c *cobra.Command, _ []string) error { return agentcmd.ApplyEnv(c.Flags()) }
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return agentcmd.UsageError{Err: err} })
	err := cmd.Execute()
	if err == nil {
		os.Exit(0)
	}
	fmt.Fprintf(os.Stderr, "meshroot-agent: %s\n", err)
	var ue agentcmd.UsageError
	var pe *ca.PolicyError
	switch {
	case errors.As(err, &ue):
		os.Exit(2)
	case errors.As(err, &pe):
		os.Exit(3)
	}
	os.Exit(1)
}
