package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/internal/fsutil"
	"github.com/meshroot/meshroot/store"
)

func newAdminCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "admin", Short: "Credentials for the remote admin listener (admin over mTLS)"}
	certCmd := &cobra.Command{Use: "cert", Short: "Issue, list and revoke admin client certificates"}
	certCmd.AddCommand(newAdminCertIssueCmd(g), newAdminCertListCmd(g), newAdminCertRevokeCmd(g))
	cmd.AddCommand(certCmd)
	return cmd
}

// adminCertView is an admin certificate record as -o json prints it.
type adminCertView struct {
	Serial    string     `json:"serial"`
	Name      string     `json:"name"`
	Role      string     `json:"role"`
	IssuedAt  time.Time  `json:"issued_at"`
	NotAfter  time.Time  `json:"not_after"`
	RevokedAt *time.Time `json:"revoked_at"`
}

func viewAdminCert(c store.AdminCert) adminCertView {
	v := adminCertView{Serial: c.Serial, Name: c.Name, Role: c.Role, IssuedAt: c.IssuedAt, NotAfter: c.NotAfter}
	if !c.RevokedAt.IsZero() {
		v.RevokedAt = &c.RevokedAt
	}
	return v
}

// adminCertIssued is what `admin cert issue` prints.
type adminCertIssued struct {
	adminCertView
	Dir string `json:"dir"`
}

func newAdminCertIssueCmd(g *globals) *cobra.Command {
	var role, out string
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "issue NAME --role viewer|operator [--ttl 8h] --out DIR",
		Short: "Issue a short-lived admin client certificate into DIR",
		Long: `Issue a short-lived client certificate of the admin CA for NAME and write
DIR/cert.pem (the certificate and the admin CA), DIR/key.pem (its key, made
here and never sent, mode 0600) and DIR/trust-bundle.pem (the roots the CLI
pins to verify the server). Use them with --server HOST:PORT --admin-cert DIR.

A viewer may call read verbs only; an operator everything. The certificate
lives --ttl (default 8h, at most 24h), is recorded and audited, and can be
revoked (admin cert revoke). The admin CA is made on first use (or when the
server starts with adminListen) and its key kept by the key manager, like a
root's. Only the admin socket or an operator certificate can issue.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := ca.ParseAdminRole(role)
			if err != nil {
				return usageError{err}
			}
			if out == "" {
				return usageError{fmt.Errorf("--out DIR is required: the folder for cert.pem, key.pem and trust-bundle.pem")}
			}
			key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				return err
			}
			csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: args[0]}}, key)
			if err != nil {
				return err
			}
			req := ca.AdminCertRequest{Name: args[0], Role: r, TTL: ttl, CSR: csr}
			return runAdmin(cmd, g, access{formats: tableJSON.formats, keys: true}, func(a ca.Admin, ctx context.Context) (adminCertIssued, error) {
				issued, err := a.IssueAdminCert(ctx, req)
				if err != nil {
					return adminCertIssued{}, err
				}
				tb, err := a.TrustBundle(ctx)
				if err != nil {
					return adminCertIssued{}, err
				}
				return adminCertIssued{adminCertView: viewAdminCert(issued.Record), Dir: out}, writeAdminCreds(out, key, issued.Chain, tb.Roots)
			}, func(w io.Writer, format string, v adminCertIssued) error {
				if format == "json" {
					return printJSON(w, v)
				}
				_, err := fmt.Fprintf(w, "issued admin certificate %s for %s (%s), valid until %s, in %s\n", v.Serial, v.Name, v.Role, fmtTime(v.NotAfter), v.Dir)
				return err
			})
		},
	}
	cmd.Flags().StringVar(&role, "role", "", "viewer (read verbs) or operator (every verb) (required)")
	cmd.Flags().DurationVar(&ttl, "ttl", ca.AdminCertDefaultTTL, "lifetime, at most 24h")
	cmd.Flags().StringVar(&out, "out", "", "folder for cert.pem, key.pem and trust-bundle.pem (required)")
	return cmd
}

// writeAdminCreds writes an admin credentials folder: the key 0600, the
// certificate chain and the trust bundle to pin.
func writeAdminCreds(dir string, key *ecdsa.PrivateKey, chain, roots []*x509.Certificate) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("admin credentials folder %s: %w", dir, err)
	}
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{adminKeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600},
		{adminCertFile, ca.EncodeCerts(chain), 0o644},
		{adminBundleFile, ca.EncodeCerts(roots), 0o644},
	} {
		if err := fsutil.WriteFile(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return fmt.Errorf("admin credentials: %w", err)
		}
	}
	return nil
}

func newAdminCertListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the admin client certificates issued",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runAdmin(cmd, g, tableJSON, func(a ca.Admin, ctx context.Context) ([]store.AdminCert, error) {
				return a.ListAdminCerts(ctx)
			}, func(w io.Writer, format string, cs []store.AdminCert) error {
				if format == "json" {
					views := make([]adminCertView, 0, len(cs))
					for _, c := range cs {
						views = append(views, viewAdminCert(c))
					}
					return printJSON(w, views)
				}
				rows := make([][]string, 0, len(cs))
				for _, c := range cs {
					rows = append(rows, []string{c.Serial, c.Name, c.Role, fmtTime(c.NotAfter), fmtTime(c.RevokedAt)})
				}
				return printTable(w, []string{"SERIAL", "NAME", "ROLE", "NOT AFTER", "REVOKED"}, rows)
			})
		},
	}
}

func newAdminCertRevokeCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke SERIAL",
		Short: "Revoke an admin client certificate: the remote admin listener refuses it from its next call",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runAdmin(cmd, g, tableJSON, func(a ca.Admin, ctx context.Context) (store.AdminCert, error) {
				return a.RevokeAdminCert(ctx, args[0])
			}, func(w io.Writer, format string, c store.AdminCert) error {
				if format == "json" {
					return printJSON(w, viewAdminCert(c))
				}
				return printLine(w, format, fmt.Sprintf("revoked admin certificate %s (%s, %s)", c.Serial, c.Name, c.Role))
			})
		},
	}
}
