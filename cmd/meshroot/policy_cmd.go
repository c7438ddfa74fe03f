package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshroot/meshroot/ca"
)

func newPolicyCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Show and set the intermediate policy (kept in the store, used by every issuing path)",
	}
	cmd.AddCommand(newPolicyShowCmd(g), newPolicySetCmd(g))
	return cmd
}

// policyView is a policy as printed.
type policyView struct {
	Stored                 bool     `json:"stored"`
	DefaultTTL             string   `json:"default_ttl"`
	MaxTTL                 string   `json:"max_ttl"`
	MinTTL                 string   `json:"min_ttl"`
	AllowedKeyTypes        []string `json:"allowed_key_types"`
	TrustDomainConstraint  bool     `json:"trust_domain_constraint"`
	Backdate               string   `json:"backdate"`
	SupersededRenewalGrace string   `json:"superseded_renewal_grace"`
}

// policyState is a policy and whether it is stored.
type policyState struct {
	p      ca.Policy
	stored bool
}

func printPolicy(w io.Writer, format string, ps policyState) error {
	p, stored := ps.p, ps.stored
	v := policyView{
		Stored: stored, DefaultTTL: p.DefaultTTL.String(), MaxTTL: p.MaxTTL.String(), MinTTL: p.MinTTL.String(),
		TrustDomainConstraint: p.TrustDomainConstraint, Backdate: p.Backdate.String(), SupersededRenewalGrace: p.SupersededRenewalGrace.String(),
	}
	for _, kt := range p.AllowedKeyTypes {
		v.AllowedKeyTypes = append(v.AllowedKeyTypes, string(kt))
	}
	if format == "json" {
		return printJSON(w, v)
	}
	return printTable(w, []string{"SETTING", "VALUE"}, [][]string{
		{"stored", strconv.FormatBool(v.Stored)},
		{"default-ttl", v.DefaultTTL}, {"max-ttl", v.MaxTTL}, {"min-ttl", v.MinTTL},
		{"allowed-key-types", fmt.Sprint(v.AllowedKeyTypes)},
		{"trust-domain-constraint", strconv.FormatBool(v.TrustDomainConstraint)},
		{"backdate", v.Backdate}, {"superseded-renewal-grace", v.SupersededRenewalGrace},
	})
}

func newPolicyShowCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "show",
		Short: "Print the intermediate policy in force (stored: false means none is stored and the defaults apply)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runAdmin(cmd, g, tableJSON, func(a ca.Admin, ctx context.Context) (policyState, error) {
				p, stored, err := a.Policy(ctx)
				return policyState{p, stored}, err
			}, printPolicy)
		},
	}
}

// policyFlags are the settings `policy set` changes.
var policyFlags = []string{"default-ttl", "max-ttl", "min-ttl", "superseded-renewal-grace", "trust-domain-constraint"}

func newPolicySetCmd(g *globals) *cobra.Command {
	var defTTL, maxTTL, minTTL, grace time.Duration
	var constrain bool
	cmd := &cobra.Command{
		Use:   "set [--max-ttl D] [--min-ttl D] [--default-ttl D] [--trust-domain-constraint] [--superseded-renewal-grace D]",
		Short: "Change the stored intermediate policy: the flags given replace those settings, the others keep their value",
		Long: `Change the stored intermediate policy. The store holds the one policy that
the server, the Admin API and --data-dir commands all issue under. A
"policy:" block in the server's configuration file is written to the store
at every start of the server (audited when it changes it), so a policy set
here lasts only until then: manage the policy in one of the two places.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fl := cmd.Flags()
			if !slices.ContainsFunc(policyFlags, fl.Changed) {
				return usageError{fmt.Errorf("nothing to set: pass at least one of --max-ttl, --min-ttl, --default-ttl, --trust-domain-constraint, --superseded-renewal-grace")}
			}
			return runAdmin(cmd, g, tableJSON, func(a ca.Admin, ctx context.Context) (policyState, error) {
				p, _, err := a.Policy(ctx)
				if err != nil {
					return policyState{}, err
				}
				for name, set := range map[string]func(){
					"default-ttl": func() { p.DefaultTTL = defTTL }, "max-ttl": func() { p.MaxTTL = maxTTL },
					"min-ttl": func() { p.MinTTL = minTTL }, "superseded-renewal-grace": func() { p.SupersededRenewalGrace = grace },
					"trust-domain-constraint": func() { p.TrustDomainConstraint = constrain },
				} {
					if fl.Changed(name) {
						set()
					}
				}
				p, changed, err := a.SetPolicy(ctx, p)
				if err == nil && !changed {
					fmt.Fprintln(cmd.ErrOrStderr(), "policy unchanged")
				}
				return policyState{p, true}, err
			}, printPolicy)
		},
	}
	fl := cmd.Flags()
	fl.DurationVar(&defTTL, "default-ttl", 0, "lifetime of an intermediate whose request names none")
	fl.DurationVar(&maxTTL, "max-ttl", 0, "longest intermediate lifetime a request may ask for")
	fl.DurationVar(&minTTL, "min-ttl", 0, "shortest intermediate lifetime issued")
	fl.DurationVar(&grace, "superseded-renewal-grace", 0, "how long a superseded intermediate may still renew (default 10m)")
	fl.BoolVar(&constrain, "trust-domain-constraint", false, "no effect: every intermediate signed by a local root carries name constraints (docs/security.md)")
	return cmd
}
