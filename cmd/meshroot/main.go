// Command meshroot is one root of trust for many service meshes: it creates
// roots, registers clusters and issues their Istio cacerts intermediates.
package main

import (
	"errors"
	"fmt"
	"os"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/cmd/internal/agentcmd"
	_ "github.com/meshroot/meshroot/cmd/internal/pprofdebug" // net/http/pprof in -tags pprof builds only
	"github.com/meshroot/meshroot/internal/pluginrpc"
	"github.com/meshroot/meshroot/keys"
	"github.com/meshroot/meshroot/store"
)

// Exit codes that scripts can rely on.
const (
	exitOK      = 0
	exitError   = 1 // anything not listed below
	exitUsage   = 2 // bad flags or arguments
	exitRefused = 3 // refused by policy or validation (bad CSR, TTL, unknown cluster, ...)
	exitTamper  = 4 // `audit verify` found a broken chain
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	defer plugins.Close()
	cmd := newRootCmd()
	cmd.SetArgs(args)
	err := cmd.Execute()
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(os.Stderr, "meshroot: %s\n", oneLine(err))
	return exitCode(err)
}

// usageError marks a bad invocation (as does agentcmd.UsageError).
type usageError struct{ error }

// tamperError marks an audit log that failed verification against an anchor
// (rolled back or rewritten).
type tamperError struct{ error }

func exitCode(err error) int {
	var ue usageError
	var aue agentcmd.UsageError
	var te tamperError
	var ce *store.ChainError
	var pe *ca.PolicyError
	switch {
	case errors.As(err, &ue), errors.As(err, &aue), errors.Is(err, keys.ErrNotConfigured), errors.Is(err, pluginrpc.ErrInvalid):
		return exitUsage
	case errors.As(err, &ce), errors.As(err, &te): // `audit verify` on a data dir, or against an anchor
		return exitTamper
	case errors.As(err, &pe):
		return exitRefused
	}
	// Errors from the server keep their meaning across the wire.
	if st, ok := status.FromError(err); ok {
		switch st.Code() {
		case codes.InvalidArgument, codes.FailedPrecondition, codes.NotFound, codes.AlreadyExists,
			codes.PermissionDenied, codes.Unauthenticated:
			return exitRefused
		case codes.DataLoss:
			return exitTamper
		}
	}
	return exitError
}

func oneLine(err error) string {
	s := err.Error()
	if st, ok := status.FromError(err); ok {
		s = st.Message()
		if st.Code() == codes.Unavailable {
			s = "the server is unavailable: " + s
		}
	}
	out := make([]rune, 0, len(s))
	for _, r := range s {
		if r == '\n' {
			r = ';'
		}
		out = append(out, r)
	}
	return string(out)
}
