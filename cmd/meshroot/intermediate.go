package main

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"github.com/spf13/cobra"
	"go.step.sm/crypto/x509util"
	"go.yaml.in/yaml/v3"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/internal/fsutil"
	"github.com/meshroot/meshroot/keys"
	"github.com/meshroot/meshroot/store"
)

func newIntermediateCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "intermediate", Short: "Issue and list cluster intermediates"}
	cmd.AddCommand(newIntermediateIssueCmd(g), newIntermediateListCmd(g), newIntermediateRevokeCmd(g))
	return cmd
}

type issueFlags struct {
	cluster, out, csrFile, format, keyType string
	ttl                                    time.Duration
	constrain                              bool
}

func newIntermediateIssueCmd(g *globals) *cobra.Command {
	f := &issueFlags{}
	cmd := &cobra.Command{
		Use:   "issue --cluster NAME --out DIR",
		Short: "Issue a cluster intermediate and write it as Istio cacerts",
		Long: `Issue a cluster intermediate and write it as Istio cacerts files in --out
(ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem; or tls.crt, tls.key,
ca.crt with --format tls). Without --csr the intermediate key is generated
here; with --csr the key stays with whoever made the CSR and no key file is
written. -o yaml prints a Kubernetes Secret "cacerts" in istio-system instead.
Every output is self-checked before anything is written.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runIssue(cmd, g, f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.cluster, "cluster", "", "registered cluster name (required)")
	fl.StringVar(&f.out, "out", "", "folder to write the cacerts files into (required unless -o yaml)")
	fl.StringVar(&f.csrFile, "csr", "", "PKCS#10 CSR (PEM) made in the cluster; default: generate the key here")
	fl.DurationVar(&f.ttl, "ttl", 0, "intermediate lifetime (default: the policy's default TTL, 8760h unless set; capped by the signing CA's own expiry)")
	fl.StringVar(&f.format, "format", string(ca.FormatIstio), "cacerts layout: istio or tls")
	fl.BoolVar(&f.constrain, "trust-domain-constraint", false, "no effect: every intermediate signed by a local root carries name constraints (docs/security.md); kept so old command lines work")
	fl.StringVar(&f.keyType, "key-type", string(keys.ECP256), "type of the generated intermediate key (without --csr)")
	return cmd
}

func runIssue(cmd *cobra.Command, g *globals, f *issueFlags) error {
	outFmt, err := g.outputFormat("table", "json", "yaml")
	if err != nil {
		return err
	}
	format, err := ca.ParseFormat(f.format)
	if err != nil {
		return usageError{err}
	}
	if f.cluster == "" {
		return usageError{fmt.Errorf("--cluster is required")}
	}
	if f.out == "" && outFmt != "yaml" {
		return usageError{fmt.Errorf("--out is required (or -o yaml to print a Secret)")}
	}
	var csr *x509.CertificateRequest
	var csrData []byte
	var key crypto.Signer
	if f.csrFile != "" {
		// Read one byte past the limit so the service refuses (and
		// audits) an oversized CSR; it parses what it gets.
		var err error
		if csrData, err = readUpTo(f.csrFile, ca.MaxCSRSize+1); err != nil {
			return usageError{fmt.Errorf("--csr: %w", err)}
		}
	} else {
		kt, err := keys.ParseKeyType(f.keyType)
		if err != nil {
			return usageError{err}
		}
		if key, err = kt.Generate(); err != nil {
			return err
		}
		if csr, err = x509util.CreateCertificateRequest(f.cluster, nil, key); err != nil {
			return fmt.Errorf("create CSR: %w", err)
		}
	}
	req := ca.IssueRequest{Cluster: f.cluster, CSR: csr, CSRData: csrData, TTL: f.ttl, TrustDomainConstraint: f.constrain}
	return runAdmin(cmd, g, access{formats: []string{"table", "json", "yaml"}, keys: true}, func(a ca.Admin, ctx context.Context) (ca.Issued, error) {
		return a.IssueIntermediate(ctx, req)
	}, func(w io.Writer, outFmt string, issued ca.Issued) error {
		files, err := issued.CACerts(key).Files(format, time.Now())
		if err != nil {
			return err
		}
		if outFmt == "yaml" {
			return printSecret(w, format, files, issued.Annotations())
		}
		if err := writeCACerts(f.out, format, files); err != nil {
			return err
		}
		v := viewIntermediate(store.Intermediate{
			Serial: ca.SerialHex(issued.Cert.SerialNumber), Cluster: f.cluster, RootID: issued.RootID,
			NotBefore: issued.Cert.NotBefore, NotAfter: issued.Cert.NotAfter, Status: store.IntermediateActive,
		})
		v.Files = sortedKeys(files)
		v.Out = f.out
		if outFmt == "json" {
			return printJSON(w, v)
		}
		return printIntermediates(w, []intermediateView{v}, true)
	})
}

// writeCACerts writes every file atomically; key files get mode 0600 and
// the folder 0700 when it is created.
func writeCACerts(dir string, format ca.Format, files map[string][]byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("--out %s: %w", dir, err)
	}
	for _, name := range sortedKeys(files) {
		perm := os.FileMode(0o644)
		if slices.Contains(format.SecretFiles(), name) {
			perm = 0o600
		}
		if err := fsutil.WriteFile(filepath.Join(dir, name), files[name], perm); err != nil {
			return err
		}
	}
	return nil
}

// secretManifest is a Kubernetes Secret as printed by -o yaml.
type secretManifest struct {
	APIVersion string            `yaml:"apiVersion"`
	Kind       string            `yaml:"kind"`
	Metadata   secretMeta        `yaml:"metadata"`
	Type       string            `yaml:"type"`
	Data       map[string]string `yaml:"data"`
}

type secretMeta struct {
	Name        string            `yaml:"name"`
	Namespace   string            `yaml:"namespace"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

func printSecret(w io.Writer, format ca.Format, files map[string][]byte, annotations map[string]string) error {
	s := secretManifest{
		APIVersion: "v1", Kind: "Secret", Type: "Opaque",
		Metadata: secretMeta{
			Name: "cacerts", Namespace: "istio-system",
			Labels:      map[string]string{"app.kubernetes.io/managed-by": "meshroot"},
			Annotations: annotations,
		},
		Data: map[string]string{},
	}
	if format == ca.FormatTLS {
		s.Type = "kubernetes.io/tls"
	}
	for name, b := range files {
		s.Data[name] = base64.StdEncoding.EncodeToString(b)
	}
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	defer enc.Close()
	return enc.Encode(s)
}

type intermediateView struct {
	Serial    string    `json:"serial"`
	Cluster   string    `json:"cluster"`
	RootID    string    `json:"root_id"`
	Status    string    `json:"status"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	Out       string    `json:"out,omitempty"`
	Files     []string  `json:"files,omitempty"`
}

func viewIntermediate(in store.Intermediate) intermediateView {
	return intermediateView{Serial: in.Serial, Cluster: in.Cluster, RootID: in.RootID, Status: string(in.Status), NotBefore: in.NotBefore, NotAfter: in.NotAfter}
}

func printIntermediates(w io.Writer, views []intermediateView, withOut bool) error {
	header := []string{"SERIAL", "CLUSTER", "ROOT", "STATUS", "NOT AFTER"}
	if withOut {
		header = append(header, "OUT")
	}
	rows := make([][]string, len(views))
	for i, v := range views {
		rows[i] = []string{v.Serial, v.Cluster, v.RootID, v.Status, fmtTime(v.NotAfter)}
		if withOut {
			rows[i] = append(rows[i], v.Out)
		}
	}
	return printTable(w, header, rows)
}

func newIntermediateListCmd(g *globals) *cobra.Command {
	var cluster string
	cmd := &cobra.Command{
		Use:   "list [--cluster NAME]",
		Short: "List issued intermediates",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runAdmin(cmd, g, tableJSON, func(a ca.Admin, ctx context.Context) ([]store.Intermediate, error) {
				return a.ListIntermediates(ctx, cluster)
			}, printIntermediateList)
		},
	}
	cmd.Flags().StringVar(&cluster, "cluster", "", "only this cluster's intermediates")
	return cmd
}

func printIntermediateList(w io.Writer, format string, list []store.Intermediate) error {
	views := make([]intermediateView, len(list))
	for i, in := range list {
		views[i] = viewIntermediate(in)
	}
	if format == "json" {
		return printJSON(w, views)
	}
	return printIntermediates(w, views, false)
}

func sortedKeys(m map[string][]byte) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func newIntermediateRevokeCmd(g *globals) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "revoke SERIAL [--reason TEXT]",
		Short: "Revoke an intermediate: it can no longer be used to renew",
		Args:  exactArgs(1, "SERIAL"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runAdmin(cmd, g, tableJSON, func(a ca.Admin, ctx context.Context) (store.Intermediate, error) {
				return a.RevokeIntermediate(ctx, args[0], reason)
			}, func(w io.Writer, format string, in store.Intermediate) error {
				if format == "json" {
					return printJSON(w, viewIntermediate(in))
				}
				return printIntermediates(w, []intermediateView{viewIntermediate(in)}, false)
			})
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why, for the audit log")
	return cmd
}
