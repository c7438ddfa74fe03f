package main

import (
	"context"
	"crypto"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"
	"go.step.sm/crypto/pemutil"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/internal/fsutil"
	"github.com/meshroot/meshroot/keys"
	"github.com/meshroot/meshroot/store"
)

// maxImportFile bounds certificate and key files read by `root import`.
const maxImportFile = 1 << 20

func newRootGroupCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "root", Short: "Create and inspect roots of trust"}
	cmd.AddCommand(newRootInitCmd(g), newRootImportCmd(g), newRootListCmd(g), newRootPrepareCmd(g),
		newRootPhaseCmd(g, "activate"), newRootPhaseCmd(g, "retire"), newRootPhaseCmd(g, "rollback"),
		newRootRevokeCmd(g), newRootStatusCmd(g))
	return cmd
}

// rootView is how a root is printed.
type rootView struct {
	ID          string    `json:"id"`
	TrustDomain string    `json:"trust_domain"`
	State       string    `json:"state"`
	KeyRef      string    `json:"key_ref"`
	Subject     string    `json:"subject"`
	ChainLength int       `json:"chain_length"`
	NotAfter    time.Time `json:"not_after"`
	CreatedAt   time.Time `json:"created_at"`
}

func viewRoot(r store.Root) rootView {
	v := rootView{ID: r.ID, TrustDomain: r.TrustDomain, State: string(r.State), KeyRef: r.KeyRef, NotAfter: r.NotAfter, CreatedAt: r.CreatedAt}
	if chain, err := ca.ParseCerts(r.ChainPEM); err == nil {
		v.Subject = chain[0].Subject.String()
		v.ChainLength = len(chain)
	}
	return v
}

func printRoots(w io.Writer, format string, roots []store.Root) error {
	views := make([]rootView, len(roots))
	for i, r := range roots {
		views[i] = viewRoot(r)
	}
	if format == "json" {
		return printJSON(w, views)
	}
	rows := make([][]string, len(views))
	for i, v := range views {
		rows[i] = []string{v.ID, v.TrustDomain, v.State, v.Subject, fmtTime(v.NotAfter), v.KeyRef}
	}
	return printTable(w, []string{"ID", "TRUST DOMAIN", "STATE", "SUBJECT", "NOT AFTER", "KEY"}, rows)
}

func newRootInitCmd(g *globals) *cobra.Command {
	var td, keyType, upstream string
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "init --trust-domain TD",
		Short: "Create the trust domain's first root (key and self-signed certificate)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			kt, err := keys.ParseKeyType(keyType)
			if err != nil {
				return usageError{err}
			}
			if upstream != "" {
				return initUpstream(cmd, g, td, upstream)
			}
			req := ca.InitRootRequest{TrustDomain: td, KeyType: kt, TTL: ttl}
			return runAdmin(cmd, g, access{formats: tableJSON.formats, keys: true, create: true}, func(a ca.Admin, ctx context.Context) ([]store.Root, error) {
				r, err := a.InitRoot(ctx, req)
				return []store.Root{r}, err
			}, printRoots)
		},
	}
	cmd.Flags().StringVar(&td, "trust-domain", "", "SPIFFE trust domain the root anchors, e.g. example.org (required)")
	cmd.Flags().StringVar(&keyType, "key-type", string(keys.DefaultKeyType), "root key type: ec-p256, ec-p384, rsa-2048, rsa-3072, rsa-4096")
	cmd.Flags().DurationVar(&ttl, "ttl", ca.DefaultRootTTL, "root lifetime")
	cmd.Flags().StringVar(&upstream, "upstream", "", "make Vault PKI or step-ca the signing authority instead of a root key: vault-pki://MOUNT[?issuer=NAME] or step-ca://HOST:PORT?provisioner=NAME&fingerprint=HEX")
	return cmd
}

func newRootPrepareCmd(g *globals) *cobra.Command {
	var keyType string
	var ttl time.Duration
	var crossSign, dryRun bool
	cmd := &cobra.Command{
		Use:   "prepare [--key-type T] [--ttl 87600h]",
		Short: "Rotation, phase 1: create the next root and add it to the trust bundle everywhere",
		Long: `Create the next root in the key manager, in state prepared, and add it to
the trust bundle (its sequence goes up by one). Agents put it into
root-cert.pem in every cluster; the active root keeps signing.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			kt, err := keys.ParseKeyType(keyType)
			if err != nil {
				return usageError{err}
			}
			req := ca.PrepareRootRequest{KeyType: kt, TTL: ttl, CrossSign: crossSign, DryRun: dryRun}
			return runAdmin(cmd, g, access{formats: tableJSON.formats, keys: true}, func(a ca.Admin, ctx context.Context) (store.Root, error) {
				return a.PrepareRoot(ctx, req)
			}, func(w io.Writer, format string, r store.Root) error {
				if dryRun {
					_, err := fmt.Fprintf(w, "dry run: a new %s root for %s would join the trust bundle (sequence +1)%s; the active root keeps signing\n",
						kt, r.TrustDomain, map[bool]string{true: ", cross-signed by the active root", false: ""}[crossSign])
					return err
				}
				return printRoots(w, format, []store.Root{r})
			})
		},
	}
	cmd.Flags().BoolVar(&crossSign, "cross-sign", false, "also have the active root certify the new root, so peers that trust only the old root accept new chains")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print what would change, change nothing")
	cmd.Flags().StringVar(&keyType, "key-type", string(keys.DefaultKeyType), "key type of the new root")
	cmd.Flags().DurationVar(&ttl, "ttl", ca.DefaultRootTTL, "lifetime of the new root")
	return cmd
}

func newRootImportCmd(g *globals) *cobra.Command {
	var td, certFile, keyFile, keyPassFile string
	cmd := &cobra.Command{
		Use:   "import --trust-domain TD --cert CHAIN.pem --key KEY.pem",
		Short: "Use an existing CA (a root, or an intermediate with its chain up to the root) as the signing authority",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if certFile == "" || keyFile == "" {
				return usageError{fmt.Errorf("--cert and --key are required")}
			}
			chainPEM, err := readBounded(certFile, maxImportFile)
			if err != nil {
				return usageError{err}
			}
			keyPEM, err := readBounded(keyFile, maxImportFile)
			if err != nil {
				return usageError{err}
			}
			var opts []pemutil.Options
			if keyPassFile != "" {
				opts = append(opts, pemutil.WithPasswordFile(keyPassFile))
			}
			k, err := pemutil.ParseKey(keyPEM, opts...)
			if err != nil {
				return usageError{fmt.Errorf("key %s: %v (pass --key-passphrase-file for an encrypted key)", keyFile, err)}
			}
			signer, ok := k.(crypto.Signer)
			if !ok {
				return usageError{fmt.Errorf("key %s holds a %T, not a private key", keyFile, k)}
			}
			format, err := g.outputFormat(tableJSON.formats...)
			if err != nil {
				return err
			}
			svc, ctx, closeFn, err := g.local(cmd, true, true, "root import sends a private key, so it only works on a data dir: stop the server or pass --data-dir")
			if err != nil {
				return err
			}
			defer closeFn()
			r, err := svc.ImportRoot(ctx, ca.ImportRootRequest{TrustDomain: td, ChainPEM: chainPEM, Key: signer})
			if err != nil {
				return err
			}
			return printRoots(cmd.OutOrStdout(), format, []store.Root{r})
		},
	}
	cmd.Flags().StringVar(&td, "trust-domain", "", "SPIFFE trust domain (required)")
	cmd.Flags().StringVar(&certFile, "cert", "", "PEM file: the signing CA certificate, then every CA above it, root last")
	cmd.Flags().StringVar(&keyFile, "key", "", "PEM file with the signing CA's private key")
	cmd.Flags().StringVar(&keyPassFile, "key-passphrase-file", "", "passphrase of --key, if it is encrypted")
	return cmd
}

func newRootListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List roots and their states",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runAdmin(cmd, g, tableJSON, ca.Admin.ListRoots, printRoots)
		},
	}
}

// initUpstream makes an upstream CA (Vault PKI, step-ca) the signing authority of a
// data dir.
func initUpstream(cmd *cobra.Command, g *globals, td, upstream string) error {
	format, err := g.outputFormat(tableJSON.formats...)
	if err != nil {
		return err
	}
	svc, ctx, closeFn, err := g.local(cmd, false, true, "--upstream is set up on the data dir (--data-dir), with the server stopped")
	if err != nil {
		return err
	}
	defer closeFn()
	r, err := svc.InitUpstreamRoot(ctx, td, upstream)
	if err != nil {
		return err
	}
	return printRoots(cmd.OutOrStdout(), format, []store.Root{r})
}

// readBounded reads a file of at most limit bytes.
var readBounded = fsutil.ReadBounded

// readUpTo reads at most limit bytes of a file.
func readUpTo(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, limit))
}
