package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/meshroot/meshroot/api/adminclient"
	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/server"
)

// access says how a verb opens the authority and what it prints.
type access struct {
	// formats are the -o formats the verb takes, its default first; none:
	// the verb prints one fixed form and ignores -o.
	formats []string
	// keys loads the data dir's key manager (only verbs that sign need it);
	// create lets the verb start a new data dir.
	keys, create bool
}

// tableJSON is what most read verbs take.
var tableJSON = access{formats: []string{"table", "json"}}

// runAdmin is every admin verb's scaffolding: it checks -o, opens the
// authority (the data dir when --data-dir is given, else the running
// server through its admin socket), calls it with the local user as the
// actor (the server decides the actor itself), and prints the result.
func runAdmin[T any](cmd *cobra.Command, g *globals, a access, call func(ca.Admin, context.Context) (T, error), print func(w io.Writer, format string, v T) error) error {
	format := ""
	if len(a.formats) > 0 {
		var err error
		if format, err = g.outputFormat(a.formats...); err != nil {
			return err
		}
	}
	admin, closeFn, err := g.admin(cmd, a.keys, a.create)
	if err != nil {
		return err
	}
	defer closeFn()
	v, err := call(admin, ca.WithActor(cmd.Context(), localActor()))
	if err != nil {
		return err
	}
	return print(cmd.OutOrStdout(), format, v)
}

// admin opens the authority a verb acts on: the data dir's, directly, when
// one was given (flag or MESHROOT_DATA_DIR), else the running server's
// through its admin socket. The caller calls the returned function.
func (g *globals) admin(cmd *cobra.Command, withKeys, create bool) (ca.Admin, func(), error) {
	if g.dataDirSet(cmd) && g.remote != "" {
		return ca.Admin{}, nil, usageError{errors.New("--data-dir (or MESHROOT_DATA_DIR) and --server (or MESHROOT_SERVER) both name an authority: give one")}
	}
	if g.dataDirSet(cmd) {
		svc, closeFn, err := g.openService(cmd.Context(), withKeys, create)
		if err != nil {
			return ca.Admin{}, nil, err
		}
		return svc.Admin(), closeFn, nil
	}
	conn, err := dialAdmin(cmd, g)
	if err != nil {
		return ca.Admin{}, nil, err
	}
	return adminclient.New(conn).Admin(), func() { _ = conn.Close() }, nil
}

// local opens the data dir's authority for verbs that only work there
// (they handle private keys or set up signing); refusal is the usage error
// when no data dir was given.
func (g *globals) local(cmd *cobra.Command, withKeys, create bool, refusal string) (*ca.Service, context.Context, func(), error) {
	if !g.dataDirSet(cmd) {
		return nil, nil, nil, usageError{errors.New(refusal)}
	}
	svc, closeFn, err := g.openService(cmd.Context(), withKeys, create)
	if err != nil {
		return nil, nil, nil, err
	}
	return svc, ca.WithActor(cmd.Context(), localActor()), closeFn, nil
}

// dialAdmin connects to the server's admin socket, or, with --server, to
// its remote admin listener over mTLS (dialRemoteAdmin).
func dialAdmin(cmd *cobra.Command, g *globals) (*grpc.ClientConn, error) {
	if g.remote != "" {
		return dialRemoteAdmin(g.remote, g.adminCert)
	}
	socket := g.socket
	if _, err := os.Stat(socket); err != nil {
		return nil, fmt.Errorf("no meshroot server at %s: start `meshroot serve`, pass --socket, or pass --data-dir to work on a data dir directly", socket)
	}
	if err := server.CheckSocketDir(socket); err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient("unix:"+socket, grpc.WithTransportCredentials(server.UnixPeerCredentials()))
	if err != nil {
		return nil, fmt.Errorf("admin socket %s: %w", socket, err)
	}
	return conn, nil
}

// printLine prints a verb's one-line answer.
func printLine(w io.Writer, _ string, line string) error {
	_, err := fmt.Fprintln(w, line)
	return err
}
