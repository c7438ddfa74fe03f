package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/store"
)

func newClusterCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "cluster", Short: "Register and list clusters"}
	cmd.AddCommand(newClusterAddCmd(g), newClusterListCmd(g), newClusterShowCmd(g), newClusterRemoveCmd(g), newClusterInstallCmd(g),
		newClusterQuarantineCmd(g), newClusterReleaseCmd(g), newClusterGateCmd(g))
	return cmd
}

type clusterView struct {
	Name        string    `json:"name"`
	TrustDomain string    `json:"trust_domain"`
	CreatedAt   time.Time `json:"created_at"`
	// Quarantine is set while the cluster is quarantined.
	Quarantine *quarantineView `json:"quarantine,omitempty"`
}

func printClusters(w io.Writer, format string, l clusterList) error {
	cs := l.clusters
	views := make([]clusterView, len(cs))
	rows := make([][]string, len(cs))
	for i, c := range cs {
		views[i] = clusterView{Name: c.Name, TrustDomain: c.TrustDomain, CreatedAt: c.CreatedAt}
		if q, ok := l.quarantined[c.Name]; ok {
			views[i].Quarantine = &q
		}
		rows[i] = []string{c.Name, c.TrustDomain, fmtTime(c.CreatedAt), views[i].Quarantine.describe()}
	}
	if format == "json" {
		return printJSON(w, views)
	}
	return printTable(w, []string{"NAME", "TRUST DOMAIN", "CREATED", "QUARANTINED"}, rows)
}

func newClusterAddCmd(g *globals) *cobra.Command {
	var td, issuer, jwksFile, caFile, kubeconfigFile string
	var oidc bool
	var sas, permitDNS, permitIPs []string
	cmd := &cobra.Command{
		Use:   "add NAME",
		Short: "Register a cluster that may request intermediates",
		Long: `Register a cluster. Its agent may then authenticate with a join token
(meshroot token create), or with a projected service-account token of
audience "meshroot", verified by one of:
  --k8s-issuer URL --k8s-jwks FILE          the issuer's JWKS, registered now
  --k8s-issuer URL --k8s-oidc-discovery     fetched from the issuer (--k8s-ca FILE to verify it)
  --k8s-tokenreview-kubeconfig FILE         TokenReview against the cluster
Only tokens of --service-account (namespace/name, default
istio-system/meshroot-agent) are accepted.

The cluster's intermediates are name-constrained: SPIFFE IDs of its trust
domain, DNS names under istio-system.svc (istiod's serving certificate)
and under each --permit-dns domain, and IP addresses only in --permit-ip
ranges.`,
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			auth := store.ClusterAuth{Issuer: issuer, OIDCDiscovery: oidc, ServiceAccounts: sas}
			for _, f := range []struct {
				flag, path string
				dst        *[]byte
			}{{"--k8s-jwks", jwksFile, &auth.JWKS}, {"--k8s-ca", caFile, &auth.CAPEM}, {"--k8s-tokenreview-kubeconfig", kubeconfigFile, &auth.Kubeconfig}} {
				if f.path == "" {
					continue
				}
				b, err := readBounded(f.path, 256<<10)
				if err != nil {
					return usageError{fmt.Errorf("%s: %w", f.flag, err)}
				}
				*f.dst = b
			}
			req := ca.AddClusterRequest{Name: args[0], TrustDomain: td, Auth: auth, PermitDNS: permitDNS, PermitIPs: permitIPs}
			return runAdmin(cmd, g, access{formats: tableJSON.formats, create: true}, func(a ca.Admin, ctx context.Context) (clusterList, error) {
				c, err := a.AddCluster(ctx, req)
				return clusterList{clusters: []store.Cluster{c}}, err
			}, printClusters)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&td, "trust-domain", "", "the cluster's trust domain (default: the root's)")
	fl.StringVar(&issuer, "k8s-issuer", "", "the cluster's service-account token issuer (iss claim)")
	fl.StringVar(&jwksFile, "k8s-jwks", "", "file with the issuer's JWKS (kubectl get --raw /openid/v1/jwks)")
	fl.BoolVar(&oidc, "k8s-oidc-discovery", false, "fetch the JWKS through the issuer's OIDC discovery document")
	fl.StringVar(&caFile, "k8s-ca", "", "PEM CA bundle that verifies the issuer's HTTPS endpoints")
	fl.StringVar(&kubeconfigFile, "k8s-tokenreview-kubeconfig", "", "kubeconfig for TokenReview against the cluster (stored as a credential)")
	fl.StringSliceVar(&permitDNS, "permit-dns", nil, "DNS domains the cluster's intermediates may certify besides istio-system.svc, e.g. istiod's custom host (repeatable, comma-separated)")
	fl.StringSliceVar(&permitIPs, "permit-ip", nil, "IP ranges (CIDR) the cluster's intermediates may certify; none by default (repeatable, comma-separated)")
	fl.StringSliceVar(&sas, "service-account", []string{"istio-system/meshroot-agent"}, "namespace/name of service accounts allowed to request (repeatable)")
	return cmd
}

func newClusterRemoveCmd(g *globals) *cobra.Command {
	return actionCmd(g, "remove NAME", "Unregister a cluster: its tokens and intermediate stop working for new requests",
		func(ctx context.Context, a ca.Admin, name string) (string, error) {
			return "cluster " + name + " removed", a.RemoveCluster(ctx, name)
		})
}

func newClusterGateCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "gate NAME secret|istiod|default",
		Short: "Choose what makes a cluster ready for root activate and retire: its cacerts Secret applied, or istiod confirmed serving it",
		Long: `Rotation phases wait, per cluster, for istiod to confirm it serves the new
trust bundle and intermediate (reported by the agent). A cluster whose agent
cannot confirm (no istio-ca-root-cert it can read) shows as unconfirmed and
blocks; mark it "secret" to let the applied Secret count. "default" is istiod
when the agent reports confirmation, else secret. The change is audited.`,
		Args: exactArgs(2, "NAME and a gate"),
		RunE: func(cmd *cobra.Command, args []string) error {
			gate := args[1]
			if gate == "default" {
				gate = ""
			}
			return runAdmin(cmd, g, access{}, func(a ca.Admin, ctx context.Context) (string, error) {
				return "cluster " + args[0] + " gate: " + args[1], a.SetClusterGate(ctx, args[0], gate)
			}, printLine)
		},
	}
}

// actionCmd is a command that takes one argument, asks the authority to
// do something with it, and prints one line when that worked. use is
// "VERB ARG".
func actionCmd(g *globals, use, short string, do func(ctx context.Context, a ca.Admin, arg string) (string, error)) *cobra.Command {
	_, argName, _ := strings.Cut(use, " ")
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  exactArgs(1, argName),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runAdmin(cmd, g, access{}, func(a ca.Admin, ctx context.Context) (string, error) {
				return do(ctx, a, args[0])
			}, printLine)
		},
	}
}

func newClusterListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List registered clusters",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runAdmin(cmd, g, tableJSON, listClusters, printClusters)
		},
	}
}

// exactArgs is cobra.ExactArgs with a usage error that names the argument.
func exactArgs(n int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageError{errorf("%s takes %s (got %d arguments)", cmd.CommandPath(), names, len(args))}
		}
		return nil
	}
}

// noArgs refuses positional arguments with a usage error.
var noArgs = exactArgs(0, "no arguments")

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }
