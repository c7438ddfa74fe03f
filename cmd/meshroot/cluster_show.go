package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshroot/meshroot/ca"
)

func newClusterShowCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "show NAME",
		Short: "Show one cluster: its registration, what its agent last reported, its current intermediate",
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runAdmin(cmd, g, tableJSON, func(a ca.Admin, ctx context.Context) (ca.ClusterDetail, error) {
				return a.ShowCluster(ctx, args[0])
			}, printClusterDetail)
		},
	}
}

// clusterDetailView is how `cluster show` prints a cluster.
type clusterDetailView struct {
	Name        string          `json:"name"`
	TrustDomain string          `json:"trust_domain"`
	CreatedAt   time.Time       `json:"created_at"`
	Auth        clusterAuthView `json:"auth"`
	// What the cluster's agent last reported.
	LastContact           time.Time `json:"last_contact"`
	BundleSequenceApplied uint64    `json:"bundle_sequence_applied"`
	IntermediateReported  string    `json:"intermediate_reported"`
	// Intermediate is the current (active) intermediate; null when none.
	Intermediate *intermediateView `json:"intermediate"`
	// Quarantine is set while the cluster is quarantined.
	Quarantine *quarantineView `json:"quarantine,omitempty"`
}

// clusterAuthView says how the cluster's agent may authenticate, without
// the credentials themselves.
type clusterAuthView struct {
	K8sIssuer        string   `json:"k8s_issuer"`
	K8sJWKS          bool     `json:"k8s_jwks"`
	K8sOIDCDiscovery bool     `json:"k8s_oidc_discovery"`
	K8sCA            bool     `json:"k8s_ca"`
	K8sTokenReview   bool     `json:"k8s_tokenreview"`
	ServiceAccounts  []string `json:"service_accounts"`
}

func viewClusterDetail(d ca.ClusterDetail) clusterDetailView {
	c := d.Cluster
	v := clusterDetailView{
		Name: c.Name, TrustDomain: c.TrustDomain, CreatedAt: c.CreatedAt,
		Auth: clusterAuthView{
			K8sIssuer: c.Auth.Issuer, K8sJWKS: len(c.Auth.JWKS) > 0, K8sOIDCDiscovery: c.Auth.OIDCDiscovery,
			K8sCA: len(c.Auth.CAPEM) > 0, K8sTokenReview: d.TokenReview, ServiceAccounts: c.Auth.ServiceAccounts,
		},
		LastContact: c.Status.LastContact, BundleSequenceApplied: c.Status.BundleSequence,
		IntermediateReported: c.Status.IntermediateSerial,
	}
	if v.Auth.ServiceAccounts == nil {
		v.Auth.ServiceAccounts = []string{}
	}
	if d.Current != nil {
		in := viewIntermediate(*d.Current)
		v.Intermediate = &in
	}
	if d.Quarantine != nil {
		q := viewQuarantine(*d.Quarantine)
		v.Quarantine = &q
	}
	return v
}

// verifiers says in words how service-account tokens are verified.
func (a clusterAuthView) verifiers() string {
	var by []string
	if a.K8sJWKS {
		by = append(by, "registered JWKS")
	}
	if a.K8sOIDCDiscovery {
		by = append(by, "OIDC discovery")
	}
	if a.K8sTokenReview {
		by = append(by, "TokenReview")
	}
	if len(by) == 0 {
		return "join tokens only"
	}
	return "join tokens; service-account tokens by " + strings.Join(by, ", ")
}

func printClusterDetail(w io.Writer, format string, d ca.ClusterDetail) error {
	v := viewClusterDetail(d)
	if format == "json" {
		return printJSON(w, v)
	}
	orDash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	current := "-"
	if in := v.Intermediate; in != nil {
		current = fmt.Sprintf("%s (root %s, not after %s)", in.Serial, in.RootID, fmtTime(in.NotAfter))
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, f := range [][2]string{
		{"NAME", v.Name},
		{"TRUST DOMAIN", v.TrustDomain},
		{"CREATED", fmtTime(v.CreatedAt)},
		{"AUTHENTICATION", v.Auth.verifiers()},
		{"K8S ISSUER", orDash(v.Auth.K8sIssuer)},
		{"SERVICE ACCOUNTS", orDash(strings.Join(v.Auth.ServiceAccounts, ", "))},
		{"LAST CONTACT", fmtTime(v.LastContact)},
		{"BUNDLE APPLIED", fmt.Sprint(v.BundleSequenceApplied)},
		{"INTERMEDIATE REPORTED", orDash(v.IntermediateReported)},
		{"CURRENT INTERMEDIATE", current},
		{"QUARANTINED", v.Quarantine.describe()},
	} {
		fmt.Fprintf(tw, "%s:\t%s\n", f[0], f[1])
	}
	return tw.Flush()
}
