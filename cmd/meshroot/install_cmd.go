package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/spf13/cobra"
	"go.step.sm/crypto/x509util"

	"github.com/meshroot/meshroot/agent"
	"github.com/meshroot/meshroot/ca"
	"github.com/meshroot/meshroot/cmd/internal/agentcmd"
	"github.com/meshroot/meshroot/keys"
)

// installFlags are the agent's flags that `cluster install` shares.
type installFlags struct {
	kubeconfig, kubeContext, namespace, secretName string
	format, keyType, restart, istiod               string
	ttl                                            time.Duration
	adopt                                          bool
}

func newClusterInstallCmd(g *globals) *cobra.Command {
	f := &installFlags{}
	var constrain bool
	cmd := &cobra.Command{
		Use:   "install NAME --kubeconfig FILE [--context C]",
		Short: "Issue the cluster's intermediate and write cacerts straight into it (no agent)",
		Long: `For clusters without an agent: the intermediate key is generated in memory
here, the intermediate is issued (by the server, or from --data-dir), the
output is self-checked, and the cacerts Secret is written in one atomic
create or update. istiod is rolled as --restart-istiod says. Nothing is left
on disk. Renewal is then up to you: run it again before the NotAfter shown.`,
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			format, err := ca.ParseFormat(f.format)
			if err != nil {
				return usageError{err}
			}
			kt, err := keys.ParseKeyType(f.keyType)
			if err != nil {
				return usageError{err}
			}
			restart, err := agent.ParseRestartMode(f.restart)
			if err != nil {
				return usageError{err}
			}
			kube, err := agentcmd.KubeClient(f.kubeconfig, f.kubeContext)
			if err != nil {
				return err
			}
			ref := agent.SecretRef{Namespace: f.namespace, Name: f.secretName}
			ctx := cmd.Context()
			cur, err := agent.ReadSecret(ctx, kube, ref)
			if err != nil {
				return err
			}
			if cur.Secret != nil && !cur.ManagedByMeshroot() && !f.adopt {
				return &ca.PolicyError{Err: fmt.Errorf("Secret %s/%s exists and is not managed by meshroot: delete it, or pass --adopt to replace it", ref.Namespace, ref.Name)}
			}
			key, err := kt.Generate()
			if err != nil {
				return err
			}
			csr, err := x509util.CreateCertificateRequest(args[0], nil, key)
			if err != nil {
				return err
			}
			req := ca.IssueRequest{Cluster: args[0], CSR: csr, TTL: f.ttl, TrustDomainConstraint: constrain}
			return runAdmin(cmd, g, access{keys: true}, func(a ca.Admin, ctx context.Context) (ca.Issued, error) {
				issued, err := a.IssueIntermediate(ctx, req)
				if err != nil {
					return issued, err
				}
				log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
				return issued, agent.Apply(ctx, kube, cur, issued.CACerts(key), issued.Annotations(), agent.ApplyOptions{
					Secret: ref, Format: format, Restart: restart, IstiodDeployment: f.istiod, Adopt: f.adopt, Log: log,
				}, time.Now())
			}, func(w io.Writer, _ string, issued ca.Issued) error {
				_, err := fmt.Fprintf(w, "cacerts %s/%s written: serial %s, valid until %s\n", ref.Namespace, ref.Name,
					ca.SerialHex(issued.Cert.SerialNumber), issued.Cert.NotAfter.UTC().Format(time.RFC3339))
				return err
			})
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig of the cluster (default: $KUBECONFIG or ~/.kube/config)")
	fl.StringVar(&f.kubeContext, "context", "", "kubeconfig context")
	fl.StringVar(&f.namespace, "namespace", agent.DefaultSecret.Namespace, "namespace of the cacerts Secret and istiod")
	fl.StringVar(&f.secretName, "secret", agent.DefaultSecret.Name, "name of the cacerts Secret")
	fl.StringVar(&f.format, "format", string(ca.FormatIstio), "cacerts layout: istio or tls")
	fl.StringVar(&f.keyType, "key-type", string(keys.ECP256), "intermediate key type")
	fl.StringVar(&f.restart, "restart-istiod", string(agent.RestartAuto), "roll istiod after writing: auto, always or never")
	fl.StringVar(&f.istiod, "istiod-deployment", "istiod", "istiod's Deployment name")
	fl.DurationVar(&f.ttl, "ttl", 0, "intermediate lifetime (default: the policy's default TTL, 8760h unless set)")
	fl.BoolVar(&f.adopt, "adopt", false, "replace a cacerts Secret that meshroot did not create")
	fl.BoolVar(&constrain, "trust-domain-constraint", false, "no effect: every intermediate signed by a local root carries name constraints (docs/security.md)")
	return cmd
}
